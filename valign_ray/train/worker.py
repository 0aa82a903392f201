"""The training loop every worker runs: DeepSpeed engine, deterministic batches, exact resume.

Runs under Ray Train (through :mod:`valign_ray.distributed.trainer`) or in one process with a
:class:`~valign_ray.train.context.LocalContext`. DeepSpeed is imported here, inside the worker,
so the driver never needs it. What is specific to a method (sequences, reference columns, the
loss) comes from its :class:`~valign_ray.methods.base.Method`; checkpoints live in
:mod:`~valign_ray.train.checkpoints`, the export in :mod:`~valign_ray.train.export` and W&B in
:mod:`~valign_ray.train.tracking`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from valign_ray.config import PipelineConfig
from valign_ray.methods import get_method
from valign_ray.methods.base import Method, StepInputs
from valign_ray.output import is_verbose
from valign_ray.train.batches import BatchPlan
from valign_ray.train.checkpoints import (
    load_checkpoint,
    pick_intact_checkpoint,
    save_checkpoint,
)
from valign_ray.train.context import TrainContext
from valign_ray.train.export import HF_EXPORT
from valign_ray.train.logprobs import encode_pairs
from valign_ray.train.progress import EtaClock, progress_every, progress_line
from valign_ray.train.step import micro_step
from valign_ray.train.tracking import start_wandb

__all__ = ["HF_EXPORT", "TrainJob", "run_training"]


@dataclass(frozen=True)
class TrainJob:
    """What a worker needs besides its data: the config and where things live."""

    config: PipelineConfig
    model_path: str
    wandb_dir: str | None = None
    wandb_group: str | None = None  # W&B group (an experiment's runs share one)
    metrics_path: str | None = None  # rank 0 appends one JSON line of metrics per step
    # Fault drill: rank ``fail_rank`` fails at step ``fail_at_step`` of a run that did not
    # resume (raises, or with ``fail_kill`` its process dies of SIGKILL), so tests (and
    # operators) can watch Ray Train replace it and restart from the last checkpoint.
    fail_at_step: int | None = None
    fail_rank: int = 0
    fail_kill: bool = False
    dataset_card: dict[str, Any] | None = None  # named in the exported model's card
    manifest: dict[str, Any] | None = None  # the run's manifest, logged to W&B
    weighting: dict[str, Any] | None = None  # the weights stage's summary, logged to W&B
    # Groups under report.min_group_n training respondents: no per-group metrics for them.
    hidden_groups: tuple[str, ...] = ()


@dataclass
class _Loop:
    """Everything the step loop reads, set up once per worker (and again after a restart)."""

    method: Method
    params: Any
    rows: pl.DataFrame
    enc: dict[str, list[Any]]
    plan: BatchPlan
    engine: Any
    scheduler: Any
    tokenizer: Any
    start_step: int
    resumed: bool
    weighted: bool  # false: every row weighs 1 in the loss (the unweighted ablation)
    pack_width: int = 0  # train.packing: micro-batches packed into rows of <= max_length
    grad_norm: float | None = None  # this step's, where DeepSpeed keeps none (fp32 ZeRO-0)


def _rows_as_tensors(
    rows: pl.DataFrame, idx: np.ndarray, method: Method, weighted: bool, groups: list[str]
) -> dict[str, Any]:
    import torch

    part = rows[idx.tolist()]
    out: dict[str, Any] = {}
    if "group" in part.columns and groups:
        codes = {g: i for i, g in enumerate(groups)}
        # -1: a group left out (too small to report), counted in no group's metric
        out["group_id"] = torch.tensor([codes.get(g, -1) for g in part["group"].to_list()])
        out["group_names"] = groups
    n = part.height
    out["weight"] = (
        torch.tensor(part["weight"].to_numpy(), dtype=torch.float32)
        if weighted
        else torch.ones(n, dtype=torch.float32)
    )
    dtypes = {"bool": torch.bool, "float": torch.float32}
    for col, kind in method.tensor_columns().items():
        out[col] = torch.tensor(part[col].to_numpy(), dtype=dtypes[kind])
    return out


def _load_model_for_training(job: TrainJob, ds_config: dict[str, Any]) -> Any:
    from valign_ray.models import load_model

    cfg = job.config
    if cfg.train.zero_stage == 3:
        # Partition parameters at load time, so no worker holds a whole large model.
        from transformers.integrations import HfDeepSpeedConfig

        _keep_alive = HfDeepSpeedConfig(ds_config)  # noqa: F841 (must outlive from_pretrained)
    model = load_model(
        job.model_path, dtype="bfloat16" if cfg.train.precision == "bf16" else "float32"
    )
    if cfg.train.activation_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad (a frozen LoRA base).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.train.compile:
        compile_blocks(model)
    if cfg.model.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lora = cfg.model.lora
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
    return model


def compile_blocks(model: Any) -> int:
    """``torch.compile`` every decoder block in place (``train.compile``), dynamic in the
    sequence length; returns how many. Blocks share one code object, so the graph compiles once
    and serves them all (regional compilation: far shorter than compiling the whole model)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"train.compile: {type(model).__name__} has no model.layers to compile")
    for block in layers:
        block.compile(dynamic=True)
    return len(layers)


def _init_distributed(backend: str) -> None:
    """``deepspeed.init_distributed``, less the line DeepSpeed prints unconditionally for its
    shared-memory op ("... built successfully") unless verbose; any other output still shows."""
    import contextlib
    import io

    import deepspeed

    if is_verbose():
        deepspeed.init_distributed(dist_backend=backend)
        return
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        deepspeed.init_distributed(dist_backend=backend)
    for line in captured.getvalue().splitlines():
        if not line.endswith("built successfully"):
            print(line, flush=True)


def _setup(job: TrainJob, ctx: TrainContext, rows: pl.DataFrame) -> _Loop:
    """Tokenise the rows once, plan the batches, build the engine, resume if asked to."""
    import deepspeed
    import torch

    from valign_ray.models import load_tokenizer
    from valign_ray.train.deepspeed_setup import build_optimizer, deepspeed_config

    cfg, tcfg = job.config, job.config.train
    # Adopt the process group Ray Train (or the caller) set up, before any DeepSpeed config
    # asks for the world size.
    _init_distributed("gloo" if not tcfg.use_gpu else "nccl")
    torch.manual_seed(tcfg.seed + ctx.rank)
    method = get_method(cfg.loss.name)
    rows = rows.sort("row_idx")
    missing = [c for c in method.reference_columns if c not in rows.columns]
    if missing:
        raise ValueError(f"training rows lack reference columns {missing}; score them first")
    tokenizer = load_tokenizer(job.model_path)
    prompts = rows["prompt"].to_list()
    enc = {
        key: encode_pairs(tokenizer, prompts, rows[col].to_list(), max_length=cfg.data.max_length)
        for key, col in method.sequences.items()
    }
    plan = BatchPlan(
        n_rows=rows.height,
        micro_batch=tcfg.batch_size,
        world_size=ctx.world_size,
        grad_accum=tcfg.grad_accum,
        epochs=tcfg.epochs,
        seed=tcfg.seed,
        max_steps=tcfg.max_steps,
        bucket_steps=tcfg.bucket_steps,
        # A row's length: its longest sequence (what its micro-batch pads to).
        lengths=np.array([max(e.length for e in seqs) for seqs in zip(*enc.values(), strict=True)]),
    )
    plan.validate()
    ds_config = deepspeed_config(tcfg, ctx.world_size)
    model = _load_model_for_training(job, ds_config)
    optimizer, scheduler = build_optimizer(model, tcfg, plan.total_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
    )
    engine.train()  # from_pretrained leaves the model in eval mode (dropout off)
    resume = pick_intact_checkpoint(ctx.checkpoints(), ctx.rank)
    start = load_checkpoint(engine, resume, ctx.rank) if resume is not None else 0
    params = method.params(cfg, rows)
    return _Loop(
        method,
        params,
        rows,
        enc,
        plan,
        engine,
        scheduler,
        tokenizer,
        start,
        resumed=resume is not None,
        weighted=tcfg.weighted,
        pack_width=cfg.data.max_length if tcfg.packing else 0,
    )


def run_training(job: TrainJob, ctx: TrainContext, rows: pl.DataFrame) -> dict[str, float]:
    """Train on ``rows`` (every worker gets all rows, in ``row_idx`` order) and export the model.

    Returns the last step's metrics. Checkpoints (DeepSpeed shards, per-rank RNG, step) go
    through ``ctx.report``; the final report carries the Hugging Face export in ``hf_model/``.
    """
    # Decided here, before DeepSpeed picks its accelerator: the CPU default of the Ray workers'
    # environment must not keep a GPU run on the CPU.
    os.environ["DS_ACCELERATOR"] = "cuda" if job.config.train.use_gpu else "cpu"
    loop = _setup(job, ctx, rows)
    tcfg, plan, rows = job.config.train, loop.plan, loop.rows
    extra = {"resolved_loss": asdict(loop.params), "steps": plan.total_steps}
    logged = {**extra, "manifest": job.manifest or {}, "weighting_result": job.weighting or {}}
    wandb_run = start_wandb(job, ctx, logged)
    if job.metrics_path and ctx.rank == 0 and not loop.resumed:
        Path(job.metrics_path).write_text("")  # a fresh run: no lines of an earlier one
    if ctx.rank == 0:
        print(
            f"[train] {loop.method.name}: {rows.height} rows, {plan.total_steps} steps of "
            f"{plan.global_batch} (from step {loop.start_step}); "
            f"{plan.rows_skipped_per_epoch} rows per epoch fall outside full batches",
            flush=True,
        )
    weights_all = rows["weight"].to_numpy() if tcfg.weighted else np.ones(rows.height)
    # Few groups (demographic or opinion groups) are reported per group; many would flood logs.
    groups = (
        sorted(rows["group"].drop_nulls().unique().to_list()) if "group" in rows.columns else []
    )
    groups = [g for g in groups if g not in job.hidden_groups] if len(groups) <= 16 else []
    lengths = plan.lengths
    last: dict[str, float] = {}
    verbose = is_verbose()
    show_every = progress_every(plan.total_steps, tcfg.report_every, verbose)
    eta = EtaClock(plan.total_steps)
    eta.start()
    for step in range(loop.start_step, plan.total_steps):
        if job.fail_at_step == step and not loop.resumed and ctx.rank == job.fail_rank:
            _fail(ctx.rank, step, job.fail_kill)
        t0 = time.perf_counter()
        weight_total = float(weights_all[plan.global_rows(step)].sum())
        sums = _accumulate(loop, ctx, step, lengths, weight_total, groups)
        last = _step_metrics(loop, ctx, sums, step, time.perf_counter() - t0)
        if wandb_run is not None:
            wandb_run.log(last, step=step + 1)
        if job.metrics_path and ctx.rank == 0:
            with open(job.metrics_path, "a") as f:
                f.write(json.dumps(last) + "\n")
        final = step + 1 == plan.total_steps
        eta_s = eta.step_done(step + 1)
        if ctx.rank == 0 and ((step + 1) % show_every == 0 or final):
            print(progress_line(last, plan.total_steps, eta_s, verbose), flush=True)
        every = tcfg.checkpoint_every
        if final or (every and (step + 1) % every == 0):
            save_checkpoint(
                loop.engine, ctx, step + 1, last, export=final, tokenizer=loop.tokenizer, job=job
            )
        elif tcfg.report_every and (step + 1) % tcfg.report_every == 0:
            ctx.report(last)
    if wandb_run is not None:
        wandb_run.finish()
    return last


def _fail(rank: int, step: int, kill: bool) -> None:
    if kill:  # the process dies as under the OOM killer: no exception, no cleanup
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"fault drill: rank {rank} fails at step {step}")


def _accumulate(
    loop: _Loop,
    ctx: TrainContext,
    step: int,
    lengths: np.ndarray,
    weight_total: float,
    groups: list[str],
) -> dict[str, Any]:
    """Run this worker's micro-batches of ``step``; returns metric (sum, count) pairs."""
    import torch

    engine, sums = loop.engine, {}
    for idx in loop.plan.worker_rows(step, ctx.rank, lengths):
        tensors = _rows_as_tensors(loop.rows, idx, loop.method, loop.weighted, groups)
        inputs = StepInputs(
            model=engine,
            rows={k: v.to(engine.device) if hasattr(v, "to") else v for k, v in tensors.items()},
            enc={k: [v[i] for i in idx] for k, v in loop.enc.items()},
            ctx=ctx,
            weight_total=weight_total,
            pad_id=loop.tokenizer.pad_token_id,
            pack_width=loop.pack_width,
        )
        loss, metrics = micro_step(loop.method, loop.params, inputs)
        # DeepSpeed averages gradients over workers and accumulation steps; the loss is
        # already this worker's share of the global weighted mean, so undo that averaging.
        engine.backward(loss * ctx.world_size * loop.plan.grad_accum)
        if engine.is_gradient_accumulation_boundary() and engine.get_global_grad_norm() is None:
            loop.grad_norm = _grad_norm(engine)  # before step() clips and zeroes them
        engine.step()
        metrics["loss"] = loss.detach()
        for k, v in metrics.items():
            v = v.detach().float()
            ok = ~torch.isnan(v)
            total, seen = sums.get(k, (0.0, 0.0))
            sums[k] = (total + torch.where(ok, v, 0.0), seen + ok.float())
    return sums


def _grad_norm(engine: Any) -> float:
    """The L2 norm of the (all-reduced, unclipped) gradients: what DeepSpeed reports under ZeRO
    and bf16, and leaves unset for a plain fp32 ZeRO-0 engine."""
    import torch

    grads = [p.grad.detach().float() for p in engine.module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else 0.0


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _step_metrics(
    loop: _Loop, ctx: TrainContext, sums: dict[str, Any], step: int, elapsed: float
) -> dict[str, float]:
    last = _reduce_metrics(ctx, sums)
    last.update(
        step=step + 1,
        lr=float(loop.scheduler.get_last_lr()[0]),
        grad_norm=float(_first(loop.engine.get_global_grad_norm(), loop.grad_norm, 0.0)),
        tokens_per_s=last["tokens"] / elapsed,
        padding_fraction=1.0 - last["tokens"] / max(last["padded_tokens"], 1.0),
    )
    return last


def _reduce_metrics(ctx: TrainContext, sums: dict[str, Any]) -> dict[str, float]:
    """Global metrics: loss, counts and token totals are sums over workers and micro-steps; the
    rest are means over the micro-batches where they exist (a class-mean is NaN in a
    micro-batch without that class, and such micro-batches are left out of the mean)."""
    import torch

    keys = sorted(sums)
    device = next(v for v in sums.values() if isinstance(v[0], torch.Tensor))[0].device
    values = torch.stack([torch.as_tensor(sums[k][0], device=device).float() for k in keys])
    present = torch.stack([torch.as_tensor(sums[k][1], device=device).float() for k in keys])
    total = ctx.all_reduce_sum(torch.cat([values, present]))
    n = len(keys)
    out = {}
    for i, k in enumerate(keys):
        additive = k in ("loss", "tokens", "padded_tokens") or k.startswith("count/")
        v, m = float(total[i]), float(total[n + i])
        out[k] = v if additive else (v / m if m else float("nan"))
    return out
