"""KTO (Ethayarajh et al. 2024): each survey rating is a desirable or undesirable example
carrying its respondent's survey weight; the reference point z0 is pooled over every worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from valign_ray.config_loader import ConfigError
from valign_ray.methods.base import Method, RowInputs, StepInputs, StepOutput

if TYPE_CHECKING:
    from valign_ray.config import PipelineConfig


@dataclass(frozen=True)
class KTOParams:
    beta: float
    lambda_d: float
    lambda_u: float


def build_rows(inp: RowInputs) -> pl.DataFrame:
    """One row per rating (or per Likert answer), then each row's KL completion, once, over the
    whole frame in canonical order (so it cannot depend on how Ray cut the batches)."""
    from valign_ray.data.builders import assign_kl_completions, build_kto_rows, canonical_order

    cfg = inp.cfg
    if cfg.data.answers == "likert":
        from valign_ray.data.likert import POLIS_OPTIONS, build_likert_kto_rows

        rows = canonical_order(
            build_likert_kto_rows(
                inp.answers,
                inp.items,
                inp.respondents,
                group_column=cfg.data.group_column,
                options=dict(cfg.data.likert_options or POLIS_OPTIONS),
            )
        )
    else:
        rows = inp.map_answers(build_kto_rows, **inp.lookups)
    return assign_kl_completions(rows, seed=cfg.data.split_seed)


def resolve_params(cfg: PipelineConfig, rows: pl.DataFrame) -> KTOParams:
    """``lambda: auto`` balances the weighted label totals (one side may be given)."""
    from valign_ray.train.losses import kto_auto_lambdas

    loss = cfg.loss
    lambda_d, lambda_u = loss.lambda_d, loss.lambda_u
    if "auto" in (lambda_d, lambda_u):
        w = rows["weight"] if cfg.train.weighted else pl.Series([1.0] * rows.height)
        lab = rows["label"]
        w_d, w_u = float(w.filter(lab).sum()), float(w.filter(~lab).sum())
        if lambda_d == "auto" and lambda_u == "auto":
            lambda_d, lambda_u = kto_auto_lambdas(w_d, w_u)
        elif lambda_d == "auto":  # keep the given side; balance lambda_d W_d = lambda_u W_u
            lambda_d = float(lambda_u) * w_u / w_d
        else:
            lambda_u = float(lambda_d) * w_d / w_u
    return KTOParams(beta=loss.beta, lambda_d=float(lambda_d), lambda_u=float(lambda_u))


def step(inp: StepInputs, params: KTOParams) -> StepOutput:
    import torch

    from valign_ray.train import losses
    from valign_ray.train.step import group_rewards

    rows = inp.rows
    logps, _, real, padded = inp.policy_logps(inp.enc["completion"])
    with torch.no_grad():
        kl_logps, _, kl_real, kl_padded = inp.policy_logps(inp.enc["kl"])
    kl_sum, kl_wsum = losses.kto_kl_terms(kl_logps, rows["ref_kl_logp"], rows["weight"])
    # The one cross-worker sum of a step: z0 is an estimate over the whole global batch.
    pooled = inp.ctx.all_reduce_sum(torch.stack([kl_sum, kl_wsum]))
    loss, metrics = losses.kto_loss(
        logps,
        rows["ref_logp"],
        rows["label"],
        rows["weight"],
        z0=losses.kto_reference_point(pooled[0], pooled[1]),
        beta=params.beta,
        lambda_d=params.lambda_d,
        lambda_u=params.lambda_u,
        weight_total=inp.weight_total,
    )
    reward = params.beta * (logps - rows["ref_logp"])
    signed = torch.where(rows["label"], reward, -reward)
    metrics = {**metrics, **group_rewards(signed, rows)}
    return loss, metrics, real + kl_real, padded + kl_padded


def check(cfg: PipelineConfig) -> None:
    if cfg.loss.soft_labels:
        raise ConfigError("loss.soft_labels: applies to loss.name=dpo only")


METHOD = Method(
    name="kto",
    loss_keys=("beta", "lambda_d", "lambda_u"),
    data_keys=(),
    sweepable=("beta", "lambda_d", "lambda_u"),
    sequences={"completion": "completion", "kl": "kl_completion"},
    reference=(("completion", "ref_logp"), ("kl_completion", "ref_kl_logp")),
    build_rows=build_rows,
    params=resolve_params,
    step=step,
    bool_columns=("label",),
    label_column="label",
    check=check,
)
