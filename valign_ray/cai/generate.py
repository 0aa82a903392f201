"""Batched sampling from a causal LM where a record depends only on (prompt, seed, model).

``model.generate`` draws from one global random stream, so a record's text would depend on which
other prompts shared its batch and in what order. Here every row samples from its own
``torch.Generator`` seeded by the record's seed, one uniform number per generated token, by
inverse CDF over the (temperature-scaled, top-p-truncated) distribution. Prompts are left-padded
with an attention mask and explicit position ids, so padding leaves a row's logits unchanged up
to float rounding, and the KV cache carries the prefix from step to step.

Float rounding is the one way batch shape can still reach a record: a different batch width
changes matmul blocking and the length of the masked softmax, which moves logits by about 1e-6.
A record changes only when that moves its argmax across a near-tie (greedy), a CDF boundary
across its uniform draw, or the last token in or out of the nucleus (sampling). The tests check
that batch sizes 1 and 8 give identical token ids, greedy and sampled, on the tiny test model.
It is rare but not impossible: a random-init model's near-uniform distribution over thousands
of tokens is the worst case (``bench_generate.py`` counts the records that differ, e.g. a few
of 64 x 64 tokens at 2048 tokens of vocabulary); a trained model's peaked distributions leave
far fewer boundaries where noise could matter. Where bit-exact reproduction across batch shapes
is required, regenerate with the same batch size, or use greedy decoding.

``generate`` is what the Ray Data actors (:mod:`valign_ray.distributed.generation`) and the tests
call; it imports no Ray.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from valign_ray.config import CaiSamplingConfig

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Generation:
    """One record's completion: its token ids (no EOS), the text, and why it ended
    (``eos``, ``stop``: a stop string, cut from the text; ``length``: ``max_new_tokens``)."""

    token_ids: tuple[int, ...]
    text: str
    finish_reason: str


def record_seed(base_seed: int, key: str) -> int:
    """A record's seed from the run's sampling seed and the record's key (e.g. ``row_idx`` plus
    the stage name): 63 bits of sha256, the same on every machine and Python version."""
    digest = hashlib.sha256(f"{base_seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_next(
    logits: torch.Tensor, generators: Sequence[torch.Generator], temperature: float, top_p: float
) -> torch.Tensor:
    """Next token per row of ``logits`` [B, V]: argmax when ``temperature`` is 0; otherwise
    ``softmax(logits / T)`` restricted to the nucleus (the tokens at least as likely as the one
    at which the most likely tokens' mass reaches ``top_p``), sampled by inverse CDF with one
    ``U(0, 1)`` from the row's own generator.

    The CDF runs in token-id order, not in probability order: sorting would let float noise
    swap two nearly equally likely tokens and move every boundary between them by a whole
    token's mass, while in id order noise moves each boundary only by noise.
    """
    import torch

    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        sorted_p = probs.sort(dim=-1, descending=True).values
        n_kept = ((sorted_p.cumsum(dim=-1) - sorted_p) < top_p).sum(dim=-1, keepdim=True)
        probs = torch.where(probs >= sorted_p.gather(1, n_kept - 1), probs, 0.0)
    cdf = probs.cumsum(dim=-1)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    target = (u * cdf[:, -1].double()).to(cdf.dtype).unsqueeze(-1)
    pos = torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
    # Rounding can put the target at the very end: take the last token with mass instead.
    ids = torch.arange(probs.shape[-1]).expand_as(probs)
    last = torch.where(probs > 0, ids, -1).amax(dim=-1)
    return torch.minimum(pos, last)


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str], max_prompt_tokens: int
) -> list[list[int]]:
    """Token ids per prompt (no special tokens added: a chat template already has them); an
    over-long prompt keeps its last ``max_prompt_tokens`` tokens, as chat models keep the latest
    turn; an empty one becomes BOS (a causal LM needs one token of context)."""
    out = []
    for prompt in prompts:
        ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])[-max_prompt_tokens:]
        if not ids:
            bos = (
                tokenizer.bos_token_id
                if tokenizer.bos_token_id is not None
                else tokenizer.eos_token_id
            )
            ids = [int(bos)]
        out.append(ids)
    return out


def _left_padded(prompt_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """``input_ids``, ``attention_mask`` and ``position_ids`` (0 at each row's first real
    token), padded on the left so every row's next token is in the last column."""
    import torch

    width = max(len(ids) for ids in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for row, p in enumerate(prompt_ids):
        ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p) :] = 1
    return ids, mask, (mask.cumsum(dim=-1) - 1).clamp(min=0)


class _Rows:
    """Per-row generated ids and finish state while a batch decodes."""

    def __init__(self, n: int, tokenizer: Any, sampling: CaiSamplingConfig) -> None:
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.finish: list[str | None] = [None] * n
        self.tokenizer, self.sampling = tokenizer, sampling

    def add(self, tokens: list[int]) -> None:
        eos = self.tokenizer.eos_token_id
        for row, tok in enumerate(tokens):
            if self.finish[row] is not None:
                continue
            if tok == eos:
                self.finish[row] = "eos"
                continue
            self.ids[row].append(tok)
            if self.sampling.stop and any(s in self._text(row) for s in self.sampling.stop):
                self.finish[row] = "stop"
            elif len(self.ids[row]) >= self.sampling.max_new_tokens:
                self.finish[row] = "length"

    def _text(self, row: int) -> str:
        return self.tokenizer.decode(self.ids[row], skip_special_tokens=True)

    def generations(self) -> list[Generation]:
        out = []
        for row, ids in enumerate(self.ids):
            text = self._text(row)
            if self.finish[row] == "stop":
                text = text[: min(text.find(s) for s in self.sampling.stop if s in text)]
            out.append(Generation(tuple(ids), text, self.finish[row] or "length"))
        return out


def _cache_of(out: Any) -> dict[str, Any]:
    """The KV cache to pass back: transformers 5.24 names it ``cache``, earlier releases (the GPU
    machine's 5.17) ``past_key_values``."""
    if "cache" in out:
        return {"cache": out["cache"]}
    return {"past_key_values": out["past_key_values"]}


def generate_batch(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    seeds: Sequence[int],
    sampling: CaiSamplingConfig,
) -> list[Generation]:
    """Decode one batch of prompts (token ids) with the KV cache; rows that finish early are fed
    padding until the last one ends. See the module docstring for why seeds are per row."""
    import torch

    if len(prompt_ids) != len(seeds):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(seeds)} seeds")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, mask, pos = _left_padded(prompt_ids, pad)
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    rows = _Rows(len(seeds), tokenizer, sampling)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1)
        pos = pos[:, -1:]
        while True:
            tokens = sample_next(
                out.logits[:, -1], generators, sampling.temperature, sampling.top_p
            )
            rows.add(tokens.tolist())
            if all(f is not None for f in rows.finish):
                return rows.generations()
            done = torch.tensor([f is not None for f in rows.finish])
            mask = torch.cat([mask, torch.ones((len(seeds), 1), dtype=mask.dtype)], dim=1)
            pos = pos + 1
            out = model(
                input_ids=torch.where(done, pad, tokens).unsqueeze(-1),
                attention_mask=mask,
                position_ids=pos,
                logits_to_keep=1,
                **_cache_of(out),
            )


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    sampling: CaiSamplingConfig,
    *,
    batch_size: int = 16,
) -> list[Generation]:
    """One :class:`Generation` per prompt, in input order, decoded ``batch_size`` at a time
    (prompts of similar length together, so little padding); the records do not depend on
    ``batch_size`` (module docstring)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    prompt_ids = encode_prompts(tokenizer, prompts, sampling.max_prompt_tokens)
    order = sorted(range(len(prompts)), key=lambda i: (len(prompt_ids[i]), i))
    results: list[Generation | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = generate_batch(
            model, tokenizer, [prompt_ids[i] for i in chunk], [seeds[i] for i in chunk], sampling
        )
        for i, gen in zip(chunk, batch, strict=True):
            results[i] = gen
    return results  # type: ignore[return-value]
