"""Polis import: counts that add up, on a hand-made export and on the shipped real one."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

from valign_ray.privacy import personal_data_logging
from valign_ray.survey.polis import import_polis

REAL = Path(__file__).resolve().parents[1] / "data" / "polis" / "scoop-hivemind.biodiversity"
SALT = "test-salt"

# A tiny conversation. Participants 0-2 in group "0", 3-4 in group "1", 5 unplaced.
# Comment 0, 1 accepted, 2 unmoderated (kept), 3 moderated out. a=1 agree, d=-1, p=0 pass.
FINAL_VOTES = {  # comment -> votes of participants 0..5 (None = not seen)
    0: [1, 1, 0, 1, 1, -1],
    1: [1, 1, 1, 1, -1, 1],
    2: [1, 1, 1, 1, 1, 0],
    3: [1, 1, None, None, None, None],
}
GROUPS = ["0", "0", "0", "1", "1", ""]


def _write(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_tiny_export(folder: Path) -> Path:
    """Write comments.csv, participants-votes.csv and votes.csv; return the folder.

    votes.csv holds 22 rows: the 20 final votes of FINAL_VOTES, an earlier vote of participant 2
    on comment 0 (agree, later changed to pass) and a vote on comment 9, absent from
    comments.csv.
    """
    folder.mkdir(parents=True, exist_ok=True)
    moderated = {0: 1, 1: 1, 2: 0, 3: -1}
    _write(
        folder / "comments.csv",
        [
            "timestamp",
            "datetime",
            "comment-id",
            "author-id",
            "agrees",
            "disagrees",
            "moderated",
            "comment-body",
        ],
        [[100 + c, "", c, 0, 0, 0, m, f"Statement {c}"] for c, m in moderated.items()],
    )
    matrix = []
    for p, group in enumerate(GROUPS):
        cells = [FINAL_VOTES[c][p] for c in range(4)]
        seen = [v for v in cells if v is not None]
        matrix.append(
            [p, group, 0, len(seen), seen.count(1), seen.count(-1)]
            + ["" if v is None else v for v in cells]
        )
    _write(
        folder / "participants-votes.csv",
        [
            "participant",
            "group-id",
            "n-comments",
            "n-votes",
            "n-agree",
            "n-disagree",
            "0",
            "1",
            "2",
            "3",
        ],
        matrix,
    )
    log = [[1000, "", 0, 2, 1]]  # participant 2 agrees with comment 0 first...
    t = 2000
    for c, votes in FINAL_VOTES.items():
        for p, v in enumerate(votes):
            if v is not None:
                log.append([t, "", c, p, v])  # ...and passes later (comment 0, p 2: v = 0)
                t += 1
    log.append([t, "", 9, 0, 1])
    _write(folder / "votes.csv", ["timestamp", "datetime", "comment-id", "voter-id", "vote"], log)
    return folder


def test_tiny_export_counts_add_up(tmp_path: Path) -> None:
    """22 log rows = 18 kept + 1 superseded + 2 on moderated-out comment 3 + 1 on unknown 9."""
    imp = import_polis(write_tiny_export(tmp_path / "tiny"), salt=SALT)
    rep = imp.report
    assert rep["vote_source"] == "votes.csv"
    assert rep["statements"] == {
        "in": 4,
        "kept": 3,
        "moderated_out": 1,
        "moderated_out_ids": ["3"],
        "kept_unmoderated": 1,
    }
    assert rep["votes"] == {
        "in": 22,
        "kept": 18,
        "excluded": {"superseded_revote": 1, "moderated_out": 2, "unknown_statement": 1},
    }
    assert rep["votes"]["in"] == rep["votes"]["kept"] + sum(rep["votes"]["excluded"].values())
    assert rep["participants"] == {
        "total": 6,
        "with_group": 5,
        "without_group": 1,
        "not_in_participants_votes": 0,
    }
    # 6 participants x comments 0..3 less 4 blanks in comment 3 = 20 cells, all agree with the log.
    assert rep["cross_check"] == {"cells_compared": 20, "mismatches": 0}
    assert imp.items["item_id"].to_list() == ["0", "1", "2"]
    assert set(imp.items["n_options"]) == {3} and set(imp.items["kind"]) == {"statement"}
    assert imp.candidates.is_empty()
    assert imp.answers.height == 18 and set(imp.answers["kind"]) == {"likert"}


def test_tiny_export_values_ids_and_groups(tmp_path: Path) -> None:
    """Participant 2's latest vote on comment 0 is pass -> 2; participant 5 has a null group."""
    imp = import_polis(write_tiny_export(tmp_path / "tiny"), salt=SALT)
    pid = {p: hashlib.sha256(f"{SALT}{p}".encode()).hexdigest()[:16] for p in range(6)}
    assert imp.respondents["respondent_id"].to_list() == [pid[p] for p in range(6)]
    assert imp.respondents["group"].to_list() == ["0", "0", "0", "1", "1", None]
    got = {(r, i): v for r, i, v in imp.answers.select("respondent_id", "item_id", "value").rows()}
    likert = {1: 3, 0: 2, -1: 1}
    want = {
        (pid[p], str(c)): likert[v]
        for c, votes in FINAL_VOTES.items()
        if c != 3
        for p, v in enumerate(votes)
        if v is not None
    }
    assert got == want
    assert got[(pid[2], "0")] == 2


def test_matrix_only_export_gives_same_answers(tmp_path: Path) -> None:
    """Without votes.csv the 24 - 4 = 20 matrix cells are the votes: 18 kept + 2 moderated out."""
    folder = write_tiny_export(tmp_path / "tiny")
    with_log = import_polis(folder, salt=SALT)
    (folder / "votes.csv").unlink()
    matrix_only = import_polis(folder, salt=SALT)
    assert matrix_only.report["vote_source"] == "participants-votes.csv"
    assert matrix_only.report["votes"] == {
        "in": 20,
        "kept": 18,
        "excluded": {"superseded_revote": 0, "moderated_out": 2, "unknown_statement": 0},
    }
    key = ["respondent_id", "item_id"]
    assert matrix_only.answers.sort(key).equals(with_log.answers.sort(key))


def test_voter_missing_from_matrix_gets_null_group(tmp_path: Path) -> None:
    folder = write_tiny_export(tmp_path / "tiny")
    with (folder / "votes.csv").open("a") as f:
        f.write("9999,,1,77,1\n")
    rep = import_polis(folder, salt=SALT).report
    assert rep["participants"] == {
        "total": 7,
        "with_group": 5,
        "without_group": 2,
        "not_in_participants_votes": 1,
    }
    assert rep["votes"]["kept"] == 19


@pytest.mark.parametrize(
    ("filename", "column"),
    [
        ("comments.csv", "moderated"),
        ("participants-votes.csv", "group-id"),
        ("votes.csv", "voter-id"),
    ],
)
def test_missing_column_names_file_and_column(tmp_path: Path, filename: str, column: str) -> None:
    folder = write_tiny_export(tmp_path / "tiny")
    path = folder / filename
    rows = list(csv.reader(path.open()))
    drop = rows[0].index(column)
    _write(
        path,
        [h for i, h in enumerate(rows[0]) if i != drop],
        [[v for i, v in enumerate(r) if i != drop] for r in rows[1:]],
    )
    with pytest.raises(ValueError, match=rf"{filename}.*missing column.*{column}"):
        import_polis(folder, salt=SALT)


def test_bad_vote_and_disagreeing_files_raise(tmp_path: Path) -> None:
    folder = write_tiny_export(tmp_path / "tiny")
    text = (folder / "participants-votes.csv").read_text()
    # Participant 5 disagreed with comment 0 (-1) in the log; make the matrix say agree.
    (folder / "participants-votes.csv").write_text(text.replace("5,,0,3,1,1,-1,", "5,,0,3,1,1,1,"))
    with pytest.raises(ValueError, match=r"votes\.csv and .*participants-votes\.csv disagree on 1"):
        import_polis(folder, salt=SALT)
    (folder / "participants-votes.csv").write_text(text)
    with (folder / "votes.csv").open("a") as f:
        f.write("9999,,1,0,2\n")
    # The row finds the vote; the participant id only when privacy.log_personal_data opts in.
    withheld = (
        r"votes\.csv: data row 23, participant <withheld: privacy.log_personal_data is false>"
    )
    with pytest.raises(ValueError, match=withheld + ", comment-id 1: vote 2"):
        import_polis(folder, salt=SALT)
    with personal_data_logging(True):
        with pytest.raises(ValueError, match=r"data row 23, participant '0', comment-id 1: vote 2"):
            import_polis(folder, salt=SALT)
    with pytest.raises(ValueError, match="salt"):
        import_polis(folder, salt="")


def _independent_latest_votes(folder: Path) -> tuple[dict, set[str]]:
    """Latest vote per (voter, comment) by the stdlib csv module, and moderated-out comment ids."""
    with (folder / "comments.csv").open(newline="") as f:
        out = {r["comment-id"] for r in csv.DictReader(f) if r["moderated"] == "-1"}
    latest: dict[tuple[str, str], tuple[int, int, str]] = {}
    with (folder / "votes.csv").open(newline="") as f:
        for row_no, r in enumerate(csv.DictReader(f)):
            key = (r["voter-id"], r["comment-id"])
            stamp = (int(r["timestamp"]), row_no)
            if key not in latest or stamp > latest[key][:2]:
                latest[key] = (*stamp, r["vote"])
    return latest, out


def test_real_biodiversity_export() -> None:
    """The shipped export: 316 comments = 154 kept + 162 moderated out; 29,802 log rows =
    29,188 kept + 83 superseded + 531 on moderated-out comments; 536 participants = 443 placed
    in a group (summary.csv: "443 people who voted enough times") + 93 not placed."""
    imp = import_polis(REAL, salt=SALT)
    rep = imp.report
    st, votes, people = rep["statements"], rep["votes"], rep["participants"]
    assert (st["in"], st["kept"], st["moderated_out"]) == (316, 154, 162)
    assert st["in"] == st["kept"] + st["moderated_out"] == imp.items.height + st["moderated_out"]
    assert len(st["moderated_out_ids"]) == 162
    assert votes["excluded"] == {
        "superseded_revote": 83,
        "moderated_out": 531,
        "unknown_statement": 0,
    }
    assert votes["in"] == 29802 == votes["kept"] + sum(votes["excluded"].values())
    assert people == {
        "total": 536,
        "with_group": 443,
        "without_group": 93,
        "not_in_participants_votes": 0,
    }
    assert rep["cross_check"] == {"cells_compared": 29719, "mismatches": 0}

    latest, out = _independent_latest_votes(REAL)
    kept = {k: v for k, v in latest.items() if k[1] not in out}
    assert len(kept) == imp.answers.height == 29188
    # Participant 1 disagreed with comment 0 (votes.csv row 2) -> Likert 1.
    rid1 = hashlib.sha256(f"{SALT}1".encode()).hexdigest()[:16]
    row = imp.answers.filter(
        (imp.answers["respondent_id"] == rid1) & (imp.answers["item_id"] == "0")
    )
    assert row["value"].to_list() == [1]
    counts = dict(imp.answers["value"].value_counts().rows())
    want = {1: 0, 2: 0, 3: 0}
    for *_, vote in kept.values():
        want[{"-1": 1, "0": 2, "1": 3}[vote]] += 1
    assert counts == want
