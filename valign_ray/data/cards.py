"""Dataset cards: what a built dataset holds, in JSON (for code) and Markdown (for people)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.survey.weighting import kish_ess


def dataset_card(rows: pl.DataFrame, name: str, *, label_column: str | None = None) -> dict:
    """Rows, weighted share per group (and per label), and the Kish ESS of the row weights.

    Share of category c = sum of the weights of its rows / sum of all weights;
    ESS = (sum w)^2 / sum w^2. A ``label_column`` that the rows lack is an error, not an empty
    table on the card.
    """
    if label_column is not None and label_column not in rows.columns:
        raise ValueError(
            f"dataset card {name!r}: label column {label_column!r} is not a row column; "
            f"available: {', '.join(rows.columns)}"
        )
    total = float(rows["weight"].sum()) if rows.height else 0.0

    def shares(by: str) -> dict[str, float]:
        agg = rows.group_by(by).agg(pl.col("weight").sum()).sort(by)
        return {str(k): float(w) / total for k, w in agg.iter_rows()} if total else {}

    card: dict[str, Any] = {
        "name": name,
        "rows": rows.height,
        "weight_total": total,
        "ess": kish_ess(rows["weight"]) if rows.height else 0.0,
        "weighted_share_by_group": shares("group") if "group" in rows.columns else {},
    }
    if label_column is not None:
        card["weighted_share_by_label"] = shares(label_column)
    if "item_id" in rows.columns:
        card["items"] = rows["item_id"].n_unique()
    return card


def card_markdown(card: dict) -> str:
    lines = [
        f"# Dataset card: {card['name']}",
        "",
        f"- rows: {card['rows']}",
        f"- items: {card.get('items', 'n/a')}",
        f"- effective sample size (Kish, row weights): {card['ess']:.1f}",
        "",
    ]
    for title, key in (("group", "weighted_share_by_group"), ("label", "weighted_share_by_label")):
        if card.get(key):
            lines += [f"| {title} | weighted share |", "|---|---|"]
            lines += [f"| {k} | {v:.3f} |" for k, v in card[key].items()]
            lines.append("")
    return "\n".join(lines)


def write_card(card: dict, out_dir: str | Path) -> None:
    """Write ``card.json`` and ``card.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "card.md").write_text(card_markdown(card))
