"""Training options through the real loop (LocalContext): the logged ``grad_norm`` under ZeRO-0,
and length bucketing across steps (``train.bucket_steps``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from valign_ray.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _train(rows, model_dir: Path, out: Path, *overrides: str) -> list[dict]:
    from valign_ray.train.context import LocalContext
    from valign_ray.train.worker import TrainJob, run_training

    cfg = load_config(
        REPO / "configs/quickstart.yaml",
        ["train.epochs=1", "train.num_workers=1", "train.batch_size=8", "train.warmup_ratio=0.0",
         "train.lr=0.01", "data.max_length=48", "wandb.enabled=false", *overrides],
    )  # fmt: skip
    job = TrainJob(config=cfg, model_path=str(model_dir), metrics_path=str(out))
    run_training(job, LocalContext(), rows)
    return [json.loads(x) for x in out.read_text().splitlines()]


def test_zero0_grad_norm_equals_deepspeeds_zero2_norm(
    kto_rows, tiny_model_dir, local_process_group, tmp_path
) -> None:
    """DeepSpeed computes the norm under ZeRO 1-3 and bf16 but leaves it unset for a plain fp32
    ZeRO-0 engine, where the loop computes it: same rows, seed and steps, same norms."""
    norms = {
        stage: [
            m["grad_norm"]
            for m in _train(
                kto_rows,
                tiny_model_dir,
                tmp_path / f"z{stage}.jsonl",
                "train.max_steps=3",
                f"train.zero_stage={stage}",
                f"name=gn{stage}",
            )
        ]  # fmt: skip
        for stage in (0, 2)
    }
    assert all(n > 0 for n in norms[0]), norms
    assert norms[0] == pytest.approx(norms[2], rel=1e-4), norms


def test_bucketing_across_steps_cuts_padding_in_the_loop(
    kto_rows, tiny_model_dir, local_process_group, tmp_path
) -> None:
    """A whole epoch (12 steps of 8 rows at grad_accum 1) with and without bucketing: the same
    rows are trained on, and the loop's own padded-token count drops."""
    runs = {
        b: _train(
            kto_rows,
            tiny_model_dir,
            tmp_path / f"b{b}.jsonl",
            f"train.bucket_steps={b}",
            "data.max_length=512",  # nothing cut: lengths vary
            f"name=bucket{b}",
        )  # fmt: skip
        for b in (0, 12)
    }
    assert len(runs[0]) == len(runs[12]) == 12
    tokens = {b: sum(m["tokens"] for m in r) for b, r in runs.items()}
    padded = {b: sum(m["padded_tokens"] for m in r) for b, r in runs.items()}
    assert tokens[0] == tokens[12]  # the same rows: the same real tokens
    assert padded[12] < padded[0]
    print({b: round(1 - tokens[b] / padded[b], 3) for b in runs})


@pytest.mark.parametrize("loss", ["kto", "dpo"])
def test_packing_trains_the_same_steps_with_less_padding(
    kto_rows, dpo_rows, tiny_model_dir, local_process_group, tmp_path, loss: str
) -> None:
    """``train.packing`` changes how a micro-batch is laid out, not what it computes: the same
    losses and gradient norms step by step as padded batches, and fewer padded tokens."""
    rows = kto_rows if loss == "kto" else dpo_rows
    runs = {
        pack: _train(
            rows,
            tiny_model_dir,
            tmp_path / f"p{pack}.jsonl",
            f"loss.name={loss}",
            f"train.packing={str(pack).lower()}",
            "train.max_steps=4",
            "data.max_length=192",  # rows of 192 tokens hold 2-4 sequences
            f"name=pack{pack}-{loss}",
        )
        for pack in (False, True)
    }
    for key in ("loss", "grad_norm", "tokens"):
        got, want = [m[key] for m in runs[True]], [m[key] for m in runs[False]]
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), key
    padded = {p: sum(m["padded_tokens"] for m in r) for p, r in runs.items()}
    assert padded[True] < padded[False]
    print({p: round(1 - runs[p][0]["tokens"] / runs[p][0]["padded_tokens"], 3) for p in runs})


def test_compiled_blocks_train_like_eager_ones(
    kto_rows, tiny_model_dir, local_process_group, tmp_path
) -> None:
    """``train.compile``: every decoder block compiled (inductor on CPU), the same losses and
    gradient norms as eager within float tolerance."""
    runs = {
        c: _train(
            kto_rows,
            tiny_model_dir,
            tmp_path / f"c{c}.jsonl",
            f"train.compile={str(c).lower()}",
            "train.max_steps=3",
            "train.zero_stage=0",
            f"name=compile{c}",
        )
        for c in (False, True)
    }
    for key in ("loss", "grad_norm"):
        got, want = [m[key] for m in runs[True]], [m[key] for m in runs[False]]
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), key


def test_compile_blocks_compiles_each_block_and_rejects_other_models(tiny_model_dir) -> None:
    from valign_ray.models import load_model
    from valign_ray.train.worker import compile_blocks

    model = load_model(tiny_model_dir)
    assert compile_blocks(model) == model.config.num_hidden_layers
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in model.model.layers)
    with pytest.raises(ValueError, match="train.compile: Linear has no model.layers"):
        compile_blocks(torch.nn.Linear(2, 2))
