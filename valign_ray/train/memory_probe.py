"""Count the bytes of a DeepSpeed engine's own tensors on this rank, to check the memory plan.

Every live tensor is found through the garbage collector and counted once per storage (a flat
ZeRO buffer and the parameter views into it are one storage). Snapshots taken before the engine
exists, after ``deepspeed.initialize``, after a backward and after an optimizer step attribute
the new storages to parameters (the module's own, or ZeRO-3's partitions), DeepSpeed's fp32
master copy, gradients, and the Adam moments; storages of exactly ``reduce_bucket_size``
elements are DeepSpeed's reduction buckets. :mod:`valign_ray.memory_plan` predicts the same
terms from the model's shape.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

from valign_ray.memory_activations import REDUCE_BUCKET


def live_storages() -> dict[int, tuple[int, int, Any]]:
    """``{storage pointer: (bytes, elements of the largest tensor on it, a tensor on it)}`` of
    live tensors. Holding a tensor per storage keeps its memory from being reused, so a later
    snapshot's new pointers are new storages."""
    import torch

    out: dict[int, tuple[int, int, Any]] = {}
    for obj in gc.get_objects():
        try:
            if not torch.is_tensor(obj) or obj.device.type == "meta":
                continue
            storage = obj.untyped_storage()
        except Exception:  # noqa: BLE001 (some tracked objects refuse inspection)
            continue
        ptr, nbytes = storage.data_ptr(), storage.nbytes()
        if ptr and nbytes:
            seen = out.get(ptr, (0, 0, obj))
            out[ptr] = (nbytes, max(seen[1], obj.numel()), seen[2])
    return out


@dataclass(frozen=True)
class EngineBytes:
    """Bytes of one rank's engine tensors, by what they hold."""

    params: int  # the module's parameters (ZeRO-3: this rank's partitions)
    master: int  # DeepSpeed's fp32 copy of this rank's partition (ZeRO >= 1)
    grads: int  # gradients kept after backward (ZeRO-2/3: this rank's partition)
    moments: int  # Adam's exp_avg and exp_avg_sq
    buckets: int  # reduction buckets of reduce_bucket_size elements
    other: int  # anything else DeepSpeed allocated at initialisation (ZeRO-3 working buffers)

    @property
    def optimizer(self) -> int:
        return self.master + self.moments


def _param_storages(engine: Any) -> dict[int, int]:
    out = {}
    for p in engine.module.parameters():
        t = getattr(p, "ds_tensor", p)  # ZeRO-3 keeps this rank's partition in ds_tensor
        out[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return out


def _optimizer_param_storages(engine: Any) -> set[int]:
    """Storages of the parameters torch's AdamW steps: DeepSpeed's fp32 partitions (ZeRO-1/2:
    ``single_partition_of_fp32_groups``, ZeRO-3: ``fp32_partitioned_groups_flat``) or the
    module's own parameters (ZeRO-0)."""
    zero = engine.optimizer
    for name in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):
        if hasattr(zero, name):
            return {t.untyped_storage().data_ptr() for t in getattr(zero, name) if t.numel()}
    return {p.untyped_storage().data_ptr() for g in zero.param_groups for p in g["params"]}


def _moment_bytes(engine: Any) -> int:
    """Bytes of torch AdamW's state (``exp_avg``, ``exp_avg_sq``; not the scalar step)."""
    opt = getattr(engine.optimizer, "optimizer", engine.optimizer)
    return sum(
        t.untyped_storage().nbytes()
        for state in opt.state.values()
        for t in state.values()
        if hasattr(t, "untyped_storage") and t.numel() > 1
    )


def measure_engine(
    engine: Any, run_step: Any, baseline: dict[int, tuple[int, int, Any]]
) -> EngineBytes:
    """Attribute the engine's tensors; ``run_step(engine)`` runs forward and backward once,
    ``baseline`` is :func:`live_storages` before the model was built."""
    gc.collect()
    after_init = live_storages()
    param_st = _param_storages(engine)
    params = sum(param_st.values())
    # ZeRO-3 allocates its flat gradient partition (and its buckets) at initialisation.
    flat_grads = getattr(engine.optimizer, "grad_partitions_flat_buffer", None)
    grad_ptr = flat_grads.untyped_storage().data_ptr() if flat_grads is not None else None
    new_at_init = {p: v for p, v in after_init.items() if p not in baseline and p not in param_st}
    buckets = sum(n for n, k, _ in new_at_init.values() if k == REDUCE_BUCKET)
    grads = new_at_init[grad_ptr][0] if grad_ptr in new_at_init else 0
    master_ptrs = _optimizer_param_storages(engine)
    master = sum(n for p, (n, _, _) in new_at_init.items() if p in master_ptrs)
    other = sum(
        n
        for p, (n, k, _) in new_at_init.items()
        if k != REDUCE_BUCKET and p != grad_ptr and p not in master_ptrs
    )
    run_step(engine)
    gc.collect()
    after_backward = live_storages()
    new_at_backward = {p: v for p, v in after_backward.items() if p not in after_init}
    bucket_bytes = sum(n for n, k, _ in new_at_backward.values() if k == REDUCE_BUCKET)
    buckets += bucket_bytes
    grads += sum(v[0] for v in new_at_backward.values()) - bucket_bytes
    engine.step()
    moments = _moment_bytes(engine)
    return EngineBytes(params, master, grads, moments, buckets, other)


def probe_engine(
    hf_config: dict[str, Any], train: Any, world_size: int, *, lora_rank: int = 0
) -> EngineBytes:
    """Build a random-init causal LM from ``hf_config`` (a ``config.json`` dict), wrap it in a
    DeepSpeed engine the way the training worker does (``train``: a
    :class:`~valign_ray.config.TrainConfig`) in the current process group, run one step on
    random tokens and measure it. ZeRO-3 partitions at construction, as ``from_pretrained``
    does under ``HfDeepSpeedConfig``."""
    import deepspeed
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from valign_ray.train.deepspeed_setup import build_optimizer, deepspeed_config

    deepspeed.init_distributed(dist_backend="gloo")  # adopt the caller's process group
    ds_config = deepspeed_config(train, world_size)
    gc.collect()
    baseline = live_storages()
    torch.manual_seed(0)
    config = AutoConfig.for_model(**hf_config)
    if train.zero_stage == 3:
        # zero.Init patches tensor construction: torch._dynamo must be imported before it,
        # or its own import inside (transformers' generation utils) fails.
        import torch._dynamo  # noqa: F401

        with deepspeed.zero.Init(config_dict_or_path=ds_config):
            model = AutoModelForCausalLM.from_config(config)
    else:
        model = AutoModelForCausalLM.from_config(config)
    if lora_rank:
        from peft import LoraConfig, get_peft_model

        from valign_ray.memory_plan import LORA_TARGETS

        model = get_peft_model(
            model, LoraConfig(r=lora_rank, target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM")
        )
    optimizer, scheduler = build_optimizer(model, train, total_steps=10)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
    )

    def run_step(eng: Any) -> None:
        ids = torch.randint(0, hf_config["vocab_size"], (train.batch_size, 16))
        loss = eng(input_ids=ids, labels=ids).loss
        eng.backward(loss)

    return measure_engine(engine, run_step, baseline)
