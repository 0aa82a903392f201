"""CPU offload (``train.offload``): the DeepSpeed config it writes, the config checks, and a run
whose optimizer state lives on the host that trains exactly like the run that keeps it in place.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from valign_ray.config import load_config
from valign_ray.config_loader import ConfigError
from valign_ray.train.deepspeed_setup import deepspeed_config

REPO = Path(__file__).resolve().parents[1]


def _cfg(*overrides: str):
    base = ["train.epochs=1", "train.max_steps=4", "train.num_workers=1", "train.batch_size=8"]
    base += ["train.warmup_ratio=0.0", "train.lr=0.01", "data.max_length=48"]
    return load_config(REPO / "configs/quickstart.yaml", [*base, "wandb.enabled=false", *overrides])


def test_offload_settings_in_the_deepspeed_config() -> None:
    none = deepspeed_config(_cfg("train.zero_stage=2").train, 1)["zero_optimization"]
    opt = deepspeed_config(_cfg("train.zero_stage=2", "train.offload=optimizer").train, 1)
    all_ = deepspeed_config(_cfg("train.zero_stage=3", "train.offload=all").train, 4)
    assert none == {"stage": 2}
    assert opt["zero_optimization"] == {
        "stage": 2,
        "offload_optimizer": {"device": "cpu", "pin_memory": False},
    }
    assert all_["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": False}
    assert all_["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert opt["zero_force_ds_cpu_optimizer"] is False  # torch's AdamW on the host


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (("train.zero_stage=2", "train.offload=all"), "needs train.zero_stage=3"),
        (("train.zero_stage=0", "train.offload=optimizer"), "needs ZeRO stage 1, 2 or 3"),
        (("train.offload=disk",), "train.offload"),
    ],
)
def test_offload_config_errors(overrides, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        _cfg(*overrides)


@pytest.mark.parametrize("stage", [2, 3])
def test_offloaded_optimizer_trains_like_the_resident_one(
    stage, kto_rows, tiny_model_dir, local_process_group, tmp_path, monkeypatch
) -> None:
    """Same rows, seed and steps with and without ``offload=optimizer`` (and ``all`` under
    ZeRO-3): the losses agree step by step; the host copy of the state runs the same AdamW."""
    import deepspeed

    from valign_ray.train.context import LocalContext
    from valign_ray.train.worker import TrainJob, run_training

    engines = []
    initialize = deepspeed.initialize

    def recording(*args, **kwargs):
        out = initialize(*args, **kwargs)
        engines.append(out[0])
        return out

    monkeypatch.setattr(deepspeed, "initialize", recording)
    runs, offloaded = {}, {}
    modes = ["none", "optimizer"] + (["all"] if stage == 3 else [])
    for mode in modes:
        cfg = _cfg(f"train.zero_stage={stage}", f"train.offload={mode}", f"name=off-{mode}")
        metrics = tmp_path / f"{mode}.jsonl"
        job = TrainJob(config=cfg, model_path=str(tiny_model_dir), metrics_path=str(metrics))
        run_training(job, LocalContext(), kto_rows)
        runs[mode] = [json.loads(line)["loss"] for line in metrics.read_text().splitlines()]
        engine = engines.pop()
        offloaded[mode] = (bool(engine.zero_cpu_offload()), bool(engine.zero_offload_param()))
    # DeepSpeed's engine really runs with the host copies the config asks for.
    assert offloaded["none"] == (False, False)
    assert offloaded["optimizer"] == (True, False)
    if stage == 3:
        assert offloaded["all"] == (True, True)
    assert len(runs["none"]) == 4
    assert abs(runs["none"][-1] - runs["none"][0]) > 1e-4  # it trained
    for mode in modes[1:]:
        assert runs[mode] == pytest.approx(runs["none"], rel=1e-5, abs=1e-7), mode
