"""CPU time of one forward + backward through ``completion_logps`` (LM head on completion
positions, chunked) vs ``full_completion_logps`` (logits at every position), same model, batch.

    python experiments/benchmarks/bench_completion_logps.py [--vocab 2049] [--hidden 64]
        [--batch 8] [--prompt 96] [--completion 32] [--repeat 7] [--threads 2]

The two paths alternate within one process and the median of ``--repeat`` runs of each is
printed with the result's largest difference: CPU time (``time.process_time``), which other
jobs on a shared machine disturb less than wall time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from valign_ray.train.logprobs import completion_logps, full_completion_logps


def _run(fn, model, batch) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    start = time.process_time()
    logps, _ = fn(model, batch)
    logps.sum().backward()
    return time.process_time() - start, logps.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, default=2049)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=96)
    ap.add_argument("--completion", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=4 * args.hidden,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(config)
    width = args.prompt + args.completion
    comp = torch.zeros(args.batch, width, dtype=torch.bool)
    comp[:, args.prompt :] = True
    batch = {
        "input_ids": torch.randint(0, args.vocab, (args.batch, width)),
        "attention_mask": torch.ones(args.batch, width, dtype=torch.long),
        "completion_mask": comp,
    }
    times: dict[str, list[float]] = {"completion-only": [], "full": []}
    results = {}
    for _ in range(args.repeat):
        for name, fn in (("completion-only", completion_logps), ("full", full_completion_logps)):
            t, results[name] = _run(fn, model, batch)
            times[name].append(t)
    diff = (results["completion-only"] - results["full"]).abs().max().item()
    med = {k: statistics.median(v) for k, v in times.items()}
    shape = f"batch {args.batch} x ({args.prompt} prompt + {args.completion} completion)"
    print(f"vocab {args.vocab}, hidden {args.hidden}, {shape}, median of {args.repeat}")
    print(
        f"CPU s per forward+backward: completion-only {med['completion-only']:.3f}, full "
        f"{med['full']:.3f} -> {med['full'] / med['completion-only']:.2f}x; max |diff| {diff:.1e}"
    )


if __name__ == "__main__":
    main()
