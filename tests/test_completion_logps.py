"""The LM head on completion positions only, in chunks: the same log-probs and gradients as the
full forward (logits at every position, one fp32 log-softmax), for Llama and Qwen2, through PEFT
and a DeepSpeed engine; other architectures take the full forward."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from valign_ray.config import TinyConfig
from valign_ray.models import build_tiny_model, load_model, load_tokenizer
from valign_ray.train import logprobs
from valign_ray.train.logprobs import (
    collate,
    completion_logps,
    decoder_and_head,
    encode_pair,
    full_completion_logps,
)

PAIRS = [
    ("Question: Should the council fund the library?\nAnswer:", " Yes, protect the native bush."),
    ("Question: Should the council sell the harbour?", " No."),
    ("Q:", " No, keep costs low for families."),
    ("Question: Should the council close the rail line?\nAnswer:", " Yes"),
]


def _batch(tok: Any) -> dict[str, torch.Tensor]:
    enc = [encode_pair(tok, p, c, max_length=40) for p, c in PAIRS]
    return collate(enc, tok.pad_token_id)


def _perturbed(path: Path) -> Any:
    """The tiny model with seeded noise: tied random weights give near-uniform logits, which
    would hide a wrong position or target."""
    model = load_model(path)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def _logps_and_grads(model: Any, batch: dict, fn: Any, **kw: Any) -> tuple[Any, Any, list]:
    model.zero_grad(set_to_none=True)
    logps, counts = fn(model, batch, **kw)
    # Unequal weights per row: a gradient that mixed rows up would show.
    (logps * torch.tensor([1.0, -0.5, 2.0, 0.25])).sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return logps.detach(), counts, grads


def _assert_same(model: Any, batch: dict, chunk: int) -> None:
    assert decoder_and_head(model) is not None
    fast, fast_n, fast_g = _logps_and_grads(model, batch, completion_logps, chunk=chunk)
    full, full_n, full_g = _logps_and_grads(model, batch, full_completion_logps)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_n, full_n)
    assert fast_n.tolist() == [float(len(encode_pair_ids)) for encode_pair_ids in _comp(batch)]
    assert len(fast_g) == len(full_g) > 0
    for a, b in zip(fast_g, full_g, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def _comp(batch: dict) -> list[list[int]]:
    return [row.nonzero().flatten().tolist() for row in batch["completion_mask"]]


@pytest.mark.parametrize("chunk", [1024, 3])
def test_llama_head_on_completion_equals_full_forward(tiny_model_dir: Path, chunk: int) -> None:
    """One chunk, and chunks of 3 positions (the batch has over 20 completion tokens)."""
    model = _perturbed(tiny_model_dir)
    _assert_same(model, _batch(load_tokenizer(tiny_model_dir)), chunk)


def test_qwen2_head_on_completion_equals_full_forward(tmp_path: Path) -> None:
    texts = [p + c for p, c in PAIRS]
    spec = TinyConfig(
        arch="qwen2", vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2,
        num_heads=4, num_kv_heads=2,
    )  # fmt: skip
    path = build_tiny_model(tmp_path / "qwen2", texts, spec)
    _assert_same(_perturbed(path), _batch(load_tokenizer(path)), 5)


def test_through_peft_lora(tiny_model_dir: Path) -> None:
    """LoRA on the attention and on the LM head: both must be in the completion-only path."""
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "lm_head"])
    model = peft.get_peft_model(_perturbed(tiny_model_dir), config)
    with torch.no_grad():  # LoRA's B starts at zero: make the adapters matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    decoder, head = decoder_and_head(model)
    assert head is model.get_base_model().lm_head  # the LoRA-wrapped head
    _assert_same(model, _batch(load_tokenizer(tiny_model_dir)), 4)
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None for g in lora_grads)


@pytest.mark.parametrize("stage", [2, 3])
def test_through_a_deepspeed_engine(
    tiny_model_dir: Path, local_process_group: None, stage: int
) -> None:
    """ZeRO-3 gathers each module's parameters in its own hooks, so calling the decoder and the
    head directly (not the engine's forward) still sees whole weights."""
    import deepspeed

    model = _perturbed(tiny_model_dir)
    config = {
        "train_micro_batch_size_per_gpu": 4,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    assert decoder_and_head(engine)[0] is model.model
    batch = _batch(load_tokenizer(tiny_model_dir))
    with torch.no_grad():
        fast, _ = completion_logps(engine, batch, chunk=5)
        full, _ = full_completion_logps(model, batch)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


def test_other_architectures_take_the_full_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1,
                                       n_head=2))  # fmt: skip
    assert decoder_and_head(model) is None
    calls = []
    real = logprobs.full_completion_logps
    monkeypatch.setattr(logprobs, "full_completion_logps", lambda *a: calls.append(1) or real(*a))
    batch = {
        "input_ids": torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
        "completion_mask": torch.tensor([[0, 0, 1, 1], [0, 1, 0, 0]], dtype=torch.bool),
    }
    logps, counts = completion_logps(model, batch)
    assert calls == [1] and counts.tolist() == [2.0, 1.0]


def test_chunks_keep_no_full_logits(tiny_model_dir: Path) -> None:
    """No [B, T, vocab] tensor: the head sees at most ``chunk`` positions per call, forward and
    backward (checkpointed chunks recompute their logits)."""
    model = _perturbed(tiny_model_dir)
    batch = _batch(load_tokenizer(tiny_model_dir))
    shapes: list[tuple[int, ...]] = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    try:
        _logps_and_grads(model, batch, completion_logps, chunk=8)
    finally:
        hook.remove()
    n = int(batch["completion_mask"].sum())  # completion tokens, each predicted once
    assert n > 16 and n % 8  # at least two full chunks and a short one
    want = [(8, model.config.vocab_size)] * (n // 8) + [(n % 8, model.config.vocab_size)]
    # The forward's chunks, then the same chunks recomputed in the backward (in reverse).
    assert shapes == want + want[::-1]
