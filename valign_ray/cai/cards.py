"""CAI dataset cards: ``card.json`` and ``card.md`` for ``cai/sl`` and ``cai/rl``.

A card extends :func:`valign_ray.data.cards.dataset_card` (rows, weighted shares, ESS) with
where the data came from: prompt sources and quarantine counts, the constitution file (path,
hash, source, each principle's support), the templates' hashes, the sampling settings, the
fingerprints of the models that generated or labelled it, and the label distribution.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.cai.constitution import CaiConstitution
from valign_ray.cai.templates import PLACEHOLDERS, CaiTemplates


def provenance(constitution: CaiConstitution, templates: CaiTemplates) -> dict[str, Any]:
    """The constitution (file, hash, source, principles with support) and template hashes."""
    from valign_ray.provenance import file_hash

    return {
        "constitution": {
            "path": constitution.path,
            "hash": file_hash(constitution.path, key="cai.constitution"),
            "source": constitution.source,
            "principles": [
                {
                    "id": p.id,
                    "text": p.text,
                    "overall_support": p.overall_support,
                    "support": p.support,
                }
                for p in constitution.principles
            ],
        },
        "templates": {
            "path": templates.path,
            "hashes": {name: templates.hash(name) for name in PLACEHOLDERS},
        },
    }


def cai_card(
    rows: pl.DataFrame, name: str, *, label_column: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The dataset card of ``rows`` plus the ``extra`` sections (JSON-able)."""
    from valign_ray.data.cards import dataset_card

    return {**dataset_card(rows, name, label_column=label_column), **extra}


def card_markdown(card: dict[str, Any]) -> str:
    """The dataset card's Markdown, then each extra section as a JSON block."""
    from valign_ray.data.cards import card_markdown as base_markdown

    base_keys = {"name", "rows", "weight_total", "ess", "weighted_share_by_group", "items"}
    base_keys.add("weighted_share_by_label")
    lines = [base_markdown(card)]
    for key, value in card.items():
        if key in base_keys:
            continue
        lines += [f"## {key}", "", "```json", json.dumps(value, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def write_cai_card(card: dict[str, Any], out_dir: Path) -> None:
    """``card.json`` and ``card.md`` in ``out_dir``."""
    from valign_ray.run_layout import write_text_atomic

    write_text_atomic(out_dir / "card.json", json.dumps(card, indent=2, default=str) + "\n")
    write_text_atomic(out_dir / "card.md", card_markdown(card))
