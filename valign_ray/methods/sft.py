"""Weighted SFT on survey demonstrations: each prompt with its response of highest weighted
approval, weighted by the raters behind it. No reference model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from valign_ray.config_loader import ConfigError
from valign_ray.methods.base import Method, RowInputs, StepInputs, StepOutput

if TYPE_CHECKING:
    from valign_ray.config import PipelineConfig


@dataclass(frozen=True)
class SFTParams:
    pass


def build_rows(inp: RowInputs) -> pl.DataFrame:
    """An aggregate over respondents: one polars pass, not per Ray Data batch."""
    from valign_ray.data.builders import build_sft_rows, canonical_order

    rows = build_sft_rows(inp.answers, **inp.lookups)
    return canonical_order(rows.with_columns(pl.lit("all").alias("group")))


def resolve_params(cfg: PipelineConfig, rows: pl.DataFrame) -> SFTParams:
    return SFTParams()


def step(inp: StepInputs, params: SFTParams) -> StepOutput:
    from valign_ray.train import losses

    logps, counts, real, padded = inp.policy_logps(inp.enc["completion"])
    loss, metrics = losses.sft_loss(
        logps, counts, inp.rows["weight"], weight_total=inp.weight_total
    )
    return loss, metrics, real, padded


def check(cfg: PipelineConfig) -> None:
    if cfg.data.answers != "ratings":
        raise ConfigError("data.answers: likert answers train with loss.name=kto, not sft")


METHOD = Method(
    name="sft",
    loss_keys=(),
    data_keys=(),
    sweepable=(),
    sequences={"completion": "completion"},
    reference=(),
    build_rows=build_rows,
    params=resolve_params,
    step=step,
    check=check,
)
