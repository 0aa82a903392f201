"""Activation, logit and DeepSpeed buffer memory of one micro-step (estimates, no torch).

Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", section 4.1), redone for a Llama/Qwen2 block with fused (flash / SDPA)
attention, which stores no ``s x s`` score matrix. Per token and block, autograd keeps:

- attention: the RMSNorm input and output (``2h``), q, k, v (``h + 2 kv``), q and k after the
  rotary embedding (``h + kv``), the attention output (``h``): ``5h + 3kv`` elements;
- MLP: the RMSNorm input and output (``2h``), gate, up, SiLU(gate) and their product (``4i``);
- each RMSNorm also keeps its fp32 upcast of the input (``4h`` bytes per norm, two norms).

That is ``b (7h + 3kv + 4i) + 8h`` bytes per token per block, ``b`` the activation bytes.
With activation checkpointing (``model.gradient_checkpointing_enable()``) only each block's
input (``b h`` per token) is kept, and one block's activations exist again while it is
recomputed in the backward pass.

The LM head would be the largest single term at a 152k vocabulary, ``V`` wide per token:
its logits (``b V``), their fp32 log-softmax (``4 V``) and, in the backward, two fp32 ``V``-wide
gradients at once (``8 V``). :func:`~valign_ray.train.logprobs.completion_logps` runs the head
on completion positions only, ``HEAD_CHUNK`` at a time, each chunk checkpointed: that peak
exists for one chunk, and only the gathered hidden states (``b h`` per token) are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from valign_ray.memory_plan import ModelShape

REDUCE_BUCKET = 500_000_000  # DeepSpeed's default zero_optimization.reduce_bucket_size (elements)


def _act_bytes(precision: str) -> int:
    return 2 if precision == "bf16" else 4


def block_activation_bytes(shape: ModelShape, tokens: int, precision: str) -> int:
    """Bytes one transformer block keeps for backward over ``tokens`` tokens."""
    h, kv, i = shape.hidden_size, shape.kv_dim, shape.intermediate_size
    per_token = _act_bytes(precision) * (7 * h + 3 * kv + 4 * i) + 8 * h
    return tokens * per_token


def activation_bytes(shape: ModelShape, tokens: int, precision: str, checkpointing: bool) -> int:
    """Bytes the blocks keep for backward in one micro-step of ``tokens`` tokens (per GPU)."""
    block = block_activation_bytes(shape, tokens, precision)
    if not checkpointing:
        return shape.num_layers * block
    inputs = shape.num_layers * tokens * shape.hidden_size * _act_bytes(precision)
    return inputs + block


def logits_bytes(shape: ModelShape, tokens: int, precision: str) -> int:
    """Peak bytes of the LM head's output and the log-softmax over it (forward and backward):
    one chunk of at most ``HEAD_CHUNK`` positions, plus the hidden states kept for the chunks'
    recomputation (``tokens`` is an upper bound on the completion positions)."""
    from valign_ray.train.logprobs import HEAD_CHUNK

    b = _act_bytes(precision)
    return min(tokens, HEAD_CHUNK) * shape.vocab_size * (b + 4 + 8) + tokens * shape.hidden_size * b


def zero_buffer_bytes(shape: ModelShape, zero_stage: int, precision: str) -> int:
    """DeepSpeed's own working buffers at its default bucket sizes.

    ZeRO-1/2 reduce gradients through a ``reduce_bucket_size`` buffer during the backward pass,
    ZeRO-3 holds one from initialisation (measured: one bucket per rank, 2e9 bytes in fp32);
    ZeRO-3 also gathers whole modules' parameters for the forward and backward: about two of
    the largest (the embedding or the LM head, or a block), the one in use and the one being
    prefetched, offloaded or not.
    """
    b = _act_bytes(precision)
    if zero_stage == 0:
        return 0
    if zero_stage in (1, 2):
        return REDUCE_BUCKET * b
    largest = max(shape.embedding_params(), shape.layer_params())
    return REDUCE_BUCKET * b + 2 * largest * b
