"""Ray Data at the edge: batch generation by actors that each hold one model replica.

The work is :func:`valign_ray.cai.generate.generate`, the function the tests call without Ray;
here ``map_batches`` spreads the rows over ``replicas`` actors (one per GPU in production, CPU
replicas here). A record depends only on its prompt, its seed and the model, so how Ray cuts the
rows into blocks and which replica takes a block never change the output.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import ray

from valign_ray.config import CaiSamplingConfig


class _Generator:
    """A Ray Data actor: loads the model once, generates for many batches."""

    def __init__(self, model_path: str, sampling: CaiSamplingConfig, batch_size: int) -> None:
        from valign_ray.models import load_model, load_tokenizer

        self.model = load_model(model_path).eval()
        self.tokenizer = load_tokenizer(model_path)
        self.sampling, self.batch_size = sampling, batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        from valign_ray.cai.generate import generate

        rows = pl.from_arrow(batch)
        gens = generate(
            self.model,
            self.tokenizer,
            rows["prompt"].to_list(),
            rows["seed"].to_list(),
            self.sampling,
            batch_size=self.batch_size,
        )
        return rows.with_columns(
            pl.Series("completion", [g.text for g in gens], dtype=pl.String),
            pl.Series("completion_ids", [list(g.token_ids) for g in gens], dtype=pl.List(pl.Int64)),
            pl.Series("finish_reason", [g.finish_reason for g in gens], dtype=pl.String),
        ).to_arrow()


def generate_ray(
    rows: pl.DataFrame,
    model_path: str,
    sampling: CaiSamplingConfig,
    *,
    batch_size: int = 16,
    replicas: int = 1,
    gpus_per_replica: float = 0.0,
) -> pl.DataFrame:
    """``rows`` (``row_idx``, ``prompt``, ``seed`` and any other columns, carried through) with
    ``completion``, ``completion_ids`` and ``finish_reason``, in ``row_idx`` order."""
    missing = {"row_idx", "prompt", "seed"} - set(rows.columns)
    if missing:
        raise ValueError(f"generate_ray: rows lack column(s) {sorted(missing)}")
    ds = ray.data.from_arrow(rows.to_arrow()).map_batches(
        _Generator,
        fn_constructor_kwargs={
            "model_path": model_path,
            "sampling": sampling,
            "batch_size": batch_size,
        },
        batch_format="pyarrow",
        # A Ray Data batch holds several generate batches, so an actor call is not all overhead.
        batch_size=4 * batch_size,
        **({"num_gpus": gpus_per_replica} if gpus_per_replica else {}),
        compute=ray.data.ActorPoolStrategy(size=replicas),
    )
    out = pl.from_arrow(pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow"))))
    return out.sort("row_idx")
