"""The global batch plan (what every worker trains on at every step) and the LR schedule."""

from __future__ import annotations

import numpy as np
import pytest

from valign_ray.config import TrainConfig
from valign_ray.train.batches import BatchPlan
from valign_ray.train.deepspeed_setup import deepspeed_config, lr_lambda


def test_counts() -> None:
    # 50 rows, 4 per worker x 2 workers x 2 accumulation = 16 per step -> 3 steps, 2 rows left.
    plan = BatchPlan(n_rows=50, micro_batch=4, world_size=2, grad_accum=2, epochs=2, seed=0)
    assert (plan.global_batch, plan.steps_per_epoch, plan.total_steps) == (16, 3, 6)
    assert plan.rows_skipped_per_epoch == 2
    assert BatchPlan(50, 4, 2, 2, 2, 0, max_steps=4).total_steps == 4


def test_workers_partition_each_step_and_one_worker_sees_the_same_rows() -> None:
    two = BatchPlan(n_rows=40, micro_batch=4, world_size=2, grad_accum=1, epochs=1, seed=7)
    one = BatchPlan(n_rows=40, micro_batch=8, world_size=1, grad_accum=1, epochs=1, seed=7)
    for step in range(two.total_steps):
        (r0,), (r1,) = two.worker_rows(step, 0), two.worker_rows(step, 1)
        (alone,) = one.worker_rows(step, 0)
        assert not set(r0) & set(r1)
        assert sorted([*r0, *r1]) == sorted(alone)
    # An epoch visits every row exactly once (40 rows, global batch 8: nothing left over).
    seen = np.concatenate([two.global_rows(s) for s in range(two.steps_per_epoch)])
    assert sorted(seen) == list(range(40))


def test_plan_is_a_function_of_seed_epoch_step_only() -> None:
    a = BatchPlan(n_rows=30, micro_batch=3, world_size=2, grad_accum=1, epochs=3, seed=1)
    b = BatchPlan(n_rows=30, micro_batch=3, world_size=2, grad_accum=1, epochs=3, seed=1)
    assert all(np.array_equal(a.global_rows(s), b.global_rows(s)) for s in range(a.total_steps))
    # Epochs reshuffle.
    assert not np.array_equal(a.global_rows(0), a.global_rows(a.steps_per_epoch))


def test_length_bucketing_keeps_the_step_rows_and_groups_similar_lengths() -> None:
    plan = BatchPlan(n_rows=16, micro_batch=2, world_size=2, grad_accum=2, epochs=1, seed=0)
    lengths = np.arange(16)[::-1] * 10  # row i has length (15 - i) * 10
    bucketed = plan.worker_rows(0, 0, lengths) + plan.worker_rows(0, 1, lengths)
    plain = plan.worker_rows(0, 0) + plan.worker_rows(0, 1)
    assert sorted(np.concatenate(bucketed)) == sorted(np.concatenate(plain))
    # Micro-step 0 holds the 4 shortest of the step's 8 rows, micro-step 1 the 4 longest.
    step_rows = plan.global_rows(0)
    shortest = set(step_rows[np.argsort(lengths[step_rows])][:4])
    assert set(plan.worker_rows(0, 0, lengths)[0]) | set(plan.worker_rows(0, 1, lengths)[0]) == (
        shortest
    )


def _padding(plan: BatchPlan, lengths: np.ndarray) -> float:
    """Share of padded positions over an epoch: each micro-batch pads to its longest row."""
    real = padded = 0
    for step in range(plan.steps_per_epoch):
        for rank in range(plan.world_size):
            for idx in plan.worker_rows(step, rank, lengths):
                real += lengths[idx].sum()
                padded += len(idx) * lengths[idx].max()
    return 1 - real / padded


def test_bucketing_across_steps_by_hand() -> None:
    """8 rows, global batch 2, windows of 2 steps: the epoch's permutation is cut into windows
    of 4 rows, each sorted by length and cut into 2 steps whose order is shuffled."""
    lengths = np.array([5, 1, 7, 3, 8, 2, 6, 4])
    plan = BatchPlan(8, 2, 1, 1, 1, seed=3, bucket_steps=2, lengths=lengths)
    order = np.random.default_rng([3, 0]).permutation(8)
    steps = [set(plan.global_rows(s)) for s in range(4)]
    for w, window in enumerate((order[:4], order[4:])):
        ranked = window[np.argsort(lengths[window], kind="stable")]
        short, long = set(ranked[:2]), set(ranked[2:])
        assert {frozenset(steps[2 * w]), frozenset(steps[2 * w + 1])} == {
            frozenset(short),
            frozenset(long),
        }


def test_bucketing_across_steps_keeps_epochs_workers_and_resume() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 400, 1000)  # survey-like spread of sequence lengths
    kw = dict(n_rows=1000, grad_accum=1, epochs=2, seed=5, lengths=lengths)
    two = BatchPlan(micro_batch=4, world_size=2, bucket_steps=16, **kw)
    one = BatchPlan(micro_batch=8, world_size=1, bucket_steps=16, **kw)
    plain = BatchPlan(micro_batch=4, world_size=2, bucket_steps=0, **kw)
    for step in range(two.total_steps):
        assert np.array_equal(two.global_rows(step), one.global_rows(step))
        (r0,), (r1,) = two.worker_rows(step, 0, lengths), two.worker_rows(step, 1, lengths)
        assert sorted([*r0, *r1]) == sorted(two.global_rows(step))
    for epoch in range(2):  # the same rows per epoch as uniform batches, in another order
        steps = range(epoch * two.steps_per_epoch, (epoch + 1) * two.steps_per_epoch)
        a = np.concatenate([two.global_rows(s) for s in steps])
        b = np.concatenate([plain.global_rows(s) for s in steps])
        assert sorted(a) == sorted(b) and not np.array_equal(a, b)
    # A fresh plan (a resumed worker) gives the same step rows, epochs out of order included.
    again = BatchPlan(micro_batch=4, world_size=2, bucket_steps=16, **kw)
    for step in (200, 3, 150):
        assert np.array_equal(again.global_rows(step), two.global_rows(step))
    # Padding: uniform 8-row batches of lengths 10..400 pad about 40 %; bucketed, under 10 %.
    assert _padding(plain, lengths) > 0.3
    assert _padding(two, lengths) < 0.1


def test_too_few_rows_is_an_error() -> None:
    with pytest.raises(ValueError, match="fewer than one global batch"):
        BatchPlan(n_rows=5, micro_batch=4, world_size=2, grad_accum=1, epochs=1, seed=0).validate()


def test_lr_schedule_by_hand() -> None:
    # warmup 2 of 10 steps: 0.5, 1.0, then linear decay over the 8 remaining: 1 - (s-2)/8.
    f = lr_lambda("linear", 2, 10)
    assert [f(s) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    c = lr_lambda("cosine", 0, 4)
    assert c(2) == pytest.approx(0.5)  # halfway: (1 + cos(pi/2)) / 2
    assert lr_lambda("constant", 0, 4)(3) == 1.0


def test_deepspeed_config_from_train_config() -> None:
    cfg = TrainConfig(batch_size=8, grad_accum=4, zero_stage=3, precision="bf16", grad_clip=0.5)
    ds = deepspeed_config(cfg, world_size=4)
    assert ds["train_batch_size"] == 128
    assert ds["zero_optimization"] == {"stage": 3}
    assert ds["bf16"] == {"enabled": True}
    assert ds["gradient_clipping"] == 0.5
