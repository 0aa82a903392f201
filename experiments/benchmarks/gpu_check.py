"""The project's own training loop on one GPU: ZeRO-0, 2 and 3 and LoRA, bf16, at batch 8 x 1024.

    bash experiments/benchmarks/gpu_check.sh                     # on the device machine
    python experiments/benchmarks/gpu_check.py --device cpu --tiny   # smoke check, no GPU

What runs is ``valign_ray.train.worker.run_training`` with a ``LocalContext`` (no Ray: Ray's
wheel is too large to travel to the device machine, ../shared/STACK.md), i.e. the DeepSpeed
engine, the batches, the KTO step and the export every Ray Train worker runs. The model is a
Qwen2 of Qwen2.5-0.5B's shape (tied embeddings, vocabulary 151,936) with random weights, saved
and loaded back through ``load_model``; the tokenizer is trained here on random words. Every
row's prompt and completion are long enough that ``data.max_length`` cuts them, so sequences
are exactly ``--seq-len`` tokens (no padding) and a step runs ``batch x seq-len`` policy tokens
plus as many KL tokens (no grad). Reference log-probs come from ``score_reference``, as the
pipeline's cache would supply them.

Printed per setup: median tokens/s over the steps after the first two, MFU, peak GPU memory and
the first 20 losses. MFU = (c N T + 2 N T_kl) / step time / peak, N the parameters (tied
embedding counted once), c = 6 (full) or 4 (LoRA: no weight gradients of the frozen base);
attention's T^2 term is left out, as in the 6N convention. Peak: ``--peak-tflops`` (H200 and
H100 SXM dense bf16: 989). ZeRO-2 and ZeRO-3 must follow ZeRO-0's losses within 1e-2 relative
(bf16 reductions differ in order); the script exits 1 when they do not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# (hidden, layers, heads, KV heads, intermediate, vocab)
KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "intermediate_size", "vocab_size")  # fmt: skip
SHAPE_05B = dict(zip(KEYS, (896, 24, 14, 2, 4864, 151936), strict=True))
SHAPE_TINY = dict(zip(KEYS, (64, 2, 4, 2, 128, 1024), strict=True))
SETUPS = {  # name -> config overrides
    "zero0": ["train.zero_stage=0"],
    "zero2": ["train.zero_stage=2"],
    "zero3": ["train.zero_stage=3"],
    "lora": ["train.zero_stage=0", "model.lora.enabled=true", "model.lora.r=16"],
    "zero0_compile": ["train.zero_stage=0", "train.compile=true"],
}


def build_inputs(work: Path, args: argparse.Namespace):
    """The model folder and ``n`` KTO rows (with reference log-probs) whose sequences fill
    ``seq_len`` exactly."""
    import polars as pl
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from valign_ray.data.builders import mismatched_completions
    from valign_ray.methods import get_method
    from valign_ray.models import load_model, load_tokenizer, train_tokenizer
    from valign_ray.train.reference import score_reference

    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, 5)) for _ in range(3000)]

    def text(n_words: int) -> str:
        return " ".join(rng.choice(words, n_words))

    n = args.batch * args.steps
    shape = SHAPE_TINY if args.tiny else SHAPE_05B
    model_dir = work / "model"
    tok = train_tokenizer([text(200) for _ in range(200)], 4096, model_dir)
    config = Qwen2Config(
        **{**shape, "vocab_size": max(shape["vocab_size"], len(tok))},
        max_position_embeddings=max(args.seq_len, 512),
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(model_dir)
    # A word is 1-3 tokens: seq_len words per side overfill max_length whatever the split.
    rows = pl.DataFrame(
        {
            "prompt": [text(args.seq_len) for _ in range(n)],
            "completion": [text(args.seq_len) for _ in range(n)],
            "label": [bool(i % 2) for i in range(n)],
        }
    )
    rows = rows.with_columns(
        mismatched_completions(rows["prompt"], rows["completion"]),
        pl.lit(1.0).alias("weight"),
        pl.int_range(n).alias("row_idx"),
    )
    model = load_model(model_dir, dtype="bfloat16" if args.device == "cuda" else "float32")
    model = model.to(args.device)
    rows = score_reference(
        model, load_tokenizer(model_dir), rows, get_method("kto").reference,
        max_length=args.seq_len, batch_tokens=args.batch * args.seq_len,
    )  # fmt: skip
    del model
    return model_dir, rows


def run_setup(name: str, model_dir: Path, rows, work: Path, args: argparse.Namespace) -> dict:
    import torch

    from valign_ray.config import load_config
    from valign_ray.train.context import LocalContext
    from valign_ray.train.worker import TrainJob, run_training

    gpu = args.device == "cuda"
    overrides = [
        f"model.path={model_dir}", "train.num_workers=1", f"train.use_gpu={str(gpu).lower()}",
        f"train.precision={'bf16' if gpu else 'fp32'}", f"train.batch_size={args.batch}",
        f"train.max_steps={args.steps}", "train.epochs=1", f"train.lr={args.lr}",
        "train.warmup_ratio=0.0", f"data.max_length={args.seq_len}", "wandb.enabled=false",
        "loss.name=kto", f"name=gpu-{name}", *SETUPS[name],
    ]  # fmt: skip
    cfg = load_config(ROOT / "configs/quickstart.yaml", overrides)
    metrics = work / f"{name}.jsonl"
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    ctx = LocalContext()
    t0 = time.perf_counter()
    run_training(TrainJob(cfg, str(model_dir), metrics_path=str(metrics)), ctx, rows)
    wall = time.perf_counter() - t0
    for report in ctx.reports:  # LocalContext leaves checkpoint folders where they were written
        if report["checkpoint"] is not None:
            shutil.rmtree(report["checkpoint"], ignore_errors=True)
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    steady = lines[2:] or lines
    tok_s = float(np.median([m["tokens_per_s"] for m in steady]))
    n_params = sum(p.numel() for p in _model_params(model_dir))
    c = 4 if name == "lora" else 6
    # tokens_per_s counts the policy's completion sequences; KL sequences are as long.
    flops_per_token = c * n_params + 2 * n_params
    mfu = tok_s * flops_per_token / (args.peak_tflops * 1e12) if args.peak_tflops else None
    return {
        "setup": name,
        "tokens_per_s": tok_s,
        "mfu": mfu,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
        "padding": float(np.mean([m["padding_fraction"] for m in lines])),
        "wall_s": wall,
        "losses": [m["loss"] for m in lines[:20]],
    }


def _model_params(model_dir: Path):
    from transformers import AutoConfig, AutoModelForCausalLM

    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return model.parameters()  # tied embedding counted once


def _init_process_group(device: str) -> None:
    import torch.distributed as dist

    if dist.is_initialized():  # a caller's process group (the tests')
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="1")
    os.environ.update(RANK="0", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")  # DeepSpeed reads these
    dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=0, world_size=1)


def compare(results: list[dict], tolerance: float = 1e-2) -> list[str]:
    """Setups whose losses leave ZeRO-0's by more than ``tolerance`` relative: ZeRO-2/3 and
    the compiled ZeRO-0 (LoRA trains other parameters, so it is not compared)."""
    base = next(r for r in results if r["setup"] == "zero0")["losses"]
    bad = []
    for r in results:
        if r["setup"] in ("zero2", "zero3", "zero0_compile"):
            if len(r["losses"]) != len(base):
                bad.append(r["setup"])
                continue
            pairs = zip(base, r["losses"], strict=True)
            worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in pairs)
            r["max_rel_diff_vs_zero0"] = worst
            if worst > tolerance:
                bad.append(r["setup"])
    return bad


def table(results: list[dict]) -> str:
    def fmt(x, spec):
        return "n/a" if x is None else format(x, spec)

    out = ["| setup | tokens/s | MFU | peak GiB | padding | max rel. diff vs ZeRO-0 |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        out.append(
            f"| {r['setup']} | {r['tokens_per_s']:.0f} | {fmt(r['mfu'], '.1%')} | "
            f"{fmt(r['peak_gib'], '.1f')} | {r['padding']:.1%} | "
            f"{fmt(r.get('max_rel_diff_vs_zero0'), '.2e')} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--tiny", action="store_true", help="a tiny Qwen2 (smoke check)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-4, help="large enough for losses to move")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="0: no MFU")
    p.add_argument("--setups", default=",".join(SETUPS), help="comma-separated")
    p.add_argument("--out", type=Path, default=None, help="results.json here")
    p.add_argument("--work", type=Path, default=Path("/tmp/valign-gpu-check"))
    args = p.parse_args(argv)
    if args.device == "cpu":
        args.peak_tflops = 0.0  # no meaningful peak for a shared CPU
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    _init_process_group(args.device)
    t0 = time.perf_counter()
    model_dir, rows = build_inputs(args.work, args)
    print(f"inputs: {rows.height} rows of {args.seq_len} tokens in {time.perf_counter() - t0:.0f}s")
    results = []
    for name in args.setups.split(","):
        r = run_setup(name, model_dir, rows, args.work, args)
        results.append(r)
        print(f"{name}: {r['tokens_per_s']:.0f} tokens/s in {r['wall_s']:.0f}s; first losses "
              + " ".join(f"{x:.4f}" for x in r["losses"]), flush=True)  # fmt: skip
    bad = compare(results) if any(r["setup"] == "zero0" for r in results) else []
    print(table(results))
    print("ZeRO-2/3 and compiled ZeRO-0 follow ZeRO-0 within 1e-2:",
          "no: " + ", ".join(bad) if bad else "yes")  # fmt: skip
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
