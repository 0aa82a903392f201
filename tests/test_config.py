"""Configs: every YAML under configs/ loads; typos and wrong types are rejected by name."""

from __future__ import annotations

import dataclasses
import pickle
import re
from pathlib import Path

import pytest

from valign_ray.config import PipelineConfig, load_config
from valign_ray.config_loader import ConfigError, from_dict, load_yaml, to_dict

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"  # a KTO config
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_there_are_configs() -> None:
    assert len(CONFIGS) >= 2


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_loads(path: Path) -> None:
    if "design" in load_yaml(path):  # a design file (valign design): its own config
        from valign_ray.config import DesignConfig, load_design_config

        design = load_design_config(path)
        assert from_dict(DesignConfig, to_dict(design)) == design
        return
    if "critique_request" in load_yaml(path):  # CAI templates (cai.templates): their own file
        from valign_ray.cai.templates import load_templates

        assert load_templates(path).texts["critique_request"]
        return
    if "sweep" in load_yaml(path):  # a sweep file: a sweep section plus a pipeline config
        from valign_ray.sweeps import load_sweep

        cfg = load_sweep(path).pipeline
    elif "study" in load_yaml(path):  # a sample-size study: a study section plus a pipeline
        from valign_ray.eval.sample_size_study import load_study

        cfg = load_study(path).pipeline
    else:
        cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)
    # Round trip: the snapshot a run writes loads back to the same config.
    assert from_dict(PipelineConfig, to_dict(cfg)) == cfg


def test_misspelt_key_is_named_with_valid_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    msg = str(exc.value)
    assert "train.learning_rate" in msg
    assert "valid keys:" in msg and "lr" in msg


def test_misspelt_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match="'loss.betta'"):
        load_config(CONFIGS[0], ["loss.betta=0.2"])


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.lr=fast", "train.lr: expected a number"),
        ("train.epochs=1.5", "train.epochs: expected an integer"),
        ("loss.name=ppo", "unknown method 'ppo'; valid: kto, dpo, sft"),
        ("train.zero_stage=4", "valid values: 0, 1, 2, 3"),
        ("wandb.enabled=maybe", "expected true or false"),
        ("weighting.variables=age_band", "expected a list"),
        ("train", "expected KEY=VALUE"),
    ],
)
def test_wrong_values_are_rejected(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(CONFIGS[0], [override])


def test_overrides_apply_and_parse_yaml_numbers() -> None:
    cfg = load_config(QUICKSTART, ["train.lr=3e-4", "loss.lambda_d=auto", "model.path=null"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.loss.lambda_d == "auto"
    assert cfg.model.path is None


def test_configs_are_immutable() -> None:
    cfg = load_config(CONFIGS[0])
    with pytest.raises(AttributeError):
        cfg.train.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("loss.beta=-1", "loss.beta: -1 is out of range; allowed: > 0"),
        (
            "train.zero_stage=true",
            "train.zero_stage: True is not allowed; valid values: 0, 1, 2, 3",
        ),
        (
            "data.holdout_respondents=3.0",
            "data.holdout_respondents: 3.0 is out of range; allowed: [0, 1)",
        ),
        ("train.num_workers=0", "train.num_workers: 0 is out of range; allowed: >= 1"),
        # A range inside a union and two levels down.
        ("loss.lambda_d=-0.5", "loss.lambda_d: -0.5 is out of range; allowed: >= 0 or auto"),
        (
            "survey.synthetic.flip=1.5",
            "survey.synthetic.flip: 1.5 is out of range; allowed: [0, 1]",
        ),
        ("weighting.trim_max=1", "weighting.trim_max: 1 is out of range; allowed: > 1"),
    ],
)
def test_out_of_range_values_name_key_value_and_range(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(CONFIGS[0], [override])
    assert str(exc.value) == fragment


@pytest.mark.parametrize(
    "override",
    ["train.num_workers=true", "train.lr=false", "train.zero_stage=false", "loss.beta=true"],
)
def test_a_bool_is_not_a_number(override: str) -> None:
    """YAML's true == 1 in Python; a config must not read it as one."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: "):
        load_config(CONFIGS[0], [override])


def test_a_number_is_not_a_bool() -> None:
    with pytest.raises(ConfigError, match="wandb.enabled: expected true or false, got 1"):
        load_config(CONFIGS[0], ["wandb.enabled=1"])


def test_replace_revalidates() -> None:
    """``dataclasses.replace`` builds a new config through the same checks as a YAML file."""
    cfg = load_config(CONFIGS[0])
    assert dataclasses.replace(cfg.train, lr=1e-3).lr == 1e-3
    with pytest.raises(ValueError, match="greater than 0"):
        dataclasses.replace(cfg.loss, beta=0.0)
    with pytest.raises(ValueError, match="valid integer"):
        dataclasses.replace(cfg.train, num_workers=True)


def test_configs_pickle_and_hash() -> None:
    """Configs travel to Ray workers by pickle; frozen configs hash by value."""
    cfg = load_config(CONFIGS[0])
    back = pickle.loads(pickle.dumps(cfg))
    assert back == cfg and hash(back.train) == hash(cfg.train)


def test_yaml_lists_become_tuples() -> None:
    cfg = load_config(CONFIGS[0], ["weighting.variables=[age_band, gender]"])
    assert cfg.weighting.variables == ("age_band", "gender")
