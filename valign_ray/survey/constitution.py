"""A constitution from survey statements: the statements every opinion group agrees with.

For each statement ``s`` and group ``g``, over the respondents of ``g`` who answered ``s``::

    support_g(s) = sum_i w_i * [value_i >= agree_min(s)] / sum_i w_i

``agree_min`` defaults to the top option for items with up to 3 options (Polis: agree = 3 of
disagree 1 / pass 2 / agree 3) and the top two for items with 4 or more (agree + strongly agree
on a 4- or 5-point scale). Passes and neutral answers stay in the denominator: they are answers
from people who saw the statement and did not endorse it, and a principle a model is trained to
follow should be positively endorsed, not merely not opposed. Dropping them would make a
statement most people shrug at look like consensus (Polis also counts passes as "seen").

A statement is kept when ``support_g(s) >= threshold`` in every group, and ranked by the
group-informed consensus ``prod_g support_g(s)`` (Polis ranks by the same product of shares,
each smoothed as (A + 1) / (S + 2); ``smoothing=1`` does that, the default 0 ranks by the raw
shares that the threshold tests). A statement with fewer than ``min_votes_per_group`` answers from
some group is ineligible: its support there is too noisy to claim that group agrees. Respondents
with a null group take no part in the per-group shares but count in ``overall_support``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.privacy import personal


@dataclass(frozen=True)
class Principle:
    """One kept statement: support and answer count (unweighted) per group, and overall."""

    item_id: str
    text: str
    rank: int
    consensus: float
    support: dict[str, float]
    n: dict[str, int]
    overall_support: float
    overall_n: int


@dataclass(frozen=True)
class Constitution:
    """Principles in rank order, the settings that produced them, and what was left out."""

    principles: tuple[Principle, ...]
    groups: tuple[str, ...]
    group_col: str
    threshold: float
    min_votes_per_group: int
    weighted: bool
    smoothing: float
    report: dict[str, Any] = field(default_factory=dict)

    def to_dicts(self) -> list[dict[str, Any]]:
        """The principles as plain dicts (shares rounded to 4 places), as written to YAML."""
        return [
            {
                "id": p.item_id,
                "text": p.text,
                "rank": p.rank,
                "consensus": round(p.consensus, 4),
                "support": {g: round(s, 4) for g, s in p.support.items()},
                "n": dict(p.n),
                "overall_support": round(p.overall_support, 4),
                "overall_n": p.overall_n,
            }
            for p in self.principles
        ]

    def to_yaml(self, path: str | Path) -> Path:
        """Write the constitution as YAML; a directory gets ``constitution.yaml`` inside it."""
        import yaml

        path = Path(path)
        if path.is_dir():
            path = path / "constitution.yaml"
        doc = {
            "group_col": self.group_col,
            "groups": list(self.groups),
            "threshold": self.threshold,
            "min_votes_per_group": self.min_votes_per_group,
            "weighted": self.weighted,
            "smoothing": self.smoothing,
            "principles": self.to_dicts(),
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))
        return path

    def to_markdown(self) -> str:
        """A readable list: each principle with its support in every group."""
        lines = [
            "# Constitution",
            "",
            f"Statements agreed by at least {self.threshold:.0%} of every `{self.group_col}` "
            f"group ({', '.join(self.groups)}), ranked by the product of the groups' support"
            + (" (weighted)." if self.weighted else "."),
            "",
        ]
        for p in self.principles:
            per_group = ", ".join(f"{g}: {p.support[g]:.0%} (n={p.n[g]})" for g in self.groups)
            lines.append(f"{p.rank}. {p.text.strip()}")
            lines.append(
                f"   - `{p.item_id}` consensus {p.consensus:.3f}; {per_group}; "
                f"overall {p.overall_support:.0%} (n={p.overall_n})"
            )
        return "\n".join(lines) + "\n"


def _require(frame: pl.DataFrame, name: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; found {frame.columns}")


def _default_agree_min(n_options: pl.Expr) -> pl.Expr:
    return pl.when(n_options <= 3).then(n_options).otherwise(n_options - 1)


def _respondent_weights(
    respondents: pl.DataFrame, group_col: str, weight_col: str | None
) -> tuple[pl.DataFrame, bool]:
    weighted = weight_col is not None and weight_col in respondents.columns
    weight = pl.col(weight_col).cast(pl.Float64) if weighted else pl.lit(1.0)
    people = respondents.select(
        "respondent_id",
        pl.col(group_col).cast(pl.String).alias("_group"),
        weight.alias("_w"),
    )
    if people["respondent_id"].is_duplicated().any():
        dup = people.filter(pl.col("respondent_id").is_duplicated())["respondent_id"][0]
        raise ValueError(f"respondents: duplicated respondent_id {personal(dup)}")
    bad = people.filter(pl.col("_w").is_null() | ~pl.col("_w").is_finite() | (pl.col("_w") < 0))
    if bad.height:
        row = bad.row(0, named=True)
        raise ValueError(
            f"respondents: respondent {personal(row['respondent_id'])}: {weight_col}={row['_w']} "
            "is not a finite weight >= 0"
        )
    return people, weighted


def build_constitution(
    items: pl.DataFrame,
    answers: pl.DataFrame,
    respondents: pl.DataFrame,
    *,
    group_col: str = "group",
    weight_col: str | None = "weight",
    threshold: float = 0.6,
    min_votes_per_group: int = 5,
    agree_min: int | None = None,
    smoothing: float = 0.0,
) -> Constitution:
    """Keep the statements that at least ``threshold`` of every group agrees with (see module).

    ``group_col`` is any respondent column: a Polis opinion group or a demographic (e.g.
    ``region_group``). ``weight_col`` None or absent means every weight is 1. ``agree_min``
    overrides the per-item default for every statement item (it must be a valid option of each).
    ``smoothing`` ``a`` > 0 ranks by ``prod_g (W_agree_g + a) / (W_g + 2a)`` instead, Polis's
    pseudo-count (a = 1), which pulls shares from few answers toward 1/2; the threshold test and
    the reported support always use the raw shares.
    Answers that are not ``likert`` answers to ``statement`` items play no part (counted in the
    report); anything inconsistent (unknown respondent or item, duplicate or out-of-range
    answer) raises ValueError.
    """
    _check_settings(threshold, smoothing, min_votes_per_group)
    _require(items, "items", ("item_id", "kind", "text", "n_options"))
    _require(answers, "answers", ("respondent_id", "item_id", "kind", "value"))
    _require(respondents, "respondents", ("respondent_id", group_col))

    statements = _statements(items, agree_min)
    people, weighted = _respondent_weights(respondents, group_col, weight_col)
    likert = _statement_answers(answers, statements)
    joined = _weighted_answers(likert, statements, people)
    groups = tuple(sorted(people["_group"].drop_nulls().unique().to_list()))
    if not groups:
        raise ValueError(f"respondents: column {group_col!r} has no non-null group")

    scored, ineligible, below = _score_statements(
        statements, joined, groups, threshold, min_votes_per_group, smoothing
    )
    principles = _ranked(scored)
    return Constitution(
        principles=principles,
        groups=groups,
        group_col=group_col,
        threshold=threshold,
        min_votes_per_group=min_votes_per_group,
        weighted=weighted,
        smoothing=smoothing,
        report={
            "statements": {
                "considered": statements.height,
                "kept": len(principles),
                "below_threshold": len(below),
                "ineligible": len(ineligible),
            },
            "ineligible": ineligible,
            "below_threshold_ids": below,
            **_answer_counts(people, joined, answers, likert),
        },
    )


def _check_settings(threshold: float, smoothing: float, min_votes_per_group: int) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold={threshold}: must be in (0, 1]")
    if smoothing < 0:
        raise ValueError(f"smoothing={smoothing}: must be >= 0")
    if min_votes_per_group < 1:
        raise ValueError(f"min_votes_per_group={min_votes_per_group}: must be >= 1")


def _statements(items: pl.DataFrame, agree_min: int | None) -> pl.DataFrame:
    """The statement items with their ``_agree_min``, which must be one of their options."""
    statements = items.filter(pl.col("kind") == "statement").select(
        "item_id",
        "text",
        pl.col("n_options").cast(pl.Int64),
        (
            pl.lit(agree_min, pl.Int64)
            if agree_min is not None
            else _default_agree_min(pl.col("n_options").cast(pl.Int64))
        ).alias("_agree_min"),
    )
    if statements.is_empty():
        raise ValueError("items: no item of kind 'statement'")
    bad = statements.filter(
        (pl.col("_agree_min") < 1) | (pl.col("_agree_min") > pl.col("n_options"))
    )
    if bad.height:
        row = bad.row(0, named=True)
        raise ValueError(
            f"items: item {row['item_id']!r} has n_options={row['n_options']}: "
            f"agree_min={row['_agree_min']} is not one of its options"
        )
    return statements


def _statement_answers(answers: pl.DataFrame, statements: pl.DataFrame) -> pl.DataFrame:
    """The likert answers to the statements; a likert answer to any other item is an error."""
    is_ours = (pl.col("kind") == "likert") & pl.col("item_id").is_in(
        statements["item_id"].implode()
    )
    likert = answers.filter(is_ours).select("respondent_id", "item_id", "value")
    stray = answers.filter((pl.col("kind") == "likert") & ~is_ours)
    if stray.height:
        raise ValueError(
            f"answers: likert answer to unknown statement item {stray['item_id'][0]!r}"
        )
    if likert.select(pl.struct("respondent_id", "item_id").is_duplicated().any()).item():
        dup = likert.filter(pl.struct("respondent_id", "item_id").is_duplicated()).row(0)
        raise ValueError(
            f"answers: respondent {personal(dup[0])} answered item {dup[1]!r} more than once"
        )
    return likert


def _weighted_answers(
    likert: pl.DataFrame, statements: pl.DataFrame, people: pl.DataFrame
) -> pl.DataFrame:
    """Each answer with its statement, respondent group ``_group``, ``_w`` and ``_w_agree``."""
    # Left order kept so that the first bad row reported is the first in the input.
    joined = likert.join(statements, on="item_id", maintain_order="left").join(
        people, on="respondent_id", how="left", maintain_order="left"
    )
    unknown = joined.filter(pl.col("_w").is_null())
    if unknown.height:
        who = personal(unknown["respondent_id"][0])
        raise ValueError(f"answers: respondent {who} not in respondents")
    out_of_range = joined.filter((pl.col("value") < 1) | (pl.col("value") > pl.col("n_options")))
    if out_of_range.height:
        row = out_of_range.row(0, named=True)
        raise ValueError(
            f"answers: respondent {personal(row['respondent_id'])}, item {row['item_id']!r}: "
            f"value {row['value']} outside 1..{row['n_options']}"
        )
    return joined.with_columns(
        (pl.col("_w") * (pl.col("value") >= pl.col("_agree_min"))).alias("_w_agree")
    )


def _shares(frame: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Answer count ``n``, weights ``w_agree`` and ``w``, and ``support = w_agree / w`` by key."""
    return frame.group_by(by).agg(
        pl.len().alias("n"),
        pl.col("_w_agree").sum().alias("w_agree"),
        pl.col("_w").sum().alias("w"),
        (pl.col("_w_agree").sum() / pl.col("_w").sum()).alias("support"),
    )


def _score_statements(
    statements: pl.DataFrame,
    joined: pl.DataFrame,
    groups: tuple[str, ...],
    threshold: float,
    min_votes_per_group: int,
    smoothing: float,
) -> tuple[list[tuple], list[dict[str, Any]], list[str]]:
    """Sort the statements into scored (consensus first), ineligible and below threshold."""
    per_group = _shares(joined.filter(pl.col("_group").is_not_null()), ["item_id", "_group"])
    lookup = {(r["item_id"], r["_group"]): r for r in per_group.iter_rows(named=True)}
    overall_of = {r["item_id"]: r for r in _shares(joined, ["item_id"]).iter_rows(named=True)}
    scored, ineligible, below = [], [], []
    for item_id, text in statements.select("item_id", "text").iter_rows():
        n = {g: lookup[(item_id, g)]["n"] if (item_id, g) in lookup else 0 for g in groups}
        support = {g: lookup[(item_id, g)]["support"] if n[g] else None for g in groups}
        short = _short_groups(n, support, min_votes_per_group)
        if short:
            ineligible.append({"item_id": item_id, "short_groups": short})
            continue
        if min(support.values()) < threshold:
            below.append(item_id)
            continue
        consensus = _consensus([lookup[(item_id, g)] for g in groups], smoothing)
        ov = overall_of[item_id]
        scored.append((consensus, ov["support"], item_id, text, support, n, ov["n"]))
    return scored, ineligible, below


def _short_groups(
    n: dict[str, int], support: dict[str, float | None], min_votes_per_group: int
) -> dict[str, int]:
    """The groups that make a statement ineligible, with their answer counts."""
    short = {g: k for g, k in n.items() if k < min_votes_per_group}
    # A group whose answerers all weigh 0 has no share to speak of: ineligible too.
    short |= {g: n[g] for g, s in support.items() if s is not None and s != s}
    return short


def _consensus(cells: list[dict[str, Any]], smoothing: float) -> float:
    """``prod_g (W_agree_g + a) / (W_g + 2a)`` over one statement's group cells, in group order."""
    consensus = 1.0
    for cell in cells:
        consensus *= (cell["w_agree"] + smoothing) / (cell["w"] + 2 * smoothing)
    return consensus


def _ranked(scored: list[tuple]) -> tuple[Principle, ...]:
    """Principles by consensus; ties broken by overall support, then id, so the ranking never
    depends on input order."""
    scored = sorted(scored, key=lambda t: (-t[0], -t[1], t[2]))
    return tuple(
        Principle(item_id, text, rank, consensus, support, n, ov_support, ov_n)
        for rank, (consensus, ov_support, item_id, text, support, n, ov_n) in enumerate(
            scored, start=1
        )
    )


def _answer_counts(
    people: pl.DataFrame, joined: pl.DataFrame, answers: pl.DataFrame, likert: pl.DataFrame
) -> dict[str, Any]:
    """The report's ``respondents`` and ``answers`` sections."""
    return {
        "respondents": {
            "total": people.height,
            "without_group": people.filter(pl.col("_group").is_null()).height,
            "answers_without_group": int(joined["_group"].is_null().sum()),
        },
        "answers": {
            "used": joined.height,
            "not_likert_statement": answers.height - likert.height,
        },
    }
