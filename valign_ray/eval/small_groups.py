"""Small groups: a per-group metric of a group with fewer than ``report.min_group_n``
respondents is kept in ``summary.json`` (marked) but shown nowhere else.

The evaluation stage records, per model, ``group_n`` (held-out respondents per group) and
``suppressed_groups`` (those below the threshold, :func:`mark_small_groups`); everything that
prints, renders or logs a per-group metric (the summary table, the report, W&B, sweep trials)
goes through :func:`shown_group_metrics`, which drops them and recomputes the worst group and
the spread over the groups left. With two respondents in a group, its "A" is close to their
own answers, which is what the threshold keeps out of view.
"""

from __future__ import annotations

from typing import Any

import polars as pl

# Per-model keys that hold {group: value}.
GROUP_KEYS = ("groups", "groups_skill", "groups_majority_agreement")


def group_sizes(answers: pl.DataFrame, respondents: pl.DataFrame, column: str) -> dict[str, int]:
    """Respondents with at least one answer in ``answers``, per value of ``column`` (null
    groups left out), as ``{group: n}``."""
    if column not in respondents.columns or answers.height == 0:
        return {}
    who = answers.select("respondent_id").unique()
    counts = (
        respondents.join(who, on="respondent_id")
        .filter(pl.col(column).is_not_null())
        .group_by(pl.col(column).cast(pl.String).alias("group"))
        .len()
        .sort("group")
    )
    return dict(zip(counts["group"].to_list(), counts["len"].to_list(), strict=True))


def small_groups(sizes: dict[str, int], groups: list[str], min_n: int) -> list[str]:
    """The groups (of ``groups``) with fewer than ``min_n`` respondents (unknown size: 0)."""
    return sorted(g for g in groups if sizes.get(g, 0) < min_n)


def mark_small_groups(metrics: dict[str, Any], sizes: dict[str, int], min_n: int) -> dict[str, Any]:
    """``metrics`` (one model's) with ``group_n`` and ``suppressed_groups`` added when it has
    per-group values; the values themselves stay."""
    present = sorted({g for k in GROUP_KEYS for g in (metrics.get(k) or {})})
    if not present:
        return metrics
    return {
        **metrics,
        "group_n": {g: int(sizes.get(g, 0)) for g in present},
        "suppressed_groups": small_groups(sizes, present, min_n),
    }


def shown_group_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """One model's metrics as they may be shown: the ``suppressed_groups`` removed from every
    per-group mapping (and from ``group_n``), ``worst_group`` / ``spread`` over the groups
    left (dropped when none is left), ``unseen_items`` likewise."""
    out = dict(metrics)
    if isinstance(out.get("unseen_items"), dict):
        out["unseen_items"] = shown_group_metrics(out["unseen_items"])
    hidden = set(out.get("suppressed_groups") or ())
    if not hidden:
        return out
    for key in (*GROUP_KEYS, "group_n"):
        if isinstance(out.get(key), dict):
            out[key] = {g: v for g, v in out[key].items() if g not in hidden}
    left = [v for v in (out.get("groups") or {}).values() if isinstance(v, int | float)]
    for key in ("worst_group", "spread"):
        out.pop(key, None)
    if left and "worst_group" in metrics:
        out["worst_group"] = min(left)
    if left and "spread" in metrics:
        out["spread"] = max(left) - min(left)
    for key in GROUP_KEYS:
        if key in out and not out[key]:
            del out[key]
    return out
