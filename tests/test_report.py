"""The run report: every section renders from a real smoke run and from a synthetic run
directory; the HTML is self-contained; no respondent id leaks into the report or its W&B run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from valign_ray.eval import plots
from valign_ray.eval.report import write_report
from valign_ray.eval.report_inputs import load_train_metrics, representation_tables
from valign_ray.results import RunSummary

HEADINGS = [
    "1. Summary",
    "2. Survey and weighting",
    "3. Training data",
    "4. Training curves",
    "5. Evaluation",
    "6. Constitution",
]


def _headings(md: str, page: str) -> tuple[list[str], list[str]]:
    md_h = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    html_h = re.findall(r"<h2[^>]*>(.*?)</h2>", page)
    return md_h, html_h


def _assert_self_contained(page: str) -> None:
    """Every src/href is inline data; no stylesheet, script or CSS url() to fetch."""
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", page)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs), refs[:3]
    for bad in ("<link", "<script", "url(", "<iframe"):
        assert bad not in page


def _files_under(*paths: Path) -> list[Path]:
    out = []
    for p in paths:
        out += [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    return out


@pytest.mark.ray
def test_report_of_a_real_smoke_run(smoke_run) -> None:
    cfg, _ = smoke_run
    run = cfg.run_dir
    out = write_report(run)
    md, page = out["md"].read_text(), out["html"].read_text()
    assert _headings(md, page) == (HEADINGS, HEADINGS)
    assert out["md"].parent == out["html"].parent == run

    # Every section's content, from the run's own files.
    summary = json.loads((run / "summary.json").read_text())
    assert RunSummary.load(run / "summary.json").to_json() == summary  # typed, lossless
    card = json.loads((run / "datasets/kto/card.json").read_text())
    for text in (
        "| loss | kto |",
        "| ZeRO stage | 2 |",
        "| workers | 2 |",
        f"| model parameters | {summary['model']['parameters']:,} |",
        "| respondents | 160 | 160 |",  # configs/smoke.yaml: n_sample 160
        "### Weighting diagnostics",
        f"| rows | {card['rows']:,} |",
        "### Training metrics (steps 1-",
    ):
        assert text in md, text
    for model, metrics in summary["eval"].items():  # each model's row holds its numbers
        (row,) = [line for line in md.splitlines() if line.startswith(f"| {model} | ")][:1]
        for v in metrics.values():
            if isinstance(v, int) and not isinstance(v, bool):
                assert f" {v:,} |" in row, (model, v)
            elif isinstance(v, float) and abs(v) < 1000:
                assert f" {v:.4g} |" in row, (model, v)
    expected = {
        "eval_models",
        "eval_model_groups",
        "margins",
        "training_curves",
        "weights_histogram",
    }
    # The constitution stage is new in the pipeline: check its section from whichever exists.
    if (run / "constitution.yaml").exists():
        import yaml

        doc = yaml.safe_load((run / "constitution.yaml").read_text())
        assert f"{len(doc['principles'])} principle(s) with" in md
        if doc["principles"]:
            first = doc["principles"][0]
            assert f"| 1 | {first['id']} | " in md
            expected.add("constitution_support")
    else:
        assert "Not available: constitution.yaml not found in the run directory." in md
    plots_written = sorted(p.stem for p in out["plots"].glob("*.png"))
    assert plots_written == sorted(expected)
    assert page.count("data:image/png;base64,") == len(expected)
    _assert_self_contained(page)

    # W&B: offline (configs/smoke.yaml), the same tables and plots, aggregates only.
    media = out["wandb"] / "files" / "media"
    tables = {p.name.split("_0_")[0] for p in (media / "table" / "report").glob("*.table.json")}
    assert {"config", "wall_time", "ingestion", "weighting", "margins", "eval"} <= tables
    images = {p.name.split("_0_")[0] for p in (media / "images" / "report" / "plots").glob("*")}
    assert images == set(plots_written)
    (eval_table,) = (media / "table" / "report").glob("eval_0_*.table.json")
    logged = json.loads(eval_table.read_text())
    base = summary["eval"]["base"]
    assert logged["columns"] == [
        "model",
        *(k for k, v in base.items() if isinstance(v, int | float)),
    ]
    assert logged["columns"][:4] == ["model", "preference_accuracy", "margin", "n_pairs"]
    assert logged["data"][1][:2] == ["aligned", summary["eval"]["aligned"]["preference_accuracy"]]

    ids = pl.read_parquet(run / "weights/weights.parquet")["respondent_id"].to_list()
    assert len(ids) == 160
    for path in _files_under(out["md"], out["html"], out["plots"], out["wandb"]):
        data = path.read_bytes()
        leaked = [i for i in ids if i.encode() in data]
        assert not leaked, f"{path}: respondent ids {leaked[:3]}"
        assert cfg.survey.salt.encode() not in data, f"{path}: the pseudonymisation salt"


def _write_synthetic_run(run: Path, wandb_line: str) -> list[str]:
    """A run directory with every input, including the optional eval keys and a constitution
    built by the real builder; returns the respondent ids it holds."""
    from valign_ray.survey.constitution import build_constitution

    run.mkdir()
    (run / "config.yaml").write_text(f"name: synth\n{wandb_line}\n")
    ids = [f"secret-resp-{i:03d}" for i in range(6)]
    (run / "weights").mkdir()
    pl.DataFrame({"respondent_id": ids, "weight": [1.0, 3.0, 1.0, 1.0, 1.0, 2.0]}).write_parquet(
        run / "weights/weights.parquet"
    )
    margins = [
        {"variable": "age_band", "category": "15-64", "n": 4, "sample_share": 0.5,
         "weighted_share": 0.75, "target": 0.75},
        {"variable": "age_band", "category": "65+", "n": 2, "sample_share": 0.5,
         "weighted_share": 0.25, "target": 0.25},
    ]  # fmt: skip
    diag = {"method": "raking", "n": 6, "ess": 4.5, "deff": 1.333, "margins": margins}
    (run / "weights/diagnostics.json").write_text(json.dumps(diag))
    (run / "survey").mkdir()
    counts = {"respondents": {"rows_in": 7, "kept": 6, "quarantined": 1,
                              "by_reason": {"missing age_band": 1}}}  # fmt: skip
    (run / "survey/quarantine_counts.json").write_text(json.dumps(counts))
    (run / "datasets/kto").mkdir(parents=True)
    card = {"name": "kto-train", "rows": 12, "ess": 9.5, "items": 2,
            "weighted_share_by_group": {"15-64": 0.8, "65+": 0.2},
            "weighted_share_by_label": {"False": 0.4, "True": 0.6}}  # fmt: skip
    (run / "datasets/kto/card.json").write_text(json.dumps(card))
    # Steps 1-3, a crash, then a resume from the step-1 checkpoint replays steps 2 and 3.
    log = [(1, 1.0), (2, 2.0), (3, 0.8), (2, 0.7), (3, 0.6), (4, 0.5)]
    (run / "train_metrics.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "step": s,
                    "loss": x,
                    "z0": 0.1 * s,
                    "rewards/margin": s - 1.0,
                    "lr": 1e-3,
                    "grad_norm": 0.5,
                    "tokens_per_s": 100.0 * s,
                }
            )
            + "\n"
            for s, x in log
        )  # fmt: skip
    )
    rep = {
        model: {
            "population": {"estimate": a, "lo": a - 0.05, "hi": a + 0.05},
            "groups": [
                {"group": "age_band=15-64", "estimate": a, "lo": a - 0.1, "hi": a + 0.1},
                {"group": "age_band=65+", "estimate": a, "lo": a - 0.1, "hi": a + 0.1},
            ],
            "uncertainty": "bootstrap over items",
        }
        for model, a in (("base", 0.7), ("aligned", 0.9))
    }
    rep["aligned"]["groups"][1]["estimate"] = 0.85
    summary = {
        "name": "synth",
        "run_dir": str(run),
        "model": {"path": "base_model", "parameters": 1234},
        "wall_s": {"survey": 0.5, "train": 12.0},
        "eval": {
            "base": {"preference_accuracy": 0.5, "margin": 0.0, "n_pairs": 40},
            "aligned": {"preference_accuracy": 0.625, "margin": 0.25, "n_pairs": 40},
            "groups": {
                "base": {"15-64": 0.5, "65+": 0.5},
                "aligned": {"15-64": 0.7, "65+": {"estimate": 0.6, "lo": 0.5, "hi": 0.7}},
            },
            "representation": rep,
        },
    }
    (run / "summary.json").write_text(json.dumps(summary))
    items = pl.DataFrame(
        {"item_id": ["s1", "s2"], "kind": ["statement"] * 2,
         "text": ["Protect the  native bush.", "Sell the harbour."], "n_options": [3, 3]}
    )  # fmt: skip
    people = pl.DataFrame(
        {"respondent_id": ids, "group": ["A", "A", "A", "B", "B", "B"],
         "weight": [1.0, 1.0, 1.0, 1.0, 1.0, 2.0]}
    )  # fmt: skip
    answers = pl.DataFrame(
        {"respondent_id": ids * 2, "item_id": ["s1"] * 6 + ["s2"] * 6, "kind": ["likert"] * 12,
         "value": [3, 3, 3, 1, 3, 3] + [3, 1, 1, 3, 3, 3]}
    )  # fmt: skip
    build_constitution(items, answers, people, min_votes_per_group=1).to_yaml(run)
    return ids


def test_report_of_a_synthetic_run_with_every_input(tmp_path: Path) -> None:
    run = tmp_path / "synth"
    ids = _write_synthetic_run(run, "wandb:\n  enabled: false")
    out = write_report(run)
    assert "wandb" not in out and not (run / "wandb").exists()  # wandb.enabled: false
    md, page = out["md"].read_text(), out["html"].read_text()
    assert _headings(md, page) == (HEADINGS, HEADINGS)
    assert "Not available" not in md
    for text in (
        "| model parameters | 1,234 |",
        "| train | 12 |",
        "| respondents | 7 | 6 | 1 | missing age_band: 1 |",
        "| age_band | 65+ | 2 | 0.5 | 0.25 | 0.25 |",
        "| 65+ | 0.2 |",
        "| True | 0.6 |",
        # 6 records, steps 2 and 3 twice: 2 replaced. Kept losses 1.0, 0.7, 0.6, 0.5, so the
        # spike 2.0 of the crashed attempt is not the max.
        "2 step record(s) logged again after a resume",
        "| loss | 1 | 0.5 | 0.5 | 1 |",
        "| model | preference_accuracy | margin | n_pairs |",
        "| aligned | 0.625 | 0.25 | 40 |",
        "### Alignment per group",
        "| aligned | 65+ | 0.6 | 0.5 | 0.7 |",
        "| base | 15-64 | 0.5 | n/a | n/a |",
        # base: both groups 0.7, so the worst is the first by name; aligned: 65+ at 0.85.
        "| base | worst-group A (age_band=15-64) | 0.7 | n/a | n/a |",
        "| aligned | worst-group A (age_band=65+) | 0.85 | n/a | n/a |",
        "| aligned | A(population) | 0.9 | 0.85 | 0.95 |",
        "Intervals: bootstrap over items.",
        # s1: group A 3/3 agree; group B weights 1, 1, 2 with the last two agreeing: 3/4.
        # consensus = 1 * 0.75; overall = (3 + 3) / (3 + 4) = 6/7 = 0.8571. s2: A 1/3 < 0.6.
        "1 principle(s) with at least 60% support in every group of group: A, B.",
        "| 1 | s1 | Protect the native bush. | 0.75 | 0.75 | 0.8571 |",
    ):
        assert text in md, text
    assert "s2" not in md
    expected = {"constitution_support", "eval_groups", "eval_models", "margins", "representation"}
    expected |= {"training_curves", "weights_histogram"}
    assert {p.stem for p in out["plots"].glob("*.png")} == expected
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in out["plots"].glob("*.png"))
    assert page.count("data:image/png;base64,") == len(expected)
    _assert_self_contained(page)
    for path in (out["md"], out["html"]):
        assert not [i for i in ids if i in path.read_text()]


def test_likert_eval_and_polis_survey_shapes(tmp_path: Path) -> None:
    """A likert run keeps A per group inside each model's entry (eval/likert.py), unseen items
    apart (``unseen_items``), and a Polis import puts its own report in summary.json survey;
    lists there show as lengths only."""
    (tmp_path / "config.yaml").write_text("name: polis\nwandb:\n  enabled: false\n")
    likert = {
        "base": {"A_population": 0.8, "n_items": 3, "groups": {"0": 0.7, "1": 0.9},
                 "worst_group": 0.7, "spread": 0.2},
        "aligned": {"A_population": 0.85, "n_items": 3, "groups": {"0": 0.9, "1": 0.8},
                    "worst_group": 0.8, "spread": 0.1},
    }  # fmt: skip
    for model, a in (("base", 0.75), ("aligned", 0.8)):  # data.holdout_items > 0
        likert[model]["unseen_items"] = {"A_population": a, "skill": a - 0.5,
                                         "groups": {"0": a, "1": a - 0.1}}  # fmt: skip
    polis = {"source": "polis", "report": {"statements": {"in": 5, "moderated_out_ids": ["a"]}}}
    summary = {"name": "polis", "run_dir": str(tmp_path), "survey": polis, "eval": likert}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    out = write_report(tmp_path)
    md = out["md"].read_text()
    for text in (
        "| source | polis |",
        "| report.statements.in | 5 |",
        "| report.statements.moderated_out_ids | 1 entries |",
        "| model | A_population | n_items | worst_group | spread |",
        "| aligned | 0.85 | 3 | 0.8 | 0.1 |",
        "### Representativeness A per group",
        "| aligned | 1 | 0.8 | n/a | n/a |",
        "### Unseen items (held out of training), held-out respondents: metrics per model",
        "| model | A_population | skill |",
        "| aligned | 0.8 | 0.3 |",
        "### Representativeness A per group, unseen items",
        "| base | 1 | 0.65 | n/a | n/a |",
    ):
        assert text in md, text
    plots = {p.stem for p in out["plots"].glob("*.png")}
    assert plots == {"eval_models", "eval_model_groups", "eval_unseen_groups"}


def test_missing_inputs_say_so_in_one_line(tmp_path: Path) -> None:
    """A run directory with only config.yaml (W&B mode disabled): six sections, no failure."""
    (tmp_path / "config.yaml").write_text("name: empty\nwandb:\n  mode: disabled\n")
    out = write_report(tmp_path)
    assert "wandb" not in out and not (tmp_path / "wandb").exists()
    md, page = out["md"].read_text(), out["html"].read_text()
    assert _headings(md, page) == (HEADINGS, HEADINGS)
    missing = [line for line in md.splitlines() if line.startswith("Not available")]
    assert len(missing) == 8  # wall_s, counts, diagnostics, weights, cards, log, eval, constitution
    assert "data:image" not in page


def test_train_metrics_keep_the_last_record_of_a_step(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 2, "loss": 9}\n{"step": 1, "loss": 1}\n{"step": 2, "loss": 2}\n')
    frame, replaced = load_train_metrics(path)
    assert replaced == 1
    assert frame["step"].to_list() == [1, 2] and frame["loss"].to_list() == [1, 2]
    path.write_text('{"step": 1, "loss": 1}\n{"step": 2, "loss": \n')
    with pytest.raises(ValueError, match=r"m\.jsonl: line 2"):
        load_train_metrics(path)
    path.write_text('{"loss": 1}\n')
    with pytest.raises(ValueError, match="line 1: need an object with an integer 'step'"):
        load_train_metrics(path)


def test_representation_rejects_a_worst_group_that_is_not_a_group() -> None:
    rep = {"m": {"groups": [{"group": "a", "estimate": 0.5}], "worst_group": {"group": "z"}}}
    with pytest.raises(ValueError, match=r"eval\.representation\.m\.worst_group: 'z'"):
        representation_tables(rep)
    with pytest.raises(ValueError, match=r"eval\.representation\.m\.groups\[0\]"):
        representation_tables({"m": {"groups": [{"group": "a", "estimate": "high"}]}})


def test_weights_histogram_title_and_bad_weights() -> None:
    """weights [1, 3]: ESS = (1 + 3)^2 / (1 + 9) = 16/10 = 1.6, i.e. 80% of n = 2."""
    fig = plots.weights_histogram(np.array([1.0, 3.0]))
    assert fig.axes[0].get_title() == "Survey weights: n = 2, ESS = 1.6 (80% of n)"
    with pytest.raises(ValueError, match="finite positive"):
        plots.weights_histogram(np.array([1.0, -1.0]))


def test_training_curves_panels() -> None:
    """Panels only for logged metrics, in a fixed order; per-group rewards get their own."""
    frame = pl.DataFrame(
        {"step": [1, 2], "rewards/margin": [0.0, 1.0], "loss": [0.5, 0.4],
         "rewards/group/65+": [0.0, 0.2], "lr": [None, None]}
    )  # fmt: skip
    fig = plots.training_curves(frame)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["loss", "rewards", "rewards per group"]  # lr: all null, no panel
    with pytest.raises(ValueError, match="no plottable column"):
        plots.training_curves(pl.DataFrame({"step": [1], "tokens": [3]}))


def test_group_bars_reject_a_value_outside_its_interval() -> None:
    table = pl.DataFrame({"model": ["m"], "group": ["g"], "value": [0.9], "lo": [0.1], "hi": [0.5]})
    with pytest.raises(ValueError, match="model 'm': value outside"):
        plots.group_bars(table, ylabel="A")
