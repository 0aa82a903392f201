"""End-to-end parity of our KTO and DPO losses with TRL 1.16 on a tiny local model.

TRL builds the batch (tokenisation, KL pairs, padding); TRL computes its loss with
``trainer.compute_loss``. We then cut TRL's rows back into (prompt ids, completion ids) using
its ``completion_mask``, re-collate them with our ``logprobs.collate``, score them with our
``logprobs.completion_logps`` (the LM head on completion positions in checkpointed chunks;
TRL has its own fused chunked head) and feed our losses. Same model objects, same token ids,
unweighted (all weights 1).

What TRL does, read from ``trl/trainer/kto_trainer.py`` and ``dpo_trainer.py`` (1.16):
- KTO mismatched pairs: completions are rotated by +1 within each batch of
  ``per_device_train_batch_size``, so prompt ``i`` is paired with the PREVIOUS example's
  completion ``i-1`` (prompt 0 with the last one), not the next one. The KL logps of both the
  policy and the reference are computed under ``no_grad``.
- KTO z0: ``mean(KL_policy - KL_ref)`` over the local batch, then a mean over processes of those
  means, clamped at 0. In one process this is our pooled weighted mean with weights 1; across
  workers of unequal batch size it differs by design (ours pools sums, see ``kto_reference_point``).
- KTO loss: ``nanmean(cat(desirable_weight * L_d, undesirable_weight * L_u))``, i.e. ours with
  ``weight_total = B``, ``lambda_d = desirable_weight``, ``lambda_u = undesirable_weight``.
- DPO: ``input_ids`` holds the B chosen rows then the B rejected rows; ``loss_type="sigmoid"``
  ignores ``label_smoothing``. ``loss_type="ipo"`` divides each log-ratio by its completion's
  token count, so we pass per-token mean logps to our IPO. TRL's ``"robust"`` is not
  conservative DPO; its ``"aot"`` sorts log-ratios across the batch, which with a single pair is
  the identity, and then it IS conservative DPO: that is how label smoothing is cross-checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from valign_ray.config import TinyConfig  # noqa: E402
from valign_ray.models import build_tiny_model, load_model, load_tokenizer  # noqa: E402
from valign_ray.train.logprobs import Encoded, collate, completion_logps  # noqa: E402
from valign_ray.train.losses import (  # noqa: E402
    dpo_loss,
    kto_kl_terms,
    kto_loss,
    kto_reference_point,
)

TEXTS = [
    "Should the city build more bike lanes?",
    "Yes, bike lanes make streets safer for everyone.",
    "No, the roads need the space for cars and buses.",
    "Is public transport worth what it costs?",
    "Absolutely, it serves people who cannot drive.",
    "It is a waste of money that few people use.",
]
PROMPTS = [
    "Should the city build bike lanes?",
    "Is public transport worth it?",
    "Should bike lanes replace parking?",
    "Is the cost worth it?",
]
SPEC = TinyConfig(
    vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1
)
ATOL = 1e-5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_trl"), TEXTS, SPEC)


def _policy_and_reference(path: Path) -> tuple[Any, Any]:
    """Two copies of the tiny model; the policy gets seeded noise so that the log-ratios, rewards
    and z0 are not all zero (a policy equal to the reference would make every check trivial).
    Seed 1 gives the KTO batch mismatched-pair log-ratios of both signs with mean 0.18 > 0, so
    the z0 comparison does not rest on the clamp (seed 0 happens to give a negative mean)."""
    policy, reference = load_model(path), load_model(path)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return policy, reference


def _trl_args(config_cls: type, tmp_path: Path, batch_size: int, **kw: Any) -> Any:
    return config_cls(
        output_dir=str(tmp_path / "trl"),
        report_to="none",
        use_cpu=True,
        bf16=False,  # TRL defaults to bf16; parity needs float32 on both sides
        gradient_checkpointing=False,
        per_device_train_batch_size=batch_size,
        max_length=None,
        seed=0,
        **kw,
    )


def _rows(batch: dict[str, torch.Tensor], prefix: str = "") -> list[Encoded]:
    """Cut TRL's right-padded rows back into (prompt ids, completion ids) with its masks."""
    ids, attn = batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"].bool()
    comp = batch[f"{prefix}completion_mask"].bool()
    out = []
    for row in range(ids.shape[0]):
        prompt, completion = ids[row][attn[row] & ~comp[row]], ids[row][comp[row]]
        n_p = prompt.numel()
        # The completion must directly follow the prompt, or our re-collation would reorder tokens.
        assert torch.equal(
            torch.nonzero(comp[row]).flatten(), torch.arange(n_p, n_p + len(completion))
        )
        out.append(Encoded(prompt_ids=prompt.tolist(), completion_ids=completion.tolist()))
    return out


def _last_metrics(trainer: Any) -> dict[str, float]:
    mode = "train" if trainer.model.training else "eval"
    return {k: v[-1] for k, v in trainer._metrics[mode].items()}


def _grads(model: Any) -> list[torch.Tensor]:
    grads = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return grads


def _assert_same_grads(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("lambda_d,lambda_u", [(1.0, 1.0), (1.0, 1.5)])
def test_kto_matches_trl(model_dir: Path, tmp_path: Path, lambda_d: float, lambda_u: float) -> None:
    from trl import KTOConfig, KTOTrainer

    tok = load_tokenizer(model_dir)
    policy, reference = _policy_and_reference(model_dir)
    completions = [" Yes, safer streets.", " No.", " It is a waste of money.", " Absolutely"]
    labels = [True, False, False, True]
    data = datasets.Dataset.from_dict(
        {"prompt": PROMPTS, "completion": completions, "label": labels}
    )
    beta = 0.1
    args = _trl_args(
        KTOConfig, tmp_path, 4, beta=beta, desirable_weight=lambda_d, undesirable_weight=lambda_u
    )
    trainer = KTOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=data, processing_class=tok
    )
    assert trainer.model is policy and trainer.ref_model is reference
    batch = next(iter(trainer.get_train_dataloader()))

    trl_loss = trainer.compute_loss(policy, batch)
    trl_loss.backward()
    trl_grads = _grads(policy)
    trl_metrics = _last_metrics(trainer)

    rows = _rows(batch)
    # Our own mismatched pairs: prompt i with completion i-1 (cyclic), TRL's rotation.
    kl_rows = [Encoded(r.prompt_ids, rows[i - 1].completion_ids) for i, r in enumerate(rows)]
    assert kl_rows == _rows(batch, "KL_")
    pad = tok.pad_token_id
    main, kl = collate(rows, pad), collate(kl_rows, pad)
    policy_logps, _ = completion_logps(policy, main)
    with torch.no_grad():
        kl_policy, _ = completion_logps(policy, kl)
        kl_reference, _ = completion_logps(reference, kl)
        reference_logps, _ = completion_logps(reference, main)
    weights = torch.ones(len(rows))
    z0 = kto_reference_point(*kto_kl_terms(kl_policy, kl_reference, weights))
    desirable = batch["label"].bool()
    loss, metrics = kto_loss(
        policy_logps, reference_logps, desirable, weights,
        z0=z0, beta=beta, lambda_d=lambda_d, lambda_u=lambda_u, weight_total=float(len(rows)),
    )  # fmt: skip
    loss.backward()

    assert z0.item() > 0.01, "the seeded policy should give z0 > 0, so the clamp is not all we test"
    assert z0.item() == pytest.approx(trl_metrics["kl"], abs=ATOL)
    assert loss.item() == pytest.approx(trl_loss.item(), abs=ATOL)
    assert metrics["rewards/desirable"].item() == pytest.approx(
        trl_metrics["rewards/chosen"], abs=ATOL
    )
    assert metrics["rewards/undesirable"].item() == pytest.approx(
        trl_metrics["rewards/rejected"], abs=ATOL
    )
    _assert_same_grads(_grads(policy), trl_grads)


def _dpo_trainer(model_dir: Path, tmp_path: Path, n_pairs: int, **config: Any) -> tuple[Any, ...]:
    from trl import DPOConfig, DPOTrainer

    tok = load_tokenizer(model_dir)
    policy, reference = _policy_and_reference(model_dir)
    data = datasets.Dataset.from_dict(
        {
            "prompt": PROMPTS[:n_pairs],
            "chosen": [" Yes, safer.", " Absolutely, for all.", " Yes.", " It is worth it."][
                :n_pairs
            ],
            "rejected": [" No, cars.", " A waste of money.", " No, never.", " No"][:n_pairs],
        }
    )
    args = _trl_args(DPOConfig, tmp_path, n_pairs, **config)
    trainer = DPOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=data, processing_class=tok
    )
    assert trainer.model is policy and trainer.ref_model is reference
    return trainer, tok, policy, reference


def _our_dpo_inputs(
    batch: dict[str, torch.Tensor], tok: Any, policy: Any, reference: Any, per_token: bool
) -> tuple[torch.Tensor, ...]:
    """(pc, pr, rc, rr) from TRL's [chosen rows; rejected rows], summed or per-token mean."""
    scored = collate(_rows(batch), tok.pad_token_id)
    logps, counts = completion_logps(policy, scored)
    with torch.no_grad():
        ref_logps, _ = completion_logps(reference, scored)
    # TRL's IPO divides by the unshifted completion_mask count; the same as ours unless a
    # completion started at position 0, which a non-empty prompt rules out.
    assert torch.equal(counts.long(), batch["completion_mask"].sum(1))
    if per_token:
        logps, ref_logps = logps / counts, ref_logps / counts
    pc, pr = logps.chunk(2)
    rc, rr = ref_logps.chunk(2)
    return pc, pr, rc, rr


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_matches_trl(model_dir: Path, tmp_path: Path, loss_type: str) -> None:
    beta = 0.1
    trainer, tok, policy, reference = _dpo_trainer(
        model_dir, tmp_path, 4, beta=beta, loss_type=[loss_type]
    )
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(policy, batch)
    trl_loss.backward()
    trl_grads = _grads(policy)
    trl_metrics = _last_metrics(trainer)

    pc, pr, rc, rr = _our_dpo_inputs(batch, tok, policy, reference, per_token=loss_type == "ipo")
    loss, metrics = dpo_loss(
        pc, pr, rc, rr, torch.ones(4), beta=beta, weight_total=4.0, loss_type=loss_type
    )
    loss.backward()

    assert loss.item() == pytest.approx(trl_loss.item(), abs=ATOL)
    assert abs(loss.item() - (0.6931 if loss_type == "sigmoid" else 25.0)) > 1e-3, "non-trivial"
    if loss_type == "sigmoid":  # TRL's reward metrics use summed logps; our IPO inputs are means
        for ours, theirs in [
            ("rewards/chosen", "rewards/chosen"),
            ("rewards/rejected", "rewards/rejected"),
            ("rewards/margin", "rewards/margins"),
            ("rewards/accuracy", "rewards/accuracies"),
        ]:
            assert metrics[ours].item() == pytest.approx(trl_metrics[theirs], abs=ATOL)
    _assert_same_grads(_grads(policy), trl_grads)


def test_conservative_dpo_matches_trl_aot_on_one_pair(model_dir: Path, tmp_path: Path) -> None:
    """TRL's "aot" with a batch of one pair: sorting one value is the identity, so its loss is
    -(1-eps) logsigmoid(beta h) - eps logsigmoid(-beta h), our sigmoid loss with eps=0.2."""
    beta, eps = 0.1, 0.2
    trainer, tok, policy, reference = _dpo_trainer(
        model_dir, tmp_path, 1, beta=beta, loss_type=["aot"], label_smoothing=eps
    )
    batch = next(iter(trainer.get_train_dataloader()))
    trl_loss = trainer.compute_loss(policy, batch)
    pc, pr, rc, rr = _our_dpo_inputs(batch, tok, policy, reference, per_token=False)
    loss, _ = dpo_loss(
        pc, pr, rc, rr, torch.ones(1), beta=beta, weight_total=1.0, label_smoothing=eps
    )
    plain, _ = dpo_loss(pc, pr, rc, rr, torch.ones(1), beta=beta, weight_total=1.0)
    assert loss.item() == pytest.approx(trl_loss.item(), abs=ATOL)
    assert abs(loss.item() - plain.item()) > 1e-3, "eps must change the loss for this to test it"
