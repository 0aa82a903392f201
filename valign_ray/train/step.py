"""One micro-step of each method: tokenised rows in, local loss and metrics out.

Plain torch: reference log-probabilities arrive precomputed with the rows (see
:mod:`valign_ray.train.reference`), so a step runs only the policy. The one cross-worker sum a
step needs (KTO's reference point) goes through the context, already reduced when the loss sees
it. The returned loss is this worker's share of the *global* weighted mean: the caller rescales
it for DeepSpeed's averaging over workers and accumulation steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from valign_ray.train import losses
from valign_ray.train.logprobs import Encoded, collate, completion_logps

if TYPE_CHECKING:
    import torch

    from valign_ray.train.context import TrainContext


@dataclass(frozen=True)
class LossParams:
    """The numbers a loss needs, resolved from the config (``lambda: auto`` already applied)."""

    name: str
    beta: float
    lambda_d: float = 1.0
    lambda_u: float = 1.0
    dpo_type: str = "sigmoid"
    label_smoothing: float = 0.0
    soft_labels: bool = False


def _policy_logps(model: Any, enc: Sequence[Encoded], pad_id: int) -> tuple[Any, Any, int, int]:
    batch = collate(enc, pad_id)
    logps, counts = completion_logps(model, batch)
    real = int(batch["attention_mask"].sum())
    return logps, counts, real, batch["input_ids"].numel()


def group_rewards(rewards: torch.Tensor, rows: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Weighted mean reward per respondent group (``rewards/group/<g>``), NaN where a group has
    no row in this micro-batch (the loop then leaves it out of the step's mean).

    KTO: signed so that desirable completions count +r and undesirable -r, i.e. how far the
    model moved each group's preferences its way. DPO: the implicit reward margin.
    """
    import torch

    if "group_id" not in rows:
        return {}
    r = rewards.detach()
    if "label" in rows:
        r = torch.where(rows["label"], r, -r)
    out = {}
    for gid, name in enumerate(rows["group_names"]):
        mask = (rows["group_id"] == gid).float() * rows["weight"]
        total = mask.sum()
        out[f"rewards/group/{name}"] = (
            (r * mask).sum() / total if total > 0 else r.new_tensor(float("nan"))
        )
    return out


def micro_step(
    model: Any,
    rows: dict[str, Any],
    enc: dict[str, Sequence[Encoded]],
    params: LossParams,
    ctx: TrainContext,
    *,
    weight_total: float,
    pad_id: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and metrics for one micro-batch of ``rows`` (columns as tensors / lists).

    ``enc`` holds the tokenised sequences: ``completion`` (KTO, SFT), ``kl`` (KTO), ``chosen``
    and ``rejected`` (DPO). Metrics include ``tokens`` and ``padded_tokens`` for throughput.
    """
    import torch

    weights = rows["weight"]
    if params.name == "kto":
        logps, _, real, padded = _policy_logps(model, enc["completion"], pad_id)
        with torch.no_grad():
            kl_logps, _, kl_real, kl_padded = _policy_logps(model, enc["kl"], pad_id)
        kl_sum, kl_wsum = losses.kto_kl_terms(kl_logps, rows["ref_kl_logp"], weights)
        pooled = ctx.all_reduce_sum(torch.stack([kl_sum, kl_wsum]))
        z0 = losses.kto_reference_point(pooled[0], pooled[1])
        loss, metrics = losses.kto_loss(
            logps,
            rows["ref_logp"],
            rows["label"],
            weights,
            z0=z0,
            beta=params.beta,
            lambda_d=params.lambda_d,
            lambda_u=params.lambda_u,
            weight_total=weight_total,
        )
        metrics.update(group_rewards(params.beta * (logps - rows["ref_logp"]), rows))
        real, padded = real + kl_real, padded + kl_padded
    elif params.name == "dpo":
        n = len(enc["chosen"])
        logps, _, real, padded = _policy_logps(
            model, list(enc["chosen"]) + list(enc["rejected"]), pad_id
        )
        smoothing: Any = params.label_smoothing
        if params.soft_labels:
            smoothing = losses.soft_label_smoothing(rows["share"])
        loss, metrics = losses.dpo_loss(
            logps[:n],
            logps[n:],
            rows["ref_chosen_logp"],
            rows["ref_rejected_logp"],
            weights,
            beta=params.beta,
            weight_total=weight_total,
            loss_type=params.dpo_type,
            label_smoothing=smoothing,
        )
        h = (logps[:n] - rows["ref_chosen_logp"]) - (logps[n:] - rows["ref_rejected_logp"])
        metrics.update(group_rewards(params.beta * h, rows))
    elif params.name == "sft":
        logps, counts, real, padded = _policy_logps(model, enc["completion"], pad_id)
        loss, metrics = losses.sft_loss(logps, counts, weights, weight_total=weight_total)
    else:
        raise ValueError(f"unknown loss {params.name!r}; valid: kto, dpo, sft")
    metrics = dict(metrics)
    metrics["tokens"] = loss.new_tensor(float(real))
    metrics["padded_tokens"] = loss.new_tensor(float(padded))
    return loss, metrics
