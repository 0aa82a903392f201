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
