"""Headline experiment: does training with survey weights make the model represent the
synthetic POPULATION (and each subgroup) better than training without them?

    python experiments/representation.py configs/representation.yaml [--output-dir DIR]
        [--set key=value ...]

Runs the pipeline once per variant (``variant_overrides``) under one experiment folder (the
reference cache in ``.cache`` is shared), scores every aligned model and the base model against
the population truth, and writes results.json, results.md, preferences.parquet and two plots.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
import yaml  # noqa: E402

from valign_ray.config import load_config  # noqa: E402
from valign_ray.config_loader import to_dict  # noqa: E402
from valign_ray.eval import representation as rep  # noqa: E402
from valign_ray.eval import representation_runs as runs  # noqa: E402
from valign_ray.pipeline import run_pipeline  # noqa: E402
from valign_ray.survey.margins import load_margins  # noqa: E402
from valign_ray.survey.synthetic import generate_synthetic  # noqa: E402

# The model's preference read two ways, and what each run's (weighted) training split says.
FORMS = {"implicit": "p_implicit", "logprob": "p_logprob", "data": "p_data"}
COMPARISONS = [
    ("kto_weighted", "kto_unweighted"),
    ("kto_oracle", "kto_unweighted"),
    ("kto_oracle", "kto_weighted"),
    ("dpo_hard", "dpo_unweighted"),
    ("dpo_oracle", "dpo_hard"),
    ("dpo_soft", "dpo_hard"),
]


def finished(cfg) -> bool:
    """A run dir with a summary (written last) and the same survey, weighting, data, tiny model,
    loss and training config: rerunning after a crash skips it instead of retraining."""
    snap, summary = cfg.run_dir / "config.yaml", cfg.run_dir / "summary.json"
    if not (summary.exists() and snap.exists()):
        return False
    old, new = yaml.safe_load(snap.read_text()), to_dict(cfg)
    keys = ("survey", "weighting", "data", "loss", "train")
    return all(old.get(k) == new[k] for k in keys) and old["model"]["tiny"] == new["model"]["tiny"]


def plot(results: dict, exp: Path) -> None:
    for form, table in results.items():
        names = list(table)
        est = [table[m]["population"]["estimate"] for m in names]
        err = [
            [e - table[m]["population"]["lo"] for m, e in zip(names, est, strict=True)],
            [table[m]["population"]["hi"] - e for m, e in zip(names, est, strict=True)],
        ]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.bar(names, est, yerr=err, capsize=4, color="tab:blue")
        low = min(table[m]["population"]["lo"] for m in names)
        ax.set(ylabel="A(model, population)", ylim=(low - 0.05, 1.0), title=f"A ({form})")
        fig.autofmt_xdate()
        fig.savefig(exp / f"a_population_{form}.png", dpi=120, bbox_inches="tight")
        groups = [g["group"] for g in table[names[0]]["groups"]]
        fig, ax = plt.subplots(figsize=(9, 4))
        width = 0.8 / len(names)
        for k, m in enumerate(names):
            ax.bar(
                [i + k * width for i in range(len(groups))],
                [g["estimate"] for g in table[m]["groups"]],
                width,
                label=m,
            )
        ticks = [i + 0.4 - width / 2 for i in range(len(groups))]
        ax.set_xticks(ticks, groups, rotation=30, ha="right")
        low = min(g["estimate"] for m in names for g in table[m]["groups"])
        ax.set(ylabel="A(model, group)", ylim=(low - 0.05, 1.0), title=f"per-group A ({form})")
        ax.legend(fontsize=7, ncol=3)
        fig.savefig(exp / f"a_groups_{form}.png", dpi=120, bbox_inches="tight")
        plt.close("all")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--output-dir", help="experiment folder (default: output_dir/name)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    base = load_config(args.config, args.set)
    exp = Path(args.output_dir) if args.output_dir else base.run_dir
    common = [*args.set, f"output_dir={exp}"]
    paths, everyone = runs.write_oracle_survey(base, exp / "oracle_survey", seed=0)
    oracle = ["survey.source=files"] + [f"survey.files.{k}={v}" for k, v in paths.items()]
    cfgs = {}
    for name, extra in runs.variant_overrides(base).items():
        cfg = load_config(
            args.config,
            [*common, f"name={name}", *extra] + (oracle if name.endswith("_oracle") else []),
        )
        if not finished(cfg):
            run_pipeline(cfg)
        cfgs[name] = cfg
    # The biased survey again (deterministic by seed): its flips and tables; the run's written
    # truth and the oracle's population truth must both be this one.
    biased = generate_synthetic(
        runs.synthetic_spec(base),
        load_margins(base.weighting.margins),
        variables=base.weighting.variables,
    )
    truth = pl.read_parquet(exp / "kto_unweighted" / "survey" / "truth.parquet")
    if not (truth.equals(biased.truth) and everyone.truth.equals(biased.truth)):
        raise RuntimeError("population truth differs between variants: check the seed")
    flipped = biased.flips.filter("flipped")["item_id"].to_list()
    run = {n: c.run_dir for n, c in cfgs.items()}
    models = {"base": (run["kto_unweighted"] / "base_model",) * 2 + (base.loss.beta,)}
    models |= {n: (run[n] / "model", run[n] / "base_model", cfgs[n].loss.beta) for n in run}
    digests = {
        hashlib.sha256((run[n] / "base_model" / "model.safetensors").read_bytes()).hexdigest()
        for n in run
    }
    prefs = runs.score_models(
        models,
        biased.items,
        biased.candidates,
        truth,
        max_length=base.data.max_length,
        batch_size=base.eval.batch_size,
    )
    prefs.write_parquet(exp / "preferences.parquet")
    by_model = {m: prefs.filter(pl.col("model") == m) for m in models}
    pairs = rep.pole_pairs(biased.items, biased.candidates, truth)
    data = {
        n: rep.data_preferences(
            pl.read_parquet(run[n] / "datasets" / "answers_train.parquet"),
            pairs,
            pl.read_parquet(run[n] / "weights" / "weights.parquet")
            if cfgs[n].weighting.enabled
            else None,
        )
        for n in run
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
    meta = {
        "flipped_items": flipped,
        "base_models_identical": len(digests) == 1,
        "summaries": {n: json.loads((run[n] / "summary.json").read_text()) for n in run},
    }
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
    md = [runs.results_markdown(results[f], title=f"{f} ({c})") for f, c in FORMS.items()]
    lines = ["### paired differences (bootstrap over the same items)", ""]
    for form, d in diffs.items():
        lines += [
            f"- {form}: {k}: dA(pop) {v['population']['estimate']:+.3f} "
            f"[{v['population']['lo']:+.3f}, {v['population']['hi']:+.3f}], d majority "
            f"{v['majority_agreement']['estimate']:+.3f} "
            f"[{v['majority_agreement']['lo']:+.3f}, {v['majority_agreement']['hi']:+.3f}]"
            for k, v in d.items()
        ]
    md.append("\n".join(lines))
    md.append(f"flipped items: {len(flipped)}; base models identical: {len(digests) == 1}")
    text = "\n\n".join([f"# Representation of the population ({rep.UNCERTAINTY_NOTE})", *md])
    (exp / "results.md").write_text(text + "\n")
    plot({f: results[f] for f in ("implicit", "logprob")}, exp)
    print(text)


if __name__ == "__main__":
    main()
