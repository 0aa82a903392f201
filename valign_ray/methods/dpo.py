"""DPO (Rafailov et al. 2023) on survey pairs: sigmoid or IPO, conservative label smoothing, or
soft labels (the weighted share of respondents preferring ``chosen``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from valign_ray.config_loader import ConfigError
from valign_ray.methods.base import Method, RowInputs, StepInputs, StepOutput

if TYPE_CHECKING:
    from valign_ray.config import PipelineConfig


@dataclass(frozen=True)
class DPOParams:
    beta: float
    dpo_type: str
    label_smoothing: float
    soft_labels: bool


def build_rows(inp: RowInputs) -> pl.DataFrame:
    """Pairs from one respondent's ratings (Ray Data per respondent: a batch boundary would
    lose pairs); with soft labels, one pair per (prompt, two responses) with its share."""
    from valign_ray.data.builders import aggregate_pairs, build_dpo_pairs, canonical_order

    rows = inp.map_answers(build_dpo_pairs, per_respondent=True, **inp.lookups)
    if inp.cfg.loss.soft_labels:
        rows = canonical_order(aggregate_pairs(rows.drop("row_idx")))
    return rows


def resolve_params(cfg: PipelineConfig, rows: pl.DataFrame) -> DPOParams:
    loss = cfg.loss
    return DPOParams(loss.beta, loss.dpo_type, loss.label_smoothing, loss.soft_labels)


def step(inp: StepInputs, params: DPOParams) -> StepOutput:
    from valign_ray.train import losses
    from valign_ray.train.step import group_rewards

    rows, n = inp.rows, len(inp.enc["chosen"])
    # Chosen and rejected in one forward pass.
    logps, _, real, padded = inp.policy_logps([*inp.enc["chosen"], *inp.enc["rejected"]])
    smoothing: Any = params.label_smoothing
    if params.soft_labels:
        smoothing = losses.soft_label_smoothing(rows["share"])
    loss, metrics = losses.dpo_loss(
        logps[:n],
        logps[n:],
        rows["ref_chosen_logp"],
        rows["ref_rejected_logp"],
        rows["weight"],
        beta=params.beta,
        weight_total=inp.weight_total,
        loss_type=params.dpo_type,
        label_smoothing=smoothing,
    )
    h = (logps[:n] - rows["ref_chosen_logp"]) - (logps[n:] - rows["ref_rejected_logp"])
    return loss, {**metrics, **group_rewards(params.beta * h, rows)}, real, padded


def check(cfg: PipelineConfig) -> None:
    if cfg.data.answers != "ratings":
        raise ConfigError("data.answers: likert answers train with loss.name=kto, not dpo")
    if "auto" in (cfg.loss.lambda_d, cfg.loss.lambda_u):
        raise ConfigError("loss.lambda_d / lambda_u = auto applies to loss.name=kto only")


METHOD = Method(
    name="dpo",
    loss_keys=("beta", "dpo_type", "label_smoothing", "soft_labels"),
    data_keys=("soft_labels",),
    sweepable=("beta", "label_smoothing"),
    sequences={"chosen": "chosen", "rejected": "rejected"},
    reference=(("chosen", "ref_chosen_logp"), ("rejected", "ref_rejected_logp")),
    build_rows=build_rows,
    params=resolve_params,
    step=step,
    float_columns=("share",),
    check=check,
)
