"""Damaged checkpoints: a truncated or incomplete latest checkpoint is detected by its rank
manifests and the one before it is used, with a message; in one process (LocalContext) the
resumed run then continues exactly as the uninterrupted run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.test_methods import toy_rows  # noqa: F401  (a fixture)
from valign_ray.train.checkpoints import (
    checkpoint_problem,
    pick_intact_checkpoint,
    write_manifest,
)
from valign_ray.train.context import LocalContext
from valign_ray.train.worker import TrainJob, run_training


def _fake_checkpoint(folder: Path, step: int, world_size: int = 2) -> Path:
    """What the ranks of ``save_checkpoint`` leave: shards per rank, state.json, manifests."""
    (folder / "ds").mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"step": step, "world_size": world_size}))
    for rank in range(world_size):
        (folder / "ds" / f"optim_rank{rank}.pt").write_bytes(b"x" * (100 + rank))
        write_manifest(folder, rank)
    return folder


def test_the_newest_intact_checkpoint_is_picked_and_damage_is_named(tmp_path, capsys) -> None:
    old = _fake_checkpoint(tmp_path / "ckpt_4", 4)
    new = _fake_checkpoint(tmp_path / "ckpt_8", 8)
    assert checkpoint_problem(new) is None
    assert pick_intact_checkpoint([new, old]) == new
    assert capsys.readouterr().out == ""

    # Rank 1's shard cut short (101 bytes written, 60 left): the one before is used.
    shard = new / "ds" / "optim_rank1.pt"
    shard.write_bytes(shard.read_bytes()[:60])
    assert checkpoint_problem(new) == "ds/optim_rank1.pt has 60 bytes, the manifest says 101"
    assert pick_intact_checkpoint(iter([new, old])) == old
    out = capsys.readouterr().out
    assert f"checkpoint {new} is damaged: ds/optim_rank1.pt has 60 bytes" in out
    assert "trying the one before" in out

    # A file gone, or a rank's manifest never written (that rank died while saving).
    (old / "ds" / "optim_rank0.pt").unlink()
    assert checkpoint_problem(old) == "ds/optim_rank0.pt is missing"
    third = _fake_checkpoint(tmp_path / "ckpt_2", 2)
    (third / "manifest_rank1.json").unlink()
    assert "manifest_rank1.json" in checkpoint_problem(third)
    assert pick_intact_checkpoint([new, old, third]) is None
    assert "none of 3 checkpoint(s) is intact: training starts at step 0" in capsys.readouterr().out
    assert pick_intact_checkpoint([], rank=0) is None


def test_other_ranks_stay_quiet(tmp_path, capsys) -> None:
    new = _fake_checkpoint(tmp_path / "ckpt_8", 8)
    (new / "state.json").write_text("{")
    assert pick_intact_checkpoint([new], rank=1) is None
    assert capsys.readouterr().out == ""


def test_local_resume_skips_a_truncated_checkpoint(
    toy_rows,  # noqa: F811
    tiny_model_dir,
    local_process_group,
    tmp_path,
    capsys,
) -> None:
    """Checkpoints at steps 2 and 4 of 6; the step-4 one truncated: the rerun says so, starts
    from step 2 and ends with the uninterrupted run's losses on steps 3-6."""
    rows, cfg = toy_rows
    cfg = replace(cfg, train=replace(cfg.train, checkpoint_every=2))
    clean = tmp_path / "clean.jsonl"
    ctx = LocalContext()
    run_training(
        TrainJob(config=cfg, model_path=str(tiny_model_dir), metrics_path=str(clean)), ctx, rows
    )
    saved = {int(r["step"]): r["checkpoint"] for r in ctx.reports if r["checkpoint"] is not None}
    assert sorted(saved) == [2, 4, 6]
    shards = sorted((saved[4] / "ds").glob("*optim_states.pt"))
    assert shards, list((saved[4] / "ds").iterdir())
    shards[0].write_bytes(shards[0].read_bytes()[:1000])

    resumed = tmp_path / "resumed.jsonl"
    job = TrainJob(config=cfg, model_path=str(tiny_model_dir), metrics_path=str(resumed))
    capsys.readouterr()
    run_training(job, LocalContext(resume_from=[saved[4], saved[2]]), rows)
    out = capsys.readouterr().out
    assert f"checkpoint {saved[4]} is damaged: ds/{shards[0].name} has 1000 bytes" in out
    assert "(from step 2)" in out
    first = [json.loads(line) for line in clean.read_text().splitlines()]
    again = [json.loads(line) for line in resumed.read_text().splitlines()]
    assert [int(m["step"]) for m in again] == [3, 4, 5, 6]
    for a, b in zip(first[2:], again, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-8), a["step"]
