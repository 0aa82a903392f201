"""Population A against worst-group A of what the biased sample *says*, under each weighting,
without training a model (seconds): the ``data`` form of the representation headline.

    python experiments/weighting_tradeoff.py [configs/representation.yaml] [--set key=value ...]

Regenerates the headline's biased synthetic survey, weights its respondents three ways (none,
raking to the population margins, group-balanced: raking to equal shares of each raking
variable's categories, ``weighting.scheme: balanced``; the config's trim cap and policy), and
scores each weighted sample's per-item preference (:func:`representation.data_preferences`, all
respondents: no hold-out) against the population truth with the headline's metrics (item
bootstrap intervals). A model that learnt its data's majorities exactly would score this; the
trained variants (``kto_balanced``, ``dpo_balanced`` of experiments/representation.py) show
what training does with it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere


def main() -> None:
    from valign_ray.config import load_config
    from valign_ray.eval import representation as rep
    from valign_ray.eval.representation_experiment import biased_survey
    from valign_ray.eval.respondent_bootstrap import replicate_weigher

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/representation.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    survey = biased_survey(cfg)
    pairs = rep.pole_pairs(survey.items, survey.candidates, survey.truth)
    flipped = survey.flips.filter("flipped")["item_id"].to_list()
    resp = survey.respondents
    head = "| weighting | A(population) | worst-group A | worst group | spread | ESS |"
    lines = [
        f"### data form, {cfg.name} survey (n={resp.height}, {len(flipped)} flipped items)",
        "",
        head,
        "|---|---|---|---|---|---|",
    ]
    for label, wcfg in (
        ("none", replace(cfg.weighting, enabled=False)),
        ("population", replace(cfg.weighting, enabled=True, scheme="raking")),
        ("group-balanced", replace(cfg.weighting, enabled=True, scheme="balanced")),
    ):
        weigh = replicate_weigher(wcfg)
        weights = None if weigh is None else resp.select("respondent_id").with_columns(
            weight=weigh(resp)
        )  # fmt: skip
        data = rep.data_preferences(survey.answers, pairs, weights)
        table = rep.representation_table(
            data, survey.truth, variables=cfg.weighting.variables, flipped=flipped, column="p_data"
        )
        w = weights["weight"] if weights is not None else None
        ess = resp.height if w is None else float(w.sum() ** 2 / (w**2).sum())
        pop, worst, spread = table["population"], table["worst_group"], table["spread"]
        lines.append(
            f"| {label} | {pop['estimate']:.3f} [{pop['lo']:.3f}, {pop['hi']:.3f}] | "
            f"{worst['estimate']:.3f} [{worst['lo']:.3f}, {worst['hi']:.3f}] | {worst['group']} "
            f"| {spread['estimate']:.3f} | {ess:.1f} |"
        )
    lines.append("")
    lines.append(f"intervals: {rep.UNCERTAINTY_NOTE}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
