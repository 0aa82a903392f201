"""The training loop every worker runs: DeepSpeed engine, deterministic batches, exact resume.

Runs under Ray Train (through :mod:`valign_ray.distributed.trainer`) or in one process with a
:class:`~valign_ray.train.context.LocalContext`. DeepSpeed is imported here, inside the worker,
so the driver never needs it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from valign_ray.config import PipelineConfig
from valign_ray.train.batches import BatchPlan
from valign_ray.train.context import TrainContext
from valign_ray.train.logprobs import encode_pair
from valign_ray.train.reference import REFERENCE_COLUMNS
from valign_ray.train.step import LossParams, micro_step

HF_EXPORT = "hf_model"
SEQUENCES = {
    "kto": {"completion": "completion", "kl": "kl_completion"},
    "dpo": {"chosen": "chosen", "rejected": "rejected"},
    "sft": {"completion": "completion"},
}


@dataclass(frozen=True)
class TrainJob:
    """What a worker needs besides its data: the config and where things live."""

    config: PipelineConfig
    model_path: str
    wandb_dir: str | None = None
    metrics_path: str | None = None  # rank 0 appends one JSON line of metrics per step
    # Fault drill: rank ``fail_rank`` raises at step ``fail_at_step`` of a run that did not
    # resume, so tests (and operators) can watch Ray Train restart it from a checkpoint.
    fail_at_step: int | None = None
    fail_rank: int = 0
    dataset_card: dict[str, Any] | None = None  # named in the exported model's card


def resolve_loss_params(cfg: PipelineConfig, rows: pl.DataFrame) -> LossParams:
    """Loss numbers from the config; ``lambda: auto`` uses the weighted label counts."""
    from valign_ray.train.losses import kto_auto_lambdas

    loss = cfg.loss
    lambda_d, lambda_u = loss.lambda_d, loss.lambda_u
    if "auto" in (lambda_d, lambda_u):
        if loss.name != "kto":
            raise ValueError("loss.lambda_d / lambda_u = auto applies to loss.name=kto only")
        w = rows["weight"] if cfg.train.weighted else pl.Series([1.0] * rows.height)
        lab = rows["label"]
        w_d, w_u = float(w.filter(lab).sum()), float(w.filter(~lab).sum())
        if lambda_d == "auto" and lambda_u == "auto":
            lambda_d, lambda_u = kto_auto_lambdas(w_d, w_u)
        elif lambda_d == "auto":  # keep the given side; balance lambda_d W_d = lambda_u W_u
            lambda_d = float(lambda_u) * w_u / w_d
        else:
            lambda_u = float(lambda_d) * w_d / w_u
    return LossParams(
        name=loss.name,
        beta=loss.beta,
        lambda_d=float(lambda_d),
        lambda_u=float(lambda_u),
        dpo_type=loss.dpo_type,
        label_smoothing=loss.label_smoothing,
        soft_labels=loss.soft_labels,
    )


def _rng_state() -> dict[str, Any]:
    import torch

    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "py": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["py"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _rows_as_tensors(
    rows: pl.DataFrame, idx: np.ndarray, weighted: bool, groups: list[str], device: Any
) -> dict[str, Any]:
    import torch

    part = rows[idx.tolist()]
    out: dict[str, Any] = {}
    if "group" in part.columns and groups:
        codes = {g: i for i, g in enumerate(groups)}
        out["group_id"] = torch.tensor([codes[g] for g in part["group"].to_list()])
        out["group_names"] = groups
    n = part.height
    out["weight"] = (
        torch.tensor(part["weight"].to_numpy(), dtype=torch.float32)
        if weighted
        else torch.ones(n, dtype=torch.float32)
    )
    for col in ("label",):
        if col in part.columns:
            out[col] = torch.tensor(part[col].to_numpy(), dtype=torch.bool)
    for col in ("share", "ref_logp", "ref_kl_logp", "ref_chosen_logp", "ref_rejected_logp"):
        if col in part.columns:
            out[col] = torch.tensor(part[col].to_numpy(), dtype=torch.float32)
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in out.items()}


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


def run_training(job: TrainJob, ctx: TrainContext, rows: pl.DataFrame) -> dict[str, float]:
    """Train on ``rows`` (every worker gets all rows, in ``row_idx`` order) and export the model.

    Returns the last step's metrics. Checkpoints (DeepSpeed shards, per-rank RNG, step) go
    through ``ctx.report``; the final report carries the Hugging Face export in ``hf_model/``.
    """
    # Decided here, before DeepSpeed picks its accelerator: the CPU default of the Ray workers'
    # environment must not keep a GPU run on the CPU.
    os.environ["DS_ACCELERATOR"] = "cuda" if job.config.train.use_gpu else "cpu"
    import deepspeed
    import torch

    from valign_ray.models import load_tokenizer
    from valign_ray.train.deepspeed_setup import build_optimizer, deepspeed_config

    cfg, tcfg = job.config, job.config.train
    # Adopt the process group Ray Train (or the caller) set up, before any DeepSpeed config
    # asks for the world size.
    deepspeed.init_distributed(dist_backend="gloo" if not tcfg.use_gpu else "nccl")
    torch.manual_seed(tcfg.seed + ctx.rank)
    rows = rows.sort("row_idx")
    missing = [c for _, _, c in REFERENCE_COLUMNS[cfg.loss.name] if c not in rows.columns]
    if missing:
        raise ValueError(f"training rows lack reference columns {missing}; score them first")
    tokenizer = load_tokenizer(job.model_path)
    enc = {
        key: [
            encode_pair(tokenizer, p, c, max_length=cfg.data.max_length)
            for p, c in zip(rows["prompt"].to_list(), rows[col].to_list(), strict=True)
        ]
        for key, col in SEQUENCES[cfg.loss.name].items()
    }
    plan = BatchPlan(
        n_rows=rows.height,
        micro_batch=tcfg.batch_size,
        world_size=ctx.world_size,
        grad_accum=tcfg.grad_accum,
        epochs=tcfg.epochs,
        seed=tcfg.seed,
        max_steps=tcfg.max_steps,
    )
    plan.validate()
    params = resolve_loss_params(cfg, rows)
    ds_config = deepspeed_config(tcfg, ctx.world_size)
    model = _load_model_for_training(job, ds_config)
    optimizer, scheduler = build_optimizer(model, tcfg, plan.total_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
    )
    engine.train()  # from_pretrained leaves the model in eval mode (dropout off)
    start_step = 0
    resume = ctx.latest_checkpoint()
    if resume is not None:
        engine.load_checkpoint(str(resume), tag="ds")
        start_step = json.loads((resume / "state.json").read_text())["step"]
        _set_rng_state(torch.load(resume / f"rng_rank{ctx.rank}.pt", weights_only=False))
    wandb_run = _start_wandb(job, ctx, params, plan)
    if job.metrics_path and ctx.rank == 0 and resume is None:
        Path(job.metrics_path).write_text("")  # a fresh run: no lines of an earlier one
    if ctx.rank == 0:
        print(
            f"[train] {cfg.loss.name}: {rows.height} rows, {plan.total_steps} steps of "
            f"{plan.global_batch} (from step {start_step}); "
            f"{plan.rows_skipped_per_epoch} rows per epoch fall outside full batches",
            flush=True,
        )
    weights_all = rows["weight"].to_numpy() if tcfg.weighted else np.ones(rows.height)
    # Few groups (demographic or opinion groups) are reported per group; many would flood logs.
    groups = (
        sorted(rows["group"].drop_nulls().unique().to_list()) if "group" in rows.columns else []
    )
    groups = groups if len(groups) <= 16 else []
    lengths = np.array([max(e.length for e in seqs) for seqs in zip(*enc.values(), strict=True)])
    last: dict[str, float] = {}
    for step in range(start_step, plan.total_steps):
        t0 = time.perf_counter()
        weight_total = float(weights_all[plan.global_rows(step)].sum())
        sums: dict[str, Any] = {}
        if job.fail_at_step == step and resume is None and ctx.rank == job.fail_rank:
            raise RuntimeError(f"fault drill: rank {ctx.rank} fails at step {step}")
        for idx in plan.worker_rows(step, ctx.rank, lengths):
            batch_enc = {k: [v[i] for i in idx] for k, v in enc.items()}
            loss, metrics = micro_step(
                engine,
                _rows_as_tensors(rows, idx, tcfg.weighted, groups, engine.device),
                batch_enc,
                params,
                ctx,
                weight_total=weight_total,
                pad_id=tokenizer.pad_token_id,
            )
            # DeepSpeed averages gradients over workers and accumulation steps; the loss is
            # already this worker's share of the global weighted mean, so undo that averaging.
            engine.backward(loss * ctx.world_size * tcfg.grad_accum)
            engine.step()
            metrics["loss"] = loss.detach()
            for k, v in metrics.items():
                v = v.detach().float()
                ok = ~torch.isnan(v)
                total, seen = sums.get(k, (0.0, 0.0))
                sums[k] = (total + torch.where(ok, v, 0.0), seen + ok.float())
        last = _reduce_metrics(ctx, sums, tcfg.grad_accum)
        elapsed = time.perf_counter() - t0
        last.update(
            step=step + 1,
            lr=float(scheduler.get_last_lr()[0]),
            grad_norm=float(engine.get_global_grad_norm() or 0.0),
            tokens_per_s=last["tokens"] / elapsed,
            padding_fraction=1.0 - last["tokens"] / max(last["padded_tokens"], 1.0),
        )
        if wandb_run is not None:
            wandb_run.log(last, step=step + 1)
        if job.metrics_path and ctx.rank == 0:
            with open(job.metrics_path, "a") as f:
                f.write(json.dumps(last) + "\n")
        final = step + 1 == plan.total_steps
        if ctx.rank == 0 and ((step + 1) % 10 == 0 or final):
            print(_progress_line(last, plan.total_steps), flush=True)
        every = tcfg.checkpoint_every
        if final or (every and (step + 1) % every == 0):
            _save_checkpoint(
                engine, ctx, step + 1, last, export=final, tokenizer=tokenizer, job=job
            )
        elif tcfg.report_every and (step + 1) % tcfg.report_every == 0:
            ctx.report(last)
    if wandb_run is not None:
        wandb_run.finish()
    return last


def _reduce_metrics(ctx: TrainContext, sums: dict[str, Any], grad_accum: int) -> dict[str, float]:
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


def _progress_line(m: dict[str, float], total: int) -> str:
    shown = [f"step {int(m['step'])}/{total}", f"loss {m['loss']:.4f}"]
    for k in ("z0", "rewards/margin", "rewards/accuracy", "grad_norm", "tokens_per_s"):
        if k in m:
            shown.append(f"{k} {m[k]:.4g}")
    return "[train] " + "  ".join(shown)


def _start_wandb(job: TrainJob, ctx: TrainContext, params: LossParams, plan: BatchPlan) -> Any:
    """W&B on rank 0 only (Train V2 ignores rank_zero_only); offline unless configured."""
    wcfg = job.config.wandb
    if ctx.rank != 0 or not wcfg.enabled or wcfg.mode == "disabled":
        return None
    import wandb

    from valign_ray.config import public_config_dict

    if job.wandb_dir:
        Path(job.wandb_dir).mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=wcfg.project,
        entity=wcfg.entity,
        mode=wcfg.mode,
        dir=job.wandb_dir,
        name=job.config.name,
        config={
            **public_config_dict(job.config),
            "resolved_loss": vars(params),
            "steps": plan.total_steps,
        },
    )


def _save_checkpoint(
    engine: Any,
    ctx: TrainContext,
    step: int,
    metrics: dict[str, float],
    *,
    export: bool,
    tokenizer: Any,
    job: TrainJob,
) -> None:
    """Every rank writes its DeepSpeed shards and RNG state; rank 0 adds the step (and, at the
    end, the Hugging Face export). Ray merges the ranks' folders into one checkpoint."""
    import torch

    folder = Path(tempfile.mkdtemp(prefix="valign-ckpt-"))
    engine.save_checkpoint(str(folder), tag="ds")
    torch.save(_rng_state(), folder / f"rng_rank{ctx.rank}.pt")
    state_dict = None
    if export and job.config.train.zero_stage == 3:
        state_dict = engine._zero3_consolidated_16bit_state_dict()  # every rank must call it
    if ctx.rank == 0:
        (folder / "state.json").write_text(json.dumps({"step": step}))
        if export:
            export_model(engine.module, job, folder / HF_EXPORT, tokenizer, metrics, state_dict)
    ctx.report(metrics, checkpoint_dir=folder)


def export_model(
    module: Any,
    job: TrainJob,
    out: Path,
    tokenizer: Any,
    metrics: dict[str, float],
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """A Hugging Face folder that ``AutoModelForCausalLM.from_pretrained`` loads, with a card.

    A LoRA model is saved as its adapter and, when ``model.lora.merge`` is set, merged into a
    fresh copy of the base weights (on CPU, whatever the ZeRO stage), so the folder is a plain
    model again.
    """
    lora = job.config.model.lora
    if lora.enabled:
        adapter = out.parent / "adapter"
        module.save_pretrained(str(adapter), state_dict=state_dict)
        if lora.merge:
            from peft import PeftModel

            from valign_ray.models import load_model

            merged = PeftModel.from_pretrained(load_model(job.model_path), str(adapter))
            merged.merge_and_unload().save_pretrained(str(out))
        else:
            shutil.copytree(adapter, out)
    else:
        module.save_pretrained(str(out), state_dict=state_dict)
    tokenizer.save_pretrained(str(out))
    (out / "README.md").write_text(_model_card(job, metrics))
    return out


def _model_card(job: TrainJob, metrics: dict[str, float]) -> str:
    from valign_ray.config import public_config_dict

    cfg = job.config
    lines = [
        f"# {cfg.name}: {cfg.loss.name.upper()} on survey-weighted data (valign-ray)",
        "",
        f"- base model: `{job.model_path}`",
        f"- loss: {cfg.loss.name}, beta {cfg.loss.beta}; LoRA: {cfg.model.lora.enabled}",
        f"- training: {cfg.train.epochs} epochs, lr {cfg.train.lr}, ZeRO-{cfg.train.zero_stage}, "
        f"{cfg.train.num_workers} workers, survey weights {'on' if cfg.train.weighted else 'off'}",
        "",
        "## Dataset card",
        "```json",
        json.dumps(job.dataset_card or {}, indent=2),
        "```",
        "## Final training metrics",
        "```json",
        json.dumps({k: round(v, 6) for k, v in metrics.items()}, indent=2),
        "```",
        "## Config",
        "```json",
        json.dumps(public_config_dict(cfg), indent=2),
        "```",
    ]
    return "\n".join(lines) + "\n"
