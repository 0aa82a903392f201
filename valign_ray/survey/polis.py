"""Import a Polis conversation export into the canonical survey tables (see ``tables.py``).

A Polis export is a folder with (columns as Polis documents them; extra columns are ignored):

- ``comments.csv``: ``comment-id``, ``moderated`` (-1 moderated out, 0 not yet moderated,
  1 accepted), ``comment-body``, plus timestamps, author and vote tallies.
- ``participants-votes.csv``: ``participant``, ``group-id`` (the Polis opinion group, blank
  for participants who voted too little to be placed), tallies, then one column per comment id
  (1 agree, -1 disagree, 0 pass, blank = not seen).
- ``votes.csv`` (optional): the vote log, ``timestamp``, ``comment-id``, ``voter-id``, ``vote``.

**Which vote source is canonical.** ``votes.csv`` when present: it is the raw log, with every
vote and its time, and covers every comment, whereas the wide matrix is derived from it and may
leave out columns (the biodiversity export has no columns for two moderated-out comments). The
log can hold a participant's vote on a comment more than once (a revote, or the client sending
the same vote twice): Polis keeps the latest, so do we, and count the earlier rows as
``superseded_revote``. Where both files exist, the latest vote of every (participant, comment)
cell that both files cover must equal the matrix cell, or we raise: two exports that disagree
cannot both be right. ``participants-votes.csv`` is always read, for the opinion groups.

Statements with ``moderated == -1`` were hidden from voters by the moderator (spam, off topic,
duplicates); they are left out of ``items`` and their votes are counted as excluded. Statements
with ``moderated == 0`` were shown unless the conversation used strict moderation, so they stay.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from valign_ray.errors import InputError
from valign_ray.privacy import personal, personal_data_allowed
from valign_ray.survey.polis_read import matrix_shortfall, read_polis_csv
from valign_ray.survey.tables import (
    ANSWER_COLUMNS,
    CANDIDATE_COLUMNS,
    ITEM_COLUMNS,
    polars_schema,
)

COMMENTS_COLUMNS = ("comment-id", "moderated", "comment-body")
PARTICIPANTS_COLUMNS = ("participant", "group-id")
VOTES_COLUMNS = ("timestamp", "comment-id", "voter-id", "vote")
POLIS_TO_LIKERT = {-1: 1, 0: 2, 1: 3}  # disagree, pass, agree on the 3-option Likert scale

_ITEM_SCHEMA = polars_schema(ITEM_COLUMNS)
_CANDIDATE_SCHEMA = polars_schema(CANDIDATE_COLUMNS)
_ANSWER_SCHEMA = polars_schema(ANSWER_COLUMNS)


@dataclass(frozen=True)
class PolisImport:
    """The canonical tables of one Polis conversation, plus counts of what was kept and why.

    ``report`` adds up: statements ``in == kept + moderated_out``; votes ``in == kept +
    sum(excluded.values())``; participants ``total == with_group + without_group``.
    """

    respondents: pl.DataFrame
    items: pl.DataFrame
    candidates: pl.DataFrame
    answers: pl.DataFrame
    report: dict[str, Any] = field(default_factory=dict)


def pseudonymise(raw_id: str, salt: str) -> str:
    """Return ``sha256(salt + raw_id)`` as 16 hex characters (64 bits).

    Polis participant ids are small integers, so an unsalted hash is reversed by enumerating
    them; the salt must stay secret for the pseudonyms to mean anything.
    """
    return hashlib.sha256((salt + raw_id).encode("utf-8")).hexdigest()[:16]


def _to_int(
    frame: pl.DataFrame, column: str, path: Path, *, id_col: str | None = None
) -> pl.Series:
    """Cast a text column to Int64, raising with the file, row and value of the first bad cell."""
    cast = frame[column].str.strip_chars().cast(pl.Int64, strict=False)
    bad = cast.is_null() & frame[column].is_not_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        where = f"{id_col}={frame[id_col][row]}" if id_col else f"data row {row + 1}"
        raise InputError(
            f"{path}: {where}, column {column!r}: not an integer: {frame[column][row]!r}"
        )
    return cast


def _read_comments(path: Path) -> pl.DataFrame:
    raw = read_polis_csv(path, COMMENTS_COLUMNS, rows="statements")
    comments = pl.DataFrame(
        {
            "comment_id": _to_int(raw, "comment-id", path),
            "moderated": _to_int(raw, "moderated", path, id_col="comment-id"),
            "text": raw["comment-body"],
        }
    )
    if comments["comment_id"].null_count():
        row = int(comments["comment_id"].is_null().arg_true()[0])
        raise InputError(f"{path}: data row {row + 1}: blank 'comment-id'")
    dup = comments.filter(pl.col("comment_id").is_duplicated())["comment_id"].unique().to_list()
    if dup:
        raise InputError(f"{path}: duplicated comment-id(s) {sorted(dup)[:10]}")
    bad_mod = comments.filter(~pl.col("moderated").is_in([-1, 0, 1]).fill_null(False))
    if bad_mod.height:
        row = bad_mod.row(0, named=True)
        raise InputError(
            f"{path}: comment-id={row['comment_id']}: moderated={row['moderated']}, not -1/0/1"
        )
    no_text = comments.filter((pl.col("moderated") >= 0) & pl.col("text").is_null())
    if no_text.height:
        raise InputError(f"{path}: comment-id={no_text['comment_id'][0]}: empty 'comment-body'")
    return comments


def _check_votes(votes: pl.DataFrame, path: Path) -> None:
    bad = votes.filter(~pl.col("vote").is_in(list(POLIS_TO_LIKERT)))
    if bad.height:
        row = bad.row(0, named=True)
        # The log's row finds the vote; the participant id only when privacy allows it.
        where = f"data row {row['row'] + 1}, " if "row" in row else ""
        raise InputError(
            f"{path}: {where}participant {personal(row['participant'])}, "
            f"comment-id {row['comment_id']}: vote {row['vote']} is not -1/0/1"
        )


def _votes_from_matrix(raw: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Long votes (participant, comment_id, vote) from the wide matrix; blank = not seen."""
    vote_cols = [c for c in raw.columns if c.strip().lstrip("-").isdigit()]
    long = (
        raw.select(["participant", *vote_cols])
        .unpivot(index="participant", variable_name="comment_id", value_name="vote")
        .filter(pl.col("vote").is_not_null() & (pl.col("vote").str.strip_chars() != ""))
    )
    votes = pl.DataFrame(
        {
            "participant": long["participant"],
            "comment_id": long["comment_id"].str.strip_chars().cast(pl.Int64),
            "vote": _to_int(long, "vote", path, id_col="participant"),
        }
    )
    _check_votes(votes, path)
    return votes


def _votes_from_log(path: Path) -> tuple[pl.DataFrame, int]:
    """Latest vote per (participant, comment) from votes.csv, and the superseded row count."""
    raw = read_polis_csv(path, VOTES_COLUMNS, rows="votes")
    log = pl.DataFrame(
        {
            "timestamp": _to_int(raw, "timestamp", path),
            "participant": raw["voter-id"].str.strip_chars(),
            "comment_id": _to_int(raw, "comment-id", path),
            "vote": _to_int(raw, "vote", path),
        }
    ).with_row_index("row")
    for col in ("timestamp", "participant", "comment_id", "vote"):
        if log[col].null_count():
            row = int(log[col].is_null().arg_true()[0])
            raise InputError(f"{path}: data row {row + 1}: blank {col!r}")
    _check_votes(log, path)
    # Stable sort: among equal timestamps the later row of the log wins.
    latest = (
        log.sort(["timestamp", "row"])
        .group_by(["participant", "comment_id"], maintain_order=True)
        .last()
        .sort("row")
        .select("participant", "comment_id", "vote")
    )
    return latest, log.height - latest.height


def _cross_check(
    log: pl.DataFrame,
    matrix: pl.DataFrame,
    participants: pl.Series,
    vote_cols: list[int],
    log_path: Path,
    matrix_path: Path,
) -> dict[str, int]:
    """Compare every cell both files cover; a vote present in one and blank in the other counts."""

    def covered(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(
            pl.col("participant").is_in(participants.implode())
            & pl.col("comment_id").is_in(pl.Series(vote_cols, dtype=pl.Int64).implode())
        )

    joined = covered(log).join(
        covered(matrix), on=["participant", "comment_id"], how="full", coalesce=True, suffix="_m"
    )
    bad = joined.filter(pl.col("vote").ne_missing(pl.col("vote_m")))
    if bad.height:
        shown = bad if personal_data_allowed() else bad.drop("participant")
        rows = shown.head(5).to_dicts()
        raise InputError(
            f"{log_path} and {matrix_path} disagree on {bad.height} of {joined.height} "
            f"(participant, comment) cells, e.g. {rows} (vote = latest in the log, vote_m = matrix)"
        )
    return {"cells_compared": joined.height, "mismatches": 0}


def import_polis(export_dir: str | Path, *, salt: str) -> PolisImport:
    """Read a Polis export folder into respondents, items, candidates (empty) and answers.

    Statements become ``statement`` items with ``n_options = 3``; votes become ``likert``
    answers (disagree 1, pass 2, agree 3); participants become respondents with
    ``respondent_id = sha256(salt + participant)[:16]`` and ``group`` = their Polis opinion
    group as a string, or null when Polis did not place them (too few votes). A voter in
    ``votes.csv`` missing from ``participants-votes.csv`` gets a null group and is counted in
    ``report["participants"]["not_in_participants_votes"]``.

    Votes on moderated-out statements, or on comment ids absent from ``comments.csv``, are
    counted in ``report["votes"]["excluded"]`` by reason, as are superseded revotes.
    """
    if not salt:
        raise InputError("salt: must be a non-empty secret (Polis ids are small integers)")
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise InputError("Polis export folder not found", path=export_dir)
    comments = _read_comments(export_dir / "comments.csv")
    matrix_path = export_dir / "participants-votes.csv"
    matrix_raw = _read_participants(matrix_path)
    source, votes, superseded, cross_check = _canonical_votes(
        matrix_raw, matrix_path, export_dir / "votes.csv"
    )
    kept_votes, excluded = _votes_on_kept_statements(votes, comments, superseded)
    shortfall = {}
    if source == "participants-votes.csv":  # without the log, count what the matrix lacks
        kept_ids = comments.filter(pl.col("moderated") >= 0)["comment_id"]
        shortfall = matrix_shortfall(matrix_raw, votes, kept_ids, matrix_path)
    people, not_in_matrix = _people(matrix_raw, votes, salt, export_dir)
    respondents = people.select("respondent_id", "group")
    items = _items(comments)
    answers = _answers(kept_votes, people)
    report: dict[str, Any] = {
        "export_dir": str(export_dir),
        "vote_source": source,
        "statements": _statement_counts(comments, items),
        "votes": {
            "in": votes.height + superseded,
            "kept": answers.height,
            "excluded": excluded,
        },
        "matrix_shortfall": shortfall,
        "warnings": [shortfall["warning"]] if shortfall.get("warning") else [],
        "participants": _participant_counts(respondents, not_in_matrix),
        "cross_check": cross_check,
    }
    return PolisImport(
        respondents=respondents,
        items=items,
        candidates=pl.DataFrame(schema=_CANDIDATE_SCHEMA),
        answers=answers,
        report=report,
    )


def _read_participants(matrix_path: Path) -> pl.DataFrame:
    """``participants-votes.csv`` as text, with participant and group ids stripped."""
    matrix_raw = read_polis_csv(
        matrix_path, PARTICIPANTS_COLUMNS, rows="participants"
    ).with_columns(pl.col("participant").str.strip_chars(), pl.col("group-id").str.strip_chars())
    if matrix_raw["participant"].null_count():
        row = int(matrix_raw["participant"].is_null().arg_true()[0])
        raise InputError(f"{matrix_path}: data row {row + 1}: blank 'participant'")
    dup = matrix_raw.with_row_index("row", 1).filter(pl.col("participant").is_duplicated())
    if dup.height:
        ids = personal(dup["participant"].unique(maintain_order=True).head(10).to_list())
        raise InputError(
            f"{matrix_path}: data rows {dup['row'].head(10).to_list()}: duplicated participant(s) "
            f"{ids}"
        )
    return matrix_raw


def _canonical_votes(
    matrix_raw: pl.DataFrame, matrix_path: Path, log_path: Path
) -> tuple[str, pl.DataFrame, int, dict[str, int]]:
    """The vote source's name, its votes, the superseded revotes and the cross-check counts.

    The log wins when present (see module), after it is checked against the matrix.
    """
    matrix_votes = _votes_from_matrix(matrix_raw, matrix_path)
    if not log_path.is_file():
        return "participants-votes.csv", matrix_votes, 0, {"cells_compared": 0, "mismatches": 0}
    votes, superseded = _votes_from_log(log_path)
    matrix_cols = [int(c) for c in matrix_raw.columns if c.strip().lstrip("-").isdigit()]
    cross_check = _cross_check(
        votes, matrix_votes, matrix_raw["participant"], matrix_cols, log_path, matrix_path
    )
    return "votes.csv", votes, superseded, cross_check


def _votes_on_kept_statements(
    votes: pl.DataFrame, comments: pl.DataFrame, superseded: int
) -> tuple[pl.DataFrame, dict[str, int]]:
    """The votes on statements that stay, and the excluded votes counted by reason."""
    kept_ids = comments.filter(pl.col("moderated") >= 0)["comment_id"]
    known = votes["comment_id"].is_in(comments["comment_id"].implode())
    on_kept = votes["comment_id"].is_in(kept_ids.implode())
    excluded = {
        "superseded_revote": superseded,
        "moderated_out": int((known & ~on_kept).sum()),
        "unknown_statement": int((~known).sum()),
    }
    return votes.filter(on_kept), excluded


def _people(
    matrix_raw: pl.DataFrame, votes: pl.DataFrame, salt: str, export_dir: Path
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Participant, group and pseudonymous ``respondent_id`` of everyone, and the voters who
    are not in the matrix."""
    # Every voter is a respondent; matrix participants with no vote stay too (they were there).
    groups = matrix_raw.select("participant", pl.col("group-id").alias("group"))
    extra = (
        votes.select("participant")
        .unique(maintain_order=True)
        .join(groups, on="participant", how="anti", maintain_order="left")
    )
    people = pl.concat([groups, extra.with_columns(pl.lit(None, pl.String).alias("group"))])
    people = people.with_columns(
        pl.col("group").replace("", None),
        pl.col("participant")
        .map_elements(lambda p: pseudonymise(p, salt), return_dtype=pl.String)
        .alias("respondent_id"),
    )
    if people["respondent_id"].is_duplicated().any():
        raise InputError(f"{export_dir}: two participants share a pseudonym; change the salt")
    return people, extra


def _items(comments: pl.DataFrame) -> pl.DataFrame:
    """The statements that stay, as 3-option ``statement`` items in comment id order."""
    return (
        comments.filter(pl.col("moderated") >= 0)
        .sort("comment_id")
        .select(
            pl.col("comment_id").cast(pl.String).alias("item_id"),
            pl.lit("statement").alias("kind"),
            "text",
            pl.lit(None, pl.String).alias("dimension"),
            pl.lit(3, pl.Int64).alias("n_options"),
        )
        .cast(_ITEM_SCHEMA)
    )


def _answers(kept_votes: pl.DataFrame, people: pl.DataFrame) -> pl.DataFrame:
    """The kept votes as ``likert`` answers under the voters' pseudonyms."""
    return (
        kept_votes.join(
            people.select("participant", "respondent_id"), on="participant", maintain_order="left"
        )
        .select(
            "respondent_id",
            pl.col("comment_id").cast(pl.String).alias("item_id"),
            pl.lit("likert").alias("kind"),
            pl.lit(None, pl.String).alias("response_id"),
            pl.lit(None, pl.String).alias("response_b_id"),
            pl.col("vote").replace_strict(POLIS_TO_LIKERT, return_dtype=pl.Int64).alias("value"),
            pl.lit(None, pl.String).alias("free_text"),
        )
        .cast(_ANSWER_SCHEMA)
    )


def _statement_counts(comments: pl.DataFrame, items: pl.DataFrame) -> dict[str, Any]:
    out_ids = comments.filter(pl.col("moderated") == -1)["comment_id"].sort()
    return {
        "in": comments.height,
        "kept": items.height,
        "moderated_out": out_ids.len(),
        "moderated_out_ids": [str(i) for i in out_ids.to_list()],
        "kept_unmoderated": int((comments["moderated"] == 0).sum()),
    }


def _participant_counts(respondents: pl.DataFrame, not_in_matrix: pl.DataFrame) -> dict[str, int]:
    with_group = int(respondents["group"].is_not_null().sum())
    return {
        "total": respondents.height,
        "with_group": with_group,
        "without_group": respondents.height - with_group,
        "not_in_participants_votes": not_in_matrix.height,
    }
