"""What a training method *is*, declared in one place: :class:`Method`.

A method (KTO, DPO, SFT, later CAI's stages) is one module under :mod:`valign_ray.methods` that
builds a ``METHOD = Method(...)``. The engine (rows -> reference scoring -> training step), the
sweeps and the report look the method up by ``loss.name`` and read these fields; none of them
branches on a method's name. See docs/ARCHITECTURE.md, "Adding a method".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    import torch

    from valign_ray.config import LossConfig, PipelineConfig
    from valign_ray.train.context import TrainContext
    from valign_ray.train.logprobs import Encoded

# Applies a pure polars row builder to the training answers (Ray Data ``map_batches``, or
# ``map_groups`` per respondent when ``per_respondent``) and returns the rows in canonical order.
MapAnswers = Callable[..., pl.DataFrame]


@dataclass(frozen=True)
class RowInputs:
    """What a method's row builder gets: the config, the training answers and the lookups."""

    cfg: PipelineConfig
    answers: pl.DataFrame  # the training split of the canonical answers table
    items: pl.DataFrame
    candidates: pl.DataFrame
    respondents: pl.DataFrame  # with a ``weight`` column
    map_answers: MapAnswers  # see MapAnswers above

    @property
    def lookups(self) -> dict[str, Any]:
        """The keyword arguments every builder of :mod:`valign_ray.data.builders` takes."""
        return dict(
            items=self.items,
            candidates=self.candidates,
            respondents=self.respondents,
            group_column=self.cfg.data.group_column,
        )


@dataclass(frozen=True)
class StepInputs:
    """One micro-batch as a method's step sees it.

    ``rows``: ``weight`` (and the method's ``bool_columns``/``float_columns`` and reference
    columns) as tensors, plus ``group_id``/``group_names`` when rows carry groups. ``enc``: the
    tokenised sequences named in ``Method.sequences``. A step scores sequences with
    :meth:`policy_logps`, which lays the batch out as the run asks (padded or packed).
    """

    model: Any
    rows: dict[str, Any]
    enc: dict[str, list[Encoded]]
    ctx: TrainContext
    weight_total: float  # the global weight sum of this optimiser step
    pad_id: int
    pack_width: int = 0  # > 0: train.packing, rows of up to this many tokens; 0: padded

    def policy_logps(self, enc: list[Encoded]) -> tuple[Any, Any, int, int]:
        """:func:`valign_ray.train.step.policy_logps` of ``enc`` under this step's model:
        summed completion log-probs, completion token counts, real and padded token counts."""
        from valign_ray.train.step import policy_logps

        return policy_logps(self.model, enc, self.pad_id, pack_width=self.pack_width)


# A step returns this worker's share of the global weighted mean loss, its metrics, and the
# (real, padded) token counts of the forward passes it ran.
StepOutput = tuple["torch.Tensor", dict[str, "torch.Tensor"], int, int]


@dataclass(frozen=True)
class Method:
    """A training method: its config keys, rows, reference columns, step, report and sweeps."""

    name: str
    # loss.* keys the method reads (its config schema); the report shows these.
    loss_keys: tuple[str, ...]
    # loss.* keys that change the training rows: part of the datasets stage's fingerprint and
    # never swept (a sweep shares one prepared dataset).
    data_keys: tuple[str, ...]
    # loss.* keys a sweep may vary.
    sweepable: tuple[str, ...]
    # Tokenised sequence name -> the completion column scored after ``prompt``.
    sequences: dict[str, str]
    # (completion column, output column) scored once by the frozen reference model.
    reference: tuple[tuple[str, str], ...]
    # Builds the training rows (with ``row_idx``, ``weight``, ``group``, ``prompt``).
    build_rows: Callable[[RowInputs], pl.DataFrame]
    # Resolves the loss numbers from the config (and the rows, e.g. KTO's ``lambda: auto``).
    params: Callable[[PipelineConfig, pl.DataFrame], Any]
    # One micro-step: loss, metrics and token counts (see StepOutput).
    step: Callable[[StepInputs, Any], StepOutput]
    bool_columns: tuple[str, ...] = ()  # row columns the step needs as bool tensors
    float_columns: tuple[str, ...] = ()  # row columns the step needs as float tensors
    label_column: str | None = None  # the dataset card's per-label shares
    # Raises ConfigError when the config asks for something this method cannot do.
    check: Callable[[PipelineConfig], None] = field(default=lambda cfg: None)

    @property
    def reference_columns(self) -> tuple[str, ...]:
        return tuple(out for _, out in self.reference)

    def report_rows(self, loss: LossConfig) -> list[list[Any]]:
        """(key, value) rows of this method's loss settings, for the report."""
        return [["loss", self.name], *([k, getattr(loss, k)] for k in self.loss_keys)]

    def tensor_columns(self) -> dict[str, str]:
        """Row column -> "bool" or "float": what the loop turns into tensors for the step."""
        out = dict.fromkeys(self.bool_columns, "bool")
        out.update(dict.fromkeys((*self.float_columns, *self.reference_columns), "float"))
        return out


def local_map_answers(answers: pl.DataFrame, batch_size: int | None = None) -> MapAnswers:
    """A :data:`MapAnswers` without Ray: the builder over ``answers`` in one process (in batches
    of ``batch_size`` rows, or per respondent), then the rows in canonical order. The Ray Data
    version is :func:`valign_ray.distributed.data.map_answers_ray`; both give the same rows."""
    from valign_ray.data.builders import canonical_order

    def map_answers(builder: Any, per_respondent: bool = False, **tables: Any) -> pl.DataFrame:
        if per_respondent:
            parts = [builder(g, **tables) for _, g in answers.group_by("respondent_id")]
        else:
            size = batch_size or max(answers.height, 1)
            parts = [
                builder(answers.slice(i, size), **tables) for i in range(0, answers.height, size)
            ]
        return canonical_order(pl.concat(parts))

    return map_answers
