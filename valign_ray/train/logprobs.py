"""Tokenise (prompt, completion) pairs and score completions under a causal LM.

Prompt and completion are tokenised separately and concatenated, so a completion's tokens do not
depend on the prompt it is paired with (byte-level BPE can merge across a boundary otherwise);
that is what lets the KTO reference point score a completion after a *mismatched* prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Encoded:
    """One tokenised example: prompt ids followed by completion ids (EOS appended)."""

    prompt_ids: list[int]
    completion_ids: list[int]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


def encode_pair(
    tokenizer: Any, prompt: str, completion: str, *, max_length: int, add_eos: bool = True
) -> Encoded:
    """Tokenise one pair; over-long examples lose prompt tokens from the left, never completion.

    The completion is what the loss scores, so it is kept whole (up to ``max_length - 1``) and
    the prompt is cut from its start, as chat models keep the latest turn.
    """
    p_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    c_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    if add_eos and tokenizer.eos_token_id is not None:
        c_ids.append(int(tokenizer.eos_token_id))
    if not c_ids:
        raise ValueError(f"completion {completion!r} encodes to no tokens")
    c_ids = c_ids[: max_length - 1]
    room = max_length - len(c_ids)
    p_ids = p_ids[-room:] if room > 0 else []
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


def completion_logps(
    model: Any, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each completion and its token count, both shape [B].

    Sums (not means) are what KTO and DPO use; divide by the count for a length-normalised score.
    """
    device = next(model.parameters()).device  # GPU training and inference: move the batch
    batch = {k: v.to(device) for k, v in batch.items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    per_token = token_logps(logits, batch["input_ids"])
    mask = batch["completion_mask"][:, 1:].to(per_token.dtype)
    return (per_token * mask).sum(-1), mask.sum(-1)
