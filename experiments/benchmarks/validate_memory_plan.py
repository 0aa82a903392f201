"""Check ``valign plan-memory`` against the bytes of DeepSpeed's own tensors, per rank, on CPU.

    python experiments/benchmarks/validate_memory_plan.py [--world-size 2] [--stages 0,2,3]
        [--precision fp32] [--lora-rank 8]

Each rank (gloo, one process per rank) builds a small Qwen2 (3.3 M parameters), wraps it in a
DeepSpeed engine as the training worker does, runs one step and counts its tensors
(``valign_ray.train.memory_probe``); rank 0 prints measured vs planned bytes per term.
"""

from __future__ import annotations

import argparse
import os
import socket

import torch.multiprocessing as mp

SMALL = dict(
    model_type="qwen2",
    vocab_size=1000,
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
    tie_word_embeddings=False,
)


def _rank(rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    os.environ.update(LOCAL_RANK=str(rank), DS_ACCELERATOR="cpu")
    import torch.distributed as dist

    from valign_ray.config import TrainConfig
    from valign_ray.memory_plan import ModelShape, Setup, state_bytes
    from valign_ray.train.memory_probe import probe_engine

    dist.init_process_group("gloo", f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    shape = ModelShape.from_hf_config(SMALL, "small-qwen2")
    for lora in sorted({0, args.lora_rank}):
        for stage in [int(s) for s in args.stages.split(",")]:
            tcfg = TrainConfig(zero_stage=stage, batch_size=2, precision=args.precision)
            got = probe_engine(SMALL, tcfg, world, lora_rank=lora)
            setup = Setup(gpus=world, zero_stage=stage, precision=args.precision, lora_rank=lora)
            params, grads, optimizer, _ = state_bytes(shape, setup)
            if rank == 0:
                kind = f"LoRA r{lora}" if lora else "full"
                for name, m, p in (
                    ("params", got.params, params),
                    ("grads", got.grads, grads),
                    ("optimizer", got.optimizer, optimizer),
                ):
                    ratio = m / p if p else float("nan")
                    print(
                        f"{kind:9s} ZeRO-{stage} {args.precision} N={world} {name:9s} "
                        f"measured {m:>11,d}  planned {p:>11,d}  ratio {ratio:.3f}",
                        flush=True,
                    )
                print(f"{'':9s} (buckets {got.buckets:,d}, other {got.other:,d} bytes)", flush=True)
            dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world-size", type=int, default=2)
    ap.add_argument("--stages", default="0,2,3")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--lora-rank", type=int, default=8)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(args.world_size, port, args), nprocs=args.world_size)


if __name__ == "__main__":
    main()
