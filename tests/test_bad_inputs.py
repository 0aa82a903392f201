"""Every bad input answered clearly: the catalogue of tests/bad_input_catalogue.py, run once.

An error is one line naming the input (file, row, field where there is one), exit code 2, no
traceback; a row that can be quarantined is, with its reason; docs/BAD_INPUTS.md is current.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_input_catalogue import CASES, REPO, Answer, render, run_all

DOC = REPO / "docs" / "BAD_INPUTS.md"


@pytest.fixture(scope="module")
def answered(tmp_path_factory) -> tuple[dict[str, Answer], Path]:
    root = tmp_path_factory.mktemp("bad_inputs")
    return run_all(root), root


def test_the_catalogue_is_big_and_names_are_unique() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
    kinds = {c.kind for c in CASES}
    assert kinds == {
        "survey",
        "platform",
        "instrument",
        "margins",
        "config",
        "model",
        "polis",
        "cli",
        "cai",
    }


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_answered_in_one_line(case, answered) -> None:
    answers, _ = answered
    answer = answers[case.name]
    assert not answer.traceback, answer.lines
    assert len(answer.lines) == 1, answer.lines  # one line, nothing else on stderr
    assert answer.code == case.code
    for fragment in case.expect:
        assert fragment in answer.lines[0]


def test_doc_is_current(answered) -> None:
    """Regenerate with: python -m tests.bad_input_catalogue --write docs/BAD_INPUTS.md"""
    answers, root = answered
    assert DOC.read_text(encoding="utf-8") == render(answers, root)


def test_debug_shows_the_traceback(tmp_path) -> None:
    from valign_ray.cli import main
    from valign_ray.errors import InputError

    with pytest.raises(InputError, match="run directory not found"):
        main(["--debug", "report", str(tmp_path / "none")])
    with pytest.raises(InputError, match="run directory not found"):
        main(["report", str(tmp_path / "none"), "--debug"])


@pytest.mark.parametrize(
    ("source", "salt", "env", "expected"),
    [
        ("files", "change-me", None, "error"),
        ("files", "change-me", "from-env", "from-env"),
        ("files", "mine", "from-env", "mine"),  # the config's own salt wins
        ("polis", "change-me", None, "change-me"),  # a public export needs no secret
        ("synthetic", "change-me", None, "change-me"),
    ],
)
def test_survey_salt(monkeypatch, source, salt, env, expected) -> None:
    from valign_ray.config import SurveyConfig, survey_salt
    from valign_ray.config_loader import ConfigError

    monkeypatch.delenv("VALIGN_SALT", raising=False)
    if env is not None:
        monkeypatch.setenv("VALIGN_SALT", env)
    cfg = SurveyConfig(source=source, salt=salt)
    if expected == "error":
        with pytest.raises(ConfigError, match="VALIGN_SALT.*survey.salt"):
            survey_salt(cfg)
    else:
        assert survey_salt(cfg) == expected


def test_models_load_from_safetensors_only(tiny_model_dir, tmp_path) -> None:
    """The tiny model (safetensors) loads; the same folder with pickle weights only does not."""
    import shutil

    from valign_ray.errors import InputError
    from valign_ray.models import load_model

    assert load_model(tiny_model_dir) is not None
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    for f in pickled.glob("*.safetensors"):
        f.rename(f.with_name("pytorch_model.bin"))
    with pytest.raises(InputError, match="only pickle weights"):
        load_model(pickled)
