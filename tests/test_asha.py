"""ASHA stops a weak trial: the project's sweep file (validation), scheduler, Tuner and summary
(``distributed/tune.py: new_tuner``, ``_record``; ``sweeps._summarise``), with a cheap function
trainable in place of the training trial (the real one takes minutes per trial).

Hand-worked: grace_period 2, reduction_factor 2, max_t 8 put rungs at iterations 2 and 4. The
good trial (lr 0.001) runs first (one trial at a time) and records loss 1.0 - 0.1 x 2 = 0.8 at
rung 2. The weak one (lr 0.5, loss 5 at every step) reaches rung 2 with 5.0; the cutoff of
rung 2 is the 50th percentile of the recorded {0.8}, i.e. 0.8, and 5.0 is worse: stopped at
iteration 2 of its 8 steps, never evaluated. The good trial trains its 8 steps, then reports
its held-out metric."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from tests.asha_trial import STEPS, fake_trial
from valign_ray.sweeps import load_sweep


def test_asha_stops_the_weak_trial_early(ray_session, tmp_path: Path) -> None:
    from valign_ray.distributed.tune import TuneOutcome, _record, new_tuner
    from valign_ray.sweeps import _summarise

    sweep_file = tmp_path / "sweep.yaml"
    asha = {"metric": "loss", "mode": "min", "grace_period": 2, "reduction_factor": 2}
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "sweep": {
                    "space": {"train.lr": {"grid": [0.001, 0.5]}},
                    "scheduler": "asha",
                    "asha": {**asha, "max_t": STEPS},
                    "max_concurrent_trials": 1,
                    "num_samples": 1,
                },
                "pipeline": {"wandb": {"enabled": False}},
            }
        )
    )
    sweep = load_sweep(sweep_file).sweep
    tuner, experiment_dir = new_tuner(fake_trial, sweep, tmp_path)
    records = [_record(res, ["train.lr"]) for res in tuner.fit()]
    assert len(records) == 2
    by_lr = {r["train.lr"]: r for r in records}
    good, weak = by_lr[0.001], by_lr[0.5]
    assert weak["status"] == "stopped"
    assert weak["training_iteration"] == 2 and weak["step"] == 2 < STEPS
    assert weak["loss"] == 5.0 and weak["model_dir"] is None
    assert good["status"] == "ok" and good["training_iteration"] == STEPS + 1

    result = _summarise(sweep, tmp_path, TuneOutcome(records, experiment_dir, False), {})
    assert result["n_stopped"] == 1 and result["best"]["point"] == {"train.lr": 0.001}
    with (tmp_path / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["status"], float(r["train.lr"])) for r in rows] == [("ok", 0.001), ("stopped", 0.5)]
    assert json.loads((tmp_path / "best.json").read_text())["n_stopped"] == 1
