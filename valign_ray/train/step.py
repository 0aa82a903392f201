"""One micro-step of any method: tokenised rows in, local loss and metrics out.

Plain torch: reference log-probabilities arrive precomputed with the rows (see
:mod:`valign_ray.train.reference`), so a step runs only the policy. The method's own step
(``Method.step``) computes the loss; cross-worker sums it needs go through the context, already
reduced when the loss sees them. The returned loss is this worker's share of the *global*
weighted mean: the caller rescales it for DeepSpeed's averaging over workers and accumulation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from valign_ray.train.logprobs import Encoded, collate, completion_logps
from valign_ray.train.packing import collate_packed

if TYPE_CHECKING:
    import torch

    from valign_ray.methods.base import Method, StepInputs


def policy_logps(
    model: Any, enc: Sequence[Encoded], pad_id: int, *, pack_width: int = 0
) -> tuple[Any, Any, int, int]:
    """Summed completion log-probs, completion token counts, real and padded token counts.
    ``pack_width`` > 0 packs the sequences into rows of that many tokens
    (:mod:`valign_ray.train.packing`, ``train.packing``); 0 right-pads them."""
    if pack_width:
        batch = collate_packed(enc, pad_id, pack_width)
    else:
        batch = collate(enc, pad_id)
    logps, counts = completion_logps(model, batch)
    return logps, counts, sum(e.length for e in enc), batch["input_ids"].numel()


def group_rewards(rewards: torch.Tensor, rows: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Weighted mean reward per respondent group (``rewards/group/<g>``), NaN where a group has
    no row in this micro-batch (the loop then leaves it out of the step's mean).

    Pass rewards signed so that positive means "moved towards what the respondent wanted"
    (KTO: +r for desirable, -r for undesirable completions; DPO: the implicit reward margin).
    """
    if "group_id" not in rows:
        return {}
    r = rewards.detach()
    out = {}
    for gid, name in enumerate(rows["group_names"]):
        mask = (rows["group_id"] == gid).float() * rows["weight"]
        total = mask.sum()
        out[f"rewards/group/{name}"] = (
            (r * mask).sum() / total if total > 0 else r.new_tensor(float("nan"))
        )
    return out


def micro_step(
    method: Method, params: Any, inputs: StepInputs
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and metrics of one micro-batch under ``method``; metrics gain ``tokens`` and
    ``padded_tokens`` (for throughput and the padding fraction)."""
    loss, metrics, real, padded = method.step(inputs, params)
    metrics = dict(metrics)
    metrics["tokens"] = loss.new_tensor(float(real))
    metrics["padded_tokens"] = loss.new_tensor(float(padded))
    return loss, metrics
