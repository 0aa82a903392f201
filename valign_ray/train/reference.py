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
from typing import TYPE_CHECKING, Any

import polars as pl

from valign_ray.train.logprobs import collate, completion_logps, encode_pairs

if TYPE_CHECKING:
    from valign_ray.config import PipelineConfig

# Padded tokens per scoring batch, by device. Measured on CPU (the quickstart's model): batches of
# about 2k tokens score fastest (16k ones are 25 % slower: they spill the caches); a GPU wants
# large batches (16k: 16 rows of 1,024). Inference keeps no activations and the LM head runs on
# completion positions only, so memory stays small either way.
BATCH_TOKENS = {"cpu": 2048, "cuda": 16384}


def score_reference(
    model: Any,
    tokenizer: Any,
    rows: pl.DataFrame,
    columns: Sequence[tuple[str, str]],
    *,
    max_length: int,
    batch_tokens: int | None = None,
) -> pl.DataFrame:
    """``rows`` plus one reference log-prob column (summed over the completion) for each
    (completion column, output column) in ``columns`` (a method's ``Method.reference``); the
    prompt is the ``prompt`` column. Rows are scored in length-sorted batches of at most
    ``batch_tokens`` padded tokens (:func:`token_batches`; None: :data:`BATCH_TOKENS` for the
    model's device)."""
    import torch

    if batch_tokens is None:
        batch_tokens = BATCH_TOKENS.get(next(model.parameters()).device.type, BATCH_TOKENS["cpu"])
    out = rows
    model.eval()
    for comp_col, out_col in columns:
        enc = encode_pairs(
            tokenizer, rows["prompt"].to_list(), rows[comp_col].to_list(), max_length=max_length
        )
        values = [0.0] * len(enc)
        for idx in token_batches([e.length for e in enc], batch_tokens):
            with torch.no_grad():
                logps, _ = completion_logps(
                    model, collate([enc[i] for i in idx], tokenizer.pad_token_id)
                )
            for i, v in zip(idx, logps.tolist(), strict=True):
                values[i] = v
        out = out.with_columns(pl.Series(out_col, values, dtype=pl.Float64))
    return out


def token_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices into ``lengths`` in batches sorted by length, each at most ``batch_tokens``
    padded tokens (rows x its longest row; a longer row alone), so short rows share large
    batches and long ones small: similar lengths pad little (about 40% of a random batch of
    survey rows is padding) and a batch's memory stays bounded whatever the lengths."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        # Sorted ascending, so row i is the longest of the batch it joins.
        if batches and (len(batches[-1]) + 1) * lengths[i] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def reference_dtype(cfg: PipelineConfig) -> str:
    """The reference model runs in the training precision: a bf16 policy starts where its
    bf16 reference is."""
    return "bfloat16" if cfg.train.precision == "bf16" else "float32"


def reference_scoring(cfg: PipelineConfig) -> dict[str, Any]:
    """How the reference model is spread (:func:`~valign_ray.distributed.data.score_reference_ray`):
    one scoring actor per training worker, each on its own GPU when training uses GPUs; with
    ``train.reference_gpus`` = k > 1, one actor per k of the workers' GPUs, the model split
    across its k."""
    gpus = cfg.train.reference_gpus if cfg.train.use_gpu else 0
    return {
        "concurrency": max(1, cfg.train.num_workers // max(gpus, 1)),
        "gpus_per_actor": gpus,
        "dtype": reference_dtype(cfg),
    }


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
    model_fp: str,
    data_fp: str,
    loss_name: str,
    max_length: int,
    *,
    prompt_format: str,
    dtype: str = "float32",
) -> str:
    """Key of a reference cache entry: model, data, and every tokenisation setting, the prompt
    format included (:func:`~valign_ray.train.logprobs.prompt_format_id`: plain, or which chat
    template), and the precision the reference ran in (bf16 runs score in bf16)."""
    settings = {
        "loss": loss_name,
        "max_length": max_length,
        "eos": True,
        "prompt": prompt_format,
        "v": 1,
    }
    if dtype != "float32":  # fp32 keys stay as they were before dtype was a setting
        settings["dtype"] = dtype
    raw = json.dumps([model_fp, data_fp, settings], sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:20]


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"ref-{key}.parquet"
