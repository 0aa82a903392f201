"""Hand-computed values and invariances of the alignment losses (no model, milliseconds each)."""

from __future__ import annotations

import math

import pytest
import torch

from valign_ray.train.losses import (
    dpo_loss,
    kto_auto_lambdas,
    kto_kl_terms,
    kto_loss,
    kto_reference_point,
    sft_loss,
    soft_label_smoothing,
)


def t(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ------------------------------------------------------------------------------------- KTO


def test_kto_single_examples_by_hand() -> None:
    """beta=0.1, z0=0.5.
    desirable, r = -3 - (-5) = 2: sigmoid(0.1*(2-0.5)) = sigmoid(0.15) = 0.53743 -> loss 0.46257.
    undesirable, r = -8 - (-5) = -3: sigmoid(0.1*(0.5+3)) = sigmoid(0.35) = 0.58662 -> 0.41338.
    """
    kw = dict(z0=0.5, beta=0.1, lambda_d=1.0, lambda_u=1.0, weight_total=1.0)
    loss_d, _ = kto_loss(t(-3.0), t(-5.0), torch.tensor([True]), t(1.0), **kw)
    loss_u, _ = kto_loss(t(-8.0), t(-5.0), torch.tensor([False]), t(1.0), **kw)
    assert loss_d.item() == pytest.approx(0.4625702, abs=1e-6)
    assert loss_u.item() == pytest.approx(0.4133824, abs=1e-6)


def test_kto_weighted_batch_by_hand() -> None:
    """Same two examples, weights [1, 3], lambda_d=1, lambda_u=0.5, weight_total=4:
    (1 * 1 * 0.4625702 + 3 * 0.5 * 0.4133824) / 4 = (0.4625702 + 0.6200736) / 4 = 0.2706609.
    Rewards beta*r: desirable 0.2, undesirable -0.3, margin 0.5.
    """
    loss, m = kto_loss(
        t(-3.0, -8.0),
        t(-5.0, -5.0),
        torch.tensor([True, False]),
        t(1.0, 3.0),
        z0=0.5,
        beta=0.1,
        lambda_d=1.0,
        lambda_u=0.5,
        weight_total=4.0,
    )
    assert loss.item() == pytest.approx(0.2706609, abs=1e-6)
    assert m["z0"].item() == pytest.approx(0.5)
    assert m["rewards/desirable"].item() == pytest.approx(0.2)
    assert m["rewards/undesirable"].item() == pytest.approx(-0.3)
    assert m["rewards/margin"].item() == pytest.approx(0.5)
    assert (m["count/desirable"].item(), m["count/undesirable"].item()) == (1, 1)
    assert all(not v.requires_grad for v in m.values())


def test_kto_reference_point_is_a_pooled_weighted_mean() -> None:
    """Mismatched-pair log-ratios [1.0, 0.2, -0.3], weights [1, 2, 1]:
    weighted sum = 1.0 + 0.4 - 0.3 = 1.1, weight sum = 4 -> z0 = 0.275.
    """
    s, w = kto_kl_terms(t(1.0, 0.2, -0.3), t(0.0, 0.0, 0.0), t(1.0, 2.0, 1.0))
    assert (s.item(), w.item()) == pytest.approx((1.1, 4.0))
    assert kto_reference_point(s, w).item() == pytest.approx(0.275)


def test_kto_reference_point_clamps_at_zero_and_is_detached() -> None:
    """Log-ratios [-1, -2], weights 1 -> mean -1.5 -> clamped to 0. No gradient reaches the
    mismatched-pair policy logps through z0 (the paper treats z0 as a constant)."""
    kl_policy = t(-1.0, -2.0, grad=True)
    s, w = kto_kl_terms(kl_policy, t(0.0, 0.0), t(1.0, 1.0))
    z0 = kto_reference_point(s, w)
    assert z0.item() == 0.0 and not z0.requires_grad

    kl_policy = t(3.0, 1.0, grad=True)  # mean 2 > 0: not clamped, still no gradient
    z0 = kto_reference_point(*kto_kl_terms(kl_policy, t(0.0, 0.0), t(1.0, 1.0)))
    assert z0.item() == pytest.approx(2.0)
    policy = t(-3.0, -4.0, grad=True)
    loss, _ = kto_loss(
        policy, t(-5.0, -5.0), torch.tensor([True, False]), t(1.0, 1.0),
        z0=z0, beta=0.1, lambda_d=1.0, lambda_u=1.0, weight_total=2.0,
    )  # fmt: skip
    loss.backward()
    assert kl_policy.grad is None
    assert policy.grad is not None and torch.all(policy.grad != 0)


def test_kto_reference_point_rejects_zero_weight() -> None:
    with pytest.raises(ValueError, match="kl_weight_sum"):
        kto_reference_point(torch.tensor(0.0), torch.tensor(0.0))


def test_kto_unit_weights_equal_the_unweighted_mean() -> None:
    """All weights 1 and weight_total = B: the plain mean of the per-example formula, written
    out independently with math."""
    gen = torch.Generator().manual_seed(0)
    pol, ref = (
        -10 * torch.rand(8, generator=gen, dtype=torch.float64),
        -10 * torch.rand(8, generator=gen, dtype=torch.float64),
    )
    des = torch.tensor([True, False, True, True, False, False, True, False])
    beta, z0, ld, lu = 0.3, 0.4, 1.0, 1.2
    loss, _ = kto_loss(
        pol, ref, des, torch.ones(8, dtype=torch.float64),
        z0=z0, beta=beta, lambda_d=ld, lambda_u=lu, weight_total=8.0,
    )  # fmt: skip
    by_hand = []
    for p, r, d in zip(pol.tolist(), ref.tolist(), des.tolist(), strict=True):
        x = p - r
        by_hand.append(
            ld * (1 - _sigmoid(beta * (x - z0))) if d else lu * (1 - _sigmoid(beta * (z0 - x)))
        )
    assert loss.item() == pytest.approx(sum(by_hand) / 8, abs=1e-12)


def test_kto_split_over_two_shards_matches_full_batch() -> None:
    """Shards of 2 and 4 examples with uneven weights. Each shard reports its KL sums, which are
    added as an all-reduce would; each shard divides by the GLOBAL weight total. The shard losses
    then add up to the full-batch loss and their gradients (accumulated by two backward calls,
    as micro-batches would) equal the full-batch gradient."""
    gen = torch.Generator().manual_seed(1)
    pol = -5 * torch.rand(6, generator=gen, dtype=torch.float64)
    ref = -5 * torch.rand(6, generator=gen, dtype=torch.float64)
    kl_pol = -5 * torch.rand(6, generator=gen, dtype=torch.float64)
    kl_ref = kl_pol - torch.tensor([2.0, 1.5, 0.1, 0.0, -0.2, 0.1], dtype=torch.float64)
    des = torch.tensor([True, False, False, True, True, False])
    w = t(3.0, 2.5, 0.5, 0.5, 1.0, 0.5)
    kw = dict(beta=0.5, lambda_d=1.0, lambda_u=0.8, weight_total=w.sum())

    full_pol = pol.clone().requires_grad_(True)
    z0_full = kto_reference_point(*kto_kl_terms(kl_pol, kl_ref, w))
    loss_full, _ = kto_loss(full_pol, ref, des, w, z0=z0_full, **kw)
    loss_full.backward()

    shard_pol = pol.clone().requires_grad_(True)
    shards = [slice(0, 2), slice(2, 6)]
    sums = [kto_kl_terms(kl_pol[s], kl_ref[s], w[s]) for s in shards]
    z0 = kto_reference_point(sum(x[0] for x in sums), sum(x[1] for x in sums))
    total = 0.0
    for s in shards:
        loss_s, _ = kto_loss(shard_pol[s], ref[s], des[s], w[s], z0=z0, **kw)
        loss_s.backward()
        total += loss_s.item()

    assert z0.item() == pytest.approx(z0_full.item(), abs=1e-12)
    assert total == pytest.approx(loss_full.item(), abs=1e-12)
    torch.testing.assert_close(shard_pol.grad, full_pol.grad, rtol=0, atol=1e-12)
    # Log-ratios [2, 1.5, 0.1, 0, -0.2, 0.1]: shard sums 3*2 + 2.5*1.5 = 9.75 over weight 5.5 and
    # 0.05 + 0 - 0.2 + 0.05 = -0.1 over 2.5. Pooled z0 = 9.65 / 8 = 1.20625; a mean of per-shard
    # means, (9.75/5.5 - 0.1/2.5) / 2 = 0.86636, would be wrong.
    means = [(x[0] / x[1]).item() for x in sums]
    assert z0.item() == pytest.approx(1.20625)
    assert sum(means) / 2 == pytest.approx(0.86636, abs=1e-5)


def test_kto_metrics_for_a_missing_class_are_nan() -> None:
    """A micro-batch with only desirable examples: the undesirable mean is undefined (NaN, count
    0), the loss is still finite: 1 - sigmoid(0.1 * 1.5) = 0.4625702."""
    loss, m = kto_loss(
        t(-3.0), t(-5.0), torch.tensor([True]), t(1.0),
        z0=0.5, beta=0.1, lambda_d=1.0, lambda_u=1.0, weight_total=1.0,
    )  # fmt: skip
    assert loss.item() == pytest.approx(0.4625702, abs=1e-6)
    assert math.isnan(m["rewards/undesirable"].item()) and m["count/undesirable"].item() == 0
    assert math.isnan(m["rewards/margin"].item())


def test_kto_auto_lambdas_both_directions() -> None:
    """W_d=30, W_u=10 -> (10/30, 1); W_d=5, W_u=20 -> (1, 5/20); equal -> (1, 1). The weighted
    ratio lambda_d W_d / (lambda_u W_u) is 1, inside the paper's [1, 4/3]."""
    assert kto_auto_lambdas(30.0, 10.0) == pytest.approx((1 / 3, 1.0))
    assert kto_auto_lambdas(5.0, 20.0) == pytest.approx((1.0, 0.25))
    assert kto_auto_lambdas(7.0, 7.0) == (1.0, 1.0)
    for w_d, w_u in [(30.0, 10.0), (5.0, 20.0), (1.3, 977.2)]:
        ld, lu = kto_auto_lambdas(w_d, w_u)
        assert 1.0 - 1e-12 <= ld * w_d / (lu * w_u) <= 4 / 3
        assert max(ld, lu) == 1.0
    with pytest.raises(ValueError, match="weight_undesirable"):
        kto_auto_lambdas(3.0, 0.0)


def test_kto_rejects_bad_input() -> None:
    kw = dict(z0=0.0, beta=0.1, lambda_d=1.0, lambda_u=1.0, weight_total=2.0)
    with pytest.raises(ValueError, match="BoolTensor"):
        kto_loss(t(1.0, 2.0), t(1.0, 2.0), torch.tensor([1, 0]), t(1.0, 1.0), **kw)
    with pytest.raises(ValueError, match="shapes"):
        kto_loss(t(1.0, 2.0), t(1.0), torch.tensor([True, False]), t(1.0, 1.0), **kw)
    with pytest.raises(ValueError, match="weights"):
        kto_loss(t(1.0, 2.0), t(1.0, 2.0), torch.tensor([True, False]), t(1.0, -1.0), **kw)
    with pytest.raises(ValueError, match="weight_total"):
        kto_loss(t(1.0), t(1.0), torch.tensor([True]), t(1.0), **{**kw, "weight_total": 0.0})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"beta": 0.0}, r"beta must lie in \(0, inf\), got 0.0"),
        ({"beta": -0.1}, r"beta must lie in \(0, inf\), got -0.1"),
        ({"beta": math.nan}, "beta must lie in"),
        ({"beta": True}, "beta must lie in .* got True"),
        ({"lambda_d": -1.0}, r"lambda_d must lie in \[0, inf\), got -1.0"),
        ({"lambda_u": math.inf}, "lambda_u must lie in"),
        ({"lambda_d": 0.0, "lambda_u": 0.0}, "both 0"),
        ({"weight_total": -2.0}, r"weight_total must lie in \(0, inf\) \(the global weight sum\)"),
        ({"weight_total": torch.tensor(0.0)}, "weight_total"),
    ],
)
def test_kto_rejects_bad_numbers(change: dict, message: str) -> None:
    kw = dict(z0=0.0, beta=0.1, lambda_d=1.0, lambda_u=1.0, weight_total=2.0) | change
    with pytest.raises(ValueError, match=message):
        kto_loss(t(1.0, 2.0), t(1.0, 2.0), torch.tensor([True, False]), t(1.0, 1.0), **kw)


def test_kto_one_zero_lambda_is_allowed() -> None:
    """lambda_u = 0 drops the undesirable example: only the desirable one counts, with value
    1 - sigmoid(0) = 0.5 for r = z0 = 0, weight 1, total 2 -> loss 0.25."""
    loss, _ = kto_loss(
        t(1.0, 2.0),
        t(1.0, 2.0),
        torch.tensor([True, False]),
        t(1.0, 1.0),
        z0=0.0,
        beta=0.1,
        lambda_d=1.0,
        lambda_u=0.0,
        weight_total=2.0,
    )
    assert loss.item() == pytest.approx(0.25)


# ------------------------------------------------------------------------------------- DPO


def test_dpo_sigmoid_and_conservative_by_hand() -> None:
    """pc=-5, pr=-7, rc=-6, rr=-6: h = (-5+6) - (-7+6) = 2; beta=0.5 -> beta*h = 1.
    eps=0:   -logsigmoid(1) = log(1 + e^-1) = 0.3132617.
    eps=0.1: 0.9 * 0.3132617 + 0.1 * (-logsigmoid(-1) = 1.3132617) = 0.4132617.
    Rewards: chosen 0.5*1 = 0.5, rejected 0.5*(-1) = -0.5, margin 1, accuracy 1.
    """
    args = (t(-5.0), t(-7.0), t(-6.0), t(-6.0), t(1.0))
    loss, m = dpo_loss(*args, beta=0.5, weight_total=1.0)
    assert loss.item() == pytest.approx(0.3132617, abs=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(0.5)
    assert m["rewards/rejected"].item() == pytest.approx(-0.5)
    assert m["rewards/margin"].item() == pytest.approx(1.0)
    assert m["rewards/accuracy"].item() == 1.0
    loss, _ = dpo_loss(*args, beta=0.5, weight_total=1.0, label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.4132617, abs=1e-6)


def test_dpo_ipo_by_hand() -> None:
    """h = 2. beta=1: target 1/(2*1) = 0.5 -> (2 - 0.5)^2 = 2.25. beta=0.25: target 2 -> 0.
    beta=1, eps=0.25: 0.75 * 2.25 + 0.25 * (2 + 0.5)^2 = 1.6875 + 1.5625 = 3.25."""
    args = (t(-5.0), t(-7.0), t(-6.0), t(-6.0), t(1.0))
    assert dpo_loss(*args, beta=1.0, weight_total=1.0, loss_type="ipo")[0].item() == 2.25
    assert dpo_loss(*args, beta=0.25, weight_total=1.0, loss_type="ipo")[0].item() == 0.0
    loss, _ = dpo_loss(*args, beta=1.0, weight_total=1.0, loss_type="ipo", label_smoothing=0.25)
    assert loss.item() == pytest.approx(3.25)


def test_dpo_unit_weights_equal_the_unweighted_mean() -> None:
    gen = torch.Generator().manual_seed(2)
    pc, pr, rc, rr = (-10 * torch.rand(5, generator=gen, dtype=torch.float64) for _ in range(4))
    beta = 0.2
    loss, m = dpo_loss(
        pc, pr, rc, rr, torch.ones(5, dtype=torch.float64), beta=beta, weight_total=5
    )
    hs = [
        (a - c) - (b - d)
        for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), strict=True)
    ]
    assert loss.item() == pytest.approx(sum(-math.log(_sigmoid(beta * h)) for h in hs) / 5)
    assert m["rewards/accuracy"].item() == pytest.approx(sum(h > 0 for h in hs) / 5)


def test_dpo_split_over_two_shards_matches_full_batch() -> None:
    gen = torch.Generator().manual_seed(3)
    pc, pr, rc, rr = (-10 * torch.rand(5, generator=gen, dtype=torch.float64) for _ in range(4))
    w, eps = t(0.5, 2.0, 1.0, 3.0, 0.2), t(0.0, 0.3, 0.1, 0.5, 0.9)
    kw = dict(beta=0.2, weight_total=w.sum())
    full = pc.clone().requires_grad_(True)
    loss_full, _ = dpo_loss(full, pr, rc, rr, w, label_smoothing=eps, **kw)
    loss_full.backward()
    split, total = pc.clone().requires_grad_(True), 0.0
    for s in (slice(0, 3), slice(3, 5)):
        loss_s, _ = dpo_loss(split[s], pr[s], rc[s], rr[s], w[s], label_smoothing=eps[s], **kw)
        loss_s.backward()
        total += loss_s.item()
    assert total == pytest.approx(loss_full.item(), abs=1e-12)
    torch.testing.assert_close(split.grad, full.grad, rtol=0, atol=1e-12)


def test_soft_labels_reach_the_population_share_at_the_optimum() -> None:
    """share s=0.7 -> eps=0.3; beta=0.1. Closed form: sigmoid(beta h*) = 0.7 ->
    h* = ln(0.7/0.3)/0.1 = 8.47298. Found here by LBFGS on h alone."""
    eps = soft_label_smoothing(0.7)
    assert eps == pytest.approx(0.3)
    h = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [h], max_iter=200, tolerance_grad=1e-14, tolerance_change=0, line_search_fn="strong_wolfe"
    )
    zero = t(0.0)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss, _ = dpo_loss(
            h, zero, zero, zero, t(1.0), beta=0.1, weight_total=1.0, label_smoothing=eps
        )
        loss.backward()
        return loss

    opt.step(closure)
    assert h.item() == pytest.approx(8.47298, abs=1e-4)
    assert _sigmoid(0.1 * h.item()) == pytest.approx(0.7, abs=1e-6)


def test_soft_label_pair_equals_weighted_hard_labels() -> None:
    """7 respondents (weight 1 each) prefer A over B, 3 prefer B over A. Hard-label DPO over the
    10 rows (the 3 with A and B swapped) equals one soft-label pair, weight 10, eps = 1 - 0.7,
    for any log-probs: the soft label is the aggregation, not an approximation."""
    a, b, ra, rb = -4.0, -6.5, -5.0, -5.5
    hard_pc = t(*[a] * 7 + [b] * 3)
    hard_pr = t(*[b] * 7 + [a] * 3)
    hard_rc = t(*[ra] * 7 + [rb] * 3)
    hard_rr = t(*[rb] * 7 + [ra] * 3)
    for loss_type in ("sigmoid", "ipo"):
        kw = dict(beta=0.3, weight_total=10.0, loss_type=loss_type)
        hard, _ = dpo_loss(
            hard_pc, hard_pr, hard_rc, hard_rr, torch.ones(10, dtype=torch.float64), **kw
        )
        eps = soft_label_smoothing(torch.tensor([0.7], dtype=torch.float64))
        soft, _ = dpo_loss(t(a), t(b), t(ra), t(rb), t(10.0), label_smoothing=eps, **kw)
        assert soft.item() == pytest.approx(hard.item(), abs=1e-12)


def test_soft_ipo_optimum() -> None:
    """IPO with eps: minimiser h* = (1 - 2 eps) / (2 beta); eps=0.3, beta=0.1 -> 0.4/0.2 = 2.
    The gradient vanishes there and not at the hard-label target 1/(2 beta) = 5."""
    for h_val, zero_grad in ((2.0, True), (5.0, False)):
        h = t(h_val, grad=True)
        z = t(0.0)
        loss, _ = dpo_loss(
            h, z, z, z, t(1.0), beta=0.1, weight_total=1.0, loss_type="ipo", label_smoothing=0.3
        )
        loss.backward()
        assert (abs(h.grad.item()) < 1e-12) is zero_grad


def test_soft_label_smoothing_rejects_out_of_range() -> None:
    torch.testing.assert_close(soft_label_smoothing(t(1.0, 0.25)), t(0.0, 0.75))
    with pytest.raises(ValueError, match="share"):
        soft_label_smoothing(1.2)
    with pytest.raises(ValueError, match="share"):
        soft_label_smoothing(t(0.5, -0.1))


def test_dpo_rejects_bad_input() -> None:
    args = (t(-5.0, -1.0), t(-7.0, -1.0), t(-6.0, -1.0), t(-6.0, -1.0), t(1.0, 1.0))
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(*args, beta=0.1, weight_total=2.0, loss_type="hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(*args, beta=0.1, weight_total=2.0, label_smoothing=t(0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(*args, beta=0.1, weight_total=2.0, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"beta must lie in \(0, inf\), got -1"):
        dpo_loss(*args, beta=-1, weight_total=2.0)
    with pytest.raises(ValueError, match=r"weight_total must lie in \(0, inf\)"):
        dpo_loss(*args, beta=0.1, weight_total=0.0)


@pytest.mark.parametrize("eps", [-0.1, 0.5, 0.9, math.nan])
def test_dpo_constant_label_smoothing_must_be_below_one_half(eps: float) -> None:
    """A constant eps >= 1/2 trusts each label no more than its flip."""
    args = (t(-5.0, -1.0), t(-7.0, -1.0), t(-6.0, -1.0), t(-6.0, -1.0), t(1.0, 1.0))
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 0.5\)"):
        dpo_loss(*args, beta=0.1, weight_total=2.0, label_smoothing=eps)


def test_dpo_per_pair_label_smoothing_takes_all_of_zero_one() -> None:
    """Soft labels pass eps = 1 - share per pair, so 0.9 is fine there: one pair, h = 0,
    sigmoid loss -(0.1 + 0.9) * log(1/2) = log 2."""
    loss, _ = dpo_loss(
        t(-1.0),
        t(-1.0),
        t(-1.0),
        t(-1.0),
        t(1.0),
        beta=0.1,
        weight_total=1.0,
        label_smoothing=t(0.9),
    )
    assert loss.item() == pytest.approx(math.log(2))


# ------------------------------------------------------------------------------------- SFT


def test_sft_per_example_mean_by_hand() -> None:
    """Sums [-6, -2] over [3, 4] tokens -> per-example NLL [2, 0.5]; weights [1, 3], total 4:
    (1*2 + 3*0.5) / 4 = 0.875. (A token-level mean, 8/7 = 1.143 unweighted, is not what we want:
    a respondent's weight should not grow with the length of their answer.)"""
    loss, m = sft_loss(t(-6.0, -2.0), torch.tensor([3, 4]), t(1.0, 3.0), weight_total=4.0)
    assert loss.item() == pytest.approx(0.875)
    assert m["nll"].item() == pytest.approx(0.875)
    assert m["tokens"].item() == 7


def test_sft_unit_weights_and_shards() -> None:
    """Weights 1: the plain mean of per-example NLLs (2 + 0.5 + 1) / 3 = 7/6. Split [0:1], [1:3]
    with the global total 3: the parts add up to the same number."""
    sums, counts, w = t(-6.0, -2.0, -5.0), torch.tensor([3, 4, 5]), t(1.0, 1.0, 1.0)
    full, _ = sft_loss(sums, counts, w, weight_total=3.0)
    assert full.item() == pytest.approx(7 / 6)
    parts = [
        sft_loss(sums[s], counts[s], w[s], weight_total=3.0)[0].item()
        for s in (slice(0, 1), slice(1, 3))
    ]
    assert sum(parts) == pytest.approx(7 / 6)
    with pytest.raises(ValueError, match="token_counts"):
        sft_loss(sums, torch.tensor([3, 0, 5]), w, weight_total=3.0)
    with pytest.raises(ValueError, match="weight_total"):
        sft_loss(sums, counts, w, weight_total=-3.0)
