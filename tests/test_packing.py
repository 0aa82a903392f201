"""Sequence packing: rows laid out as written down by hand, and log-probs and gradients equal to
the padded batch's (each sequence scored alone), for Llama and Qwen2, through the completion-only
head and the full forward. Training with ``train.packing``: tests/test_train_options.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.test_completion_logps import PAIRS as LOGPS_PAIRS
from tests.test_completion_logps import _perturbed
from valign_ray.config import TinyConfig
from valign_ray.models import build_tiny_model, load_tokenizer
from valign_ray.train.logprobs import (
    Encoded,
    collate,
    completion_logps,
    encode_pairs,
    full_completion_logps,
)
from valign_ray.train.packing import balanced_rows, collate_packed, pack_rows

PAIRS = [*LOGPS_PAIRS, ("Q:", " Yes.")]
WEIGHTS = torch.tensor([1.0, -0.5, 2.0, 0.25, 0.75])


def test_pack_rows_first_fit_longest_first() -> None:
    # longest first: 7 -> row 0 (room 3), 5 -> row 1 (room 5), 4 -> row 1 (room 1),
    # 3 -> row 0 (room 0), 2 -> row 2; a 12 over the width of 10 gets its own row.
    assert pack_rows([3, 7, 5, 2, 4], 10) == [[0, 1], [2, 4], [3]]
    assert pack_rows([12, 3], 10) == [[0], [1]]
    assert pack_rows([], 10) == []


def test_balanced_rows_fewest_rows_at_the_narrowest_width() -> None:
    # FFD at 10 needs 3 rows; 21 tokens in 3 rows need width >= 7, and FFD at 7 fits:
    # 7 | 5 + 2 | 4 + 3, no padding (FFD at 10 would leave rows of 10, 9 and 2: 30 wide).
    assert balanced_rows([3, 7, 5, 2, 4], 10) == [[1], [2, 3], [0, 4]]
    assert balanced_rows([12, 3], 10) == [[0], [1]]  # over the width: alone, width 12
    assert balanced_rows([], 10) == []


def test_collate_packed_layout() -> None:
    a = Encoded(prompt_ids=[5, 6], completion_ids=[7, 8])  # 4 tokens
    b = Encoded(prompt_ids=[9], completion_ids=[10])  # 2 tokens
    c = Encoded(prompt_ids=[11, 12], completion_ids=[13, 14, 15])  # 5 tokens
    batch = collate_packed([a, b, c], pad_id=0, width=6)
    # c alone (5, room 1); a (4) in a new row, then b (2) beside it: rows [c], [a, b]
    assert batch["input_ids"].tolist() == [[11, 12, 13, 14, 15, 0], [5, 6, 7, 8, 9, 10]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0], [0, 1, 2, 3, 0, 1]]
    assert batch["sequence_ids"].tolist() == [[2, 2, 2, 2, 2, -1], [0, 0, 0, 0, 1, 1]]
    assert batch["completion_mask"].int().tolist() == [[0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 0, 1]]


def _logps_and_grads(model: Any, batch: dict, fn: Any) -> tuple[Any, Any, list]:
    model.zero_grad(set_to_none=True)
    logps, counts = fn(model, batch)
    (logps * WEIGHTS).sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return logps.detach(), counts, grads


def _assert_packed_equals_padded(path: Path) -> None:
    model, tok = _perturbed(path), load_tokenizer(path)
    enc = encode_pairs(tok, *zip(*PAIRS, strict=True), max_length=40)
    width = max(e.length for e in enc) + 6  # room for a short sequence beside a long one
    packed = collate_packed(enc, tok.pad_token_id, width)
    assert packed["input_ids"].shape[0] < len(enc)  # some sequences do share a row
    ref, ref_n, ref_g = _logps_and_grads(model, collate(enc, tok.pad_token_id), completion_logps)
    for fn in (completion_logps, full_completion_logps):
        got, got_n, got_g = _logps_and_grads(model, packed, fn)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_n, ref_n)
        for a, b in zip(got_g, ref_g, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_llama_packed_equals_padded(tiny_model_dir: Path) -> None:
    _assert_packed_equals_padded(tiny_model_dir)


def test_qwen2_packed_equals_padded(tmp_path: Path) -> None:
    spec = TinyConfig(
        arch="qwen2", vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2,
        num_heads=4, num_kv_heads=2,
    )  # fmt: skip
    path = build_tiny_model(tmp_path / "qwen2", [p + c for p, c in PAIRS], spec)
    _assert_packed_equals_padded(path)


def test_a_sequence_never_sees_its_row_neighbour(tiny_model_dir: Path) -> None:
    """Change the first sequence of a packed row: the second one's log-prob must not move
    (with a plain causal mask over the row it would)."""
    model, tok = _perturbed(tiny_model_dir), load_tokenizer(tiny_model_dir)
    first, second = PAIRS[1], PAIRS[4]
    scores = []
    for lead in (first, ("Question: Should the council buy the airport?", " Maybe not.")):
        enc = encode_pairs(tok, [lead[0], second[0]], [lead[1], second[1]], max_length=40)
        batch = collate_packed(enc, tok.pad_token_id, width=80)
        assert batch["input_ids"].shape[0] == 1  # both in one row
        with torch.no_grad():
            scores.append(float(completion_logps(model, batch)[0][1]))
    assert scores[0] == pytest.approx(scores[1], abs=1e-5)
