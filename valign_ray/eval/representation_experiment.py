"""The headline experiment, end to end: does training with survey weights make the model
represent the synthetic POPULATION (and each subgroup) better than training without them?

:func:`run_representation_experiment` trains every variant of
:func:`~valign_ray.eval.representation_runs.variant_overrides` through the experiment runner
(:func:`valign_ray.experiment.run_experiment`: one Ray Tune trial per variant, finished runs
skipped, the reference cache shared in ``EXP/.cache``), scores every aligned model and the base
model against the population truth, and writes ``results.json``, ``results.md``,
``preferences.parquet``, ``per_item_implicit.csv`` and two plots per preference form into the
experiment folder, beside the runner's ``runs.csv``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.config import PipelineConfig, load_config
from valign_ray.eval import representation as rep
from valign_ray.eval import representation_runs as runs
from valign_ray.experiment import PlannedRun, Variant, plan_runs, run_experiment

# The model's preference read two ways, and what each run's (weighted) training split says.
FORMS = {"implicit": "p_implicit", "logprob": "p_logprob", "data": "p_data"}
COMPARISONS = [
    ("kto_weighted", "kto_unweighted"),
    ("kto_oracle", "kto_unweighted"),
    ("kto_oracle", "kto_weighted"),
    ("dpo_hard", "dpo_unweighted"),
    ("dpo_oracle", "dpo_hard"),
    ("dpo_soft", "dpo_hard"),
    ("kto_balanced", "kto_weighted"),
    ("dpo_balanced", "dpo_hard"),
]


def representation_variants(base: PipelineConfig, oracle_files: dict[str, Path]) -> list[Variant]:
    """The trained variants; the ``*_oracle`` ones read the simple-random-sample survey files
    (:func:`~valign_ray.eval.representation_runs.write_oracle_survey`)."""
    # Synthetic files: the salt need not be secret, but collected files refuse the default one.
    files = (f"survey.files.{k}={v}" for k, v in oracle_files.items())
    oracle = ("survey.source=files", *files, "survey.salt=synthetic-oracle")
    return [
        Variant(name, (*extra, *(oracle if name.endswith("_oracle") else ())))
        for name, extra in runs.variant_overrides(base).items()
    ]


def run_representation_experiment(
    config_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    output_dir: str | Path | None = None,
    *,
    max_concurrent: int = 1,
) -> dict[str, Any]:
    """Train the variants (skipping finished ones), score them, write the results; returns
    ``results`` (form -> model -> representation table) and ``paired_differences``."""
    base = load_config(config_path, overrides)
    exp = Path(output_dir or base.run_dir).resolve()
    files, everyone = runs.write_oracle_survey(base, exp / "oracle_survey", seed=0)
    args = dict(
        config_path=config_path,
        variants=representation_variants(base, files),
        seeds=[base.train.seed],  # the config's own seed: one run per variant
        output_dir=exp,
        base_overrides=overrides,
    )
    table = run_experiment(**args, name=base.name, max_concurrent=max_concurrent)
    failed = table.filter(pl.col("status") == "failed")
    if failed.height:
        raise RuntimeError(f"runs failed (see {exp / 'runs.csv'}): {failed['run'].to_list()}")
    planned = {r.name: r for r in plan_runs(**args)}
    # The biased survey again (deterministic by seed): its flips and tables; the run's written
    # truth and the oracle's population truth must both be this one.
    biased = biased_survey(base)
    truth = pl.read_parquet(exp / "kto_unweighted" / "survey" / "truth.parquet")
    if not (truth.equals(biased.truth) and everyone.truth.equals(biased.truth)):
        raise RuntimeError("population truth differs between variants: check the seed")
    prefs, identical = _score(base, planned, biased, truth)
    prefs.write_parquet(exp / "preferences.parquet")
    data = _data_preferences(planned, biased, truth)
    out = _representation(base, prefs, data, truth, biased)
    meta = {
        "flipped_items": out["flipped"],
        "base_models_identical": identical,
        "summaries": {
            n: json.loads((r.config.run_dir / "summary.json").read_text())
            for n, r in planned.items()
        },
    }
    _write_results(exp, out, meta, prefs, data, biased)
    return {k: out[k] for k in ("results", "paired_differences")}


def biased_survey(base: PipelineConfig) -> Any:
    """The biased synthetic survey every non-oracle run trained on, regenerated."""
    from valign_ray.survey.margins import load_margins
    from valign_ray.survey.synthetic import generate_synthetic

    return generate_synthetic(
        runs.synthetic_spec(base),
        load_margins(base.weighting.margins),
        variables=base.weighting.variables,
    )


def _score(
    base: PipelineConfig, planned: dict[str, PlannedRun], biased: Any, truth: pl.DataFrame
) -> tuple[pl.DataFrame, bool]:
    """Pair preferences of the base model and every aligned model; whether every run rebuilt
    the same base model (they must: the comparison is between trainings, not inits)."""
    run = {n: r.config.run_dir for n, r in planned.items()}
    models = {"base": (run["kto_unweighted"] / "base_model",) * 2 + (base.loss.beta,)}
    models |= {
        n: (run[n] / "model", run[n] / "base_model", planned[n].config.loss.beta) for n in run
    }
    prefs = runs.score_models(
        models,
        biased.items,
        biased.candidates,
        truth,
        max_length=base.data.max_length,
        batch_size=base.eval.batch_size,
    )
    return prefs, runs.same_weights([run[n] / "base_model" for n in run])


def _data_preferences(
    planned: dict[str, PlannedRun], biased: Any, truth: pl.DataFrame
) -> dict[str, pl.DataFrame]:
    """What each run's (weighted) training split says, as a preference per item."""
    pairs = rep.pole_pairs(biased.items, biased.candidates, truth)
    out = {}
    for name, r in planned.items():
        run_dir = r.config.run_dir
        weights = (
            pl.read_parquet(run_dir / "weights" / "weights.parquet")
            if r.config.weighting.enabled
            else None
        )
        answers = pl.read_parquet(run_dir / "datasets" / "answers_train.parquet")
        out[name] = rep.data_preferences(answers, pairs, weights)
    return out


def _representation(
    base: PipelineConfig,
    prefs: pl.DataFrame,
    data: dict[str, pl.DataFrame],
    truth: pl.DataFrame,
    biased: Any,
) -> dict[str, Any]:
    """Representation tables per form and model, and the paired differences of COMPARISONS."""
    flipped = biased.flips.filter("flipped")["item_id"].to_list()
    by_model = {
        m: prefs.filter(pl.col("model") == m) for m in prefs["model"].unique(maintain_order=True)
    }
    opts = {"flipped": flipped}
    results = {
        form: {
            m: rep.representation_table(
                p, truth, variables=base.weighting.variables, column=col, **opts
            )
            for m, p in (data if form == "data" else by_model).items()
        }
        for form, col in FORMS.items()
    }
    diffs = {
        form: {
            f"{a} - {b}": rep.paired_difference(by_model[a], by_model[b], truth, column=col, **opts)
            for a, b in COMPARISONS
        }
        for form, col in FORMS.items()
        if form != "data"
    }
    return {"results": results, "paired_differences": diffs, "flipped": flipped}


def _write_results(
    exp: Path,
    out: dict[str, Any],
    meta: dict[str, Any],
    prefs: pl.DataFrame,
    data: dict[str, pl.DataFrame],
    biased: Any,
) -> None:
    results, diffs = out["results"], out["paired_differences"]
    (exp / "results.json").write_text(
        json.dumps({"results": results, "paired_differences": diffs, **meta}, indent=2, default=str)
        + "\n"
    )
    wide = biased.flips.drop("contested").join(
        prefs.pivot("model", index="item_id", values="p_implicit"), on="item_id"
    )
    for n, d in data.items():
        wide = wide.join(d.select("item_id", pl.col("p_data").alias(f"data_{n}")), on="item_id")
    wide.write_csv(exp / "per_item_implicit.csv", float_precision=4)
    text = results_text(results, diffs, meta)
    (exp / "results.md").write_text(text + "\n")
    plot_representation({f: results[f] for f in ("implicit", "logprob")}, exp)
    print(text, flush=True)


def results_text(results: dict, diffs: dict, meta: dict[str, Any]) -> str:
    """results.md: one table per preference form, then the paired differences."""
    md = [runs.results_markdown(results[f], title=f"{f} ({c})") for f, c in FORMS.items()]
    md += [
        runs.tradeoff_markdown(results[f], title=f"population vs worst group, {f} ({c})")
        for f, c in FORMS.items()
    ]
    lines = ["### paired differences (item bootstrap over the same items)", ""]
    for form, d in diffs.items():
        lines += [
            f"- {form}: {k}: dA(pop) {v['population']['estimate']:+.3f} "
            f"[{v['population']['lo']:+.3f}, {v['population']['hi']:+.3f}], d majority "
            f"{v['majority_agreement']['estimate']:+.3f} "
            f"[{v['majority_agreement']['lo']:+.3f}, {v['majority_agreement']['hi']:+.3f}]"
            for k, v in d.items()
        ]
    md.append("\n".join(lines))
    md.append(
        f"flipped items: {len(meta['flipped_items'])}; "
        f"base models identical: {meta['base_models_identical']}"
    )
    return "\n\n".join([f"# Representation of the population ({rep.UNCERTAINTY_NOTE})", *md])


def plot_representation(results: dict, exp: Path) -> None:
    """Per form: A(model, population) with its interval, and A per group, as PNGs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def save(fig: Figure, path: Path) -> None:
        FigureCanvasAgg(fig)
        fig.savefig(path, dpi=120, bbox_inches="tight")

    for form, table in results.items():
        names = list(table)
        pop = [table[m]["population"] for m in names]
        est = [p["estimate"] for p in pop]
        err = [
            [e - p["lo"] for e, p in zip(est, pop, strict=True)],
            [p["hi"] - e for e, p in zip(est, pop, strict=True)],
        ]
        fig = Figure(figsize=(7, 3.5))
        ax = fig.subplots()
        ax.bar(names, est, yerr=err, capsize=4, color="tab:blue")
        low = min(p["lo"] for p in pop)
        ax.set(ylabel="A(model, population)", ylim=(low - 0.05, 1.0), title=f"A ({form})")
        fig.autofmt_xdate()
        save(fig, exp / f"a_population_{form}.png")
        groups = [g["group"] for g in table[names[0]]["groups"]]
        fig = Figure(figsize=(9, 4))
        ax = fig.subplots()
        width = 0.8 / len(names)
        for k, m in enumerate(names):
            xs = [i + k * width for i in range(len(groups))]
            ax.bar(xs, [g["estimate"] for g in table[m]["groups"]], width, label=m)
        ticks = [i + 0.4 - width / 2 for i in range(len(groups))]
        ax.set_xticks(ticks, groups, rotation=30, ha="right")
        low = min(g["estimate"] for m in names for g in table[m]["groups"])
        ax.set(ylabel="A(model, group)", ylim=(low - 0.05, 1.0), title=f"per-group A ({form})")
        ax.legend(fontsize=7, ncol=3)
        save(fig, exp / f"a_groups_{form}.png")
