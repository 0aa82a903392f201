"""The method registry: lookup by name or import path, and a toy method defined outside the
package (tests/toy_method.py) trained through the real loop, in one process (LocalContext) and
on Ray Train with 2 workers, which must follow the one-process trajectory."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tests.toy_method import PATH as TOY
from valign_ray.config import load_config
from valign_ray.config_loader import ConfigError
from valign_ray.data.builders import assign_kl_completions, build_kto_rows, canonical_order
from valign_ray.methods import REGISTRY, get_method
from valign_ray.methods.base import Method, RowInputs, local_map_answers
from valign_ray.survey.margins import load_margins
from valign_ray.survey.synthetic import generate_synthetic
from valign_ray.train.context import LocalContext
from valign_ray.train.worker import TrainJob, run_training

REPO = Path(__file__).resolve().parents[1]


def test_registered_methods_resolve_and_declare_their_parts() -> None:
    for name in REGISTRY:
        method = get_method(name)
        assert isinstance(method, Method) and method.name == name
        assert set(method.sweepable) <= set(method.loss_keys)
        assert set(method.data_keys) <= set(method.loss_keys)
    assert get_method("kto").reference_columns == ("ref_logp", "ref_kl_logp")
    assert get_method("sft").reference == ()
    assert get_method(TOY).name == "toy"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ktoo", "unknown method 'ktoo'; valid: kto, dpo, sft"),
        ("tests.no_such_module:METHOD", "cannot import"),
        ("tests.toy_method:build_rows", "is a function, not a Method"),
    ],
)
def test_bad_method_names_are_config_errors(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_method(name)


def test_local_and_batched_builds_give_the_same_rows() -> None:
    survey = generate_synthetic(
        load_config(REPO / "configs/smoke.yaml").survey.synthetic,
        load_margins(REPO / "data/margins/nz_2023.csv"),
    )
    resp = survey.respondents.with_columns(pl.lit(1.0).alias("weight"))
    lookups = dict(
        items=survey.items, candidates=survey.candidates, respondents=resp, group_column="age_band"
    )
    whole = local_map_answers(survey.answers)(build_kto_rows, **lookups)
    batched = local_map_answers(survey.answers, batch_size=37)(build_kto_rows, **lookups)
    assert whole.equals(batched)
    assert assign_kl_completions(whole, 0).equals(assign_kl_completions(batched, 0))


@pytest.fixture(scope="module")
def toy_rows() -> tuple[pl.DataFrame, object]:
    cfg = load_config(
        REPO / "configs/smoke.yaml",
        [
            f"loss.name={TOY}",
            "train.num_workers=1",
            "train.batch_size=8",
            "train.max_steps=6",
            "train.lr=0.01",
            "train.warmup_ratio=0.0",
            "data.max_length=48",
            "wandb.enabled=false",
        ],
    )
    survey = generate_synthetic(
        cfg.survey.synthetic, load_margins(REPO / "data/margins/nz_2023.csv")
    )
    resp = survey.respondents.with_columns(pl.lit(1.0).alias("weight"))
    inputs = RowInputs(
        cfg=cfg,
        answers=survey.answers,
        items=survey.items,
        candidates=survey.candidates,
        respondents=resp,
        map_answers=local_map_answers(survey.answers),
    )
    rows = get_method(TOY).build_rows(inputs)
    assert rows.height > 48 and "label" not in rows.columns
    return rows, cfg


def train_locally(cfg, rows: pl.DataFrame, model_dir: Path, tmp: Path) -> list[dict]:
    """``run_training`` in this process (LocalContext); returns the per-step metrics."""
    metrics = tmp / "local.jsonl"
    job = TrainJob(config=cfg, model_path=str(model_dir), metrics_path=str(metrics))
    ctx = LocalContext()
    run_training(job, ctx, rows)
    assert ctx.reports[-1]["checkpoint"] is not None  # the final checkpoint with the export
    return [json.loads(line) for line in metrics.read_text().splitlines()]


@pytest.fixture(scope="module")
def toy_local(toy_rows, tiny_model_dir, local_process_group, tmp_path_factory) -> list[dict]:
    rows, cfg = toy_rows
    return train_locally(cfg, rows, tiny_model_dir, tmp_path_factory.mktemp("toy_local"))


def test_toy_method_trains_under_local_context(toy_local) -> None:
    assert [int(m["step"]) for m in toy_local] == list(range(1, 7))
    assert toy_local[-1]["nll"] < toy_local[0]["nll"]  # it learns the desirable completions


def test_training_steps_on_the_chat_formatted_prompt(
    toy_rows, tiny_model_dir, local_process_group, tmp_path
) -> None:
    """A model whose tokenizer has a chat template trains on the templated prompt: one step
    from that folder = one step from the plain folder (same weights) on prompts formatted by
    hand (a step that ignored the template would score the shorter bare prompts)."""
    import shutil
    from dataclasses import replace

    from valign_ray.models import load_tokenizer
    from valign_ray.train.logprobs import format_prompt

    rows, cfg = toy_rows
    cfg = replace(cfg, train=replace(cfg.train, max_steps=1))
    chat_dir = tmp_path / "chat"
    shutil.copytree(tiny_model_dir, chat_dir)
    tok = load_tokenizer(chat_dir)
    tok.chat_template = "{% for m in messages %}<{{ m['content'] }}>{% endfor %} A:"
    tok.save_pretrained(str(chat_dir))
    by_hand = rows.with_columns(pl.col("prompt").map_elements(lambda p: f"<{p}> A:"))
    assert by_hand["prompt"][0] == format_prompt(load_tokenizer(chat_dir), rows["prompt"][0])
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    chat = train_locally(cfg, rows, chat_dir, tmp_path / "a")[0]
    hand = train_locally(cfg, by_hand, tiny_model_dir, tmp_path / "b")[0]
    assert chat["loss"] == pytest.approx(hand["loss"], rel=1e-6)
    assert chat["tokens"] == hand["tokens"]


@pytest.mark.ray
def test_toy_method_on_ray_follows_the_local_trajectory(
    ray_session, toy_rows, toy_local, tiny_model_dir, tmp_path
) -> None:
    """2 Ray Train workers x 4 rows = the one-process batches of 8: the same losses."""
    from dataclasses import replace

    from valign_ray.distributed.trainer import fit

    rows, cfg = toy_rows
    cfg = replace(cfg, train=replace(cfg.train, num_workers=2, batch_size=4))
    metrics = tmp_path / "ray.jsonl"
    job = TrainJob(config=cfg, model_path=str(tiny_model_dir), metrics_path=str(metrics))
    fit(job, rows, storage_path=tmp_path / "storage", name="toy")
    on_ray = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert len(on_ray) == len(toy_local) == 6
    for a, b in zip(toy_local, on_ray, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7), a["step"]


def test_canonical_order_numbers_rows_from_zero() -> None:
    rows = canonical_order(pl.DataFrame({"a": [3, 1, 2]}))
    assert rows["a"].to_list() == [1, 2, 3] and rows["row_idx"].to_list() == [0, 1, 2]
