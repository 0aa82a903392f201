"""Alignment losses (KTO, DPO with conservative/soft labels and IPO, SFT) as plain tensor functions.

Every loss takes per-example log-probabilities (summed over completion tokens, see
``logprobs.completion_logps``), per-example survey weights and plain numbers, and returns
``(loss, metrics)``: a scalar loss and a small dict of detached tensors.

Weighting convention, shared by all losses::

    loss = sum_i w_i * loss_i / weight_total

``weight_total`` is the *global* weight sum of the optimiser step: over every worker and every
gradient-accumulation micro-batch. The caller computes it once (an all-reduce of local sums), so the
per-micro-batch losses *add up* to the full-batch loss and the gradient does not depend on how the
batch was split. Under DDP/DeepSpeed, which average gradients over ``N`` workers, the caller scales
the summed loss by ``N`` (or reduces with a sum). Nothing here calls ``torch.distributed``.

Metrics are local to the call (means over this micro-batch, weighted); a mean over an empty
subset is NaN, so aggregate them with ``nanmean`` or pool via the returned counts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Metrics = dict[str, "torch.Tensor"]


def _check_batch(**tensors: torch.Tensor) -> int:
    """All arguments must be 1-D and of one length; returns that length."""
    sizes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(sizes.values()))
    if len(first) != 1 or any(s != first for s in sizes.values()):
        raise ValueError(f"expected 1-D tensors of one length [B], got shapes {sizes}")
    return first[0]


def _check_number(
    name: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = True,
    why: str = "",
) -> float:
    """``value`` as a float, or a ValueError naming ``name``, the value and the allowed range.

    A bool is not a number here (``True > 0``), nor is NaN or a tensor of more than one element.
    """
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):
        x = math.nan
    above = x > low if low_open else x >= low
    below = x < high if high_open else x <= high
    if isinstance(value, bool) or not (above and below):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must lie in {interval}{why}, got {value!r}")
    return x


def _check_weights(weights: torch.Tensor, weight_total: float | torch.Tensor | None) -> None:
    import torch

    if not torch.all(torch.isfinite(weights) & (weights >= 0)):
        raise ValueError(f"weights must be finite and >= 0, got {weights.tolist()}")
    if weight_total is not None:
        _check_number(
            "weight_total", weight_total, low=0, low_open=True, why=" (the global weight sum)"
        )


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w v) / sum(w), NaN where the weights sum to 0 (no such examples in this batch)."""
    return (weights * values).sum() / weights.sum()


# --------------------------------------------------------------------------------------------
# KTO
# --------------------------------------------------------------------------------------------


def kto_kl_terms(
    kl_policy_logps: torch.Tensor, kl_reference_logps: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local sums for KTO's reference point: ``(sum_j w_j (pi_j - ref_j), sum_j w_j)``, detached.

    The logps score MISMATCHED pairs (prompt ``x_j`` with another example's completion), an
    estimate of KL(pi || pi_ref) under the prompt distribution. The caller all-reduces both sums
    across workers (and micro-batches, if pooled) and passes them to :func:`kto_reference_point`.
    Detached because the paper does not backpropagate through z0, so the mismatched forward
    may run under ``torch.no_grad``.
    """
    _check_batch(
        kl_policy_logps=kl_policy_logps, kl_reference_logps=kl_reference_logps, weights=weights
    )
    _check_weights(weights, None)
    diff = (kl_policy_logps - kl_reference_logps).detach()
    w = weights.detach().to(diff.dtype)
    return (w * diff).sum(), w.sum()


def kto_reference_point(
    kl_weighted_sum: torch.Tensor | float, kl_weight_sum: torch.Tensor | float
) -> torch.Tensor:
    """KTO reference point ``z0 = max(0, sum w (pi - ref) / sum w)``, detached.

    A *pooled* weighted mean over all workers' mismatched pairs (not a mean of per-worker means,
    which would over-count small or lightly weighted shards). Clamped at 0 because a KL
    divergence cannot be negative; the sample estimate can be.
    """
    import torch

    s = torch.as_tensor(kl_weighted_sum).detach()
    s = s if s.is_floating_point() else s.float()
    w = torch.as_tensor(kl_weight_sum, dtype=s.dtype, device=s.device).detach()
    if not float(w) > 0:
        raise ValueError(f"kl_weight_sum must be > 0 (no weighted mismatched pairs?), got {w}")
    return (s / w).clamp(min=0.0)


def kto_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    desirable: torch.Tensor,
    weights: torch.Tensor,
    *,
    z0: torch.Tensor | float,
    beta: float,
    lambda_d: float,
    lambda_u: float,
    weight_total: float | torch.Tensor,
) -> tuple[torch.Tensor, Metrics]:
    """Kahneman-Tversky Optimisation (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect
    Theoretic Optimization", eq. 7-8).

    Intuition: each example is a single completion labelled desirable or undesirable (a survey
    rating, no pair needed). The implied reward ``r = log pi(y|x) - log pi_ref(y|x)`` is
    judged against a reference point ``z0`` (the policy's KL from the reference, see
    :func:`kto_reference_point`) through a sigmoid "value function", which saturates, so
    examples that are already far on the right side stop pulling.

    Formula, with ``r_i = policy_i - reference_i``::

        loss_i = lambda_d * (1 - sigmoid(beta * (r_i - z0)))   if desirable_i
        loss_i = lambda_u * (1 - sigmoid(beta * (z0 - r_i)))   otherwise
        loss   = sum_i w_i loss_i / weight_total

    With all ``w_i = 1`` and ``weight_total = B`` this is TRL's ``KTOTrainer`` loss
    (``desirable_weight = lambda_d``, ``undesirable_weight = lambda_u``). Metrics: ``z0``,
    weighted means of ``beta * r`` over desirable / undesirable examples and their margin, and
    the example counts.
    """
    import torch
    import torch.nn.functional as F

    _check_batch(
        policy_logps=policy_logps,
        reference_logps=reference_logps,
        desirable=desirable,
        weights=weights,
    )
    if desirable.dtype != torch.bool:
        raise ValueError(f"desirable must be a BoolTensor, got dtype {desirable.dtype}")
    _check_weights(weights, weight_total)
    _check_number("beta", beta, low=0, low_open=True)
    lambdas = [
        _check_number(n, v, low=0) for n, v in (("lambda_d", lambda_d), ("lambda_u", lambda_u))
    ]
    if lambdas == [0.0, 0.0]:
        raise ValueError("lambda_d and lambda_u are both 0: every example would weigh nothing")

    z0 = torch.as_tensor(z0, dtype=policy_logps.dtype, device=policy_logps.device).detach()
    r = policy_logps - reference_logps
    value = torch.where(desirable, F.sigmoid(beta * (r - z0)), F.sigmoid(beta * (z0 - r)))
    # Built in r's dtype: torch.where on Python floats would round the lambdas to float32.
    lam = torch.where(desirable, r.new_tensor(lambda_d), r.new_tensor(lambda_u))
    w = weights.to(r.dtype)
    loss = (w * lam * (1.0 - value)).sum() / weight_total

    rewards = beta * r.detach()
    w_d, w_u = w * desirable, w * ~desirable
    reward_d, reward_u = _weighted_mean(rewards, w_d), _weighted_mean(rewards, w_u)
    metrics = {
        "z0": z0,
        "rewards/desirable": reward_d,
        "rewards/undesirable": reward_u,
        "rewards/margin": reward_d - reward_u,
        "count/desirable": desirable.sum().detach(),
        "count/undesirable": (~desirable).sum().detach(),
    }
    return loss, metrics


def kto_auto_lambdas(weight_desirable: float, weight_undesirable: float) -> tuple[float, float]:
    """``(lambda_d, lambda_u)`` balancing the two classes by their survey-weighted totals.

    The KTO paper (eq. 8) recommends ``lambda_d * n_d / (lambda_u * n_u)`` in ``[1, 4/3]``. With
    survey weights the counts ``n`` are the *weighted* totals ``W_d``, ``W_u``. We put the ratio
    at 1, the low end: each class contributes the same total weight, so the loss carries no
    built-in lean toward "desirable" that the survey did not express. The larger lambda is 1 (the
    minority class keeps full weight, the majority is scaled down), so every per-example loss
    stays in [0, 1]; scaling both lambdas by a constant would only change the learning rate::

        W_d >= W_u:  lambda_d = W_u / W_d,  lambda_u = 1
        W_d <  W_u:  lambda_d = 1,          lambda_u = W_d / W_u
    """
    for name, v in (
        ("weight_desirable", weight_desirable),
        ("weight_undesirable", weight_undesirable),
    ):
        if not float(v) > 0:
            raise ValueError(f"{name} must be > 0 to balance KTO classes, got {v}")
    w_d, w_u = float(weight_desirable), float(weight_undesirable)
    if w_d >= w_u:
        return w_u / w_d, 1.0
    return 1.0, w_d / w_u


# --------------------------------------------------------------------------------------------
# DPO
# --------------------------------------------------------------------------------------------


def soft_label_smoothing(share: float | torch.Tensor) -> float | torch.Tensor:
    """Label-smoothing ``eps = 1 - s`` for a pair whose chosen side has weighted share ``s``.

    When the survey aggregates respondents' choices on a pair (chosen A over B with weighted
    share ``s``), DPO with ``eps = 1 - s`` is exactly the weighted sum of hard-label DPO over the
    respondents (``s`` of the weight says A > B, ``1 - s`` says B > A). Setting the derivative
    of ``-(s logsigmoid(beta h) + (1 - s) logsigmoid(-beta h))`` to 0 gives
    ``sigmoid(beta h*) = s``: the policy's implied preference probability matches the
    population's split (distributional alignment) instead of pushing ``h`` to infinity toward
    the majority. ``s = 1`` is plain DPO.
    """
    import torch

    if isinstance(share, torch.Tensor):
        if not torch.all((share >= 0) & (share <= 1)):
            raise ValueError(f"share must lie in [0, 1], got {share.tolist()}")
        return 1.0 - share
    if not 0.0 <= float(share) <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share}")
    return 1.0 - float(share)


def _smoothing_tensor(label_smoothing: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """DPO's label-flip probability as a scalar or [B] tensor in [0, 1]."""
    import torch

    eps = torch.as_tensor(label_smoothing, dtype=like.dtype, device=like.device)
    if eps.dim() not in (0, 1) or (eps.dim() == 1 and eps.shape != like.shape):
        raise ValueError(
            f"label_smoothing must be a number or a [B] tensor, got shape {tuple(eps.shape)} "
            f"for B={like.shape[0]}"
        )
    if not torch.all((eps >= 0) & (eps <= 1)):
        raise ValueError(f"label_smoothing must lie in [0, 1], got {eps.tolist()}")
    return eps


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    weights: torch.Tensor,
    *,
    beta: float,
    weight_total: float | torch.Tensor,
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid",
    label_smoothing: float | torch.Tensor = 0.0,
) -> tuple[torch.Tensor, Metrics]:
    """Direct Preference Optimisation (Rafailov et al. 2023) and its IPO variant.

    Intuition: DPO fits the Bradley-Terry preference model with the implied reward
    ``beta * log(pi / pi_ref)``, so no separate reward model is trained. With the log-ratio
    margin ``h = (pc - rc) - (pr - rr)`` (policy/reference, chosen/rejected, summed logps)::

        sigmoid: loss_i = -((1 - eps) * logsigmoid(beta h) + eps * logsigmoid(-beta h))
        ipo:     loss_i = (1 - eps) * (h - 1/(2 beta))^2 + eps * (h + 1/(2 beta))^2
        loss = sum_i w_i loss_i / weight_total

    ``eps`` (``label_smoothing``, a number or a per-pair tensor) is the probability that the
    label is flipped: a constant ``eps`` is conservative DPO (Mitchell 2023); a per-pair
    ``eps = 1 - s`` from :func:`soft_label_smoothing` gives soft labels, optimum
    ``sigmoid(beta h*) = s``. IPO (Azar et al. 2023, "A General Theoretical Paradigm to
    Understand Learning from Human Preferences", eq. 17) regresses ``h`` onto ``1/(2 beta)``
    instead of pushing it to infinity; with ``eps`` the target becomes ``(1 - 2 eps)/(2 beta)``.

    TRL parity: ``sigmoid`` with ``eps = 0`` is TRL's ``loss_type="sigmoid"``. TRL's ``"robust"``
    is a different (noise-unbiased) estimator, not this one. TRL's ``"ipo"`` divides each
    log-ratio by its completion's token count; pass per-token mean logps here to reproduce it.
    Metrics (weighted): mean ``beta*(pc - rc)``, mean ``beta*(pr - rr)``, their margin, and the
    share of pairs with ``h > 0`` (accuracy).
    """
    import torch
    import torch.nn.functional as F

    _check_batch(
        policy_chosen=policy_chosen,
        policy_rejected=policy_rejected,
        ref_chosen=ref_chosen,
        ref_rejected=ref_rejected,
        weights=weights,
    )
    _check_weights(weights, weight_total)
    _check_number("beta", beta, low=0, low_open=True)
    if not isinstance(label_smoothing, torch.Tensor):
        # A constant eps >= 1/2 trusts each label no more than its flip: conservative DPO
        # needs eps < 1/2. A per-pair tensor (soft labels, 1 - share) may take all of [0, 1].
        _check_number("label_smoothing", label_smoothing, low=0, high=0.5)
    eps = _smoothing_tensor(label_smoothing, policy_chosen)

    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    h = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        per_pair = -((1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h))
    elif loss_type == "ipo":
        target = 1.0 / (2.0 * beta)
        per_pair = (1 - eps) * (h - target) ** 2 + eps * (h + target) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; valid: 'sigmoid', 'ipo'")
    w = weights.to(h.dtype)
    loss = (w * per_pair).sum() / weight_total

    reward_c, reward_r = beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
    metrics = {
        "rewards/chosen": _weighted_mean(reward_c, w),
        "rewards/rejected": _weighted_mean(reward_r, w),
        "rewards/margin": _weighted_mean(reward_c - reward_r, w),
        "rewards/accuracy": _weighted_mean((h.detach() > 0).to(h.dtype), w),
    }
    return loss, metrics


# --------------------------------------------------------------------------------------------
# SFT
# --------------------------------------------------------------------------------------------


def sft_loss(
    token_logps_sum: torch.Tensor,
    token_counts: torch.Tensor,
    weights: torch.Tensor,
    *,
    weight_total: float | torch.Tensor,
) -> tuple[torch.Tensor, Metrics]:
    """Supervised fine-tuning: weighted mean over examples of each example's mean token NLL.

    Formula: ``nll_i = -token_logps_sum_i / token_counts_i``; ``loss = sum_i w_i nll_i /
    weight_total``. Per example, not per token: a survey weight belongs to a respondent, so a
    respondent's answer counts by their weight whatever its length; a token-level mean would
    give long answers (and so verbose respondents) more say than the weighting intends.
    Metrics: the local weighted mean NLL and the number of completion tokens.
    """
    _check_batch(token_logps_sum=token_logps_sum, token_counts=token_counts, weights=weights)
    _check_weights(weights, weight_total)
    if not bool((token_counts > 0).all()):
        raise ValueError(f"token_counts must be > 0 for every example, got {token_counts.tolist()}")
    nll = -token_logps_sum / token_counts.to(token_logps_sum.dtype)
    w = weights.to(nll.dtype)
    loss = (w * nll).sum() / weight_total
    metrics = {"nll": _weighted_mean(nll.detach(), w), "tokens": token_counts.sum().detach()}
    return loss, metrics
