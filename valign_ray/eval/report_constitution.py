"""The report's constitution section (see :mod:`valign_ray.eval.report`, section 6):
``constitution.yaml`` as written by :meth:`valign_ray.survey.constitution.Constitution.to_yaml`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from valign_ray.eval import plots
from valign_ray.eval.report_render import Plot, Section, Table, missing

TOP_PRINCIPLES = 15


def _plot(key: str, caption: str, fig: object) -> Plot:
    return Plot(key, caption, plots.figure_png(fig))


def constitution_section(path: Path) -> Section:
    """``constitution.yaml``: how many principles, the top ones, support per group."""
    sec = Section("Constitution")
    if not path.exists():
        sec.blocks.append(missing(path.name))
        return sec
    import yaml

    doc = yaml.safe_load(path.read_text()) or {}
    principles = doc.get("principles")
    if not isinstance(principles, list):
        raise ValueError(f"{path}: expected a 'principles' list")
    for i, p in enumerate(principles):
        if not isinstance(p, dict) or any(k not in p for k in ("id", "text", "support")):
            raise ValueError(f"{path}: principles[{i}] needs 'id', 'text' and 'support'")
    groups = [
        str(g)
        for g in doc.get("groups") or dict.fromkeys(g for p in principles for g in p["support"])
    ]
    threshold = f"at least {doc['threshold']:.0%} " if "threshold" in doc else ""
    sec.blocks.append(
        f"{len(principles)} principle(s) with {threshold}support in every group of "
        f"{doc.get('group_col', 'the grouping column')}: {', '.join(groups)}."
    )
    if not principles:
        return sec
    top = principles[:TOP_PRINCIPLES]
    rows = [
        [p.get("rank", i + 1), p["id"], " ".join(str(p["text"]).split())]
        + [p.get("consensus"), min(p["support"].values()), p.get("overall_support")]
        for i, p in enumerate(top)
    ]
    cols = ["rank", "id", "principle", "consensus", "min group support", "overall support"]
    sec.blocks.append(Table("constitution", "Top principles", cols, rows))
    try:
        support = np.array([[float(p["support"][g]) for g in groups] for p in top])
    except KeyError as err:
        raise ValueError(f"{path}: a principle has no support for group {err}") from err
    labels = [f"{p.get('rank', i + 1)}. {p['id']}" for i, p in enumerate(top)]
    fig = plots.support_heatmap(labels, groups, support)
    sec.blocks.append(_plot("constitution_support", "Support per principle and group", fig))
    return sec
