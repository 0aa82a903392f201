"""Reference-model log-probabilities, computed once per (model, dataset, tokenisation) and cached.

KTO and DPO compare the policy with a frozen reference. Its log-probabilities never change, so
they are computed once by batch inference (Ray Data applies :func:`score_reference` per batch)
and stored as extra columns next to the rows; every later run and every Tune trial with the same
key reuses them, and a training step runs only the policy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.train.logprobs import collate, completion_logps, encode_pair


def score_reference(
    model: Any,
    tokenizer: Any,
    rows: pl.DataFrame,
    columns: Sequence[tuple[str, str]],
    *,
    max_length: int,
    batch_size: int = 32,
) -> pl.DataFrame:
    """``rows`` plus one reference log-prob column (summed over the completion) for each
    (completion column, output column) in ``columns`` (a method's ``Method.reference``); the
    prompt is the ``prompt`` column."""
    import torch

    out = rows
    model.eval()
    for comp_col, out_col in columns:
        enc = [
            encode_pair(tokenizer, p, c, max_length=max_length)
            for p, c in zip(rows["prompt"].to_list(), rows[comp_col].to_list(), strict=True)
        ]
        # Batches of similar length pad less (about 40% of a random batch is padding).
        order = sorted(range(len(enc)), key=lambda i: enc[i].length)
        values = [0.0] * len(enc)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            with torch.no_grad():
                logps, _ = completion_logps(
                    model, collate([enc[i] for i in idx], tokenizer.pad_token_id)
                )
            for i, v in zip(idx, logps.tolist(), strict=True):
                values[i] = v
        out = out.with_columns(pl.Series(out_col, values, dtype=pl.Float64))
    return out


def _hash_file(h: Any, path: Path, chunk: int = 1 << 20) -> None:
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)


def model_fingerprint(model_dir: str | Path) -> str:
    """Hash of the weights and config files of a local model folder (content, not mtime)."""
    h = hashlib.sha256()
    root = Path(model_dir)
    files = sorted(
        p
        for p in root.iterdir()
        if p.suffix in {".safetensors", ".bin", ".json", ".model", ".txt"} and p.is_file()
    )
    if not files:
        raise ValueError(f"{root} holds no model files to fingerprint")
    for p in files:
        h.update(p.name.encode())
        _hash_file(h, p)
    return h.hexdigest()[:16]


def frame_fingerprint(rows: pl.DataFrame) -> str:
    """Hash of a frame's content (column names and values, in row order)."""
    h = hashlib.sha256(json.dumps(rows.columns).encode())
    for col in rows.columns:
        h.update(str(rows[col].to_list()).encode())
    return h.hexdigest()[:16]


def cache_key(
    model_fp: str, data_fp: str, loss_name: str, max_length: int, *, prompt_format: str
) -> str:
    """Key of a reference cache entry: model, data, and every tokenisation setting, the prompt
    format included (:func:`~valign_ray.train.logprobs.prompt_format_id`: plain, or which chat
    template)."""
    settings = {
        "loss": loss_name,
        "max_length": max_length,
        "eos": True,
        "prompt": prompt_format,
        "v": 1,
    }
    raw = json.dumps([model_fp, data_fp, settings], sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:20]


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"ref-{key}.parquet"
