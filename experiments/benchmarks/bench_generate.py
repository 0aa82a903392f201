"""Batched CAI generation vs one prompt at a time, on CPU.

    python experiments/benchmarks/bench_generate.py [--prompts 64] [--new-tokens 64]
        [--batch-size 16] [--threads 2] [--quick]

Builds the 21 M-parameter Qwen2 of ``bench_train_vs_trl.py`` (``--quick``: a 0.6 M one) with a
tokenizer trained on the synthetic survey's text, the CAI templates and (as there) HH-RLHF text
when the file exists; renders ``--prompts`` critique requests (survey prompt, response and a
constitution statement through ``configs/cai_templates.yaml``) and samples ``--new-tokens``
tokens per prompt with :func:`valign_ray.cai.generate.generate`: once ``--batch-size`` at a time
(left padding, KV cache), once one prompt at a time, in the same process and with the same
torch threads. Both runs should generate the same records (counted: float rounding across
batch shapes can move a sampled token of a random-init model; see
``valign_ray/cai/generate.py``). Prints generated tokens/s of each and the speed-up; the load
average is printed because on a shared machine only ratios within one run compare.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# ``../shared/data`` beside the repository, or VALIGN_SHARED_DATA (as in the tests).
SHARED_DATA = Path(os.environ.get("VALIGN_SHARED_DATA", ROOT.parent / "shared" / "data"))
HH = SHARED_DATA / "hh-rlhf" / "harmless-base_test.jsonl.gz"


def _prompts(n: int) -> tuple[list[str], list[str]]:
    """``n`` rendered critique requests, and every text the tokenizer should be trained on."""
    from valign_ray.cai.templates import load_templates
    from valign_ray.config import SyntheticConfig
    from valign_ray.survey.margins import load_margins
    from valign_ray.survey.synthetic import generate_synthetic

    survey = generate_synthetic(
        SyntheticConfig(n_sample=200), load_margins(ROOT / "data/margins/nz_2023.csv")
    )
    templates = load_templates(ROOT / "configs/cai_templates.yaml")
    items = survey.items.filter(survey.items["kind"] == "prompt")["text"].to_list()
    responses = survey.candidates["text"].to_list()
    statements = survey.items.filter(survey.items["kind"] == "statement")["text"].to_list()
    prompts = [
        templates.render(
            "critique_request",
            principle=statements[i % len(statements)],
            prompt=items[i % len(items)],
            response=responses[(7 * i) % len(responses)],
        )
        for i in range(n)
    ]
    texts = items + responses + statements + templates.literal_texts()
    if HH.is_file():  # bench_train_vs_trl's tokenizer text: its 8192-token vocabulary, 21 M
        from valign_ray.survey.hh_rlhf import import_hh_pairs

        pairs, _ = import_hh_pairs(HH, max_rows=320)
        texts += pairs["prompt"].to_list() + pairs["chosen"].to_list() + pairs["rejected"].to_list()
    return prompts, texts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="a 0.6 M-parameter model instead of 21 M")
    args = p.parse_args()

    import torch

    from valign_ray.cai.generate import generate, record_seed
    from valign_ray.config import CaiSamplingConfig, TinyConfig
    from valign_ray.models import build_tiny_model, count_parameters, load_model, load_tokenizer

    torch.set_num_threads(args.threads)
    prompts, texts = _prompts(args.prompts)
    # fmt: off
    spec = (
        TinyConfig(arch="qwen2", vocab_size=2048, hidden_size=128, intermediate_size=352,
                   num_layers=2, num_heads=4, num_kv_heads=2)
        if args.quick
        else TinyConfig(arch="qwen2", vocab_size=8192, hidden_size=512, intermediate_size=1408,
                        num_layers=6, num_heads=8, num_kv_heads=2)
    )
    # fmt: on
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "model", texts, spec)
        model, tok = load_model(model_dir).eval(), load_tokenizer(model_dir)
    seeds = [record_seed(0, f"bench{i}") for i in range(len(prompts))]
    sampling = CaiSamplingConfig(max_new_tokens=args.new_tokens)
    n_prompt = [len(tok(x, add_special_tokens=False)["input_ids"]) for x in prompts]
    print(
        f"model {count_parameters(model) / 1e6:.1f} M parameters; {len(prompts)} prompts of "
        f"{min(n_prompt)}-{max(n_prompt)} tokens; {args.new_tokens} new tokens; "
        f"T={sampling.temperature} top_p={sampling.top_p}; {args.threads} threads; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rates, records = {}, {}
    for name, batch in (("batched", args.batch_size), ("one at a time", 1)):
        start = time.perf_counter()
        records[name] = generate(model, tok, prompts, seeds, sampling, batch_size=batch)
        wall = time.perf_counter() - start
        n_tokens = sum(len(g.token_ids) for g in records[name])
        rates[name] = n_tokens / wall
        print(
            f"{name} (batch {batch}): {n_tokens} tokens in {wall:.1f} s = {rates[name]:.0f} tok/s"
        )
    same = sum(a == b for a, b in zip(records["batched"], records["one at a time"], strict=True))
    # float rounding across batch shapes can move a sampled token (valign_ray/cai/generate.py)
    print(f"records identical across batch sizes: {same} of {len(prompts)}")
    print(f"batched vs one at a time: {rates['batched'] / rates['one at a time']:.1f}x")


if __name__ == "__main__":
    main()
