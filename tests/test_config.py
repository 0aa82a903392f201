"""Configs: every YAML under configs/ loads; typos and wrong types are rejected by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from valign_ray.config import PipelineConfig, load_config
from valign_ray.config_loader import ConfigError, from_dict, load_yaml, to_dict

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_there_are_configs() -> None:
    assert len(CONFIGS) >= 2


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_loads(path: Path) -> None:
    if "sweep" in load_yaml(path):  # a sweep file: a sweep section plus a pipeline config
        from valign_ray.sweeps import load_sweep

        cfg = load_sweep(path).pipeline
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
        ("loss.name=ppo", "valid values: kto, dpo, sft"),
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
    cfg = load_config(CONFIGS[0], ["train.lr=3e-4", "loss.lambda_d=auto", "model.path=null"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.loss.lambda_d == "auto"
    assert cfg.model.path is None


def test_configs_are_immutable() -> None:
    cfg = load_config(CONFIGS[0])
    with pytest.raises(AttributeError):
        cfg.train.lr = 1.0  # type: ignore[misc]
