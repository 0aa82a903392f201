"""Does ``train.compile`` pay here? One forward + backward + AdamW step of a random Qwen2,
eager against every decoder block compiled (``valign_ray.train.worker.compile_blocks``, the
code ``train.compile`` runs), at sequence lengths that vary from step to step as training
batches do. Prints the one-time compile cost, the steady step time of each, and the ratio.

    python experiments/benchmarks/bench_compile.py [--hidden 512] [--layers 6] [--steps 16]
        [--batch 8] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def run(model_dir: Path, compiled: bool, args: argparse.Namespace) -> tuple[float, float]:
    """(first step, median of the steps after the first four) in seconds."""
    import torch

    from valign_ray.models import load_model
    from valign_ray.train.worker import compile_blocks

    model = load_model(model_dir).to(args.device)
    model.train()
    if compiled:
        compile_blocks(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    times = []
    for step in range(args.steps):
        length = 96 + (step * 37) % 97  # 96-192 tokens, as padded training batches vary
        ids = torch.randint(0, model.config.vocab_size, (args.batch, length), generator=gen)
        ids = ids.to(args.device)
        t0 = time.perf_counter()
        hidden = model.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        hidden.float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[0], statistics.median(times[4:])


def main() -> None:
    import torch

    from valign_ray.config import TinyConfig
    from valign_ray.models import build_tiny_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = TinyConfig(
        arch="qwen2", vocab_size=8192, hidden_size=args.hidden, intermediate_size=args.hidden * 3,
        num_layers=args.layers, num_heads=8, num_kv_heads=2,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-compile-") as tmp:
        texts = [f"Question {i}: should the council fund item {i}? Answer: yes" for i in range(200)]
        model_dir = build_tiny_model(Path(tmp) / "model", texts, spec)
        eager = run(model_dir, False, args)
        compiled = run(model_dir, True, args)
    print(f"Qwen2 hidden {args.hidden} x {args.layers} layers, batch {args.batch} x 96-192 "
          f"tokens, {args.threads} threads, {args.device}")  # fmt: skip
    print(f"eager:    first step {eager[0]:.2f} s, steady {eager[1]:.3f} s/step")
    print(f"compiled: first step {compiled[0]:.2f} s (compiling), steady {compiled[1]:.3f} s/step")
    gain = eager[1] / compiled[1]
    saved = eager[1] - compiled[1]
    even = f"after {(compiled[0] - eager[0]) / saved:.0f} steps" if saved > 0 else "never"
    print(f"compiled vs eager: {gain:.2f}x per step; the compile pays for itself {even}")


if __name__ == "__main__":
    main()
