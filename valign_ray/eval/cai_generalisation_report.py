"""The CAI generalisation experiment's numbers across seeds (:mod:`valign_ray.eval.
cai_generalisation`): per model and measure the mean over seeds with a t interval, paired
differences between models over the same seeds, ``results.md`` and the plot.

Each seed draws its own never-asked items S2 and trains its own models, so the spread over
seeds is the uncertainty that matters here (which items were never asked, and training noise);
the per-seed item bootstrap of :func:`~valign_ray.eval.representation.representation_table`
is kept in ``results.json`` but, with a handful of S2 items per seed, it is not shown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MEASURES = {
    "population": "A(population)",
    "worst_group": "worst-group A",
    "majority_agreement": "majority agreement",
}
COMPARISONS = (
    ("dpo_weighted", "base"),
    ("rl_cai", "base"),
    ("rl_cai", "dpo_weighted"),
    ("dpo_oracle", "rl_cai"),
)
INTERVAL_NOTE = (
    "mean over seeds [95% t interval over seeds: mean +- t(0.975, n-1) x sd / sqrt(n)]; "
    "each seed is another set of never-asked items S2 (data.split_seed), another training "
    "seed (train.seed) and another oracle sample"
)


def seed_interval(values: Sequence[float], alpha: float = 0.05) -> dict[str, Any]:
    """``{mean, lo, hi, n, values}``: the mean of per-seed ``values`` and its t interval,
    ``mean +- t(1 - alpha/2, n - 1) * sd / sqrt(n)`` (sd with n - 1); ``lo``/``hi`` are None
    for one seed (no spread to measure). ``[0.6, 0.7, 0.8]`` -> mean 0.7, sd 0.1,
    half-width 4.3027 * 0.1 / sqrt(3) = 0.2484: ``[0.4516, 0.9484]``."""
    from scipy.stats import t

    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("seed_interval: no values")
    n = len(xs)
    mean = sum(xs) / n
    out: dict[str, Any] = {"mean": mean, "lo": None, "hi": None, "n": n, "values": xs}
    if n > 1:
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
        half = float(t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
        out |= {"lo": mean - half, "hi": mean + half}
    return out


def _estimate(table: dict[str, Any], measure: str) -> float:
    return float(table[measure]["estimate"])


def combine_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Per form, model and measure the :func:`seed_interval` of the seeds' estimates; per
    form and comparison ``a - b`` the interval of the per-seed differences (paired: both
    models faced the same S2 items in each seed)."""
    forms = per_seed[0]["tables"]
    models = {f: list(per_seed[0]["tables"][f]) for f in forms}
    out: dict[str, Any] = {"n_seeds": len(per_seed), "seeds": [r["seed"] for r in per_seed]}
    out["s2_items_per_seed"] = [len(r["s2_items"]) for r in per_seed]
    out["forms"] = {
        f: {
            m: {
                k: seed_interval([_estimate(r["tables"][f][m], k) for r in per_seed])
                for k in MEASURES
            }
            for m in models[f]
        }
        for f in forms
    }
    out["differences"] = {
        f: {
            f"{a} - {b}": {
                k: seed_interval(
                    [
                        _estimate(r["tables"][f][a], k) - _estimate(r["tables"][f][b], k)
                        for r in per_seed
                    ]
                )
                for k in MEASURES
            }
            for a, b in COMPARISONS
            if a in models[f] and b in models[f]
        }
        for f in forms
    }
    out["base_models_identical"] = all(r["base_models_identical"] for r in per_seed)
    return out


def _cell(x: dict[str, Any]) -> str:
    if x["lo"] is None:
        return f"{x['mean']:.3f} (1 seed)"
    return f"{x['mean']:.3f} [{x['lo']:.3f}, {x['hi']:.3f}]"


def verdict(diff: dict[str, Any]) -> str:
    """What a paired difference over seeds shows: higher / lower when its interval excludes
    0, else that no difference is shown (one seed: no interval, no verdict)."""
    if diff["lo"] is None:
        return "one seed: no interval"
    if diff["lo"] > 0:
        return "higher"
    if diff["hi"] < 0:
        return "lower"
    return "no difference shown (interval covers 0)"


def results_markdown(
    summary: dict[str, Any], per_seed: list[dict[str, Any]], *, overrides: Sequence[str] = ()
) -> str:
    """results.md: the design, one table per preference form, per-seed numbers, the paired
    differences with what each shows."""
    md = [
        "# CAI generalisation: never-asked items (S2)",
        "",
        f"Seeds {summary['seeds']}; S2 items per seed {summary['s2_items_per_seed']}; "
        f"base models identical across runs: {summary['base_models_identical']}. "
        f"Overrides: {list(overrides) or 'none'}.",
        "",
        "- base: the untrained tiny model; dpo_weighted: DPO on the survey's weighted answers "
        "to the asked items; rl_cai: SL-CAI, then soft-label DPO on the S2 items' own "
        "candidate pairs labelled by dpo_weighted's implicit reward (sigmoid(beta x (r(a) - "
        "r(b))), r = log pi - log pi_base); dpo_oracle: DPO, unweighted, on a simple random "
        "sample's answers to the S2 items.",
        "- Scored on S2 only against the population truth: the model's P(prefers the "
        "pole-positive candidate); implicit = against the model's own training reference "
        "(base; SL-CAI for rl_cai), logprob = the model alone (length-normalised).",
        f"- Cells: {INTERVAL_NOTE}.",
    ]
    for form, table in summary["forms"].items():
        md += ["", f"## {form}", "", "| model | " + " | ".join(MEASURES.values()) + " |"]
        md.append("|---" * (len(MEASURES) + 1) + "|")
        for model, row in table.items():
            md.append(f"| {model} | " + " | ".join(_cell(row[k]) for k in MEASURES) + " |")
    md += ["", "## per seed (implicit)", "", "| seed | model | " + " | ".join(MEASURES.values())]
    md[-1] += " | worst group |"
    md.append("|---" * (len(MEASURES) + 3) + "|")
    for r in per_seed:
        for model, t in r["tables"]["implicit"].items():
            cells = " | ".join(f"{_estimate(t, k):.3f}" for k in MEASURES)
            md.append(f"| {r['seed']} | {model} | {cells} | {t['worst_group']['group']} |")
    md += ["", "## paired differences over seeds (what it shows)", ""]
    for form, diffs in summary["differences"].items():
        for name, d in diffs.items():
            parts = [f"{MEASURES[k]} {_signed(d[k])}: {verdict(d[k])}" for k in MEASURES]
            md.append(f"- {form}: {name}: " + "; ".join(parts))
    return "\n".join(md)


def _signed(x: dict[str, Any]) -> str:
    if x["lo"] is None:
        return f"{x['mean']:+.3f}"
    return f"{x['mean']:+.3f} [{x['lo']:+.3f}, {x['hi']:+.3f}]"


def plot_generalisation(
    summary: dict[str, Any], per_seed: list[dict[str, Any]], path: Path, form: str = "implicit"
) -> None:
    """One panel per measure: each model's mean over seeds (bar, t interval) and every
    seed's value (dots)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = summary["forms"][form]
    models = list(table)
    fig = Figure(figsize=(4 * len(MEASURES), 3.5))
    for ax, (key, label) in zip(fig.subplots(1, len(MEASURES)), MEASURES.items(), strict=True):
        cells = [table[m][key] for m in models]
        means = [c["mean"] for c in cells]
        err = [
            [c["mean"] - c["lo"] if c["lo"] is not None else 0 for c in cells],
            [c["hi"] - c["mean"] if c["hi"] is not None else 0 for c in cells],
        ]
        ax.bar(models, means, yerr=err, capsize=4, color="tab:blue", alpha=0.6)
        for i, c in enumerate(cells):
            ax.plot([i] * len(c["values"]), c["values"], "k.", ms=5)
        ax.set(title=f"{label} on S2 ({form})", ylim=(0, 1.02))
        ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
