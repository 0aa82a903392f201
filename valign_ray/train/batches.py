"""Deterministic global batches: which rows every worker trains on at every step.

Each epoch is a seeded permutation of the rows, cut into global batches of
``micro_batch * world_size * grad_accum`` rows; worker ``r`` takes every ``world_size``-th row of
each micro-batch slice. Because a step's rows are a function of (seed, epoch, step) alone, a run
resumed at step k trains on exactly the rows an uninterrupted run would, and a 1-worker run sees
the same global batches as a 2-worker one. Within a step, rows can be ordered by length
(length bucketing) so micro-batches pad less. Rows of a final partial global batch are carried into
no step of that epoch (the next epoch's permutation differs); the count is reported.

Across steps (``bucket_steps`` > 0, with the rows' ``lengths``): each window of that many global
batches of the epoch's permutation is sorted by length, cut into global batches, and the batches'
order within the window is shuffled (seeded). A step then holds rows of similar length, so even
at ``grad_accum=1`` little is padding; each epoch still trains on the same rows as without it, and
the plan stays a function of (seed, epoch, step, lengths), so resume and the 1-vs-2-worker
equivalence hold. The price: a step's rows are less random (similar lengths often mean the same
survey item), so the gradient noise differs from uniform batches; hence it is a choice, off by
default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class BatchPlan:
    n_rows: int
    micro_batch: int  # rows per worker per micro-step
    world_size: int
    grad_accum: int
    epochs: int
    seed: int
    max_steps: int | None = None
    bucket_steps: int = 0  # > 0: similar-length rows share a step, within windows of this many
    lengths: np.ndarray | None = field(default=None, compare=False, repr=False)  # tokens per row
    _orders: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.world_size * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        return self.n_rows // self.global_batch

    @property
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.epochs
        return total if self.max_steps is None else min(total, self.max_steps)

    @property
    def rows_skipped_per_epoch(self) -> int:
        return self.n_rows - self.steps_per_epoch * self.global_batch

    def validate(self) -> None:
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{self.n_rows} training rows are fewer than one global batch "
                f"({self.micro_batch} per worker x {self.world_size} workers x "
                f"{self.grad_accum} accumulation steps = {self.global_batch})"
            )

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Every row index of ``epoch`` in training order (cached: a step asks twice)."""
        if epoch not in self._orders:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n_rows)
            if self.bucket_steps > 0 and self.lengths is not None:
                order = self._bucketed(order, np.random.default_rng([self.seed, epoch, 1]))
            self._orders.clear()  # one epoch at a time
            self._orders[epoch] = order
        return self._orders[epoch]

    def _bucketed(self, order: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        assert self.lengths is not None
        usable = self.steps_per_epoch * self.global_batch
        window = self.bucket_steps * self.global_batch
        parts = []
        for start in range(0, usable, window):
            chunk = order[start : min(start + window, usable)]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches = chunk.reshape(-1, self.global_batch)
            parts.append(batches[rng.permutation(len(batches))].ravel())
        return np.concatenate([*parts, order[usable:]])

    def global_rows(self, step: int) -> np.ndarray:
        """Row indices of optimizer step ``step`` (all workers, all micro-steps)."""
        epoch, within = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        return order[within * self.global_batch : (within + 1) * self.global_batch]

    def worker_rows(
        self, step: int, rank: int, lengths: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """This worker's row indices for each micro-step of optimizer step ``step``.

        With ``lengths`` (tokens per row), the step's rows are ordered by length first, so each
        micro-batch holds sequences of similar length and pads less. The step's row set, and so
        the gradient of its global weighted loss, is unchanged.
        """
        rows = self.global_rows(step)
        if lengths is not None:
            rows = rows[np.argsort(lengths[rows], kind="stable")]
        per_micro = self.micro_batch * self.world_size
        return [
            rows[m * per_micro : (m + 1) * per_micro][rank :: self.world_size]
            for m in range(self.grad_accum)
        ]
