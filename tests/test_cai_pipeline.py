"""``valign cai`` end to end at smoke size (configs/cai_smoke.yaml) on the session's local Ray:
SL-CAI and RL-CAI data with their cards and provenance, both models trained and loadable, the
held-out table for base / SL-CAI / RL-CAI, and a rerun that skips every stage."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cai_run(ray_session, tmp_path_factory):
    from valign_ray.cai_pipeline import run_cai
    from valign_ray.config import load_config

    out = tmp_path_factory.mktemp("cai_runs")
    cfg = load_config(REPO / "configs/cai_smoke.yaml", [f"output_dir={out}"])
    return cfg, run_cai(cfg)


def test_both_cards_and_a_loadable_rl_model(cai_run) -> None:
    from transformers import AutoModelForCausalLM

    cfg, summary = cai_run
    for stage in ("sl", "rl"):
        folder = cfg.run_dir / "cai" / stage
        card = json.loads((folder / "card.json").read_text())
        assert (folder / "card.md").read_text().startswith("# Dataset card")
        assert card["rows"] == pl.read_parquet(folder / "rows.parquet").height > 0
        assert card["constitution"]["principles"] and card["templates"]["hashes"]
        assert card["sampling"]["max_new_tokens"] == 12
    model = AutoModelForCausalLM.from_pretrained(cfg.run_dir / "cai" / "rl" / "model")
    assert model.config.hidden_size == 64
    rl = summary.results["cai_rl"]
    assert rl.pairs + sum(rl.quarantined.values()) == 12  # 12 prompts, K=2: one pair each
    assert sum(rl.label_histogram) == rl.pairs
    assert rl.train_rows == rl.pairs  # soft-label DPO: one row per labelled pair


def test_records_keep_their_provenance(cai_run) -> None:
    cfg, summary = cai_run
    records = pl.read_parquet(cfg.run_dir / "cai/sl/records.parquet")
    assert records.group_by("kind").len().sort("kind").rows() == [
        ("answer", 12),
        ("critique", 12),
        ("revision", 12),
    ]
    assert records["model_fingerprint"].n_unique() == 1
    requests = records.filter(pl.col("kind") != "answer")
    assert requests["principle_id"].null_count() == 0
    assert requests["template_hash"].null_count() == 0
    assert records["seed"].n_unique() == records.height
    rows = pl.read_parquet(cfg.run_dir / "cai/sl/rows.parquet")
    assert {"prompt_id", "principle_ids", "round", "seed", "template_hash"} <= set(rows.columns)
    pairs = pl.read_parquet(cfg.run_dir / "cai/rl/pairs.parquet")
    assert {"pair_id", "label", "label_ab", "label_ba", "principle_ids"} <= set(pairs.columns)
    assert pairs["label"].is_between(0, 1).all()
    on_disk = json.loads((cfg.run_dir / "summary.json").read_text())
    assert set(on_disk["cai"]) == {"sl", "rl", "eval", "wall_s"}
    assert set(on_disk["cai"]["wall_s"]) == {"cai_sl", "cai_rl", "cai_eval"}
    assert on_disk["cai"]["sl"]["generation"]["tokens"] == records["n_tokens"].sum()


def test_heldout_table_and_rerun_skips(cai_run, capsys) -> None:
    from valign_ray.cai_pipeline import run_cai

    cfg, summary = cai_run
    models = summary.results["cai_eval"].models
    assert list(models) == ["base", "sl_cai", "rl_cai"]
    assert models["base"]["n_pairs"] == models["rl_cai"]["n_pairs"] > 50
    again = run_cai(cfg)
    assert {"cai_sl", "cai_rl", "cai_eval"} <= set(again.skipped)
    assert "train" not in again.wall_s  # choice feedback needs no survey-trained model
    assert "held-out metric" in capsys.readouterr().out
    report = (cfg.run_dir / "report.md").read_text()
    assert "Constitutional AI" in report and "Critique and revision examples" in report
