"""Time building KTO rows from rating answers: Ray Data ``build_rows`` vs one polars process.

    python experiments/benchmarks/bench_build_rows.py [--n 1000000] [--batch-size 8192]

A synthetic survey (3 dimensions x 8 prompts: 48 ratings per respondent, raked to the
population margins) supplies ``--n`` rating answers, written as 8 Parquet files to a temporary
folder. Both methods do the same work end to end: read the Parquet, build the rows, sort them
on every column, write Parquet. Ray runs locally with 2 CPUs, warmed up on a small file first
(worker start-up and imports are not timed). The rows must agree, else the script exits 1:
every column but ``kl_completion`` as a multiset, and ``kl_completion`` (which comes from the
same batch, so depends on batch boundaries) always from another item than the row's own.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from valign_ray.config import RayConfig, SyntheticConfig
from valign_ray.data.builders import assign_kl_completions, build_kto_rows, canonical_order
from valign_ray.distributed.data import map_answers_ray
from valign_ray.distributed.session import init_ray
from valign_ray.survey.margins import load_margins
from valign_ray.survey.synthetic import generate_synthetic
from valign_ray.survey.weighting import rake_to_margins

MARGINS = Path(__file__).resolve().parents[2] / "data" / "margins" / "nz_2023.csv"
RATINGS_PER_RESPONDENT = 48  # 3 dimensions x 8 prompt items x 2 responses
N_FILES = 8


def survey_tables(n: int) -> tuple[pl.DataFrame, dict]:
    """``n`` rating answers and the lookup tables, with respondents raked to the margins."""
    n_sample = math.ceil(n / RATINGS_PER_RESPONDENT)
    spec = SyntheticConfig(n_sample=n_sample, n_population=max(20_000, 5 * n_sample))
    survey = generate_synthetic(spec, load_margins(MARGINS))
    respondents = rake_to_margins(survey.respondents, survey.population_margins()).respondents
    ratings = survey.answers.filter(pl.col("kind") == "rating").head(n)
    lookups = dict(
        items=survey.items,
        candidates=survey.candidates,
        respondents=respondents,
        group_column="age_band",
    )
    return ratings, lookups


def write_parts(answers: pl.DataFrame, folder: Path) -> Path:
    folder.mkdir(parents=True)
    size = math.ceil(answers.height / N_FILES)
    for k in range(N_FILES):
        answers.slice(k * size, size).write_parquet(folder / f"part-{k:02d}.parquet")
    return folder


def polars_rows(answers_dir: Path, out_dir: Path, lookups: dict) -> tuple[pl.DataFrame, float]:
    """The single-process path; returns the rows and the seconds spent in the builder alone."""
    answers = pl.read_parquet(answers_dir / "*.parquet")
    start = time.perf_counter()
    rows = build_kto_rows(answers, **lookups)
    build_s = time.perf_counter() - start
    rows = assign_kl_completions(canonical_order(rows), seed=0)
    out_dir.mkdir(parents=True)
    rows.write_parquet(out_dir / "rows.parquet")
    return rows, build_s


def check_same_rows(ray_rows: pl.DataFrame, pl_rows: pl.DataFrame, candidates: pl.DataFrame) -> str:
    """An empty string when the rows agree (module docstring), else what differs."""
    others = [c for c in pl_rows.columns if c != "kl_completion"]
    a, b = ray_rows.select(others).sort(others), pl_rows.select(others).sort(others)
    if not a.equals(b):
        return f"rows differ: ray {a.height} rows, polars {b.height} rows"
    text_item = candidates.select(pl.col("text").alias("kl_completion"), "item_id")
    if text_item["kl_completion"].n_unique() != text_item.height:
        return "candidate texts are not unique: cannot tell kl_completion's item"
    for name, rows in (("ray", ray_rows), ("polars", pl_rows)):
        kl = rows.select("item_id", "kl_completion").join(
            text_item.rename({"item_id": "kl_item"}), on="kl_completion", how="left"
        )
        same = kl.filter(pl.col("kl_item").is_null() | (pl.col("kl_item") == pl.col("item_id")))
        if same.height:
            return f"{name}: {same.height} kl_completions from the row's own (or no) item"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="rating answers")
    parser.add_argument("--batch-size", type=int, default=8192, help="Ray Data batch size")
    args = parser.parse_args()

    answers, lookups = survey_tables(args.n)
    n_people = answers["respondent_id"].n_unique()
    print(
        f"n={answers.height:,} rating answers, {n_people:,} respondents, "
        f"{answers['item_id'].n_unique()} items, batch_size={args.batch_size}, Ray num_cpus=2"
    )
    init_ray(RayConfig(num_cpus=2))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        warm = write_parts(answers.head(20_000), tmp / "warm")
        map_answers_ray(warm, batch_size=args.batch_size)(build_kto_rows, **lookups)
        print(
            f"ray warm-up on 20,000 answers (not timed below): {time.perf_counter() - start:.1f} s"
        )
        answers_dir = write_parts(answers, tmp / "answers")

        start = time.perf_counter()
        pl_rows, build_s = polars_rows(answers_dir, tmp / "polars_out", lookups)
        pl_s = time.perf_counter() - start
        start = time.perf_counter()
        ray_rows = map_answers_ray(answers_dir, batch_size=args.batch_size)(
            build_kto_rows, **lookups
        )
        ray_rows = assign_kl_completions(ray_rows, seed=0)
        ray_s = time.perf_counter() - start

    print(
        f"polars, 1 process: {pl_s:.2f} s  1.0x  ({pl_rows.height:,} rows; "
        f"build_kto_rows alone {build_s:.2f} s)"
    )
    print(
        f"ray data build_rows: {ray_s:.2f} s  {ray_s / pl_s:.1f}x polars  "
        f"({ray_rows.height:,} rows)"
    )
    print(
        "note: on one machine Ray Data pays for tasks, serialisation and the object store; "
        "it is used because it spreads the same builder over a cluster and streams rows into "
        "Ray Train."
    )
    problem = check_same_rows(
        ray_rows.drop("row_idx"), pl_rows.drop("row_idx"), lookups["candidates"]
    )
    if problem:
        sys.exit(f"FAIL: {problem}")
    print("same rows: yes (all columns but kl_completion; kl_completion always another item)")


if __name__ == "__main__":
    main()
