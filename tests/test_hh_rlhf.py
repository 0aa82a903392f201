"""HH-RLHF import: the prompt/reply split by hand, quarantine reasons, and the real test split."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from valign_ray.survey.hh_rlhf import import_hh_pairs, split_hh_pair

SHARED = Path(
    os.environ.get("VALIGN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
HH_FILE = SHARED / "hh-rlhf" / "harmless-base_test.jsonl.gz"

PROMPT = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant:"
CHOSEN = PROMPT + " Blue."
REJECTED = PROMPT + " No."


def test_two_turn_split_by_hand() -> None:
    """Cut after the last "\\n\\nAssistant:": the prompt keeps both Human turns and the first
    reply; the replies keep their leading space, so prompt + reply == the original dialogue."""
    prompt, chosen, rejected = split_hh_pair(CHOSEN, REJECTED)
    assert prompt == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant:"
    assert (chosen, rejected) == (" Blue.", " No.")
    assert prompt + chosen == CHOSEN and prompt + rejected == REJECTED


def _lines() -> list[str]:
    def pair(c: str, r: str) -> str:
        return json.dumps({"chosen": c, "rejected": r})

    return [
        pair(CHOSEN, REJECTED),  # 1 ok
        "{not json",  # 2
        json.dumps({"chosen": CHOSEN}),  # 3 no rejected
        pair(CHOSEN, REJECTED.replace("Name a colour", "Name a number")),  # 4 prompts differ
        pair(CHOSEN + "\n\nHuman: thanks", REJECTED + "\n\nHuman: thanks"),  # 5 ends on Human
        "",  # 6 blank line
        pair(PROMPT + " ", REJECTED),  # 7 empty chosen reply
        pair(CHOSEN, CHOSEN),  # 8 identical replies
        pair("Hi\n\nAssistant: x", "Hi\n\nAssistant: y"),  # 9 no Human turn first
        pair("\n\nHuman: A\n\nAssistant: x", "\n\nHuman: A\n\nAssistant: y"),  # 10 ok
    ]


@pytest.mark.parametrize("gz", [False, True])
def test_quarantine_reasons_and_line_numbers(tmp_path: Path, gz: bool) -> None:
    """10 lines -> 2 pairs (lines 1 and 10) + 8 quarantined, each with its reason."""
    text = "\n".join(_lines()) + "\n"
    path = tmp_path / ("pairs.jsonl.gz" if gz else "pairs.jsonl")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    pairs, bad = import_hh_pairs(path)
    assert pairs["pair_id"].to_list() == ["pairs:1", "pairs:10"]
    assert pairs.row(0) == ("pairs:1", PROMPT, " Blue.", " No.", 1.0)
    assert pairs.row(1)[1:4] == ("\n\nHuman: A\n\nAssistant:", " x", " y")
    assert bad["line"].to_list() == [2, 3, 4, 5, 6, 7, 8, 9]
    reasons = bad["reason"].to_list()
    expected = [
        "invalid JSON",
        "must both be strings",
        "do not share the prompt",
        "ends on a Human turn",
        "invalid JSON",
        "chosen reply is empty",
        "identical",
        "does not start with",
    ]
    for reason, want in zip(reasons, expected, strict=True):
        assert want in reason
    assert bad["raw"][0] == "{not json"
    first3, bad3 = import_hh_pairs(path, max_rows=3)
    assert (first3.height, bad3.height) == (1, 2)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope.jsonl: file not found"):
        import_hh_pairs(tmp_path / "nope.jsonl")


@pytest.mark.skipif(
    not HH_FILE.is_file(),
    reason=f"HH-RLHF data not present at {HH_FILE} "
    "(not shipped: read from the shared data folder; set VALIGN_SHARED_DATA)",
)
def test_real_harmless_base_test() -> None:
    """2,312 lines = 2,303 pairs + 9 quarantined: 4 with an empty chosen reply (lines 87, 517,
    926, 1104) and 5 whose chosen and rejected dialogues differ before the last reply."""
    with gzip.open(HH_FILE, "rt", encoding="utf-8") as f:
        raw = f.read().splitlines()
    assert len(raw) == 2312
    pairs, bad = import_hh_pairs(HH_FILE)
    assert pairs.height + bad.height == 2312
    assert (pairs.height, bad.height) == (2303, 9)
    empty = bad.filter(bad["reason"].str.contains("reply is empty"))["line"].to_list()
    assert empty == [87, 517, 926, 1104]
    assert bad["reason"].str.contains("do not share the prompt").sum() == 5
    assert pairs["pair_id"].n_unique() == 2303 and set(pairs["weight"]) == {1.0}
    # Every kept pair gives back both original dialogues exactly.
    for pair_id, prompt, chosen, rejected in pairs.select(
        "pair_id", "prompt", "chosen", "rejected"
    ).rows():
        line = json.loads(raw[int(pair_id.split(":")[1]) - 1])
        assert prompt + chosen == line["chosen"] and prompt + rejected == line["rejected"]
        assert prompt.endswith("\n\nAssistant:") and "\n\nAssistant:" not in chosen
    small, small_bad = import_hh_pairs(HH_FILE, max_rows=100)
    assert small.height + small_bad.height == 100 and small_bad["line"].to_list() == [87]
