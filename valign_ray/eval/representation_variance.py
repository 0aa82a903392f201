"""The headline experiment with its variance: train seeds x sample draws of one population.

The population stays fixed (``survey.synthetic.seed``) while two things vary: the **sample
draw** (``survey.synthetic.sample_seed``: which biased sample is surveyed; the oracle's simple
random sample is redrawn with the same number) and the **training seed** (``train.seed``).
Every trained variant runs once per (draw, train seed) through the experiment runner
(:func:`valign_ray.experiment.run_experiment`: one Ray Tune trial per run, finished runs
skipped); variant ``dpo_hard`` on draw 1 with train seed 2 is the run ``dpo_hard-d1-s2``. Each
aligned model and the (untrained, shared) base model is scored against the population truth on
the items its training saw and, apart, on the items held out by ``data.holdout_items``
(:func:`valign_ray.eval.representation.representation_table`). The run-level numbers go to
``variance_runs.csv``; :mod:`valign_ray.eval.representation_variance_report` turns them into
the table with its two kinds of interval, the plots and ``results.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.config import PipelineConfig, load_config
from valign_ray.eval import representation as rep
from valign_ray.eval import representation_runs as runs
from valign_ray.experiment import PlannedRun, Variant, plan_runs, run_experiment

# The reduced variant set of the headline (base is scored, not trained).
TRAINED = ("dpo_unweighted", "dpo_hard", "dpo_soft", "dpo_balanced", "dpo_oracle")
SMOKE_TRAINED = ("dpo_hard",)  # --smoke: base and dpo_hard, 2 draws x 1 train seed
SMOKE_SETS = ("train.max_steps=10", "eval.bootstrap=20")  # --smoke: short runs
FORMS = {"implicit": "p_implicit", "logprob": "p_logprob"}
METRICS = ("population", "worst_group", "skill", "majority_agreement")
ITEM_SETS = ("seen", "unseen")


@dataclass(frozen=True)
class VarianceSpec:
    """What to run: trained variants, sample draws (``sample_seed`` values), train seeds, the
    preference form scored and the training runs at once."""

    trained: tuple[str, ...] = TRAINED
    sample_seeds: tuple[int, ...] = (0, 1, 2)
    train_seeds: tuple[int, ...] = (0, 1, 2)
    form: str = "implicit"
    max_concurrent: int = 1

    def check(self, base: PipelineConfig) -> None:
        """ValueError naming what cannot run (before anything trains)."""
        known = runs.variant_overrides(base)
        unknown = [v for v in self.trained if v not in known]
        if unknown or not self.trained:
            raise ValueError(f"variants {unknown or '[]'}: choose from {sorted(known)}")
        for key in ("sample_seeds", "train_seeds"):
            values = getattr(self, key)
            if not values or len(set(values)) != len(values) or min(values) < 0:
                raise ValueError(f"{key} {list(values)}: distinct integers >= 0, at least one")
        if self.form not in FORMS:
            raise ValueError(f"form {self.form!r}: one of {sorted(FORMS)}")
        if base.survey.source != "synthetic":
            raise ValueError("survey.source: the variance experiment needs the synthetic truth")
        if base.data.holdout_items <= 0:
            raise ValueError("data.holdout_items: > 0 is needed for seen and unseen items")


def trained_item_count(base: PipelineConfig, item_ids: Sequence[str]) -> int:
    """How many of the prompt items ``item_ids`` training sees: those ``data.holdout_items``
    (the split's item hash, :func:`~valign_ray.data.splits.holdout_mask`) does not hold out."""
    from valign_ray.data.splits import holdout_mask

    held = holdout_mask(
        pl.Series(list(item_ids)), base.data.holdout_items, base.data.split_seed + 1
    )
    return int((~held).sum())


def variance_variants(
    base: PipelineConfig,
    spec: VarianceSpec,
    oracle_files: dict[int, dict[str, Path]],
    n_trained_items: int | None = None,
) -> tuple[list[Variant], dict[str, tuple[str, int]]]:
    """One :class:`Variant` per (trained variant, draw), named ``<variant>-d<draw>``, and
    ``name -> (variant, draw)``. A biased-sample variant sets ``survey.synthetic.sample_seed``
    to the draw; an ``*_oracle`` one reads that draw's simple-random-sample files.
    ``n_trained_items``: dpo_soft's one row per trained item, so its batch is that many per
    worker (variant_overrides sizes it from every item, more than remain after the hold-out)."""
    overrides = runs.variant_overrides(base)
    if n_trained_items is not None and "dpo_soft" in overrides:
        per_worker = max(1, n_trained_items // base.train.num_workers)
        overrides["dpo_soft"] = [*overrides["dpo_soft"], f"train.batch_size={per_worker}"]
    variants, meta = [], {}
    for draw in spec.sample_seeds:
        for name in spec.trained:
            if name.endswith("_oracle"):
                files = (f"survey.files.{k}={v}" for k, v in oracle_files[draw].items())
                survey = ("survey.source=files", *files, "survey.salt=synthetic-oracle")
            else:
                survey = (f"survey.synthetic.sample_seed={draw}",)
            variants.append(Variant(f"{name}-d{draw}", (*overrides[name], *survey)))
            meta[f"{name}-d{draw}"] = (name, draw)
    return variants, meta


def run_variance_experiment(
    config_path: str | Path,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    *,
    spec: VarianceSpec = VarianceSpec(),
    name_suffix: str = "",
) -> pl.DataFrame:
    """Train every (variant, draw, train seed) not yet finished, score them, write
    ``variance_runs.csv`` and the report; returns the run-level table."""
    from valign_ray.eval.representation_variance_report import write_variance_report

    base = load_config(config_path, overrides)
    spec.check(base)
    name = base.name + name_suffix
    exp = Path(output_dir or Path(base.output_dir) / name).resolve()
    exp.mkdir(parents=True, exist_ok=True)
    oracle, truths = {}, []
    if any(v.endswith("_oracle") for v in spec.trained):
        for draw in spec.sample_seeds:
            out = exp / "oracle_survey" / f"d{draw}"
            oracle[draw], everyone = runs.write_oracle_survey(base, out, seed=draw)
            truths.append(everyone.truth)
    biased = _biased_survey(base)
    prompts = biased.items.filter(pl.col("kind") == "prompt")["item_id"]
    variants, meta = variance_variants(base, spec, oracle, trained_item_count(base, prompts))
    args = dict(
        config_path=config_path,
        variants=variants,
        seeds=list(spec.train_seeds),
        output_dir=exp,
        base_overrides=list(overrides),
    )
    n_runs = len(variants) * len(spec.train_seeds)
    sizes = f"{len(spec.trained)} variants x {len(spec.sample_seeds)} sample draws"
    print(f"[variance {name}] {n_runs} runs: {sizes} x {len(spec.train_seeds)} train seeds")
    start = time.monotonic()
    table = run_experiment(**args, name=name, max_concurrent=spec.max_concurrent)
    failed = table.filter(pl.col("status") == "failed")
    if failed.height:
        raise RuntimeError(f"runs failed (see {exp / 'runs.csv'}): {failed['run'].to_list()}")
    print(f"[variance {name}] training done in {time.monotonic() - start:.0f}s", flush=True)
    planned = plan_runs(**args)
    for t in truths:
        if not t.equals(biased.truth):
            raise RuntimeError("the oracle survey's population truth differs from the runs'")
    rows = score_runs(base, planned, meta, biased, spec.form)
    rows.write_csv(exp / "variance_runs.csv", float_precision=6)
    write_variance_report(rows, exp, spec=spec, summaries=_summaries(planned))
    return rows


def _biased_survey(base: PipelineConfig) -> Any:
    from valign_ray.eval.representation_experiment import biased_survey

    return biased_survey(base)


def _summaries(planned: list[PlannedRun]) -> dict[str, Any]:
    return {r.name: json.loads((r.config.run_dir / "summary.json").read_text()) for r in planned}


def seen_items(run_dir: Path) -> set[str]:
    """The prompt items a run trained on: those in its training split of answers."""
    answers = pl.read_parquet(run_dir / "datasets" / "answers_train.parquet")
    return set(answers["item_id"].unique().to_list())


def score_runs(
    base: PipelineConfig,
    planned: list[PlannedRun],
    meta: dict[str, tuple[str, int]],
    biased: Any,
    form: str,
) -> pl.DataFrame:
    """Long table, one row per (model, run, item set, metric): ``variant, draw, train_seed,
    run, items, n_items, metric, estimate, lo, hi`` (lo/hi: the item bootstrap of that run).
    The base model (identical in every run, checked) is one row set with null draw and seed."""
    truth = biased.truth
    for r in planned:
        if r.config.survey.source == "synthetic":
            written = pl.read_parquet(r.config.run_dir / "survey" / "truth.parquet")
            if not written.equals(truth):
                raise RuntimeError(f"{r.name}: population truth differs: check the seeds")
    if not runs.same_weights([r.config.run_dir / "base_model" for r in planned]):
        raise RuntimeError("the runs' base models differ: the comparison would mix inits")
    first = planned[0].config.run_dir
    models = {"base": (first / "base_model", first / "base_model", base.loss.beta)}
    models |= {
        r.name: (r.config.run_dir / "model", r.config.run_dir / "base_model", r.config.loss.beta)
        for r in planned
    }
    prefs = runs.score_models(
        models,
        biased.items,
        biased.candidates,
        truth,
        max_length=base.data.max_length,
        batch_size=base.eval.batch_size,
    )
    who = {"base": ("base", None, None, first)}
    who |= {r.name: (*meta[r.variant], r.seed, r.config.run_dir) for r in planned}
    out = []
    for model, (variant, draw, seed, run_dir) in who.items():
        seen = seen_items(run_dir)
        p = prefs.filter(pl.col("model") == model)
        for items in ITEM_SETS:
            keep = p.filter(pl.col("item_id").is_in(seen) == (items == "seen"))
            table = _table(keep, truth, base, FORMS[form])
            head = {"variant": variant, "draw": draw, "train_seed": seed, "run": model}
            for metric in METRICS:
                x = table[metric]
                out.append(
                    head | {"items": items, "n_items": table["n_items"], "metric": metric}
                    | {"estimate": x["estimate"], "lo": x["lo"], "hi": x["hi"]}
                )  # fmt: skip
    schema = {"draw": pl.Int64, "train_seed": pl.Int64}
    return pl.DataFrame(out, schema_overrides=schema, infer_schema_length=None)


def _table(p: pl.DataFrame, truth: pl.DataFrame, base: PipelineConfig, column: str) -> dict:
    """:func:`representation_table` on ``p``'s items only (the truth restricted to them)."""
    if p.height == 0:
        raise ValueError("an item set is empty: raise data.holdout_items or the item count")
    items = p["item_id"].to_list()
    return rep.representation_table(
        p,
        truth.filter(pl.col("item_id").is_in(items)),
        variables=base.weighting.variables,
        column=column,
    )
