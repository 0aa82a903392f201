"""KTO training-step throughput and MFU of a 0.5 B Qwen2 on one GPU (torch + transformers + peft).

    python gpu_kto_step.py [--batch 8] [--seq-len 1024] [--steps 20] [--lora] [--peak-tflops 989]
    python gpu_kto_step.py --device cpu --tiny          # smoke check on a machine without a GPU

Stand-alone (no ray, deepspeed or valign_ray import), so it runs on a bare GPU image. A Qwen2 of
Qwen2.5-0.5B's shape (tied embeddings) is built from a config, random weights, bf16. A step does
what ``valign_ray.train.step.micro_step`` does for KTO: policy forward + backward on (prompt,
completion) sequences, a no-grad forward on the mismatched KL sequences, the KTO loss against the
reference log-probs the reference cache would supply (random here), AdamW. Sequences are full
length (half prompt, half completion): no padding.

MFU = (c * N * T + 2 * N * T_kl) / step_time / peak, with N the parameters (tied embedding
counted once: it is the LM-head matmul), T the policy tokens, c = 6 (forward 2 + backward 4) or
c = 4 with ``--lora`` (the frozen weights get no weight gradients). Attention's T^2 FLOPs are
left out, as in the usual 6N convention. Peak: ``--peak-tflops`` (H100 SXM dense bf16 = 989).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from transformers import Qwen2Config, Qwen2ForCausalLM

# (hidden, layers, heads, KV heads, intermediate, vocab): Qwen2.5-0.5B's shape, and a tiny one.
KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "intermediate_size", "vocab_size")  # fmt: skip
SHAPE_05B = dict(zip(KEYS, (896, 24, 14, 2, 4864, 151936), strict=True))
SHAPE_TINY = dict(zip(KEYS, (64, 2, 4, 2, 128, 1000), strict=True))


def completion_logps(model, ids: torch.Tensor, start: int, head_on_completion: bool):
    """Summed log p of the completion tokens ``ids[:, start:]``. As valign_ray/train/logprobs.py
    (LM head and fp32 log-softmax at every position) unless ``head_on_completion``, which runs
    the LM head only where a completion token is predicted (as TRL's fused head does on GPU)."""
    if head_on_completion:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        hidden = base.model(input_ids=ids).last_hidden_state[:, start - 1 : -1]
        logits, target = base.lm_head(hidden), ids[:, start:]
    else:
        logits, target = model(input_ids=ids).logits[:, :-1], ids[:, 1:]
    logp = torch.log_softmax(logits.float(), -1)
    per_token = torch.gather(logp, 2, target.unsqueeze(-1)).squeeze(-1)
    return per_token[:, -(ids.shape[1] - start) :].sum(-1)


def kto_loss(pol, ref, desirable, kl_pol, kl_ref, beta=0.1, lambda_d=1.0, lambda_u=1.0):
    """KTO (Ethayarajh et al. 2024, eq. 7-8), unit weights; from valign_ray/train/losses.py
    (kto_kl_terms, kto_reference_point, kto_loss): z0 = max(0, mean(kl_pol - kl_ref)), detached;
    loss_i = lambda_d (1 - sigmoid(beta (r_i - z0))) if desirable else
    lambda_u (1 - sigmoid(beta (z0 - r_i))), with r = pol - ref; loss = mean_i loss_i."""
    z0 = (kl_pol - kl_ref).detach().mean().clamp(min=0.0)
    r = pol - ref
    loss_d = lambda_d * (1 - F.sigmoid(beta * (r - z0)))
    loss_u = lambda_u * (1 - F.sigmoid(beta * (z0 - r)))
    return torch.where(desirable, loss_d, loss_u).mean()


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    ap.add_argument("--lora", action="store_true", help="LoRA r=16 on q,k,v,o instead of full FT")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny model: smoke check on CPU")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa, eager, ...)")
    ap.add_argument("--head-on-completion", action="store_true", help="LM head on completions only")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.steps <= args.warmup:
        raise SystemExit(f"--steps {args.steps} must exceed --warmup {args.warmup}")
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32  # CPU bf16 is slow
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; dtype {dtype}")
    torch.manual_seed(0)
    cfg = Qwen2Config(
        **(SHAPE_TINY if args.tiny else SHAPE_05B),
        tie_word_embeddings=True,
        max_position_embeddings=max(args.seq_len, 32768),
        attn_implementation=args.attn,
    )
    with dev:  # initialise on the device: 0.5 B fp32 weights on CPU first would be slow
        model = Qwen2ForCausalLM(cfg).to(dtype)
    n_params = sum(p.numel() for p in model.parameters())
    if args.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        )
        model = get_peft_model(model, lora)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5, fused=dev.type == "cuda")
    n_train = sum(p.numel() for p in trainable) / 1e6
    head = "completions" if args.head_on_completion else "all"
    print(f"model: Qwen2 {n_params / 1e6:.1f} M params, {n_train:.1f} M trainable; batch "
          f"{args.batch} x {args.seq_len} tokens; attn {args.attn}; LM head: {head}")  # fmt: skip

    b, t, v = args.batch, args.seq_len, cfg.vocab_size  # half prompt, half completion

    def batch() -> tuple[torch.Tensor, ...]:
        ids = torch.randint(0, v, (b, t), device=dev)
        kl_ids = torch.cat([ids[:, : t // 2], ids.roll(1, 0)[:, t // 2 :]], 1)  # mismatched
        # What the reference cache would hold: about the random-init model's own log p (-log V per
        # token), so the implied rewards are O(1) and the sigmoids do not saturate.
        ref = -(t - t // 2) * math.log(v) + torch.randn(b, device=dev)
        return ids, kl_ids, ref, ref + torch.randn(b, device=dev), torch.rand(b, device=dev) < 0.5

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = []
    for step in range(args.steps):
        ids, kl_ids, ref, kl_ref, desirable = batch()
        sync()
        t0 = time.perf_counter()
        pol = completion_logps(model, ids, t // 2, args.head_on_completion)
        with torch.no_grad():
            kl_pol = completion_logps(model, kl_ids, t // 2, args.head_on_completion)
        loss = kto_loss(pol, ref, desirable, kl_pol, kl_ref)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - t0)
        if step < args.warmup or step == args.steps - 1:
            print(f"step {step}: {times[-1]:.3f} s, loss {loss.item():.4f}")
    step_s = sum(times[args.warmup :]) / len(times[args.warmup :])
    c = 4 if args.lora else 6
    flops = (c * n_params * b * t + 2 * n_params * b * t) / step_s
    mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    print(
        f"{name}: {step_s * 1000:.1f} ms/step, {b * t / step_s:,.0f} policy tok/s "
        f"({b / step_s:.1f} samples/s), {flops / 1e12:.1f} model TFLOP/s, "
        f"MFU {flops / (args.peak_tflops * 1e12):.1%} of {args.peak_tflops:g} TFLOP/s "
        f"(({c}N + 2N) x tokens); peak memory {mem:.1f} GiB"
    )


if __name__ == "__main__":
    main()
