"""Per-group A of a Likert run under two weighting schemes, side by side (the Polis comparison).

A Polis conversation has no census margins, so how its opinion groups count is a choice: left
unweighted a group counts by how many of its members voted, under ``weighting.scheme:
opinion_groups`` each group gets its target share (equal by default). Each scheme trains its
own model (the weights change the training rows' weights), and every run scores its held-out
participants per opinion group (``eval.<model>.groups``: each group's own answer split, so a
group's A does not depend on how the groups are weighted against each other; ``A_population``
does: everyone's split under that run's weights). This module only tabulates the runs'
``summary.json`` eval sections; ``experiments/polis_schemes.py`` runs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

# scheme name -> the config overrides of its run (applied to configs/polis.yaml)
SCHEMES: dict[str, tuple[str, ...]] = {
    "unweighted": ("weighting.enabled=false",),
    "opinion_groups": ("weighting.enabled=true", "weighting.scheme=opinion_groups"),
}
MODELS = ("base", "aligned")


def scheme_group_table(evals: Mapping[str, Mapping[str, Any]]) -> pl.DataFrame:
    """One row per (scheme, model, row): row is each opinion group's A (``group <g>``), then
    ``population`` (A of everyone under the scheme's weights), ``worst group`` and ``spread``.

    ``evals``: scheme -> that run's ``summary.json`` ``eval`` section (models ``base`` and
    ``aligned``, each with ``A_population`` and ``groups``). ValueError naming the scheme and
    model when one lacks them.
    """
    rows = []
    for scheme, ev in evals.items():
        for model in MODELS:
            entry = ev.get(model)
            if not isinstance(entry, Mapping) or not isinstance(entry.get("groups"), Mapping):
                raise ValueError(f"scheme {scheme!r}: eval.{model} has no per-group A (groups)")
            groups = {str(g): float(a) for g, a in entry["groups"].items()}
            if not groups or "A_population" not in entry:
                raise ValueError(f"scheme {scheme!r}: eval.{model} lacks groups or A_population")
            values = [(f"group {g}", a) for g, a in sorted(groups.items())]
            worst = min(groups.values())
            values += [
                ("population", float(entry["A_population"])),
                ("worst group", worst),
                ("spread", max(groups.values()) - worst),
            ]
            rows += [(scheme, model, r, v) for r, v in values]
    schema = {"scheme": pl.String, "model": pl.String, "row": pl.String, "A": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def scheme_markdown(table: pl.DataFrame, *, title: str = "Polis: A per opinion group") -> str:
    """The table wide: a row per group / population / worst group / spread, a column per
    (model, scheme), each A to 4 places."""
    cols = list(dict.fromkeys(zip(table["model"], table["scheme"], strict=True)))
    order = list(dict.fromkeys(table["row"]))
    cell = {(m, s, r): a for s, m, r, a in table.iter_rows()}
    head = "| | " + " | ".join(f"{m} ({s})" for m, s in cols) + " |"
    lines = [f"### {title}", "", head, "|---" * (len(cols) + 1) + "|"]
    for r in order:
        shown = [cell.get((m, s, r)) for m, s in cols]
        lines.append(
            f"| {r} | " + " | ".join("-" if a is None else f"{a:.4f}" for a in shown) + " |"
        )
    return "\n".join(lines)
