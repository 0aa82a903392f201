"""Faults a long run survives: the driver killed with SIGKILL mid-training, then the same
command again. Finished stages are skipped by fingerprint and Ray Train resumes from the last
committed checkpoint, ending with exactly the parameters of the uninterrupted smoke run.

(A training worker process killed with SIGKILL is tests/test_training_ray.py's
``test_resume_after_a_worker_failure_is_bit_exact[sigkill]``.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from valign_ray.models import load_model

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray


def _command(out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "valign_ray.cli",
        "run",
        "configs/smoke.yaml",
        "--output-dir",
        str(out),
        # Its own embedded Ray (not the test session's), checkpoints every 4 steps.
        "--set",
        "ray.address=local",
        "--set",
        "ray.num_cpus=3",
        "--set",
        "train.checkpoint_every=4",
        "--set",
        "wandb.enabled=false",
    ]


def _wait_for_steps(
    metrics: Path, proc: subprocess.Popen, steps: int, timeout: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:]
            raise AssertionError(
                f"the run ended (rc={proc.returncode}) before step {steps}:\n{tail}"
            )
        if metrics.exists() and len(metrics.read_text().splitlines()) >= steps:
            return
        time.sleep(0.5)
    raise AssertionError(f"no step {steps} within {timeout} s")


def test_driver_killed_mid_training_resumes_on_rerun(smoke_run, tmp_path: Path) -> None:
    cfg, clean = smoke_run
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(
        _command(out), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill takes its Ray with it
    )  # fmt: skip
    metrics = out / "smoke" / "train_metrics.jsonl"
    try:
        # past the step-4 checkpoint
        _wait_for_steps(metrics, proc, steps=6, timeout=600, log=tmp_path / "first.log")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "smoke" / "model").exists()  # it died mid-training
    again = subprocess.run(
        _command(out), cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for stage in ("survey", "weights", "constitution", "datasets", "model", "reference"):
        assert f"[{stage}] skipped: fingerprint" in again.stdout, stage
    assert "[train] ..." in again.stdout
    # The resumed run starts from the last committed checkpoint, a positive multiple of 4, and
    # appends to the first run's lines (a fresh start would have emptied the file).
    start = re.search(r"steps of \d+ \(from step (\d+)\)", again.stdout + again.stderr)
    assert start, again.stdout[-3000:]
    resumed_from = int(start.group(1))
    assert resumed_from > 0 and resumed_from % 4 == 0, resumed_from
    steps = [int(json.loads(line)["step"]) for line in metrics.read_text().splitlines()]
    assert steps[0] == 1 and steps[-1] == clean.results["train"].metrics["step"]
    # The first run logged at least up to that checkpoint; the steps it logged after it (none,
    # when the kill landed just after a checkpoint) appear again from step resumed_from + 1.
    first_run = steps[: steps.index(resumed_from) + 1]
    assert first_run == list(range(1, resumed_from + 1)), steps
    rest = steps[len(first_run) :]
    logged_twice = len(rest) - (steps[-1] - resumed_from)
    assert logged_twice >= 0, steps
    assert rest[:logged_twice] == list(range(resumed_from + 1, resumed_from + 1 + logged_twice))
    assert rest[logged_twice:] == list(range(resumed_from + 1, steps[-1] + 1)), steps
    _check_quiet_output((tmp_path / "first.log").read_text(), again.stdout, again.stderr)
    resumed = load_model(out / "smoke" / "model").state_dict()
    reference = load_model(cfg.run_dir / "model").state_dict()
    for key, value in reference.items():
        assert torch.equal(value, resumed[key]), key


NOISE = (
    "streaming_executor",  # Ray Data's INFO lines
    "Writing model shards",  # transformers' progress bars
    "Loading weights",
    "DeprecationWarning",
    "FutureWarning",
    "built successfully",  # DeepSpeed's op build line
    "Progress bars disabled",
    "Checkpoint successfully created",  # Ray Train's INFO lines
)


def _without_tracebacks(lines: list[str]) -> list[str]:
    """The lines less the frames of tracebacks: Ray logs some transient warnings with one when
    the machine is overloaded (a shared test machine), and warnings keep showing."""
    out, frames = [], False
    for line in lines:
        frames = line == "Traceback (most recent call last):" or (frames and line[:1] == " ")
        if not frames:
            out.append(line)
    return out


def _check_quiet_output(first: str, again_out: str, again_err: str) -> None:
    """The default output of the two CLI runs: no library noise, a progress line with an ETA,
    and, put together as one fresh run would print it (the first run's lines up to training,
    the rerun's from training on), at most 60 lines."""
    for text in (first, again_out + again_err):
        for noise in NOISE:
            assert noise not in text, (noise, text[-3000:])
    assert not re.search(r"\(\w[\w()]* pid=\d+", first + again_out + again_err)  # Ray's prefixes
    assert re.search(r"^\[train\] step \d+/\d+  loss -?\d\.\d{4}  .*eta \d+[hms]", again_out, re.M)
    before_train = first.splitlines()[: first.splitlines().index("[train] ...")]
    from_train = again_out.splitlines()[again_out.splitlines().index("[train] ...") :]
    lines = _without_tracebacks([*before_train, *from_train, *again_err.splitlines()])
    assert len(lines) <= 60, "\n".join(lines)
