"""The eval stage without Ray: held-out respondents on trained items, and on the items held
out of training (``unseen_items``), reported apart; the summary table shows both."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from valign_ray.config import DataConfig, ModelConfig, PipelineConfig, WeightingConfig
from valign_ray.data.builders import build_dpo_pairs
from valign_ray.eval.heldout import evaluate_pairs
from valign_ray.models import load_model, load_tokenizer
from valign_ray.pipeline import format_summary
from valign_ray.results import EvalResult, RunSummary
from valign_ray.run_layout import RunLayout
from valign_ray.stages.base import StageContext
from valign_ray.stages.training import run_eval
from valign_ray.survey.tables import ANSWER_COLUMNS, polars_schema

ITEMS = pl.DataFrame(
    {
        "item_id": ["p1", "p2"],
        "kind": ["prompt", "prompt"],
        "text": ["Question: Should the council protect the bush?\nAnswer:",
                 "Question: Should the council fund the library?\nAnswer:"],
        "dimension": [None, None],
        "n_options": [0, 0],
    },
    schema={"item_id": pl.String, "kind": pl.String, "text": pl.String,
            "dimension": pl.String, "n_options": pl.Int64},
)  # fmt: skip
CANDIDATES = pl.DataFrame(
    {
        "item_id": ["p1", "p1", "p2", "p2"],
        "response_id": ["p1a", "p1b", "p2a", "p2b"],
        "text": [" Yes, protect the native bush.", " No, keep costs low for families."] * 2,
    }
)
RESPONDENTS = pl.DataFrame({"respondent_id": ["r1", "r2", "r3"], "age_band": ["a", "b", "a"]})
WEIGHTS = pl.DataFrame({"respondent_id": ["r1", "r2", "r3"], "weight": [1.0, 2.0, 1.0]})


def _ratings(rows: list[tuple[str, str, str, int]]) -> pl.DataFrame:
    frame = pl.DataFrame(
        [(r, i, "rating", c, None, v, None) for r, i, c, v in rows],
        schema=list(ANSWER_COLUMNS),
        orient="row",
    )
    return frame.cast(polars_schema(dict(ANSWER_COLUMNS)))


# r1, r2 are held-out respondents; p2 is the held-out item. r1 prefers yes, r2 and r3 no.
SEEN = _ratings([("r1", "p1", "p1a", 1), ("r1", "p1", "p1b", 0),
                 ("r2", "p1", "p1a", 0), ("r2", "p1", "p1b", 1)])  # fmt: skip
UNSEEN = _ratings([("r1", "p2", "p2a", 1), ("r1", "p2", "p2b", 0),
                   ("r2", "p2", "p2a", 0), ("r2", "p2", "p2b", 1),
                   ("r3", "p2", "p2a", 0), ("r3", "p2", "p2b", 1)])  # fmt: skip


def _context(
    tmp_path: Path, model_dir: Path, holdout_items: float, weighting: bool = True
) -> StageContext:
    cfg = PipelineConfig(
        output_dir=str(tmp_path),
        data=DataConfig(holdout_items=holdout_items),
        model=ModelConfig(path=str(model_dir)),
        weighting=WeightingConfig(enabled=weighting),
    )
    layout = RunLayout.of(cfg.output_dir, cfg.name)
    tables = {"items": ITEMS, "candidates": CANDIDATES, "respondents": RESPONDENTS}
    for name, frame in tables.items():
        layout.survey_table(name).parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(layout.survey_table(name))
    layout.weights.parent.mkdir(parents=True, exist_ok=True)
    WEIGHTS.write_parquet(layout.weights)
    layout.datasets_dir.mkdir(parents=True, exist_ok=True)
    SEEN.write_parquet(layout.answers_split("heldout_respondents"))
    UNSEEN.write_parquet(layout.answers_split("heldout_both"))
    _pairs(SEEN).write_parquet(layout.eval_pairs)
    shutil.copytree(model_dir, layout.model)  # the "aligned" model: the base model itself
    return StageContext(cfg, layout)


def _pairs(answers: pl.DataFrame) -> pl.DataFrame:
    respondents = RESPONDENTS.join(WEIGHTS, on="respondent_id")
    return build_dpo_pairs(answers, ITEMS, CANDIDATES, respondents, group_column="age_band")


def test_unseen_items_are_scored_apart(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Seen: r1, r2 on p1 (2 pairs); unseen: r1, r2, r3 on p2 (3 pairs), scored exactly as
    evaluate_pairs scores them directly. Base and aligned are one model here: equal numbers."""
    ev = run_eval(_context(tmp_path, tiny_model_dir, holdout_items=0.5)).models
    base, aligned = ev["base"], ev["aligned"]
    assert base["n_pairs"] == 2 and base["unseen_items"]["n_pairs"] == 3
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    direct = evaluate_pairs(model, tok, _pairs(UNSEEN), max_length=96)
    marks = ("groups", "group_n", "suppressed_groups")  # report.min_group_n (default 10)
    for got in (base["unseen_items"], aligned["unseen_items"]):
        assert got["groups"] == pytest.approx(direct["groups"])
        assert {k: v for k, v in got.items() if k not in marks} == pytest.approx(
            {k: v for k, v in direct.items() if k != "groups"}
        )
        # unseen: r1, r3 in a, r2 in b; both under 10 respondents: kept, marked suppressed
        assert got["group_n"] == {"a": 2, "b": 1} and got["suppressed_groups"] == ["a", "b"]
    assert base["group_n"] == {"a": 1, "b": 1}  # seen: r1 (a), r2 (b)
    # p2 splits 1 : 3 (weights 1 vs 2 + 1) -> the indifferent model's A_0 = 1 - |.5 - .25|
    assert direct["A_indifferent"] == pytest.approx(0.75)
    assert set(direct["groups"]) == {"a", "b"}
    for key in ("A_population", "skill", "majority_agreement", "A_indifferent"):
        assert isinstance(base[key], float)

    summary = RunSummary(name="run", run_dir=str(tmp_path), results={"eval": EvalResult(ev)})
    text = format_summary(summary)
    assert "unseen preference_accuracy" in text
    assert "unseen A_population" in text


def test_no_unseen_items_without_holdout(tmp_path: Path, tiny_model_dir: Path) -> None:
    ev = run_eval(_context(tmp_path, tiny_model_dir, holdout_items=0.0)).models
    assert "unseen_items" not in ev["base"] and ev["base"]["n_pairs"] == 2


def test_respondent_bootstrap_interval(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Held-out r1 (weight 1) chose p1a, r2 (weight 2) p1b: the model agrees with exactly one
    of them (one model scores both pairs), so the accuracy is 1/3 or 2/3 and a replicate
    (r1 r1, r1 r2, r2 r1 or r2 r2; weights fixed, weighting being off) scores 0, 1 or in
    between: the 95 % interval over 200 replicates is [0, 1]. The eval pairs the datasets stage
    wrote before respondent ids were kept (as here) are rebuilt with them."""
    ev = run_eval(_context(tmp_path, tiny_model_dir, 0.0, weighting=False)).models
    for name in ("base", "aligned"):
        got = ev[name]
        assert got["preference_accuracy"] in (pytest.approx(1 / 3), pytest.approx(2 / 3))
        assert (got["preference_accuracy_lo"], got["preference_accuracy_hi"]) == (0.0, 1.0)
        boot = got["bootstrap"]
        assert boot["kind"] == "respondent" and boot["reweighted"] == "none"
        assert (boot["n_boot"], boot["failed"], boot["n_respondents"]) == (200, 0, 2)
    summary = RunSummary(name="run", run_dir=str(tmp_path), results={"eval": EvalResult(ev)})
    text = format_summary(summary)
    assert "95% respondent bootstrap    [0.00, 1.00]  [0.00, 1.00]" in text
    assert "preference_accuracy_lo" not in text
