"""CAI inputs: the constitution file (loading, bad files, principle sampling) and the templates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from valign_ray.cai.constitution import (
    CaiPrinciple,
    ConstitutionFileError,
    load_constitution,
    principle_probabilities,
    sample_principles,
)
from valign_ray.cai.templates import TemplateError, load_templates
from valign_ray.survey.constitution import build_constitution

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "configs" / "cai_templates.yaml"


def _principle(pid: str, a: float, b: float, overall: float) -> dict:
    return {
        "id": pid,
        "text": f"Text {pid}.",
        "support": {"a": a, "b": b},
        "overall_support": overall,
    }


def _write(tmp_path: Path, doc: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_loads_the_survey_stage_constitution(tmp_path):
    """What the constitution stage writes loads back: ids, texts, shares; source ``survey``."""
    items = pl.DataFrame(
        {
            "item_id": ["s1", "s2"],
            "kind": "statement",
            "text": ["Be kind.", "Be bold."],
            "n_options": 3,
        }
    )
    respondents = pl.DataFrame(
        {"respondent_id": [f"r{i}" for i in range(6)], "group": list("aaabbb")}
    )
    # s1: everyone agrees (3); s2: group a agrees, group b disagrees
    values = {"s1": [3] * 6, "s2": [3, 3, 3, 1, 1, 1]}
    answers = pl.DataFrame(
        [(f"r{i}", item, "likert", v[i]) for item, v in values.items() for i in range(6)],
        schema=["respondent_id", "item_id", "kind", "value"],
        orient="row",
    )
    built = build_constitution(items, answers, respondents, weight_col=None, min_votes_per_group=3)
    const = load_constitution(built.to_yaml(tmp_path / "constitution.yaml"))
    assert const.source == "survey"
    assert [(p.id, p.text, p.support, p.overall_support) for p in const.principles] == [
        ("s1", "Be kind.", {"a": 1.0, "b": 1.0}, 1.0)
    ]


def test_user_constitution_names_its_source(tmp_path):
    path = _write(
        tmp_path,
        {"source": "citizens assembly 2026", "principles": [_principle("p1", 0.7, 0.8, 0.75)]},
    )
    const = load_constitution(path)
    assert const.source == "citizens assembly 2026" and const.by_id("p1").worst_group_support == 0.7


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"principles": []}, "has no principles"),
        ({"group_col": "age_band"}, "lower the threshold"),
        (
            {"principles": [{"id": "p1", "text": "x"}]},
            "principles[0] has no ['support', 'overall_support']",
        ),
        ({"principles": [_principle("p1", 1.5, 0.8, 0.9)]}, "principles[0].support.a=1.5"),
        ({"principles": [_principle("p1", 0.5, 0.8, 0.9)] * 2}, "'p1' appears more than once"),
    ],
)
def test_bad_constitution_names_the_file_and_the_fix(tmp_path, doc, message):
    path = _write(tmp_path, doc)
    with pytest.raises(ConstitutionFileError) as err:
        load_constitution(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_constitution_file(tmp_path):
    with pytest.raises(
        ConstitutionFileError, match="run the constitution stage or set cai.constitution"
    ):
        load_constitution(tmp_path / "nope.yaml")


PRINCIPLES = tuple(
    CaiPrinciple(pid, f"Text {pid}.", {"a": a, "b": b}, overall)
    for pid, a, b, overall in (("p1", 0.9, 0.6, 0.8), ("p2", 0.7, 0.7, 0.7), ("p3", 1.0, 0.2, 0.5))
)


def test_principle_probabilities_by_hand():
    """uniform 1/3 each; population_support 0.8, 0.7, 0.5 over 2.0; worst group 0.6, 0.7, 0.2
    over 1.5."""
    assert np.allclose(principle_probabilities(PRINCIPLES, "uniform"), [1 / 3] * 3)
    assert np.allclose(principle_probabilities(PRINCIPLES, "population_support"), [0.4, 0.35, 0.25])
    assert np.allclose(
        principle_probabilities(PRINCIPLES, "worst_group_support"), [0.4, 0.7 / 1.5, 0.2 / 1.5]
    )
    with pytest.raises(ValueError, match="valid: uniform, population_support, worst_group_support"):
        principle_probabilities(PRINCIPLES, "best")


def test_principle_sampling_follows_the_mode_and_depends_only_on_the_seed():
    """4000 draws match the probabilities within 0.03 (SE <= 0.008); a record's draw is the same
    whatever other records are drawn with it."""
    seeds = list(range(4000))
    for mode in ("uniform", "population_support", "worst_group_support"):
        ids = sample_principles(PRINCIPLES, mode, seeds)
        freq = [ids.count(p.id) / len(ids) for p in PRINCIPLES]
        assert np.allclose(freq, principle_probabilities(PRINCIPLES, mode), atol=0.03), mode
        assert sample_principles(PRINCIPLES, mode, seeds[::-7]) == ids[::-7]


def test_default_templates_load_render_and_hash():
    """The shipped file loads; plain rendering fills the placeholders; each template has its
    own stable hash; the tokenizer texts hold the fixed words but no placeholder."""
    t = load_templates(TEMPLATES)
    text = t.render("critique_request", principle="Be kind.", prompt="Should we?", response=" Yes.")
    assert text.startswith("Principle: Be kind.\nQuestion: Should we?\nResponse:  Yes.\nCritique:")
    hashes = {name: t.hash(name) for name in t.texts}
    assert len(set(hashes.values())) == 3 and all(len(h) == 16 for h in hashes.values())
    assert load_templates(TEMPLATES).hash("critique_request") == hashes["critique_request"]
    literal = " ".join(t.literal_texts())
    assert "Which option follows the principle better?" in literal and "{" not in literal
    with pytest.raises(TypeError, match="critique_request takes"):
        t.render("critique_request", principle="x", prompt="y")


def test_chat_template_and_few_shot(tmp_path, tiny_model_dir):
    """With a chat template the request becomes the last user turn after the few-shot turns,
    ending with the generation prompt; without one, examples come first as plain text. The
    few-shot examples are part of the hash."""
    from valign_ray.models import load_tokenizer

    doc = yaml.safe_load(TEMPLATES.read_text())
    doc["few_shot"] = [{"user": "Principle: Be fair.", "assistant": "Fair enough."}]
    t = load_templates(_write(tmp_path, doc, "t.yaml"))
    assert t.hash("comparison_prompt") != load_templates(TEMPLATES).hash("comparison_prompt")
    values = {"principle": "P", "prompt": "Q", "response_a": "A", "response_b": "B"}
    plain = t.render("comparison_prompt", **values)
    assert plain.startswith("Principle: Be fair.\nFair enough.\n\nPrinciple: P\nQuestion: Q\n")
    tok = load_tokenizer(tiny_model_dir)
    assert t.render("comparison_prompt", tok, **values) == plain  # no chat template: plain
    tok.chat_template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    chat = t.render("comparison_prompt", tok, **values)
    assert chat == (
        "<user>Principle: Be fair.\n<assistant>Fair enough.\n<user>"
        + t.texts["comparison_prompt"].format(**values)
        + "\n<assistant>"
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            {"revision_request": "Principle: {principle}\nQuestion: {prompt}\nAnswer: {response}"},
            "revision_request is missing placeholder(s) {critique}: add them",
        ),
        (
            {"critique_request": "{principle} {prompt} {response} {respons}"},
            "unknown placeholder(s) {respons}",
        ),
        ({"comparison_prompt": "{principle {prompt}"}, "write a literal brace"),
        ({"few_shot": [{"user": "x"}]}, "few_shot[0] must have exactly"),
        ({"critique": "x"}, "unknown key(s) ['critique']"),
    ],
)
def test_bad_template_names_the_file_and_the_fix(tmp_path, edit, message):
    doc = yaml.safe_load(TEMPLATES.read_text()) | edit
    path = _write(tmp_path, doc, "t.yaml")
    with pytest.raises(TemplateError) as err:
        load_templates(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_tiny_model_tokenizer_learns_the_template_words(tmp_path):
    """Trained on the template texts too, "Critique" and "principle" are single tokens; trained
    on survey text alone they are split into pieces."""
    from valign_ray.models import train_tokenizer

    survey = ["Question: Should the council protect the bush?\nAnswer:", " Yes, protect it."] * 5
    both = train_tokenizer(survey + load_templates(TEMPLATES).literal_texts(), 400, tmp_path / "b")
    alone = train_tokenizer(survey, 400, tmp_path / "a")
    for word in (" principle", "Critique"):
        assert len(both(word, add_special_tokens=False)["input_ids"]) == 1, word
        assert len(alone(word, add_special_tokens=False)["input_ids"]) > 1, word


def test_critique_requests_record_principle_seed_and_template_hash():
    """Each row gets a principle drawn from its own seed, the request rendered with that
    principle's text, and the template's hash; a row's record is the same in any subset."""
    from valign_ray.cai.constitution import CaiConstitution
    from valign_ray.cai.generate import record_seed
    from valign_ray.cai.records import critique_requests

    const = CaiConstitution("x.yaml", "test", PRINCIPLES)
    templates = load_templates(TEMPLATES)
    pairs = pl.DataFrame(
        {"row_idx": [0, 1, 2, 3], "question": ["Q0", "Q1", "Q2", "Q3"], "response": list("abcd")}
    )
    out = critique_requests(
        pairs, const, templates, None, principle_sampling="worst_group_support", seed=3
    )
    seeds = [record_seed(3, f"critique:{i}") for i in range(4)]
    assert out["seed"].to_list() == seeds
    assert out["principle_id"].to_list() == sample_principles(
        PRINCIPLES, "worst_group_support", seeds
    )
    for row in out.iter_rows(named=True):
        text = const.by_id(row["principle_id"]).text
        assert row["prompt"].startswith(f"Principle: {text}\nQuestion: {row['question']}\n")
    assert set(out["template_hash"]) == {templates.hash("critique_request")}
    subset = critique_requests(
        pairs[2:], const, templates, None, principle_sampling="worst_group_support", seed=3
    )
    assert subset.equals(out[2:])
