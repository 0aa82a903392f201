"""Property-based fuzzing of what users hand us: survey files, Polis exports, configs.

Whatever the bytes, ingestion, the Polis importer and config loading either succeed or raise
a ValueError (InputError, ConfigError) with a message: never another exception. 200 examples
each here; the ``slow`` variants run 1,000 (``pytest -m slow tests/test_fuzz_inputs.py``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bad_input_catalogue import EXAMPLES

DEFAULT, SLOW = 200, 1000
CSV_CHARS = st.sampled_from(list(',"\n\r x1-0\xe9') + ["\xff", "NZP-001", "q1", "likert", "65+"])
# CSV-ish bytes: the example's lines mutated, or text from CSV-ish pieces, or raw bytes.
csv_bytes = st.one_of(
    st.lists(CSV_CHARS, max_size=60).map(lambda xs: "".join(xs).encode("utf-8", "surrogatepass")),
    st.binary(max_size=80),
    st.builds(
        lambda head, junk, cut: (head + junk)[:cut],
        st.sampled_from(
            [
                (EXAMPLES / "respondents.csv").read_bytes()[:300],
                (EXAMPLES / "answers.csv").read_bytes()[:300],
                b"comment-id,moderated,comment-body\n0,1,a\n",
                b"participant,group-id,n-votes,0\n0,0,1,1\n",
                b"timestamp,datetime,comment-id,voter-id,vote\n1,,0,0,1\n",
            ]
        ),
        st.binary(max_size=20),
        st.integers(0, 400),
    ),
)
FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _ingest(resp: bytes, ans: bytes) -> None:
    from valign_ray.survey.ingest import ingest_survey
    from valign_ray.survey.instrument import load_instrument

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "r.csv").write_bytes(resp)
        (d / "a.csv").write_bytes(ans)
        inst = load_instrument(EXAMPLES / "instrument.yaml")
        try:
            ingest_survey(inst, d / "r.csv", d / "a.csv", quarantine_dir=d / "q", salt="s")
        except ValueError as exc:
            assert str(exc)


def _polis(comments: bytes, matrix: bytes, votes: bytes | None) -> None:
    from valign_ray.survey.polis import import_polis

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "comments.csv").write_bytes(comments)
        (d / "participants-votes.csv").write_bytes(matrix)
        if votes is not None:
            (d / "votes.csv").write_bytes(votes)
        try:
            import_polis(d, salt="s")
        except ValueError as exc:
            assert str(exc)


KEYS = st.sampled_from(
    ["train.lr", "train.epochs", "survey.source", "data.holdout_respondents", "loss.name",
     "weighting.variables", "train", "name", "model.tiny.num_heads", "loss.lambda_d", "x.y"]
)  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(["-1", "0", "1.5", "1e-4", "yes", "null", "[1", "{a: 1}", "auto", "[]"]),
    st.text(max_size=12),
)


def _config(text: str, overrides: list[str]) -> None:
    from valign_ray.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(path, overrides)
        except ValueError as exc:
            assert str(exc)


config_text = st.one_of(
    st.text(max_size=80),
    st.builds(lambda k, v: f"{k.split('.')[0]}:\n  {k.split('.')[-1]}: {v}\n", KEYS, VALUES),
)
overrides = st.lists(
    st.builds(lambda k, v: f"{k}={v}", KEYS, VALUES) | st.text(max_size=8), max_size=3
)


@settings(max_examples=DEFAULT, **FUZZ)
@given(csv_bytes, csv_bytes)
def test_fuzz_ingest(resp: bytes, ans: bytes) -> None:
    _ingest(resp, ans)


@settings(max_examples=DEFAULT, **FUZZ)
@given(csv_bytes, csv_bytes, st.none() | csv_bytes)
def test_fuzz_polis(comments: bytes, matrix: bytes, votes: bytes | None) -> None:
    _polis(comments, matrix, votes)


@settings(max_examples=DEFAULT, **FUZZ)
@given(config_text, overrides)
def test_fuzz_config(text: str, sets: list[str]) -> None:
    _config(text, sets)


@pytest.mark.slow
@settings(max_examples=SLOW, **FUZZ)
@given(csv_bytes, csv_bytes)
def test_fuzz_ingest_slow(resp: bytes, ans: bytes) -> None:
    _ingest(resp, ans)


@pytest.mark.slow
@settings(max_examples=SLOW, **FUZZ)
@given(csv_bytes, csv_bytes, st.none() | csv_bytes)
def test_fuzz_polis_slow(comments: bytes, matrix: bytes, votes: bytes | None) -> None:
    _polis(comments, matrix, votes)


@pytest.mark.slow
@settings(max_examples=SLOW, **FUZZ)
@given(config_text, overrides)
def test_fuzz_config_slow(text: str, sets: list[str]) -> None:
    _config(text, sets)
