"""report.min_group_n: a group with fewer respondents keeps its numbers in summary.json
(marked) but gets no per-group line in the printed summary, the report, its W&B tables or a
sweep trial's columns. Hand-made numbers: group "small" has 3 respondents, "big" has 12."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from valign_ray.eval.report import write_report
from valign_ray.eval.small_groups import group_sizes, mark_small_groups, shown_group_metrics
from valign_ray.pipeline import format_summary
from valign_ray.results import EvalResult, RunSummary
from valign_ray.sweep_summary import eval_columns

RESPONDENTS = pl.DataFrame(
    {
        "respondent_id": [f"p{i}" for i in range(16)],
        # 12 big, 3 small, 1 with no group
        "age_band": ["big"] * 12 + ["small"] * 3 + [None],
    }
)


def _metrics(a_big: float, a_small: float) -> dict:
    return {
        "A_population": 0.8,
        "n_pairs": 40,
        "groups": {"big": a_big, "small": a_small},
        "groups_skill": {"big": 0.1, "small": -0.4},
        "worst_group": min(a_big, a_small),
        "spread": abs(a_big - a_small),
    }


def test_group_sizes_count_respondents_who_answered() -> None:
    # p0 answers twice, p1 and p12 once, p15 (no group) once: big 2, small 1.
    answers = pl.DataFrame({"respondent_id": ["p0", "p0", "p1", "p12", "p15"]})
    assert group_sizes(answers, RESPONDENTS, "age_band") == {"big": 2, "small": 1}
    assert group_sizes(answers.head(0), RESPONDENTS, "age_band") == {}
    assert group_sizes(answers, RESPONDENTS, "region") == {}


def test_a_group_under_the_threshold_is_marked_then_left_out() -> None:
    sizes = {"big": 12, "small": 3}
    marked = mark_small_groups(_metrics(0.9, 0.6), sizes, min_n=10)
    assert marked["group_n"] == {"big": 12, "small": 3}
    assert marked["suppressed_groups"] == ["small"]
    assert marked["groups"] == {"big": 0.9, "small": 0.6}  # summary.json keeps the value
    shown = shown_group_metrics(marked)
    assert shown["groups"] == {"big": 0.9} and shown["groups_skill"] == {"big": 0.1}
    assert shown["group_n"] == {"big": 12}
    # worst group and spread over what is left: one group, 0.9, spread 0 (was 0.6 and 0.3)
    assert shown["worst_group"] == 0.9 and shown["spread"] == 0.0
    # at the threshold a group is shown; min_n 13 hides both, and the derived numbers go
    assert mark_small_groups(_metrics(0.9, 0.6), sizes, min_n=3)["suppressed_groups"] == []
    none_left = shown_group_metrics(mark_small_groups(_metrics(0.9, 0.6), sizes, min_n=13))
    assert not {"groups", "groups_skill", "worst_group", "spread"} & set(none_left)
    assert none_left["A_population"] == 0.8
    # unseen items are judged on their own sizes
    nested = {**marked, "unseen_items": mark_small_groups(_metrics(0.7, 0.2), sizes, 10)}
    assert shown_group_metrics(nested)["unseen_items"]["groups"] == {"big": 0.7}
    assert mark_small_groups({"A_population": 0.8}, sizes, 10) == {"A_population": 0.8}


def _summary(run_dir: Path) -> RunSummary:
    models = {
        name: mark_small_groups(_metrics(big, small), {"big": 12, "small": 3}, 10)
        for name, big, small in (("base", 0.85, 0.55), ("aligned", 0.9, 0.61))
    }
    return RunSummary("groups", str(run_dir), results={"eval": EvalResult(models)})


def test_summary_table_report_and_wandb_leave_the_small_group_out(tmp_path: Path) -> None:
    summary = _summary(tmp_path)
    table = format_summary(summary)
    assert "A, group big                    0.8500    0.9000" in table
    assert "A, group small" not in table
    assert "worst_group                     0.8500    0.9000" in table
    assert "groups not shown (fewer respondents than report.min_group_n): ['small']" in table
    assert "0.55" not in table and "0.61" not in table

    (tmp_path / "config.yaml").write_text("name: groups\nwandb:\n  mode: offline\n")
    summary.save(tmp_path / "summary.json")
    out = write_report(tmp_path)
    md = out["md"].read_text()
    assert "| base | big | 0.85 | n/a | n/a |" in md
    assert "| base | small |" not in md and "0.61" not in md
    assert "Per-group metrics not shown for small: fewer held-out respondents" in md
    assert "| model | A_population | n_pairs | worst_group | spread |" in md
    assert "| aligned | 0.8 | 40 | 0.9 | 0 |" in md
    # summary.json keeps the value, marked
    kept = json.loads((tmp_path / "summary.json").read_text())["eval"]["aligned"]
    assert kept["groups"]["small"] == 0.61 and kept["suppressed_groups"] == ["small"]
    # W&B: the report's tables (offline files) hold no row of the small group
    logged = [json.loads(p.read_text()) for p in out["wandb"].rglob("*.table.json")]
    assert logged
    rows = [row for t in logged for row in t["data"]]
    assert any("big" in row for row in rows) and not any("small" in row for row in rows)


def test_sweep_columns_leave_the_small_group_out() -> None:
    ev = {"preference_accuracy": 0.6, "groups": {"big": 0.9, "small": 0.55}}
    assert eval_columns(ev)["eval_worst_group_A"] == 0.55
    cols = eval_columns(ev, hidden=("small",))
    assert cols == {
        "eval_preference_accuracy": 0.6,
        "eval_A_group.big": 0.9,
        "eval_worst_group_A": 0.9,
    }
