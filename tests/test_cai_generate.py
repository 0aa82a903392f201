"""Batched generation: sampling by hand, records independent of batch size, caps and stops."""

from __future__ import annotations

import pytest
import torch

from valign_ray.cai.generate import (
    _Rows,
    generate,
    record_seed,
    sample_next,
)
from valign_ray.config import CaiSamplingConfig

PROMPTS = [
    "Question: Should the council protect the bush?\nAnswer:",
    "Question: Should",
    "Question: Should the council fund the library? Question: Should the council sell the rail "
    "line?\nAnswer:",
    "Answer:",
    "Question: Should the council close the wetland?\nAnswer: Yes, protect the native bush.",
    "Question: Should the council expand the harbour?\nAnswer:",
    "No, keep costs low for families.",
    "Question: Should the council fund the bush?",
    "Question: Should the council sell the library?\nAnswer: No,",
    "Question:",
    "Question: Should the council protect the wetland?\nAnswer: Yes,",
]
SEEDS = [record_seed(0, f"row{i}") for i in range(len(PROMPTS))]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    from valign_ray.models import load_model, load_tokenizer

    torch.manual_seed(0)
    return load_model(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)


def _u(seed: int) -> float:
    return torch.rand((), generator=torch.Generator().manual_seed(seed), dtype=torch.float64).item()


def test_sample_next_by_hand():
    """probs [0.5, 0.3, 0.2] (logits = log probs, T = 1), top_p 0.7: tokens 0 and 1 are kept
    (mass above them 0 and 0.5 < 0.7; above token 2: 0.8), cdf [0.5, 0.8, 0.8]: token 0 iff
    u * 0.8 < 0.5, i.e. u < 0.625. Greedy is the argmax; top_p 1 keeps all three."""
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).repeat(6, 1)
    seeds = [1, 2, 3, 4, 5, 6]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    got = sample_next(logits, gens, temperature=1.0, top_p=0.7).tolist()
    assert got == [0 if _u(s) < 0.625 else 1 for s in seeds]
    assert 0 in got and 1 in got  # seeds 1-6 reach both sides of 0.625
    assert sample_next(logits, gens, temperature=0.0, top_p=0.7).tolist() == [0] * 6
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    full = sample_next(logits, gens, temperature=1.0, top_p=1.0).tolist()
    assert full == [0 if _u(s) < 0.5 else 1 if _u(s) < 0.8 else 2 for s in seeds]
    # id order is not probability order: probs [0.2, 0.5, 0.3], top_p 0.7 keeps tokens 1 and 2
    # (0.5 + 0.3), and the CDF runs over ids: [0, 0.5, 0.8]: token 1 iff u < 0.625
    shuffled = torch.log(torch.tensor([[0.2, 0.5, 0.3]])).repeat(6, 1)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    got = sample_next(shuffled, gens, temperature=1.0, top_p=0.7).tolist()
    assert got == [1 if _u(s) < 0.625 else 2 for s in seeds]


def test_record_seed_is_stable():
    """The first 8 bytes of sha256("0\\x00row0") (little-endian) shifted right by one:
    computed independently with hashlib, fixed forever so records can be regenerated."""
    assert record_seed(0, "row0") == record_seed(0, "row0") < 2**63
    assert record_seed(0, "row0") != record_seed(1, "row0")
    assert record_seed(0, "row0") == 0x4EFDF879412167EE


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_batch_size_does_not_change_records(lm, temperature):
    """THE PROPERTY: batch sizes 1 and 8 (and a shuffled order) give identical token ids and
    texts, greedy and sampled, for prompts of different lengths (so left padding differs)."""
    model, tok = lm
    spec = CaiSamplingConfig(temperature=temperature, top_p=0.9, max_new_tokens=12)
    one = generate(model, tok, PROMPTS, SEEDS, spec, batch_size=1)
    eight = generate(model, tok, PROMPTS, SEEDS, spec, batch_size=8)
    assert one == eight
    order = [5, 2, 9, 0, 10, 7, 1, 3, 8, 6, 4]
    shuffled = generate(model, tok, [PROMPTS[i] for i in order], [SEEDS[i] for i in order], spec)
    assert shuffled == [one[i] for i in order]
    for g in one:  # a sampled record may meet EOS first
        assert (len(g.token_ids), g.finish_reason) == (12, "length") or g.finish_reason == "eos"
    if temperature > 0:  # different seeds, different samples
        other = generate(model, tok, PROMPTS, [s + 1 for s in SEEDS], spec, batch_size=8)
        assert other != one


def test_same_prompt_different_seeds_and_caps(lm):
    """The same prompt with two seeds gives two samples; max_prompt_tokens keeps the prompt's
    last tokens, so a prompt and its longer version with the same tail give the same record."""
    model, tok = lm
    spec = CaiSamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=6, max_prompt_tokens=4)
    tail = " the council protect the bush?\nAnswer:"
    a, b, c = generate(model, tok, ["Question: Should" + tail, tail, tail], [7, 7, 8], spec)
    ids = tok(tail, add_special_tokens=False)["input_ids"]
    assert len(ids) > 4  # so the cap really cut both prompts to the same last 4 tokens
    assert a == b and a != c


def test_stop_strings_end_and_cut_the_text(lm):
    """A stop string ends a record where it first appears and is cut from the text; the record
    is the unstopped one up to that token."""
    model, tok = lm
    free = generate(model, tok, PROMPTS[:4], SEEDS[:4], CaiSamplingConfig(max_new_tokens=10))
    stop = free[0].text[3:5]
    assert stop and stop in free[0].text
    stopped = generate(
        model, tok, PROMPTS[:4], SEEDS[:4], CaiSamplingConfig(max_new_tokens=10, stop=(stop,))
    )
    g = stopped[0]
    assert g.finish_reason == "stop" and g.text == free[0].text[: free[0].text.find(stop)]
    assert g.token_ids == free[0].token_ids[: len(g.token_ids)] and len(g.token_ids) < 10


def test_eos_ends_a_record_without_being_kept(lm):
    _, tok = lm
    rows = _Rows(2, tok, CaiSamplingConfig(max_new_tokens=3))
    rows.add([5, tok.eos_token_id])
    rows.add([tok.eos_token_id, 9])
    gens = rows.generations()
    assert [(g.token_ids, g.finish_reason) for g in gens] == [((5,), "eos"), ((), "eos")]


def test_mismatched_lengths_are_errors(lm):
    model, tok = lm
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        generate(model, tok, PROMPTS[:2], SEEDS[:1], CaiSamplingConfig())


@pytest.mark.ray
def test_ray_data_replicas_give_the_plain_records(ray_session, tiny_model_dir, lm):
    """Two CPU replicas, generate batches of 3: the same records as the plain function."""
    import polars as pl

    from valign_ray.distributed.generation import generate_ray

    model, tok = lm
    spec = CaiSamplingConfig(temperature=1.0, max_new_tokens=8)
    rows = pl.DataFrame({"row_idx": range(len(PROMPTS)), "prompt": PROMPTS, "seed": SEEDS})
    out = generate_ray(rows, str(tiny_model_dir), spec, batch_size=3, replicas=2)
    plain = generate(model, tok, PROMPTS, SEEDS, spec, batch_size=8)
    assert out["row_idx"].to_list() == list(range(len(PROMPTS)))
    assert out["completion"].to_list() == [g.text for g in plain]
    assert out["completion_ids"].to_list() == [list(g.token_ids) for g in plain]
    assert out["finish_reason"].to_list() == [g.finish_reason for g in plain]
