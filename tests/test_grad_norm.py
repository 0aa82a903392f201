"""The logged ``grad_norm``: DeepSpeed computes it under ZeRO 1-3 and bf16 but leaves it unset for
a plain fp32 ZeRO-0 engine, where the loop computes it. Same rows, seed and steps: ZeRO-0's
norm must equal the one DeepSpeed reports under ZeRO-2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from valign_ray.config import load_config

REPO = Path(__file__).resolve().parents[1]


def test_zero0_grad_norm_equals_deepspeeds_zero2_norm(
    kto_rows, tiny_model_dir, local_process_group, tmp_path
) -> None:
    from valign_ray.train.context import LocalContext
    from valign_ray.train.worker import TrainJob, run_training

    norms = {}
    for stage in (0, 2):
        cfg = load_config(
            REPO / "configs/quickstart.yaml",
            ["train.epochs=1", "train.max_steps=3", "train.num_workers=1", "train.batch_size=8",
             "train.warmup_ratio=0.0", "train.lr=0.01", "data.max_length=48",
             "wandb.enabled=false", f"train.zero_stage={stage}", f"name=gn{stage}"],
        )  # fmt: skip
        metrics = tmp_path / f"z{stage}.jsonl"
        job = TrainJob(config=cfg, model_path=str(tiny_model_dir), metrics_path=str(metrics))
        run_training(job, LocalContext(), kto_rows)
        norms[stage] = [json.loads(x)["grad_norm"] for x in metrics.read_text().splitlines()]
    assert all(n > 0 for n in norms[0]), norms
    assert norms[0] == pytest.approx(norms[2], rel=1e-4), norms
