"""A cheap stand-in for a sweep trial (tests/test_asha.py), importable by Ray workers as
``tests.asha_trial``: a loss per training step, then the held-out report, as ``_trial`` does."""

from __future__ import annotations

STEPS = 8


def fake_trial(point: dict) -> None:
    """lr above 0.1 is the weak trial: loss 5 at every step; otherwise 1 - 0.1 x step."""
    from ray import tune

    weak = point["train.lr"] > 0.1
    for step in range(1, STEPS + 1):
        tune.report({"loss": 5.0 if weak else 1.0 - 0.1 * step, "step": step})
    tune.report({"eval_preference_accuracy": 0.7, "loss": 0.2, "model_dir": "model", "step": 9})
