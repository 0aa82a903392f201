"""Import chosen/rejected dialogue pairs in the Anthropic HH-RLHF format.

Each JSONL line is ``{"chosen": "...", "rejected": "..."}``: two whole dialogues made of
``\\n\\nHuman: ...`` and ``\\n\\nAssistant: ...`` turns that share every turn but the last
assistant reply. A pair is split at the final ``\\n\\nAssistant:`` marker:

- ``prompt``: the shared dialogue up to and including that marker;
- ``chosen`` / ``rejected``: the rest of each dialogue, as is (the leading space included), so
  that ``prompt + chosen`` gives back the original string exactly.

Lines that do not fit (bad JSON, missing fields, no marker, prompts that differ, an empty reply,
a dialogue ending on a Human turn, identical replies that carry no preference) go to a
quarantine frame with their line number and reason; none is dropped silently.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
PAIR_SCHEMA = {
    "pair_id": pl.String,
    "prompt": pl.String,
    "chosen": pl.String,
    "rejected": pl.String,
    "weight": pl.Float64,
}
QUARANTINE_SCHEMA = {"line": pl.Int64, "reason": pl.String, "raw": pl.String}


def split_hh_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH dialogues into (prompt, chosen reply, rejected reply).

    Raises ValueError with the reason when the pair is malformed (see module docstring).
    """
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.startswith(HUMAN):
            raise ValueError(f"{name} does not start with {HUMAN!r}")
        if ASSISTANT not in text:
            raise ValueError(f"{name} has no {ASSISTANT!r} turn")
    cut_c = chosen.rindex(ASSISTANT) + len(ASSISTANT)
    cut_r = rejected.rindex(ASSISTANT) + len(ASSISTANT)
    prompt, reply_c, reply_r = chosen[:cut_c], chosen[cut_c:], rejected[cut_r:]
    if rejected[:cut_r] != prompt:
        raise ValueError("chosen and rejected do not share the prompt before the final reply")
    for name, reply in (("chosen", reply_c), ("rejected", reply_r)):
        if HUMAN in reply:
            raise ValueError(f"{name} ends on a Human turn, not an Assistant reply")
        if not reply.strip():
            raise ValueError(f"{name} reply is empty")
    if reply_c == reply_r:
        raise ValueError("chosen and rejected replies are identical (no preference)")
    return prompt, reply_c, reply_r


def _open_text(path: Path):
    # Detect gzip by its magic bytes, not the suffix, so a renamed file still reads.
    with path.open("rb") as probe:
        is_gzip = probe.read(2) == b"\x1f\x8b"
    if is_gzip:
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def import_hh_pairs(
    path: str | Path, *, max_rows: int | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read an HH-RLHF JSONL file (optionally gzipped) into ``(pairs, quarantine)``.

    ``pairs``: ``pair_id`` (``<file stem>:<line>``, so a pair can be traced to its source line),
    ``prompt``, ``chosen``, ``rejected``, ``weight`` (1.0: every pair counts the same until a
    weighting step says otherwise). ``quarantine``: ``line``, ``reason``, ``raw`` for each line
    that could not be split. ``max_rows`` reads at most that many lines (blank lines included),
    so ``pairs.height + quarantine.height == min(max_rows, lines in the file)``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    if max_rows is not None and max_rows < 0:
        raise ValueError(f"max_rows={max_rows}: must be >= 0")
    stem = path.name.removesuffix(".gz").removesuffix(".jsonl")
    pairs: dict[str, list] = {k: [] for k in PAIR_SCHEMA}
    bad: dict[str, list] = {k: [] for k in QUARANTINE_SCHEMA}
    with _open_text(path) as lines:
        for line_no, raw in enumerate(lines, start=1):
            if max_rows is not None and line_no > max_rows:
                break
            try:
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError as err:
                    raise ValueError(f"invalid JSON: {err}") from err
                if not isinstance(record, dict):
                    raise ValueError("line is not a JSON object")
                texts = [record.get(k) for k in ("chosen", "rejected")]
                if not all(isinstance(t, str) for t in texts):
                    raise ValueError("'chosen' and 'rejected' must both be strings")
                prompt, chosen, rejected = split_hh_pair(*texts)
            except ValueError as err:
                bad["line"].append(line_no)
                bad["reason"].append(str(err))
                bad["raw"].append(raw.rstrip("\n"))
                continue
            pairs["pair_id"].append(f"{stem}:{line_no}")
            pairs["prompt"].append(prompt)
            pairs["chosen"].append(chosen)
            pairs["rejected"].append(rejected)
            pairs["weight"].append(1.0)
    return pl.DataFrame(pairs, schema=PAIR_SCHEMA), pl.DataFrame(bad, schema=QUARANTINE_SCHEMA)
