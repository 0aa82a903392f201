"""How much memory a training run needs per GPU and on the host, before renting the GPUs.

Pure arithmetic on a model's shape (its Hugging Face ``config.json``) and the training settings;
no torch. The terms, per GPU, with ``P`` all parameters, ``T`` the trainable ones (``P``, or the
LoRA adapters), ``N`` the data-parallel GPUs (ZeRO paper, Rajbhandari et al. 2020, section 3:
mixed-precision Adam holds ``2P + 2P + 12P`` bytes, ``K = 12`` for the fp32 master copy and the
two fp32 moments):

==========  =====================  ==========================  ======================
stage       parameters             gradients                   optimizer (K = 12)
==========  =====================  ==========================  ======================
0           ``b P``                ``b T``                     ``K T`` (fp32: ``8 T``)
1           ``b P``                ``b T``                     ``K T / N``
2           ``b P``                ``b T / N``                 ``K T / N``
3           ``b P / N``            ``b T / N``                 ``K T / N``
==========  =====================  ==========================  ======================

``b`` is 2 bytes in bf16 and 4 in fp32 (DeepSpeed still keeps its own fp32 partition copy for
ZeRO >= 1, so ``K`` stays 12 in fp32; at stage 0 in fp32 torch's AdamW holds only the two
moments). A frozen LoRA base has no gradients or optimizer state. CPU offload of the optimizer
(ZeRO-Offload) moves the optimizer state and the gradient partitions to host RAM; offloading
parameters (ZeRO-3 only, ZeRO-Infinity) moves the parameter partitions too.

The reference model costs nothing on the GPU: this project caches its log-probabilities
(:mod:`valign_ray.train.reference`) before training, and with LoRA the reference is the base
with the adapter disabled. Activations, logits and DeepSpeed's buffers are in
:mod:`valign_ray.memory_activations`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from valign_ray.memory_activations import activation_bytes, logits_bytes, zero_buffer_bytes

GIB = 1024**3
ADAM_K = 12  # bytes per trainable parameter: fp32 master + two fp32 moments (ZeRO paper)
# Share of a GPU's memory a plan may use: the CUDA context (about 0.5 GiB), NCCL buffers and the
# caching allocator's fragmentation take the rest.
USABLE_FRACTION = 0.9
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
Offload = Literal["none", "optimizer", "all"]


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer (Llama / Qwen2 family) that fix its size."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool  # bias on q, k, v (Qwen2 has one; Llama does not)
    head_dim: int | None = None  # null: hidden_size / num_heads

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], name: str = "model") -> ModelShape:
        """From a parsed ``config.json`` of a Llama- or Qwen2-style causal LM."""
        heads = config["num_attention_heads"]
        return cls(
            name=name,
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            vocab_size=config["vocab_size"],
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
            head_dim=config.get("head_dim"),
        )

    @classmethod
    def from_path(cls, path: str | Path) -> ModelShape:
        """From a model folder (its ``config.json``) or a ``config.json`` file."""
        p = Path(path)
        file = p / "config.json" if p.is_dir() else p
        name = p.name if p.is_dir() else p.parent.name or p.stem
        return cls.from_hf_config(json.loads(file.read_text()), name=name)

    @property
    def q_dim(self) -> int:
        return self.num_heads * (self.head_dim or self.hidden_size // self.num_heads)

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * (self.head_dim or self.hidden_size // self.num_heads)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one block, by its Hugging Face name."""
        h, i = self.hidden_size, self.intermediate_size
        return {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def layer_params(self) -> int:
        """One block: the seven linears, the q/k/v biases if any, two RMSNorm weights."""
        weights = sum(a * b for a, b in self.linear_shapes().values())
        bias = (self.q_dim + 2 * self.kv_dim) if self.attention_bias else 0
        return weights + bias + 2 * self.hidden_size

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def total_params(self) -> int:
        """Embedding, blocks, final norm and the LM head (shared with the embedding if tied)."""
        head = 0 if self.tie_word_embeddings else self.embedding_params()
        return (
            self.embedding_params()
            + self.num_layers * self.layer_params()
            + self.hidden_size
            + head
        )

    def lora_params(self, rank: int, targets: tuple[str, ...] = LORA_TARGETS) -> int:
        """LoRA adapter parameters: ``r x (in + out)`` per adapted linear, in every block."""
        shapes = self.linear_shapes()
        unknown = sorted(set(targets) - set(shapes))
        if unknown:
            raise ValueError(f"unknown LoRA targets {unknown}; valid: {sorted(shapes)}")
        return self.num_layers * sum(rank * sum(shapes[t]) for t in targets)


# Qwen2.5 base/instruct shapes, from their config.json files on the Hugging Face hub.
_QWEN = dict(num_kv_heads=4, vocab_size=152064, tie_word_embeddings=False, attention_bias=True)
SHAPES = {
    "qwen2.5-7b": ModelShape("qwen2.5-7b", 3584, 18944, 28, 28, **_QWEN),
    "qwen2.5-14b": ModelShape("qwen2.5-14b", 5120, 13824, 48, 40, **{**_QWEN, "num_kv_heads": 8}),
    "qwen2.5-32b": ModelShape("qwen2.5-32b", 5120, 27648, 64, 40, **{**_QWEN, "num_kv_heads": 8}),
}


@dataclass(frozen=True)
class Setup:
    """Training settings that decide memory (the matching config keys in brackets)."""

    gpus: int = 4  # data-parallel GPUs (train.num_workers)
    gpu_mem_gib: float = 48.0  # memory of one GPU (an A40: 48)
    zero_stage: int = 3  # train.zero_stage
    lora_rank: int = 0  # 0: full fine-tuning (model.lora.enabled, model.lora.r)
    lora_targets: tuple[str, ...] = LORA_TARGETS  # model.lora.target_modules
    offload: Offload = "none"  # train.offload
    precision: Literal["bf16", "fp32"] = "bf16"  # train.precision
    batch_size: int = 8  # rows per GPU per micro-step (train.batch_size)
    seq_len: int = 512  # tokens per sequence, the worst case (data.max_length)
    activation_checkpointing: bool = False  # train.activation_checkpointing
    grad_sequences: int = 1  # sequences per row through the policy with gradients (DPO: 2)
    gpus_per_node: int = 4  # ranks sharing one host's RAM

    def label(self) -> str:
        kind = f"LoRA r{self.lora_rank}" if self.lora_rank else "full"
        ckpt = "ckpt" if self.activation_checkpointing else "no-ckpt"
        return f"{kind} ZeRO-{self.zero_stage} offload={self.offload} b{self.batch_size} {ckpt}"


@dataclass(frozen=True)
class Estimate:
    """Bytes per GPU by component, host bytes per node, and whether the GPU share fits."""

    setup: Setup
    params: int
    grads: int
    optimizer: int
    activations: int
    logits: int
    buffers: int
    reference: int  # 0: cached log-probs (LoRA: the adapter disabled), no second model
    host: int  # host RAM per node for offloaded state (loading the model not included)

    @property
    def gpu_total(self) -> int:
        return (
            self.params
            + self.grads
            + self.optimizer
            + self.activations
            + self.logits
            + self.buffers
            + self.reference
        )

    @property
    def gpu_budget(self) -> float:
        return self.setup.gpu_mem_gib * GIB * USABLE_FRACTION

    @property
    def fits(self) -> bool:
        return self.gpu_total <= self.gpu_budget


def state_bytes(shape: ModelShape, s: Setup) -> tuple[int, int, int, int]:
    """(parameters, gradients, optimizer) bytes per GPU and the offloaded host bytes per node.

    The table in the module docstring; offloading sends gradients and optimizer state (and with
    ``offload="all"`` the ZeRO-3 parameter partitions) to the host, 4-byte fp32 gradients there.
    """
    if s.offload == "all" and s.zero_stage != 3:
        raise ValueError("offloading parameters needs ZeRO-3")
    if s.offload != "none" and s.zero_stage == 0:
        raise ValueError("CPU offload needs ZeRO stage 1, 2 or 3")
    p_all = shape.total_params()
    p_train = shape.lora_params(s.lora_rank, s.lora_targets) if s.lora_rank else p_all
    p_all += p_train if s.lora_rank else 0
    b, n = (2 if s.precision == "bf16" else 4), s.gpus
    params = b * p_all // (n if s.zero_stage == 3 else 1)
    grads = b * p_train // (n if s.zero_stage >= 2 else 1)
    k = ADAM_K if (s.zero_stage or s.precision == "bf16") else 8
    optimizer = k * p_train // (n if s.zero_stage >= 1 else 1)
    host_ranks = min(s.gpus, s.gpus_per_node)
    host = 0
    if s.offload != "none":
        host += host_ranks * (optimizer + 4 * p_train // n)
        grads, optimizer = 0, 0
    if s.offload == "all":
        host += host_ranks * params
        params = 0
    return params, grads, optimizer, host


def estimate(shape: ModelShape, s: Setup) -> Estimate:
    """Every term for one model and setup."""
    params, grads, optimizer, host = state_bytes(shape, s)
    tokens = s.batch_size * s.seq_len * s.grad_sequences
    return Estimate(
        setup=s,
        params=params,
        grads=grads,
        optimizer=optimizer,
        activations=activation_bytes(shape, tokens, s.precision, s.activation_checkpointing),
        logits=logits_bytes(shape, tokens, s.precision),
        buffers=zero_buffer_bytes(shape, s.zero_stage, s.precision),
        reference=0,
        host=host,
    )


def largest_batch(shape: ModelShape, s: Setup, limit: int = 64) -> int:
    """The largest micro-batch (rows per GPU, up to ``limit``) that fits; 0 if none does."""
    best = 0
    for b in range(1, limit + 1):
        if not estimate(shape, replace(s, batch_size=b)).fits:
            break
        best = b
    return best
