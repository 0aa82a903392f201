"""Training throughput of our KTO and DPO loop vs TRL's ``KTOTrainer`` / ``DPOTrainer`` on CPU.

    python experiments/benchmarks/bench_train_vs_trl.py [--steps 10] [--batch-size 8] [--quick]

One run prepares everything once (a 21 M-parameter Qwen2 from a config, a BPE tokenizer
trained on the texts, the rows), then trains each side in its own subprocess: ours is
``run_training`` with a ``LocalContext`` (gloo, world size 1, DeepSpeed), TRL as a user runs it
(a ``datasets.Dataset``, a separate reference model, ``use_cpu=True``, fp32). Same model, rows,
batch size, ``max_length``, steps and threads on both sides. Data: HH-RLHF harmless-base test
pairs when the file exists (varied lengths, so padding matters), else lengthened synthetic
survey texts; prompts that alone fill ``max_length`` are left out (TRL's KTO drops them).

Ours scores the reference once (``score_reference``: the cache every later run and Tune trial
reuses); that time is reported apart. TRL runs the reference model inside every step. A step
lasts from the end of the previous one to its own end (ours: where the loop reduces its metrics;
TRL: ``on_step_end``), so collate and logging count on both sides; the first ``--warmup`` steps
are left out and rates use the median step. Wall and the process's CPU time are both reported
(CPU time is less disturbed by other processes on a shared machine). Tokens: the non-padding
tokens of every sequence a step runs through the policy (KTO: completion + KL; DPO: chosen +
rejected). ``--profile DIR`` writes a cProfile (CPU time) per side: ``python -m pstats DIR/x.prof``.
TRL's own default ``gradient_checkpointing=True`` is off here: our loop does not checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from bench_trl_report import report as report_loss
from bench_trl_report import report_unbucketed

ROOT = Path(__file__).resolve().parents[2]
# ``../shared/data`` beside the repository, or VALIGN_SHARED_DATA (as in the tests).
SHARED_DATA = Path(os.environ.get("VALIGN_SHARED_DATA", ROOT.parent / "shared" / "data"))
HH = SHARED_DATA / "hh-rlhf" / "harmless-base_test.jsonl.gz"
LR = 1e-5


def _texts(n_pairs: int, seed: int) -> tuple[pl.DataFrame, str]:
    """``prompt, chosen, rejected`` pairs: HH-RLHF when present, else lengthened synthetic text."""
    if HH.is_file():
        from valign_ray.survey.hh_rlhf import import_hh_pairs

        pairs, _ = import_hh_pairs(HH, max_rows=4 * n_pairs)
        return pairs.select("prompt", "chosen", "rejected"), f"HH-RLHF {HH.name}"
    from valign_ray.config import SyntheticConfig
    from valign_ray.survey.margins import load_margins
    from valign_ray.survey.synthetic import generate_synthetic

    survey = generate_synthetic(
        SyntheticConfig(n_sample=200), load_margins(ROOT / "data/margins/nz_2023.csv")
    )
    prompts = survey.items["text"].to_list()
    comps = survey.candidates["text"].to_list()
    rng = np.random.default_rng(seed)
    # Repeat sentences a random number of times so lengths vary (and padding matters).
    rows = [
        (
            " ".join(prompts[i % len(prompts)] for i in rng.integers(0, 99, rng.integers(1, 6))),
            " ".join(comps[j % len(comps)] for j in rng.integers(0, 999, rng.integers(1, 8))),
            " ".join(comps[j % len(comps)] for j in rng.integers(0, 999, rng.integers(1, 8))),
        )
        for _ in range(4 * n_pairs)
    ]
    return pl.DataFrame(rows, schema=["prompt", "chosen", "rejected"], orient="row"), "synthetic"


def prepare(work: Path, args: argparse.Namespace) -> dict:
    """Build the model and the KTO / DPO rows (no reference columns yet) into ``work``."""
    from valign_ray.config import TinyConfig
    from valign_ray.data.builders import mismatched_completions
    from valign_ray.models import build_tiny_model, count_parameters, load_model

    n = args.steps * args.batch_size
    pairs, source = _texts(n, args.seed)
    texts = pairs["prompt"].to_list() + pairs["chosen"].to_list() + pairs["rejected"].to_list()
    # fmt: off
    spec = (
        TinyConfig(arch="qwen2", vocab_size=2048, hidden_size=128, intermediate_size=352,
                   num_layers=2, num_heads=4, num_kv_heads=2)
        if args.quick
        else TinyConfig(arch="qwen2", vocab_size=8192, hidden_size=512, intermediate_size=1408,
                        num_layers=6, num_heads=8, num_kv_heads=2,
                        max_position_embeddings=max(512, args.max_length))
    )
    # fmt: on
    model_dir = build_tiny_model(work / "model", texts, spec)
    from valign_ray.models import load_tokenizer

    tok = load_tokenizer(model_dir)
    # Prompts that alone fill max_length: TRL's KTO drops them, so neither side gets them.
    p_len = np.array([len(tok(p, add_special_tokens=False)["input_ids"]) for p in pairs["prompt"]])
    pairs = pairs.filter(pl.Series(p_len < args.max_length - 16))
    if pairs.height < n:
        raise ValueError(f"only {pairs.height} pairs fit max_length={args.max_length}; need {n}")
    dpo = pairs.head(n).with_columns(
        pl.lit(1.0).alias("weight"), pl.lit(1.0).alias("share"), pl.int_range(n).alias("row_idx")
    )
    # KTO: each pair gives a desirable and an undesirable row; shuffled, n of them.
    good = pairs.select("prompt", completion="chosen", label=pl.lit(True))
    bad = pairs.select("prompt", completion="rejected", label=pl.lit(False))
    kto = pl.concat([good, bad]).sample(fraction=1.0, shuffle=True, seed=args.seed).head(n)
    kto = kto.with_columns(
        mismatched_completions(kto["prompt"], kto["completion"]),
        pl.lit(1.0).alias("weight"),
        pl.int_range(n).alias("row_idx"),
    )
    kto.write_parquet(work / "kto.parquet")
    dpo.write_parquet(work / "dpo.parquet")
    lengths = [
        len(tok(p + c)["input_ids"]) for p, c in zip(kto["prompt"], kto["completion"], strict=True)
    ]
    return {
        "source": source,
        "params": count_parameters(load_model(model_dir)),
        "vocab": len(tok),
        "mean_len": float(np.mean(np.minimum(lengths, args.max_length))),
        "capped": float(np.mean(np.array(lengths) >= args.max_length)),
    }


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _steady(
    ends: list[tuple[float, float]], tokens: list[float], padded: list[float], warmup: int
) -> dict:
    """Steady-state totals: step k lasts from the end of step k-1 to its own end (wall and this
    process's CPU time); the first ``warmup`` steps are left out."""
    gaps = np.diff(np.array(ends), axis=0)  # [steps, (wall, cpu)]; ends[0] is step 0's start
    s, t, p = gaps[warmup:], np.array(tokens[warmup:]), np.array(padded[warmup:])
    # Medians: a step that another process slowed down on this shared machine does not count.
    return {
        "step_s": float(np.median(s[:, 0])),
        "mean_step_s": float(s[:, 0].mean()),
        "cpu_step_s": float(np.median(s[:, 1])),
        "tok_s": float(np.median(t / s[:, 0])),
        "padding": float(1.0 - t.sum() / p.sum()),
        "load": os.getloadavg()[0],
    }


def _reference_padding(tok: Any, rows: Any, method: Any, max_length: int) -> float:
    """Padding share of the reference scoring batches (score_reference's length-sorted token
    batches at the CPU budget)."""
    from valign_ray.train.logprobs import encode_pairs
    from valign_ray.train.reference import BATCH_TOKENS, token_batches

    real = padded = 0
    for comp, _ in method.reference:
        enc = encode_pairs(
            tok, rows["prompt"].to_list(), rows[comp].to_list(), max_length=max_length
        )
        lens = [e.length for e in enc]
        real += sum(lens)
        padded += sum(
            len(b) * max(lens[i] for i in b) for b in token_batches(lens, BATCH_TOKENS["cpu"])
        )
    return 1 - real / padded


def worker_ours(work: Path, args: argparse.Namespace) -> dict:
    import torch
    import torch.distributed as dist

    from valign_ray.config import load_config
    from valign_ray.methods import get_method
    from valign_ray.models import load_model, load_tokenizer
    from valign_ray.train import worker
    from valign_ray.train.context import LocalContext
    from valign_ray.train.reference import score_reference

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="1")
    os.environ.update(RANK="0", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")  # DeepSpeed reads these
    dist.init_process_group("gloo", rank=0, world_size=1)
    model_dir = str(work / "model")
    rows = pl.read_parquet(work / f"{args.loss}.parquet")
    ref, tok = load_model(model_dir), load_tokenizer(model_dir)  # TRL loads a reference too
    t0 = _clock()
    method = get_method(args.loss)
    rows = score_reference(ref, tok, rows, method.reference, max_length=args.max_length)
    ref_seconds, ref_cpu = (b - a for a, b in zip(t0, _clock(), strict=True))
    del ref
    ref_padding = _reference_padding(tok, rows, method, args.max_length)
    overrides = (
        f"train.num_workers=1 train.zero_stage={args.zero_stage} train.epochs=1 "
        f"train.batch_size={args.batch_size} train.max_steps={args.steps} train.lr={LR} "
        f"train.seed={args.seed} loss.name={args.loss} data.max_length={args.max_length} "
        f"wandb.enabled=false model.path={model_dir} train.bucket_steps={args.bucket_steps}"
        f" train.packing={str(args.packing).lower()}"
    )
    cfg = load_config(ROOT / "configs/quickstart.yaml", overrides.split())
    metrics = work / f"ours-{args.loss}-{_tag(args)}.jsonl"
    metrics.unlink(missing_ok=True)
    # Clock the end of every step, as TRL's on_step_end: the loop reduces its metrics once per
    # step, right after the optimizer step.
    ends: list[tuple[float, float]] = []
    reduce_metrics = worker._reduce_metrics

    def clocked_reduce(*a, **k):
        out = reduce_metrics(*a, **k)
        ends.append(_clock())
        return out

    worker._reduce_metrics = clocked_reduce
    ctx = LocalContext()
    start = _clock()
    worker.run_training(worker.TrainJob(cfg, model_dir, metrics_path=str(metrics)), ctx, rows)
    for report in ctx.reports:  # LocalContext leaves checkpoint folders where they were written
        if report["checkpoint"] is not None:
            shutil.rmtree(report["checkpoint"], ignore_errors=True)
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    # The first step's start is taken as the loop's start (setup included): a warm-up step.
    out = _steady(
        [start, *ends],
        [m["tokens"] for m in lines],
        [m["padded_tokens"] for m in lines],
        args.warmup,
    )
    dist.destroy_process_group()
    return {
        **out,
        "ref_seconds": ref_seconds,
        "ref_cpu_seconds": ref_cpu,
        "ref_padding": ref_padding,
        "rows": rows.height,
        "threads": torch.get_num_threads(),
    }


def worker_trl(work: Path, args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from valign_ray.models import load_model, load_tokenizer

    model_dir = str(work / "model")
    rows = pl.read_parquet(work / f"{args.loss}.parquet").sort("row_idx")
    # fmt: off
    common = dict(
        output_dir=str(work / f"trl-{args.loss}"), per_device_train_batch_size=args.batch_size,
        max_steps=args.steps, max_length=args.max_length, learning_rate=LR, seed=args.seed,
        beta=0.1, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
        save_strategy="no", disable_tqdm=True,
    )
    # fmt: on
    if args.loss == "kto":
        from trl import KTOConfig, KTOTrainer

        data = Dataset.from_dict({c: rows[c].to_list() for c in ("prompt", "completion", "label")})
        trainer_cls, targs = KTOTrainer, KTOConfig(**common)
    else:
        from trl import DPOConfig, DPOTrainer

        data = Dataset.from_dict({c: rows[c].to_list() for c in ("prompt", "chosen", "rejected")})
        trainer_cls, targs = DPOTrainer, DPOConfig(**common)
    model, ref, tok = load_model(model_dir), load_model(model_dir), load_tokenizer(model_dir)
    trainer = trainer_cls(model, ref, args=targs, train_dataset=data, processing_class=tok)
    counts: list[tuple[float, float]] = []
    collate = trainer.data_collator

    def counting_collator(examples):
        batch = collate(examples)
        masks = [v for k, v in batch.items() if k.endswith("attention_mask")]
        counts.append((sum(float(m.sum()) for m in masks), sum(float(m.numel()) for m in masks)))
        return batch

    trainer.data_collator = counting_collator
    ends: list[tuple[float, float]] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            ends.append(_clock())  # the first step's start; later steps start at the previous end

        def on_step_end(self, *a, **k):
            ends.append(_clock())

    trainer.add_callback(StepClock())
    trainer.train()
    out = _steady(ends, [c[0] for c in counts], [c[1] for c in counts], args.warmup)
    return {**out, "rows": len(trainer.train_dataset), "threads": torch.get_num_threads()}


def _tag(args: argparse.Namespace) -> str:
    """What tells one of our runs from another in the work folder's file names."""
    return f"b{args.bucket_steps}-p{int(args.packing)}"


def _run_worker(side: str, loss: str, work: Path, args: argparse.Namespace) -> dict:
    out = work / f"{side}-{loss}-{_tag(args)}.json"
    cmd = [sys.executable, __file__, "--worker", side, "--loss", loss, "--work", str(work)]
    flags = ("steps", "batch_size", "max_length", "threads", "zero_stage", "warmup", "seed")
    for flag in (*flags, "bucket_steps"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.quick:
        cmd.append("--quick")
    if args.packing:
        cmd.append("--packing")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        cmd += ["--profile", str(Path(args.profile).resolve())]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    env.update(TOKENIZERS_PARALLELISM="false", DS_ACCELERATOR="cpu")
    log = work / f"{side}-{loss}.log"
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(
            f"{side} {loss} failed (exit {proc.returncode}); log tail:\n"
            + "\n".join(log.read_text().splitlines()[-30:])
        )
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    ap.add_argument("--zero-stage", type=int, default=2, choices=[0, 1, 2], help="ours only")
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the timing")
    ap.add_argument("--losses", default="kto,dpo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bucket-steps", type=int, default=10, help="ours: train.bucket_steps")
    ap.add_argument("--packing", action="store_true", help="ours: train.packing")
    ap.add_argument("--quick", action="store_true", help="a 0.6 M-parameter model: smoke run")
    ap.add_argument("--profile", help="folder: write a cProfile (CPU time) of each side there")
    ap.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--loss", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps <= args.warmup:
        sys.exit(f"--steps {args.steps} must exceed --warmup {args.warmup}")
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        fn = worker_ours if args.worker == "ours" else worker_trl
        if args.profile:
            import cProfile

            # CPU time, not wall: the shares hold up when other processes load the machine.
            prof = cProfile.Profile(time.process_time)
            result = prof.runcall(fn, Path(args.work), args)
            prof.dump_stats(Path(args.profile) / f"{args.worker}-{args.loss}.prof")
        else:
            result = fn(Path(args.work), args)
        out = Path(args.work) / f"{args.worker}-{args.loss}-{_tag(args)}.json"
        out.write_text(json.dumps(result))
        return
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as tmp:
        work = Path(tmp)
        info = prepare(work, args)
        print(
            f"model: Qwen2 {info['params'] / 1e6:.1f} M params (vocab {info['vocab']}); data: "
            f"{info['source']}, {args.steps * args.batch_size} rows, mean length "
            f"{info['mean_len']:.0f} tokens ({info['capped']:.0%} capped at {args.max_length}); "
            f"batch {args.batch_size}, {args.steps} steps ({args.warmup} warm-up), "
            f"{args.threads} threads, ours ZeRO-{args.zero_stage}"
            + (", packing" if args.packing else ""),
            flush=True,
        )
        for loss in args.losses.split(","):
            ours = _run_worker("ours", loss, work, args)
            trl = _run_worker("trl", loss, work, args)
            report_loss(loss, ours, trl, args.batch_size)
            if args.bucket_steps:  # the gain from bucketing across steps, apart
                no_buckets = argparse.Namespace(**{**vars(args), "bucket_steps": 0})
                report_unbucketed(_run_worker("ours", loss, work, no_buckets), trl, args.batch_size)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
