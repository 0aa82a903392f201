"""Reference scoring (length-sorted batches must not mix rows up) and the cache key."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from valign_ray.methods import get_method
from valign_ray.models import load_model, load_tokenizer
from valign_ray.train.logprobs import collate, completion_logps, encode_pair
from valign_ray.train.reference import (
    cache_key,
    frame_fingerprint,
    score_reference,
    token_batches,
)


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
        model, tok, rows, get_method("kto").reference, max_length=48, batch_tokens=64
    )
    for i, r in enumerate(rows.iter_rows(named=True)):
        for comp, col in (("completion", "ref_logp"), ("kl_completion", "ref_kl_logp")):
            enc = encode_pair(tok, r["prompt"], r[comp], max_length=48)
            with torch.no_grad():
                alone, _ = completion_logps(model, collate([enc], tok.pad_token_id))
            assert scored[col][i] == pytest.approx(float(alone[0]), abs=1e-4), (i, col)


def test_token_batches_sort_by_length_and_bound_padded_tokens() -> None:
    lengths = [5, 30, 10, 10, 40, 6]
    # sorted: 0 (5), 5 (6), 2 (10), 3 (10), 1 (30), 4 (40); budget 30 padded tokens
    assert token_batches(lengths, 30) == [[0, 5, 2], [3], [1], [4]]
    assert token_batches(lengths, 1000) == [[0, 5, 2, 3, 1, 4]]
    assert token_batches(lengths, 1) == [[0], [5], [2], [3], [1], [4]]  # over budget: alone
    assert token_batches([], 30) == []
    for budget in (12, 20, 45, 80):
        batches = token_batches(lengths, budget)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget for b in batches)


def test_cache_key_tracks_texts_and_settings_only() -> None:
    a = pl.DataFrame({"prompt": ["p"], "completion": ["c"]})
    fp = frame_fingerprint(a)
    assert fp == frame_fingerprint(a.clone())
    assert fp != frame_fingerprint(a.with_columns(pl.lit("d").alias("completion")))
    key = cache_key("m", fp, "kto", 96, prompt_format="plain")
    assert key != cache_key("m", fp, "kto", 128, prompt_format="plain")
    assert key != cache_key("m2", fp, "kto", 96, prompt_format="plain")
    assert key != cache_key("m", fp, "kto", 96, prompt_format="chat-0123")
    assert key == cache_key("m", fp, "kto", 96, prompt_format="plain", dtype="float32")
    assert key != cache_key("m", fp, "kto", 96, prompt_format="plain", dtype="bfloat16")


def test_reference_scoring_follows_the_training_setup() -> None:
    from pathlib import Path

    from valign_ray.config import load_config
    from valign_ray.train.reference import reference_scoring

    quickstart = Path(__file__).resolve().parents[1] / "configs/quickstart.yaml"

    def plan(*overrides: str) -> dict:
        return reference_scoring(load_config(quickstart, list(overrides)))

    assert plan() == {"concurrency": 2, "gpus_per_actor": 0, "dtype": "float32"}
    gpu = ["train.num_workers=4", "train.use_gpu=true", "train.precision=bf16"]
    assert plan(*gpu) == {"concurrency": 4, "gpus_per_actor": 1, "dtype": "bfloat16"}
    assert plan(*gpu, "train.reference_gpus=2") == {
        "concurrency": 2,
        "gpus_per_actor": 2,
        "dtype": "bfloat16",
    }
    # reference_gpus only means something on GPUs
    assert plan("train.reference_gpus=2")["gpus_per_actor"] == 0


def test_a_model_split_over_devices_scores_as_one(tiny_model_dir) -> None:
    """The scoring actor's multi-GPU path (``device_map="auto"``) on a machine without GPUs
    (everything lands on the CPU): the same scores as the one-device path."""
    from valign_ray.distributed.data import _ReferenceScorer

    rows = pl.DataFrame(
        {
            "prompt": ["Question: Should the council protect the bush?\nAnswer:", "Q:"],
            "completion": [" Yes.", " No, keep costs low for families."],
            "kl_completion": [" No.", " Yes."],
        }
    )
    cols = get_method("kto").reference
    split = _ReferenceScorer(str(tiny_model_dir), cols, 48, gpus=2)
    one = _ReferenceScorer(str(tiny_model_dir), cols, 48, gpus=0)
    a, b = (pl.from_arrow(s(rows.to_arrow())) for s in (split, one))
    assert a["ref_logp"].to_list() == pytest.approx(b["ref_logp"].to_list(), abs=1e-6)
    assert a["ref_kl_logp"].to_list() == pytest.approx(b["ref_kl_logp"].to_list(), abs=1e-6)


def test_reference_gpus_beyond_the_cluster_is_a_clear_error(monkeypatch) -> None:
    """Asking each scoring actor for more GPUs than the cluster has would wait forever."""
    import ray

    from valign_ray.distributed.data import score_reference_ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 1.0})
    rows = pl.DataFrame({"row_idx": [0], "prompt": ["Q:"], "completion": [" Yes."]})
    with pytest.raises(ValueError, match="needs 2 GPUs but the cluster has 1"):
        score_reference_ray(rows, "unused", [("completion", "ref_logp")], max_length=8,
                            gpus_per_actor=2)  # fmt: skip
