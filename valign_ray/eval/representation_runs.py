"""Running the representation experiment (``experiments/representation.py``) around the metrics
of :mod:`valign_ray.eval.representation`: which variants to train, the oracle (simple random
sample) survey, scoring saved models, and the markdown results table.

Kept apart from the metrics so those read as plain functions of preference tables; everything
here touches configs, run folders or saved models. Heavy libraries (torch via
:mod:`valign_ray.models`) are imported inside the functions that load models.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from valign_ray.eval.representation import model_pair_preferences

if TYPE_CHECKING:
    from valign_ray.config import SyntheticConfig


def synthetic_spec(cfg: Any, **changes: Any) -> SyntheticConfig:
    """``cfg.survey.synthetic``, the survey the pipeline generates, with ``changes`` applied."""
    return replace(cfg.survey.synthetic, **changes)


def write_oracle_survey(cfg: Any, out_dir: str | Path, *, seed: int = 0) -> tuple[dict, Any]:
    """Survey files of a *simple random sample* of the same population as ``cfg``'s survey.

    Switching the sampling bias off in the generator (``oversample={}``) would change the
    world itself: contested items' thresholds are placed from the design's propensities
    (synthetic.py, point 4), so the truth differs. Instead the biased spec is regenerated with
    ``n_sample = n_population`` (everyone answers; the population and truth depend only on the
    seed and design, not on ``n_sample``) and ``n_sample`` people are drawn uniformly without
    replacement. Writes ``instrument.yaml``, ``respondents.csv``, ``answers.csv`` in ``out_dir``
    and returns (``{"instrument"|"respondents"|"answers": path}``, the full survey).
    """
    from valign_ray.survey.instrument import Instrument, save_instrument
    from valign_ray.survey.margins import load_margins
    from valign_ray.survey.synthetic import generate_synthetic

    spec = synthetic_spec(cfg)
    full = synthetic_spec(cfg, n_sample=spec.n_population)
    margins = load_margins(cfg.weighting.margins)
    survey = generate_synthetic(full, margins, variables=cfg.weighting.variables)
    rng = np.random.default_rng(seed)
    chosen = survey.respondents.sample(spec.n_sample, seed=int(rng.integers(2**31)), shuffle=False)
    ids = chosen["respondent_id"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        k: out / f"{k}.{'yaml' if k == 'instrument' else 'csv'}"
        for k in ("instrument", "respondents", "answers")
    }
    inst = Instrument.from_tables("synthetic", survey.demographics, survey.items, survey.candidates)
    save_instrument(inst, paths["instrument"])
    chosen.sort("respondent_id").write_csv(paths["respondents"])
    survey.answers.filter(pl.col("respondent_id").is_in(ids)).write_csv(paths["answers"])
    return paths, survey


def variant_overrides(cfg: Any) -> dict[str, list[str]]:
    """Config overrides of each trained variant (``base`` is the untrained model).

    ``*_oracle`` train unweighted on a simple random sample (its survey files are added by the
    caller, :func:`write_oracle_survey`): equal weights are that design's weights. ``dpo_hard``
    is the weighted DPO run; ``dpo_unweighted``/``dpo_oracle`` repeat the KTO comparison with
    DPO, whose optimum is calibrated to the (weighted) share, unlike KTO's. ``*_balanced``
    rake to equal shares of every raking variable's categories (``weighting.scheme:
    balanced``): each group the headline scores (a category of a raking variable) counts
    equally, next to population weighting, so the trade-off between population A and
    worst-group A shows (:func:`tradeoff_markdown`).
    ``dpo_soft`` aggregates to one soft-labelled row per prompt item, so one global batch holds
    all items and it takes many short epochs instead of a few long ones.
    """
    n_items = cfg.survey.synthetic.n_dimensions * cfg.survey.synthetic.items_per_dimension
    per_worker = max(1, n_items // cfg.train.num_workers)
    return {
        "kto_unweighted": ["weighting.enabled=false"],
        "kto_weighted": ["weighting.enabled=true"],
        "kto_balanced": ["weighting.enabled=true", "weighting.scheme=balanced"],
        "kto_oracle": ["weighting.enabled=false"],
        "dpo_unweighted": ["loss.name=dpo", "weighting.enabled=false"],
        "dpo_hard": ["loss.name=dpo"],
        "dpo_balanced": ["loss.name=dpo", "weighting.enabled=true", "weighting.scheme=balanced"],
        "dpo_oracle": ["loss.name=dpo", "weighting.enabled=false"],
        "dpo_soft": [
            "loss.name=dpo",
            "loss.soft_labels=true",
            f"train.batch_size={per_worker}",
            f"train.epochs={100 * cfg.train.epochs}",
        ],
    }


def same_weights(model_dirs: list[Path]) -> bool:
    """Whether these model folders hold the same weights (``model.safetensors`` bytes): runs
    compared against one base model must all have rebuilt that same model."""
    from valign_ray.provenance import file_hash

    return (
        len({file_hash(Path(d) / "model.safetensors", key="base model") for d in model_dirs}) == 1
    )


def score_models(
    models: dict[str, tuple[Path, Path, float]],
    items: pl.DataFrame,
    candidates: pl.DataFrame,
    truth: pl.DataFrame,
    *,
    max_length: int,
    batch_size: int = 64,
) -> pl.DataFrame:
    """:func:`model_pair_preferences` of each ``name -> (model dir, reference dir, beta)``,
    stacked with a ``model`` column (the tokenizer comes from the reference folder)."""
    from valign_ray.models import load_model, load_tokenizer

    frames = []
    for name, (model_dir, ref_dir, beta) in models.items():
        prefs = model_pair_preferences(
            load_model(model_dir),
            load_tokenizer(ref_dir),
            items,
            candidates,
            truth,
            reference=load_model(ref_dir),
            beta=beta,
            max_length=max_length,
            batch_size=batch_size,
        )
        frames.append(prefs.select(pl.lit(name).alias("model"), pl.all()))
    return pl.concat(frames)


def results_markdown(results: dict[str, dict[str, Any]], *, title: str) -> str:
    """A markdown table: model x A(population), worst-group A, majority agreement and
    flipped-item majority agreement, each "estimate [lo, hi]"."""

    def cell(x: dict[str, float] | None) -> str:
        return "n/a" if x is None else f"{x['estimate']:.3f} [{x['lo']:.3f}, {x['hi']:.3f}]"

    head = "| model | A(population) | worst-group A | majority agreement | flipped majority |"
    lines = [f"### {title}", "", head, "|---|---|---|---|---|"]
    for model, r in results.items():
        worst = f"{cell(r['worst_group'])} ({r['worst_group']['group']})"
        lines.append(
            f"| {model} | {cell(r['population'])} | {worst} | {cell(r['majority_agreement'])} | "
            f"{cell(r['majority_agreement_flipped'])} |"
        )
    return "\n".join(lines)


# (method, weighting) -> the variant trained that way
TRADEOFF = {
    ("kto", "none"): "kto_unweighted",
    ("kto", "population"): "kto_weighted",
    ("kto", "group-balanced"): "kto_balanced",
    ("dpo", "none"): "dpo_unweighted",
    ("dpo", "population"): "dpo_hard",
    ("dpo", "group-balanced"): "dpo_balanced",
}


def tradeoff_markdown(results: dict[str, dict[str, Any]], *, title: str) -> str:
    """Population A next to worst-group A for each method under no weighting, population
    weighting and group-balanced weighting (the variants of :data:`TRADEOFF` present in
    ``results``), each "estimate [lo, hi]", the worst group named."""

    def cell(x: dict[str, Any]) -> str:
        return f"{x['estimate']:.3f} [{x['lo']:.3f}, {x['hi']:.3f}]"

    head = "| method | weighting | A(population) | worst-group A | worst group |"
    lines = [f"### {title}", "", head, "|---|---|---|---|---|"]
    for (method, weighting), name in TRADEOFF.items():
        r = results.get(name)
        if r is not None:
            worst = r["worst_group"]
            lines.append(
                f"| {method} | {weighting} | {cell(r['population'])} | {cell(worst)} | "
                f"{worst['group']} |"
            )
    return "\n".join(lines)
