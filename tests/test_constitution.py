"""Constitution: hand-computed group shares, weights, ranking, and the real Polis export."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import polars as pl
import pytest
import yaml

from valign_ray.privacy import personal_data_logging
from valign_ray.survey.constitution import build_constitution
from valign_ray.survey.polis import import_polis

REAL = Path(__file__).resolve().parents[1] / "data" / "polis" / "scoop-hivemind.biodiversity"
SALT = "s"

# A tiny Polis export. Participants 0-2 are group "0", 3-4 group "1", 5 unplaced (null group).
# Votes (1 agree, 0 pass, -1 disagree), participants 0..5; comment 3 is moderated out.
VOTES = {
    0: [1, 1, 0, 1, 1, -1],
    1: [1, 1, 1, 1, -1, 1],
    2: [1, 1, 1, 1, 1, 0],
    3: [1, 1, None, None, None, None],
}
GROUPS = ["0", "0", "0", "1", "1", ""]


def _write(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def tiny_import(tmp_path: Path):
    moderated = {0: 1, 1: 1, 2: 1, 3: -1}
    _write(
        tmp_path / "comments.csv",
        ["comment-id", "moderated", "comment-body"],
        [[c, m, f"Statement {c}"] for c, m in moderated.items()],
    )
    _write(
        tmp_path / "participants-votes.csv",
        ["participant", "group-id", "0", "1", "2", "3"],
        [
            [p, g, *("" if VOTES[c][p] is None else VOTES[c][p] for c in range(4))]
            for p, g in enumerate(GROUPS)
        ],
    )
    return import_polis(tmp_path, salt=SALT)


def _rid(p: int) -> str:
    return hashlib.sha256(f"{SALT}{p}".encode()).hexdigest()[:16]


def test_tiny_export_unweighted_shares_and_ranking(tmp_path: Path) -> None:
    """Agree = 3 (Polis agree); a pass stays in the denominator.

    comment 0: group 0 agree 2 of 3 (one pass) = 0.667; group 1 2/2 = 1 -> consensus 0.667;
               overall (with the null-group disagree) 4/6 = 0.667
    comment 1: group 0 3/3 = 1; group 1 1/2 = 0.5 < 0.6 -> left out
    comment 2: group 0 3/3; group 1 2/2 -> consensus 1; overall 5/6 (participant 5 passed)
    Ranking: comment 2 (1.0), comment 0 (0.667).
    """
    imp = tiny_import(tmp_path)
    con = build_constitution(imp.items, imp.answers, imp.respondents, min_votes_per_group=2)
    assert con.groups == ("0", "1") and not con.weighted
    assert [p.item_id for p in con.principles] == ["2", "0"]
    assert [p.rank for p in con.principles] == [1, 2]
    top, second = con.principles
    assert top.consensus == pytest.approx(1.0)
    assert top.overall_support == pytest.approx(5 / 6) and top.overall_n == 6
    assert second.support == pytest.approx({"0": 2 / 3, "1": 1.0})
    assert second.n == {"0": 3, "1": 2}
    assert second.consensus == pytest.approx(2 / 3)
    assert second.overall_support == pytest.approx(4 / 6)
    assert con.report["statements"] == {
        "considered": 3,
        "kept": 2,
        "below_threshold": 1,
        "ineligible": 0,
    }
    assert con.report["below_threshold_ids"] == ["1"]
    assert con.report["respondents"] == {"total": 6, "without_group": 1, "answers_without_group": 3}


def test_weights_change_shares(tmp_path: Path) -> None:
    """Weights 1, 1, 3 | 3, 1 | 1 for participants 0..5 (total 10).

    comment 0: group 0 (1 + 1) / (1 + 1 + 3) = 0.4 < 0.6 -> now left out
    comment 1: group 0 5/5 = 1; group 1 3 / (3 + 1) = 0.75 -> consensus 0.75;
               overall (1 + 1 + 3 + 3 + 1) / 10 = 0.9
    comment 2: group 0 1; group 1 1 -> consensus 1; overall 9/10 (participant 5 passed)
    Ranking: comment 2 (1.0), comment 1 (0.75).
    """
    imp = tiny_import(tmp_path)
    weights = {_rid(p): w for p, w in enumerate([1.0, 1.0, 3.0, 3.0, 1.0, 1.0])}
    people = imp.respondents.with_columns(
        pl.col("respondent_id").replace_strict(weights, return_dtype=pl.Float64).alias("weight")
    )
    con = build_constitution(imp.items, imp.answers, people, min_votes_per_group=2)
    assert con.weighted
    assert [p.item_id for p in con.principles] == ["2", "1"]
    second = con.principles[1]
    assert second.support == pytest.approx({"0": 1.0, "1": 0.75})
    assert second.consensus == pytest.approx(0.75)
    assert second.overall_support == pytest.approx(0.9)
    assert con.principles[0].overall_support == pytest.approx(0.9)
    assert con.report["below_threshold_ids"] == ["0"]
    # weight_col=None ignores the weights: back to the unweighted answer.
    plain = build_constitution(
        imp.items, imp.answers, people, weight_col=None, min_votes_per_group=2
    )
    assert [p.item_id for p in plain.principles] == ["2", "0"]


def test_smoothing_and_min_votes(tmp_path: Path) -> None:
    """smoothing=1 (Polis): comment 2 (3+1)/(3+2) * (2+1)/(2+2) = 0.8 * 0.75 = 0.6;
    comment 0 (2+1)/5 * (2+1)/4 = 0.6 * 0.75 = 0.45. With the default min_votes_per_group=5
    group "1" (2 answers) makes every statement ineligible."""
    imp = tiny_import(tmp_path)
    con = build_constitution(
        imp.items, imp.answers, imp.respondents, min_votes_per_group=2, smoothing=1.0
    )
    assert [p.consensus for p in con.principles] == pytest.approx([0.6, 0.45])
    assert con.principles[1].support == pytest.approx({"0": 2 / 3, "1": 1.0})  # raw shares
    strict = build_constitution(imp.items, imp.answers, imp.respondents)
    assert strict.principles == ()
    assert strict.report["ineligible"] == [
        {"item_id": i, "short_groups": {"0": 3, "1": 2}} for i in ("0", "1", "2")
    ]


def test_demographic_group_five_options_and_agree_min() -> None:
    """5-option items: agree = 4 or 5 by default. Regions north (r1, r2), south (r3, r4);
    r5 has no region.

    s1: north 5, 4 -> 1; south 4, 3 -> 1/2 (the neutral 3 counts) -> left out
    s2: north 4, 5 -> 1; south 5, 4 -> 1; r5 answers 3 -> overall 4/5 -> kept
    agree_min=5: s2 north 1/2 -> left out too.
    """
    items = pl.DataFrame(
        {
            "item_id": ["s1", "s2", "p1"],
            "kind": ["statement", "statement", "prompt"],
            "text": ["One.", "Two.", "A prompt"],
            "dimension": [None, None, None],
            "n_options": [5, 5, 0],
        },
    )
    people = pl.DataFrame(
        {
            "respondent_id": ["r1", "r2", "r3", "r4", "r5"],
            "region_group": ["north", "north", "south", "south", None],
        }
    )
    answers = pl.DataFrame(
        {
            "respondent_id": ["r1", "r2", "r3", "r4", "r1", "r2", "r3", "r4", "r5", "r1"],
            "item_id": ["s1"] * 4 + ["s2"] * 5 + ["p1"],
            "kind": ["likert"] * 9 + ["rating"],
            "value": [5, 4, 4, 3, 4, 5, 5, 4, 3, 1],
        }
    )
    con = build_constitution(
        items, answers, people, group_col="region_group", min_votes_per_group=2
    )
    assert con.groups == ("north", "south")
    assert [p.item_id for p in con.principles] == ["s2"]
    assert con.principles[0].overall_support == pytest.approx(4 / 5)
    assert con.report["answers"] == {"used": 9, "not_likert_statement": 1}
    top_only = build_constitution(
        items, answers, people, group_col="region_group", min_votes_per_group=2, agree_min=5
    )
    assert top_only.principles == ()
    with pytest.raises(ValueError, match="agree_min=6"):
        build_constitution(items, answers, people, group_col="region_group", agree_min=6)
    with pytest.raises(ValueError, match="respondents: missing column.*'region'"):
        build_constitution(items, answers, people, group_col="region")
    bad = answers.with_columns(
        pl.when(pl.col("value") == 3).then(7).otherwise("value").alias("value")
    )
    with pytest.raises(ValueError, match="respondent <withheld: .*>, item 's1': value 7 outside"):
        build_constitution(items, bad, people, group_col="region_group")
    with personal_data_logging(True):  # privacy.log_personal_data: true
        with pytest.raises(ValueError, match="respondent 'r4', item 's1': value 7 outside 1..5"):
            build_constitution(items, bad, people, group_col="region_group")


def test_yaml_and_markdown(tmp_path: Path) -> None:
    imp = tiny_import(tmp_path)
    con = build_constitution(imp.items, imp.answers, imp.respondents, min_votes_per_group=2)
    out = con.to_yaml(tmp_path)
    assert out.name == "constitution.yaml"
    doc = yaml.safe_load(out.read_text())
    assert [(p["id"], p["text"]) for p in doc["principles"]] == [
        ("2", "Statement 2"),
        ("0", "Statement 0"),
    ]
    assert doc["principles"][1]["support"] == {"0": pytest.approx(0.6667), "1": 1.0}
    md = con.to_markdown()
    assert "1. Statement 2" in md and "2. Statement 0" in md and "0: 67% (n=3)" in md


def _matrix_shares(folder: Path, item_id: str) -> dict[str, tuple[int, int]]:
    """(agrees, answers) per group for one comment, read from the wide matrix by the csv module:
    an independent source (the import reads votes.csv and only cross-checks the matrix)."""
    counts: dict[str, list[int]] = {}
    with (folder / "participants-votes.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            vote = row[item_id]
            if row["group-id"] and vote != "":
                c = counts.setdefault(row["group-id"], [0, 0])
                c[0] += vote == "1"
                c[1] += 1
    return {g: (a, n) for g, (a, n) in counts.items()}


def test_real_biodiversity_constitution(tmp_path: Path) -> None:
    imp = import_polis(REAL, salt="real")
    con = build_constitution(imp.items, imp.answers, imp.respondents)
    assert con.groups == ("0", "1")
    rep = con.report["statements"]
    assert rep["considered"] == 154 == rep["kept"] + rep["below_threshold"] + rep["ineligible"]
    assert rep["kept"] > 10
    assert con.report["respondents"]["without_group"] == 93
    consensus = [p.consensus for p in con.principles]
    assert consensus == sorted(consensus, reverse=True)
    for p in con.principles:
        assert min(p.support.values()) >= 0.6 and min(p.n.values()) >= 5
        counted = _matrix_shares(REAL, p.item_id)
        assert p.n == {g: n for g, (_, n) in counted.items()}
        assert p.support == pytest.approx({g: a / n for g, (a, n) in counted.items()})
    # Comment 290: all 14 of group 0 and all 59 of group 1 agree.
    assert con.principles[0].item_id == "290" and con.principles[0].n == {"0": 14, "1": 59}
    doc = yaml.safe_load(con.to_yaml(tmp_path / "c.yaml").read_text())
    assert len(doc["principles"]) == rep["kept"]
    assert set(doc["principles"][0]["support"]) == {"0", "1"}
