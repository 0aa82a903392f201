"""How many respondents? The data layer of the sample-size study: plain functions, no model.

One fixed synthetic population (everyone's answers and the truth, :func:`build_population`);
at each grid point (n, sampling bias, seed) a sample of n people is drawn from it with the
bias's selection propensities (:func:`draw_sample`), raked to the census margins like a
pipeline run, and scored two ways, weighted and unweighted:

- **share error**: the sample's (weighted) share per item-level answer (each rating response:
  share rating it desirable; each Likert statement: share in the top two options) against the
  population's realised share. ``share_mean_error`` is the mean |error| over items for the whole
  population; ``share_worst_group_error`` the largest, over the scored groups (each category of
  the raked variables with anyone in the sample), of the group's mean |error| over items;
- **constitution agreement**: the survey's constitution (:func:`build_constitution`, the
  pipeline's rule and settings) against the population's true consensus set, the statements at
  least ``threshold`` of every group of the whole population agrees with: Jaccard, precision
  and recall (:func:`set_agreement`).

The population's world (thresholds of contested items) is built once from the pipeline
config's own design; a bias level changes only who is sampled from it, so every bias level and
n is scored against the same truth.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from valign_ray.config import PipelineConfig, SyntheticConfig

Margins = dict[str, dict[str, float]]
POPULATION_TABLES = ("respondents", "answers", "truth", "items", "candidates", "values")


def build_population(cfg: PipelineConfig, out_dir: str | Path) -> Path:
    """Simulate ``cfg.survey.synthetic`` with everyone answering (``n_sample = n_population``:
    the world depends only on the seed and the design) and write its tables as parquet in
    ``out_dir``: ``respondents`` (with the raked variables), ``answers``, ``truth``, ``items``,
    ``candidates`` and ``values`` (:func:`answer_values`). Returns ``out_dir``."""
    from dataclasses import replace

    from valign_ray.survey.margins import load_margins
    from valign_ray.survey.synthetic import generate_synthetic

    spec = cfg.survey.synthetic
    survey = generate_synthetic(
        replace(spec, n_sample=spec.n_population),
        load_margins(cfg.weighting.margins),
        variables=cfg.weighting.variables,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "respondents": survey.respondents,
        "answers": survey.answers,
        "truth": survey.truth,
        "items": survey.items,
        "candidates": survey.candidates,
        "values": answer_values(survey.answers),
    }
    for name, frame in tables.items():
        frame.write_parquet(out / f"{name}.parquet")
    return out


def load_population(pop_dir: str | Path) -> dict[str, pl.DataFrame]:
    """The tables :func:`build_population` wrote."""
    return {t: pl.read_parquet(Path(pop_dir) / f"{t}.parquet") for t in POPULATION_TABLES}


def answer_values(answers: pl.DataFrame) -> pl.DataFrame:
    """Answers as ``respondent_id, key, x``: a rating's ``key`` is its response and ``x`` its
    0/1 value; a Likert answer's ``key`` is its statement and ``x`` 1 when in the top two of 5
    options (the truth's ``share``). Pairwise answers (a random half of items) are left out."""
    rating = answers.filter(pl.col("kind") == "rating").select(
        "respondent_id", pl.col("response_id").alias("key"), pl.col("value").cast(pl.Float64)
    )
    likert = answers.filter(pl.col("kind") == "likert").select(
        "respondent_id", pl.col("item_id").alias("key"), (pl.col("value") >= 4).cast(pl.Float64)
    )
    return pl.concat([rating, likert]).rename({"value": "x"})


def truth_by_key(truth: pl.DataFrame) -> pl.DataFrame:
    """The truth rows matching :func:`answer_values`: ``key, variable, category, share``."""
    key = pl.when(pl.col("kind") == "rating").then(pl.col("response_id")).otherwise("item_id")
    return truth.filter(pl.col("kind").is_in(["rating", "likert"])).select(
        key.alias("key"), "variable", "category", "share"
    )


def bias_factors(
    oversample: Margins | None, response_rate: Margins | None, shares: Margins
) -> tuple[Margins, Margins]:
    """A bias level's ``(oversample, response_rate)``, checked against the population's
    variables and categories; None means the simulator's default."""
    from valign_ray.survey.synthetic_design import design_factors

    spec = SyntheticConfig(oversample=oversample, response_rate=response_rate)
    return design_factors(spec, shares)


def draw_sample(
    respondents: pl.DataFrame,
    factors: tuple[Margins, ...],
    n: int,
    seed: int,
    stream: str = "",
) -> pl.DataFrame:
    """``n`` people drawn without replacement with probability proportional to the product of
    their categories' factors (1 where unlisted), as in the simulator (its point 6). The draw
    depends only on ``(seed, n, stream)``: a bias level's name as ``stream`` gives each level
    its own samples."""
    if not 1 <= n <= respondents.height:
        raise ValueError(f"sample size {n} must be in [1, {respondents.height}]")
    propensity = np.ones(respondents.height)
    for scheme in factors:
        for variable, by_category in scheme.items():
            column = respondents[variable].to_list()
            propensity *= np.array([by_category.get(c, 1.0) for c in column])
    rng = np.random.default_rng([seed, n, zlib.crc32(stream.encode())])
    chosen = rng.choice(respondents.height, n, replace=False, p=propensity / propensity.sum())
    return respondents[np.sort(chosen)]


def share_estimates(
    values: pl.DataFrame, sample: pl.DataFrame, variables: Sequence[str]
) -> pl.DataFrame:
    """Weighted share per ``key`` for everyone (``variable = category = "all"``) and per
    category of each of ``variables``; ``sample`` has ``respondent_id``, the variables and
    ``weight``. Columns ``key, variable, category, estimate``."""
    joined = values.join(sample, on="respondent_id", how="inner")
    groups = [("all", pl.lit("all"))] + [(v, pl.col(v)) for v in variables]
    frames = [
        joined.group_by("key", cat.alias("category"))
        .agg(((pl.col("x") * pl.col("weight")).sum() / pl.col("weight").sum()).alias("estimate"))
        .select("key", pl.lit(var).alias("variable"), "category", "estimate")
        for var, cat in groups
    ]
    return pl.concat(frames)


def share_errors(estimates: pl.DataFrame, truth_keys: pl.DataFrame) -> dict[str, Any]:
    """``share_mean_error`` (population, mean |estimate - truth| over keys),
    ``share_worst_group_error`` and ``share_worst_group`` (the group with the largest mean
    |error|, over the groups with anyone in the sample), and ``share_empty_groups`` (groups of
    the truth, with people in the population, that the sample has nobody from)."""
    truth = truth_keys.filter(pl.col("share").is_not_nan())
    err = truth.join(estimates, on=["key", "variable", "category"], how="left").with_columns(
        (pl.col("estimate") - pl.col("share")).abs().alias("err")
    )
    pop = err.filter(pl.col("variable") == "all")
    if pop["err"].null_count():
        raise ValueError("share_errors: estimates miss some keys of the population truth")
    by_group = (
        err.filter(pl.col("variable") != "all")
        .group_by("variable", "category")
        .agg(pl.col("err").mean().alias("err"), pl.col("estimate").is_null().all().alias("empty"))
        .sort("variable", "category")
    )
    present = by_group.filter(~pl.col("empty"))
    worst = present.sort("err", descending=True, maintain_order=True).row(0, named=True)
    return {
        "share_mean_error": float(pop["err"].mean()),
        "share_worst_group_error": float(worst["err"]),
        "share_worst_group": f"{worst['variable']}={worst['category']}",
        "share_empty_groups": int(by_group["empty"].sum()),
    }


def true_consensus(truth: pl.DataFrame, group_col: str, threshold: float) -> set[str]:
    """Statements that at least ``threshold`` of every ``group_col`` group of the population
    agrees with (top two of 5 options): the constitution rule applied to the population."""
    rows = truth.filter(
        (pl.col("kind") == "likert")
        & (pl.col("variable") == group_col)
        & pl.col("share").is_not_nan()
    )
    if rows.is_empty():
        raise ValueError(f"truth: no Likert shares for group column {group_col!r}")
    kept = rows.group_by("item_id").agg((pl.col("share") >= threshold).all().alias("ok"))
    return set(kept.filter("ok")["item_id"].to_list())


def set_agreement(found: Collection[str], true: Collection[str]) -> dict[str, float]:
    """Jaccard |F & T| / |F | T|, precision |F & T| / |F| and recall |F & T| / |T| of a found set
    against the true set. An empty set makes no wrong claim (precision 1) and has nothing to
    find (recall 1); two empty sets agree (Jaccard 1)."""
    f, t = set(found), set(true)
    both = len(f & t)
    return {
        "jaccard": both / len(f | t) if f | t else 1.0,
        "precision": both / len(f) if f else 1.0,
        "recall": both / len(t) if t else 1.0,
    }


def present_margins(margins: Margins, sample: pl.DataFrame) -> tuple[Margins, int]:
    """``margins`` without the categories nobody in the sample has, renormalised (raking
    cannot reach a category without respondents), and how many categories were dropped."""
    out, dropped = {}, 0
    for variable, shares in margins.items():
        seen = set(sample[variable].to_list())
        kept = {c: s for c, s in shares.items() if c in seen}
        dropped += len(shares) - len(kept)
        total = sum(kept.values())
        out[variable] = {c: s / total for c, s in kept.items()}
    return out, dropped


def score_sample(
    pop: dict[str, pl.DataFrame], cfg: PipelineConfig, margins: Margins, sample: pl.DataFrame
) -> dict[str, Any]:
    """Every data-layer measure of one sample (rows of ``pop["respondents"]``), unweighted
    and raked to ``margins`` with ``cfg.weighting``'s trimming and cap policy (categories the
    sample lacks are dropped from the margins and counted in ``empty_categories``). Keys are
    ``<weighted|unweighted>_<measure>``; when raking fails the weighted ones are None and
    ``weighting_error`` says why."""
    from valign_ray.survey.cap_policy import rake_as_configured
    from valign_ray.survey.constitution import build_constitution
    from valign_ray.survey.weighting import kish_ess

    w, c = cfg.weighting, cfg.constitution
    variables = list(w.variables)
    group_col = c.group_column or cfg.data.group_column
    true_set = true_consensus(pop["truth"], group_col, c.threshold)
    rake_margins, dropped = present_margins(margins, sample)
    row: dict[str, Any] = {"empty_categories": dropped, "weighting_error": None, "ess": None}
    people = sample.select("respondent_id", *variables)
    samples = {"unweighted": people.with_columns(pl.lit(1.0).alias("weight")), "weighted": None}
    try:
        raked = rake_as_configured(people, rake_margins, w)
        samples["weighted"] = raked.respondents
        row["ess"] = kish_ess(raked.respondents["weight"])
    except ValueError as exc:  # raking's own errors (incl. CapBindingError) name the cause
        row["weighting_error"] = str(exc).splitlines()[0][:300]
    ids = sample["respondent_id"]
    likert = pop["answers"].filter(
        (pl.col("kind") == "likert") & pl.col("respondent_id").is_in(ids)
    )
    truth_keys = truth_by_key(pop["truth"])
    for name, frame in samples.items():
        measures: dict[str, Any] = dict.fromkeys(MEASURE_KEYS)
        if frame is not None:
            measures |= share_errors(share_estimates(pop["values"], frame, variables), truth_keys)
            const = build_constitution(
                pop["items"],
                likert,
                frame,
                group_col=group_col,
                weight_col="weight",
                threshold=c.threshold,
                min_votes_per_group=c.min_votes_per_group,
            )
            found = {p.item_id for p in const.principles}
            agreement = set_agreement(found, true_set)
            measures |= {f"constitution_{k}": v for k, v in agreement.items()}
            measures["constitution_size"] = len(found)
        row |= {f"{name}_{k}": v for k, v in measures.items()}
    return row | {"true_consensus_size": len(true_set)}


MEASURE_KEYS = (
    "share_mean_error",
    "share_worst_group_error",
    "share_worst_group",
    "share_empty_groups",
    "constitution_jaccard",
    "constitution_precision",
    "constitution_recall",
    "constitution_size",
)
