"""Reference scoring (length-sorted batches must not mix rows up) and the cache key."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from valign_ray.methods import get_method
from valign_ray.models import load_model, load_tokenizer
from valign_ray.train.logprobs import collate, completion_logps, encode_pair
from valign_ray.train.reference import cache_key, frame_fingerprint, score_reference


def test_batched_scores_equal_one_row_at_a_time(tiny_model_dir) -> None:
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    rows = pl.DataFrame(
        {
            "prompt": ["Question: Should the council protect the bush?\nAnswer:", "Q:"] * 3,
            "completion": [" Yes.", " No, keep costs low for families.", " Yes, protect it."] * 2,
            "kl_completion": [" No.", " Yes.", " Keep costs low."] * 2,
        }
    )
    scored = score_reference(
        model, tok, rows, get_method("kto").reference, max_length=48, batch_size=4
    )
    for i, r in enumerate(rows.iter_rows(named=True)):
        for comp, col in (("completion", "ref_logp"), ("kl_completion", "ref_kl_logp")):
            enc = encode_pair(tok, r["prompt"], r[comp], max_length=48)
            with torch.no_grad():
                alone, _ = completion_logps(model, collate([enc], tok.pad_token_id))
            assert scored[col][i] == pytest.approx(float(alone[0]), abs=1e-4), (i, col)


def test_cache_key_tracks_texts_and_settings_only() -> None:
    a = pl.DataFrame({"prompt": ["p"], "completion": ["c"]})
    fp = frame_fingerprint(a)
    assert fp == frame_fingerprint(a.clone())
    assert fp != frame_fingerprint(a.with_columns(pl.lit("d").alias("completion")))
    key = cache_key("m", fp, "kto", 96, prompt_format="plain")
    assert key != cache_key("m", fp, "kto", 128, prompt_format="plain")
    assert key != cache_key("m2", fp, "kto", 96, prompt_format="plain")
    assert key != cache_key("m", fp, "kto", 96, prompt_format="chat-0123")
