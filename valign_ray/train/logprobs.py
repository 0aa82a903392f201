"""Tokenise (prompt, completion) pairs and score completions under a causal LM.

Prompt and completion are tokenised separately and concatenated, so a completion's tokens do not
depend on the prompt it is paired with (byte-level BPE can merge across a boundary otherwise);
that is what lets the KTO reference point score a completion after a *mismatched* prompt.

Every prompt passes through :func:`format_prompt` first: an instruct model's tokenizer carries
a chat template, and the model was tuned to answer a user turn in that format, not bare text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Completion positions scored per LM-head call: bounds the fp32 logits alive at once to
# HEAD_CHUNK x vocab (about 0.6 GB for a 151k vocabulary) instead of batch x length x vocab.
HEAD_CHUNK = 1024
# Causal LMs whose logits are exactly ``lm_head(decoder(...).last_hidden_state)``: no logit
# soft-capping (Gemma 2), scale (Cohere) or divisor (Granite) after the head, which the
# completion-only path would skip. Others take the full forward.
HEAD_ON_COMPLETION_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


@dataclass(frozen=True)
class Encoded:
    """One tokenised example: prompt ids followed by completion ids (EOS appended)."""

    prompt_ids: list[int]
    completion_ids: list[int]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


def format_prompt(tokenizer: Any, prompt: str) -> str:
    """The text a completion is scored after: ``prompt`` as one user turn of the tokenizer's
    chat template, ending in the assistant's header (``add_generation_prompt``), when the
    tokenizer has a template; the plain prompt otherwise (base models, the tiny test models).

    Training, the reference cache and evaluation all tokenise prompts through this one function,
    so what the loss moved is what evaluation measures. A template that writes its own BOS
    (Llama 3's ``{{ bos_token }}``) gets no second one: prompts are tokenised with
    ``add_special_tokens=False``.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        return prompt
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def prompt_format_id(tokenizer: Any) -> str:
    """``"plain"``, or ``"chat-"`` + a hash of the chat template: what changes the prompt text,
    for cache keys (a template may live in ``chat_template.jinja``, outside the hashed weights
    and JSON files)."""
    template = getattr(tokenizer, "chat_template", None)
    if template is None:
        return "plain"
    raw = json.dumps(template, sort_keys=True).encode()  # a str, or a dict of named templates
    return "chat-" + hashlib.sha256(raw).hexdigest()[:16]


def encode_pair(
    tokenizer: Any, prompt: str, completion: str, *, max_length: int, add_eos: bool = True
) -> Encoded:
    """Tokenise one pair; over-long examples lose prompt tokens from the left, never completion.

    The prompt goes through :func:`format_prompt`. The completion is what the loss scores, so
    it is kept whole (up to ``max_length - 1``) and the prompt is cut from its start, as chat
    models keep the latest turn.
    """
    (enc,) = encode_pairs(tokenizer, [prompt], [completion], max_length=max_length, add_eos=add_eos)
    return enc


def encode_pairs(
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    max_length: int,
    add_eos: bool = True,
) -> list[Encoded]:
    """:func:`encode_pair` for many pairs at once, each distinct text tokenised once in one
    batched call: survey rows repeat a few dozen prompts and answer texts thousands of times,
    so this is what makes tokenising a training set take a fraction of a second."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    formatted = {p: format_prompt(tokenizer, p) for p in dict.fromkeys(prompts)}
    p_ids = _token_ids(tokenizer, list(dict.fromkeys(formatted.values())))
    c_ids = _token_ids(tokenizer, list(dict.fromkeys(completions)))
    return [
        _assemble(tokenizer, p_ids[formatted[p]], c_ids[c], c, max_length, add_eos)
        for p, c in zip(prompts, completions, strict=True)
    ]


def _token_ids(tokenizer: Any, texts: list[str]) -> dict[str, list[int]]:
    """Each text's ids without special tokens (one batched tokenizer call)."""
    if not texts:
        return {}
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return {t: list(i) for t, i in zip(texts, ids, strict=True)}


def _assemble(
    tokenizer: Any,
    prompt_ids: list[int],
    completion_ids: list[int],
    completion: str,
    max_length: int,
    add_eos: bool,
) -> Encoded:
    """Truncate one pair to ``max_length``: the completion kept, the prompt cut from the left."""
    c_ids = list(completion_ids)
    if add_eos and tokenizer.eos_token_id is not None:
        c_ids.append(int(tokenizer.eos_token_id))
    if not c_ids:
        raise ValueError(f"completion {completion!r} encodes to no tokens")
    c_ids = c_ids[: max_length - 1]
    room = max_length - len(c_ids)
    p_ids = list(prompt_ids[-room:]) if room > 0 else []
    if not p_ids:
        # A causal LM cannot score the first token without context: keep one prompt token.
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else c_ids[0]
        p_ids = [int(bos)]
        c_ids = c_ids[: max_length - 1]
    return Encoded(prompt_ids=p_ids, completion_ids=c_ids)


def collate(examples: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch into ``input_ids``, ``attention_mask`` and ``completion_mask``."""
    import torch

    width = max(e.length for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    comp = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, e in enumerate(examples):
        n_p, n = len(e.prompt_ids), e.length
        ids[row, :n] = torch.tensor(e.prompt_ids + e.completion_ids, dtype=torch.long)
        attn[row, :n] = 1
        comp[row, n_p:n] = True
    return {"input_ids": ids, "attention_mask": attn, "completion_mask": comp}


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(token_t | tokens_<t) for t >= 1, shape [B, T-1]: logits at t-1 predict token t."""
    import torch

    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return torch.gather(logp, 2, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    """(decoder, LM head) of a causal LM, seen through a DeepSpeed engine (``.module``) and a
    PEFT wrapper (``get_base_model``); None where the logits are not just the head applied to
    the decoder's output (see ``HEAD_ON_COMPLETION_TYPES``) or a prompt-learning adapter
    changes the inputs."""
    import torch

    inner = model
    while isinstance(getattr(inner, "module", None), torch.nn.Module):  # DeepSpeed, DDP
        inner = inner.module
    if getattr(getattr(inner, "active_peft_config", None), "is_prompt_learning", False):
        return None
    if hasattr(inner, "get_base_model"):  # PEFT: the transformers model, adapters injected
        inner = inner.get_base_model()
    model_type = getattr(getattr(inner, "config", None), "model_type", None)
    if model_type not in HEAD_ON_COMPLETION_TYPES:
        return None
    decoder, head = inner.get_decoder(), inner.get_output_embeddings()
    if decoder is None or head is None or decoder is inner:
        return None
    return decoder, head


def _head_logps(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) from hidden states [N, H]: the head's logits in fp32, minus logsumexp."""
    import torch

    logits = head(hidden).float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)


def chunked_head_logps(
    head: Any, hidden: torch.Tensor, targets: torch.Tensor, chunk: int = HEAD_CHUNK
) -> torch.Tensor:
    """:func:`_head_logps` over ``chunk`` rows at a time. Under autograd each chunk is
    checkpointed: backward recomputes its logits rather than keeping them, so the fp32 logits
    alive at once are one chunk's, in the forward and in the backward."""
    import torch
    from torch.utils.checkpoint import checkpoint

    parts = []
    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start : start + chunk], targets[start : start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_head_logps, head, h, t, use_reentrant=False))
        else:
            parts.append(_head_logps(head, h, t))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def full_completion_logps(
    model: Any, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`completion_logps` through the model's whole forward: logits at every position,
    [B, T, vocab] in fp32 for the log-softmax. The fallback, and the reference the
    completion-only path is tested against."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    # No cache: transformers reads packing from position ids only without one.
    logits = model(**_model_inputs(batch), use_cache=False).logits
    per_token = token_logps(logits, batch["input_ids"])
    rows, cols = batch["completion_mask"][:, 1:].nonzero(as_tuple=True)
    return _per_example(per_token[rows, cols], batch, rows, cols)


def _per_example(
    logps: torch.Tensor, batch: dict[str, torch.Tensor], rows: torch.Tensor, cols: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums and counts, per example, of the log-probs ``logps`` of the completion tokens at
    (``rows``, ``cols`` + 1): an example is a row of a padded batch, or the ``sequence_ids``
    entry of a packed one (valign_ray.train.packing)."""
    import torch

    if "sequence_ids" in batch:
        which = batch["sequence_ids"][rows, cols + 1]
        n = int(batch["sequence_ids"].max()) + 1
    else:
        which, n = rows, batch["input_ids"].shape[0]
    zeros = torch.zeros(n, dtype=logps.dtype, device=logps.device)
    return zeros.index_add(0, which, logps), zeros.index_add(0, which, torch.ones_like(logps))


def _model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A padded batch's ids and attention mask, or a packed batch's ids and position ids (no
    mask: the model derives the block-diagonal one from the position restarts)."""
    if "position_ids" in batch:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def completion_logps(
    model: Any, batch: dict[str, torch.Tensor], *, chunk: int = HEAD_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each completion and its token count, both shape [B]: one
    per example, for a padded batch (:func:`collate`) or a packed one
    (:func:`~valign_ray.train.packing.collate_packed`).

    Sums (not means) are what KTO and DPO use; divide by the count for a length-normalised score.
    The LM head runs only where a completion token is predicted, ``chunk`` positions at a time
    (:func:`chunked_head_logps`): no [B, T, vocab] logits. Models without a plain decoder + head
    (:func:`decoder_and_head` is None) take the full forward and :func:`token_logps`.
    """

    parts = decoder_and_head(model)
    if parts is None:
        return full_completion_logps(model, batch)
    decoder, head = parts
    device = next(model.parameters()).device  # GPU training and inference: move the batch
    batch = {k: v.to(device) for k, v in batch.items()}
    ids, mask = batch["input_ids"], batch["completion_mask"][:, 1:]
    hidden = decoder(**_model_inputs(batch), use_cache=False).last_hidden_state
    rows, cols = mask.nonzero(as_tuple=True)  # hidden state at t predicts token t + 1
    logps = chunked_head_logps(head, hidden[rows, cols], ids[rows, cols + 1], chunk)
    return _per_example(logps, batch, rows, cols)
