"""SL-CAI and RL-CAI data without Ray: prompt sources and their quarantine, the answer /
critique / revision rounds (a scripted generator, and the real one on the tiny model), SFT
weights, pairs, DPO and KTO rows, the label histogram and the summary's ``cai`` section."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import polars as pl
import pytest

from valign_ray.cai.constitution import CaiConstitution, CaiPrinciple
from valign_ray.cai.prompts import file_prompts, first_human_turn, hh_rlhf_prompts, load_prompts
from valign_ray.cai.rl import (
    dpo_rows,
    format_histogram,
    kto_rows,
    label_histogram,
    make_pairs,
    principle_means,
)
from valign_ray.cai.sl import sft_rows, sl_cai_records
from valign_ray.cai.templates import load_templates
from valign_ray.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VALIGN_SHARED_DATA", REPO.parent / "shared" / "data"))
TEMPLATES = load_templates(REPO / "configs" / "cai_templates.yaml")
CONSTITUTION = CaiConstitution(
    "constitution.yaml",
    "test",
    (
        CaiPrinciple("p1", "Be kind.", {"a": 0.9, "b": 0.7}, 0.8),
        CaiPrinciple("p2", "Be brief.", {"a": 0.6, "b": 0.6}, 0.6),
    ),
)


def test_prompt_file_quarantines_bad_rows(tmp_path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        '{"prompt_id": "q1", "prompt": "Should we fund rail?"}\n'
        "not json\n"
        '{"prompt_id": "q2", "prompt": "   "}\n'
        "\n"
        '{"prompt_id": "q1", "prompt": "Again?"}\n'
        '{"prompt": "No id"}\n'
        '["a list"]\n'
        '{"prompt_id": 7, "prompt": "Numeric ids are text."}\n'
    )
    good, bad = file_prompts(path)
    assert good.rows() == [
        ("file:q1", "file", "Should we fund rail?"),
        ("file:7", "file", "Numeric ids are text."),
    ]
    assert bad["line"].to_list() == [2, 3, 5, 6, 7]
    assert bad["reason"][0].startswith("invalid JSON")
    assert "appears on an earlier line" in bad["reason"][2]
    csv = tmp_path / "prompts.csv"
    csv.write_text('prompt_id,prompt\na,"Protect, or sell?"\nb,\n')
    good, bad = file_prompts(csv)
    assert good["question"].to_list() == ["Protect, or sell?"]
    assert bad.rows() == [("file", 3, "prompt is missing, empty or not text")]


def test_prompt_file_errors_name_the_file(tmp_path) -> None:
    csv = tmp_path / "p.csv"
    csv.write_text("id,text\n1,hello\n")
    with pytest.raises(InputError, match=r"p\.csv.*prompt_id.*cai\.prompts\.file"):
        file_prompts(csv)
    empty = tmp_path / "p.jsonl"
    empty.write_text("nope\n")
    with pytest.raises(InputError, match=r"p\.jsonl.*no usable prompt"):
        file_prompts(empty)
    with pytest.raises(InputError, match="no prompts"):
        load_prompts(None, None, None, 10)


def test_hh_rlhf_first_human_turns(tmp_path) -> None:
    assert first_human_turn("\n\nHuman: Hi there\n\nAssistant: Yo\n\nHuman: x\n\nAssistant:") == (
        "Hi there"
    )
    src = SHARED / "hh-rlhf" / "harmless-base_test.jsonl.gz"
    prompts, bad = hh_rlhf_prompts(src, 5)
    assert prompts.height + bad.height == 5
    assert prompts["prompt_id"][0] == "hh_rlhf:harmless-base_test:1"
    assert prompts["question"][0] == "what are some pranks with a pen i can do?"
    own = tmp_path / "hh.jsonl.gz"
    with gzip.open(own, "wt") as f:
        f.write(json.dumps({"chosen": "\n\nHuman: Q?\n\nAssistant: a", "rejected": "x"}) + "\n")
        f.write(
            json.dumps(
                {"chosen": "\n\nHuman: \n\nAssistant: a", "rejected": "\n\nHuman: \n\nAssistant: b"}
            )
            + "\n"
        )
    prompts, bad = hh_rlhf_prompts(own, 10)
    assert prompts.height == 0
    assert sorted(bad["line"].to_list()) == [1, 2]
    assert "empty first human turn" in bad["reason"].to_list()


def _scripted(log: list[pl.DataFrame]):
    """A generator that answers every request with a text naming its seed (and records it)."""

    def generate_fn(rows: pl.DataFrame) -> pl.DataFrame:
        log.append(rows)
        texts = [f"text {s % 1000}" for s in rows["seed"]]
        return rows.with_columns(
            pl.Series("completion", texts),
            pl.Series("completion_ids", [[1, 2, 3]] * rows.height, pl.List(pl.Int64)),
            pl.lit("length").alias("finish_reason"),
        ).sort("row_idx")

    return generate_fn


def test_rounds_chain_answer_critique_revision() -> None:
    prompts = pl.DataFrame(
        {
            "prompt_id": ["survey:i1", "survey:i2"],
            "source": ["survey"] * 2,
            "question": ["Q1", "Q2"],
        }
    ).with_row_index("row_idx")
    log: list[pl.DataFrame] = []
    records = sl_cai_records(
        prompts,
        CONSTITUTION,
        TEMPLATES,
        None,
        _scripted(log),
        rounds=2,
        principle_sampling="uniform",
        seed=3,
        model_fingerprint="fp",
    )
    assert [r.height for r in log] == [2, 2, 2, 2, 2]  # answer, then critique+revision x2
    assert (
        records["kind"].to_list()
        == ["answer"] * 2
        + ["critique"] * 2
        + ["revision"] * 2
        + ["critique"] * 2
        + ["revision"] * 2
    )
    answer = records.filter(pl.col("kind") == "answer")["completion"][0]
    crit1 = log[1]["prompt"][0]
    assert f"Response: {answer}" in crit1 and "Question: Q1" in crit1
    critique = records.filter((pl.col("kind") == "critique") & (pl.col("round") == 1))
    revision_request = log[2]["prompt"][0]
    assert f"Critique: {critique['completion'][0]}" in revision_request
    # Round 2 critiques round 1's revision, not the first answer.
    rev1 = records.filter((pl.col("kind") == "revision") & (pl.col("round") == 1))["completion"][0]
    assert f"Response: {rev1}" in log[3]["prompt"][0]
    assert records["model_fingerprint"].unique().to_list() == ["fp"]
    assert records["seed"].n_unique() == 10
    rows, bad = sft_rows(prompts, records, CONSTITUTION, "support")
    final = records.filter((pl.col("kind") == "revision") & (pl.col("round") == 2))
    assert rows["completion"].to_list() == final["completion"].to_list()
    support = {"p1": 0.8, "p2": 0.6}
    assert rows["weight"].to_list() == [support[p] for p in final["principle_id"]]
    assert rows["principle_ids"].list.len().to_list() == [2, 2]
    assert bad.height == 0
    ones, _ = sft_rows(prompts, records, CONSTITUTION, "one")
    assert ones["weight"].to_list() == [1.0, 1.0]


def test_empty_final_revision_is_quarantined() -> None:
    prompts = pl.DataFrame(
        {"prompt_id": ["a", "b"], "source": ["file"] * 2, "question": ["Q", "R"]}
    )
    prompts = prompts.with_row_index("row_idx")
    records = pl.DataFrame(
        {
            "prompt_id": ["a", "b", "a", "b"],
            "kind": ["critique", "critique", "revision", "revision"],
            "round": [1, 1, 1, 1],
            "principle_id": ["p1", "p2", "p1", "p2"],
            "completion": ["c", "c", "fine", "  "],
            "seed": [1, 2, 3, 4],
            "template_hash": ["h"] * 4,
            "model_fingerprint": ["fp"] * 4,
        }
    )
    rows, bad = sft_rows(prompts, records, CONSTITUTION, "support")
    assert rows["prompt_id"].to_list() == ["a"]
    assert bad.rows() == [("b", "empty final revision")]


def test_generation_without_ray_is_batch_independent(tiny_model_dir) -> None:
    """The real generator in one process; the records do not depend on its batch size."""
    from valign_ray.cai.generate import generate
    from valign_ray.config import CaiSamplingConfig
    from valign_ray.models import load_model, load_tokenizer

    model, tok = load_model(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)
    sampling = CaiSamplingConfig(max_new_tokens=6, temperature=0.0)
    prompts = pl.DataFrame(
        {
            "prompt_id": ["a", "b", "c"],
            "source": ["x"] * 3,
            "question": ["Should the council protect the bush?", "Fund rail?", "Sell the wetland?"],
        }
    ).with_row_index("row_idx")

    def local(batch_size: int):
        def fn(rows: pl.DataFrame) -> pl.DataFrame:
            gens = generate(
                model,
                tok,
                rows["prompt"].to_list(),
                rows["seed"].to_list(),
                sampling,
                batch_size=batch_size,
            )
            return rows.with_columns(
                pl.Series("completion", [g.text for g in gens]),
                pl.Series("completion_ids", [list(g.token_ids) for g in gens], pl.List(pl.Int64)),
                pl.Series("finish_reason", [g.finish_reason for g in gens]),
            )

        return fn

    runs = [
        sl_cai_records(
            prompts,
            CONSTITUTION,
            TEMPLATES,
            tok,
            local(b),
            rounds=1,
            principle_sampling="population_support",
            seed=0,
            model_fingerprint="fp",
        )
        for b in (1, 3)
    ]
    assert runs[0].equals(runs[1])
    assert (runs[0]["n_tokens"] > 0).all()


SAMPLES = pl.DataFrame(
    {
        "prompt_id": ["p", "p", "p", "q", "q"],
        "question": ["P?"] * 3 + ["Q?"] * 2,
        "sample": [0, 1, 2, 0, 1],
        "completion": ["x", "y", "x", "z", " "],
        "seed": [10, 11, 12, 20, 21],
    }
)


def test_pairs_and_their_quarantine() -> None:
    pairs, bad = make_pairs(SAMPLES)
    assert pairs.select("pair_id", "response_a", "response_b").rows() == [
        ("p:0-1", "x", "y"),
        ("p:1-2", "y", "x"),
    ]
    assert bad.rows() == [("p:0-2", "identical answers"), ("q:0-1", "an empty answer")]


def test_dpo_and_kto_rows_from_labels() -> None:
    pairs, _ = make_pairs(SAMPLES)
    labelled = pairs.with_columns(pl.Series("label", [0.8, 0.25]))
    dpo = dpo_rows(labelled)
    # label 0.8: a=x chosen with share 0.8; label 0.25: b=x chosen with share 0.75.
    assert dpo.select("chosen", "rejected", "share", "weight").rows() == [
        ("x", "y", 0.8, 1.0),
        ("x", "y", 0.75, 1.0),
    ]
    kto = kto_rows(labelled, seed=0)
    # Pair 1 (0.8): x desirable 0.8, undesirable 0.2; y desirable 0.2, undesirable 0.8.
    got = {
        (r["item_id"], r["completion"], r["label"]): r["weight"] for r in kto.iter_rows(named=True)
    }
    assert got[("p:0-1", "x", True)] == pytest.approx(0.8)
    assert got[("p:0-1", "y", False)] == pytest.approx(0.8)
    assert got[("p:1-2", "y", True)] == pytest.approx(0.25)
    assert got[("p:1-2", "x", False)] == pytest.approx(0.25)
    assert kto.height == 8 and "kl_completion" in kto.columns
    assert sum(kto["weight"]) == pytest.approx(4.0)  # two answers x weight 1 per pair


def test_label_histogram_and_principle_means() -> None:
    labels = pl.Series([0.0, 0.05, 0.5, 0.55, 0.99, 1.0])
    assert label_histogram(labels) == [2, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    text = format_histogram([2, 0, 1])
    assert text.splitlines()[0].endswith(" 2") and "[0.7, 1.0]" in text
    frame = pl.DataFrame({"label": [0.9, 0.5, 0.2], "principle_ids": [["a", "b"], ["a"], ["b"]]})
    assert principle_means(frame) == {"a": pytest.approx(0.7), "b": pytest.approx(0.55)}


def test_summary_keeps_cai_sections_under_one_key() -> None:
    from valign_ray.results import CaiEvalResult, RunSummary, SummaryError

    summary = RunSummary(
        "r",
        "runs/r",
        results={"cai_eval": CaiEvalResult(models={"base": {}})},
        wall_s={"train": 3.0, "cai_eval": 1.5},
    )
    data = summary.to_json()
    assert data["cai"] == {"eval": {"models": {"base": {}}}, "wall_s": {"cai_eval": 1.5}}
    assert RunSummary.from_json(data).results["cai_eval"] == summary.results["cai_eval"]
    with pytest.raises(SummaryError, match=r"cai\.bogus"):
        RunSummary.from_json({**data, "cai": {"bogus": {}}})


def test_report_section_shows_labels_principles_and_examples(tmp_path) -> None:
    from valign_ray.eval.report_cai import cai_section
    from valign_ray.results import CaiEvalResult, CaiRlResult, CaiSlResult, RunSummary

    gen = {"records": 6, "tokens": 18, "seconds": 2.0, "tokens_per_s": 9.0}
    results = {
        "cai_sl": CaiSlResult({"survey": 2}, {}, {"answer": 2}, 2, gen, {}, "m"),
        "cai_rl": CaiRlResult(
            4,
            2,
            {},
            "choice",
            0.6,
            [0] * 5 + [1, 1] + [0] * 3,
            {"p1": 0.6},
            "dpo",
            2,
            gen,
            1.0,
            {},
            "m",
        ),
        "cai_eval": CaiEvalResult({"base": {"margin": 0.1}, "rl_cai": {"margin": 0.2}}),
    }
    assert cai_section(tmp_path, RunSummary("r", str(tmp_path))) is None
    log: list[pl.DataFrame] = []
    prompts = pl.DataFrame(
        {"prompt_id": ["a", "b", "c", "d"], "source": ["x"] * 4, "question": ["Q"] * 4}
    ).with_row_index("row_idx")
    records = sl_cai_records(
        prompts, CONSTITUTION, TEMPLATES, None, _scripted(log),
        rounds=1, principle_sampling="uniform", seed=0, model_fingerprint="fp",
    )  # fmt: skip
    (tmp_path / "cai" / "sl").mkdir(parents=True)
    records.write_parquet(tmp_path / "cai" / "sl" / "records.parquet")
    sec = cai_section(tmp_path, RunSummary("r", str(tmp_path), results=results))
    tables = {b.key: b for b in sec.blocks if hasattr(b, "rows")}
    assert tables["cai_principles"].rows == [["p1", 0.6]]
    assert tables["cai_eval"].rows == [["base", 0.1], ["rl_cai", 0.2]]
    shown = tables["cai_examples"].rows
    assert len(shown) == 9  # 3 prompts x (answer, critique, revision)
    assert [r[2] for r in shown[:3]] == ["answer", "critique", "revision"]
    assert any(getattr(b, "key", "") == "cai_labels" for b in sec.blocks)


def test_label_pairs_wires_both_feedback_modes(tiny_model_dir, tmp_path) -> None:
    """RL-CAI's labelling without Ray: implicit reward with policy = reference gives exactly
    0.5 (reward difference 0); choice labels are probabilities with M principles per pair."""
    import dataclasses

    import yaml

    from valign_ray.cai.feedback import choice_labels, implicit_reward_labels
    from valign_ray.config import PipelineConfig
    from valign_ray.stages.cai_rl import label_pairs

    constitution = tmp_path / "constitution.yaml"
    constitution.write_text(
        yaml.safe_dump(
            {
                "principles": [
                    {"id": p.id, "text": p.text, "support": p.support,
                     "overall_support": p.overall_support}
                    for p in CONSTITUTION.principles
                ]
            }
        )
    )  # fmt: skip
    pairs = pl.DataFrame(
        {
            "pair_id": ["p:0-1", "q:0-1"],
            "question": ["Should the council protect the bush?", "Fund the library?"],
            "response_a": [" Yes, protect the native bush.", " Yes."],
            "response_b": [" No, keep costs low for families.", " No."],
        }
    )
    fns = (choice_labels, implicit_reward_labels)
    base = PipelineConfig()
    implicit = dataclasses.replace(
        base,
        cai=dataclasses.replace(
            base.cai, feedback=dataclasses.replace(base.cai.feedback, mode="implicit_reward")
        ),
    )
    same = {"policy": str(tiny_model_dir), "reference": str(tiny_model_dir)}
    out = label_pairs(fns, pairs, implicit, same, "cpu")
    assert out["label"].to_list() == [0.5, 0.5]
    assert out["reward_a"].to_list() == [0.0, 0.0]
    choice = dataclasses.replace(
        base,
        cai=dataclasses.replace(
            base.cai,
            templates=str(REPO / "configs" / "cai_templates.yaml"),
            feedback=dataclasses.replace(base.cai.feedback, principles_per_pair=3),
        ),
    )
    models = {"feedback": str(tiny_model_dir), "constitution": str(constitution)}
    out = label_pairs(fns, pairs, choice, models, "cpu")
    assert out["label"].is_between(0, 1).all()
    assert out["principle_ids"].list.len().to_list() == [3, 3]
    # Both orders averaged: label = (label_ab + label_ba) / 2 before any clamping.
    mean = (out["label_ab"] + out["label_ba"]) / 2
    assert (out["label"] - mean).abs().max() < 1e-9
