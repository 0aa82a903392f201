"""Prompts through the tokenizer's chat template (instruct models), plain text otherwise: the
same formatting for training, the reference cache and evaluation, and a cache key that knows it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from valign_ray.eval.heldout import evaluate_pairs
from valign_ray.eval.preferences import score_completions
from valign_ray.methods import get_method
from valign_ray.models import load_model, load_tokenizer
from valign_ray.train.logprobs import encode_pair, encode_pairs, format_prompt, prompt_format_id
from valign_ray.train.reference import cache_key, score_reference

# A small template in the shape of real ones: BOS written by the template (as Llama 3's), a
# header per turn, and the assistant's header when a generation prompt is asked for.
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)
PROMPT = "Question: Should the council fund the library?\nAnswer:"
FORMATTED = "<|bos|>[user] Question: Should the council fund the library?\nAnswer:\n[assistant]"


@pytest.fixture(scope="module")
def chat_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model whose tokenizer carries :data:`TEMPLATE` (saved and loaded back
    the way a real instruct model's folder is)."""
    out = tmp_path_factory.mktemp("chat") / "model"
    shutil.copytree(tiny_model_dir, out)
    tok = load_tokenizer(out)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def toks(tiny_model_dir: Path, chat_model_dir: Path) -> tuple[Any, Any]:
    return load_tokenizer(tiny_model_dir), load_tokenizer(chat_model_dir)


def test_format_prompt_applies_the_template_or_leaves_plain_text(toks: tuple[Any, Any]) -> None:
    plain, chat = toks
    assert plain.chat_template is None
    assert format_prompt(plain, PROMPT) == PROMPT
    assert format_prompt(chat, PROMPT) == FORMATTED


def test_encode_pair_tokenises_the_templated_prompt_with_one_bos(toks: tuple[Any, Any]) -> None:
    plain, chat = toks
    enc = encode_pair(chat, PROMPT, " Yes.", max_length=96)
    assert enc.prompt_ids == plain(FORMATTED, add_special_tokens=False)["input_ids"]
    assert enc.prompt_ids[0] == chat.bos_token_id
    assert enc.prompt_ids.count(chat.bos_token_id) == 1  # the template's, no second one
    assert enc.completion_ids == encode_pair(plain, PROMPT, " Yes.", max_length=96).completion_ids


@pytest.mark.parametrize("max_length", [6, 12, 96])
def test_encode_pairs_equals_tokenising_each_pair_by_hand(
    toks: tuple[Any, Any], max_length: int
) -> None:
    """The batched, de-duplicated tokenisation against one tokenizer call per text and the
    truncation rule written out: completion + EOS kept (to max_length - 1), prompt cut from
    the left; repeated prompts and completions, as survey rows have them."""
    prompts = [PROMPT, "Q:", PROMPT, "Question: Should the council sell the harbour?", "Q:"]
    completions = [" Yes.", " No, keep costs low for families.", " Yes.", " No.", " Yes."]
    for tok in toks:
        got = encode_pairs(tok, prompts, completions, max_length=max_length)
        for enc, p, c in zip(got, prompts, completions, strict=True):
            p_ids = tok(format_prompt(tok, p), add_special_tokens=False)["input_ids"]
            c_ids = (tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[
                : max_length - 1
            ]
            room = max_length - len(c_ids)
            assert enc.completion_ids == c_ids
            assert enc.prompt_ids == list(p_ids[-room:])
            assert enc.length <= max_length
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        encode_pairs(toks[0], ["a", "b"], ["c"], max_length=8)


def test_cache_key_follows_the_template(toks: tuple[Any, Any], chat_model_dir: Path) -> None:
    plain, chat = toks
    assert prompt_format_id(plain) == "plain"
    assert prompt_format_id(chat).startswith("chat-")
    assert prompt_format_id(load_tokenizer(chat_model_dir)) == prompt_format_id(chat)
    other = load_tokenizer(chat_model_dir)
    other.chat_template = TEMPLATE.replace("[assistant]", "[model]")
    keys = {
        cache_key("m", "d", "kto", 96, prompt_format=prompt_format_id(t))
        for t in (plain, chat, other)
    }
    assert len(keys) == 3


def test_scores_use_the_template(tiny_model_dir: Path, toks: tuple[Any, Any]) -> None:
    """Scoring with the chat tokenizer = scoring the hand-formatted text as a plain prompt,
    and differs from scoring the bare prompt."""
    plain, chat = toks
    model = load_model(tiny_model_dir)
    completions = [" Yes, protect the native bush.", " No."]
    templated = score_completions(model, chat, [PROMPT] * 2, completions)
    by_hand = score_completions(model, plain, [FORMATTED] * 2, completions)
    bare = score_completions(model, plain, [PROMPT] * 2, completions)
    assert templated["logp_sum"].to_list() == pytest.approx(by_hand["logp_sum"].to_list(), abs=1e-5)
    assert all(
        abs(a - b) > 1e-3 for a, b in zip(templated["logp_sum"], bare["logp_sum"], strict=True)
    )


def test_reference_and_heldout_eval_use_the_template(
    tiny_model_dir: Path, toks: tuple[Any, Any]
) -> None:
    plain, chat = toks
    model = load_model(tiny_model_dir)
    rows = pl.DataFrame(
        {
            "prompt": [PROMPT, "Q:"],
            "completion": [" Yes.", " No."],
            "kl_completion": [" No.", " Yes."],
        }
    )
    by_hand = rows.with_columns(pl.col("prompt").map_elements(lambda p: format_prompt(chat, p)))
    columns = get_method("kto").reference
    ref = score_reference(model, chat, rows, columns, max_length=64)
    ref_by_hand = score_reference(model, plain, by_hand, columns, max_length=64)
    for _, col in columns:
        assert ref[col].to_list() == pytest.approx(ref_by_hand[col].to_list(), abs=1e-5)
    pairs = rows.select(
        "prompt",
        pl.col("completion").alias("chosen"),
        pl.col("kl_completion").alias("rejected"),
        pl.lit(1.0).alias("weight"),
    )
    pairs_by_hand = pairs.with_columns(by_hand["prompt"])
    ours = evaluate_pairs(model, chat, pairs, max_length=64)
    hand = evaluate_pairs(model, plain, pairs_by_hand, max_length=64)
    assert ours["margin"] == pytest.approx(hand["margin"], abs=1e-6)
    assert ours["margin"] != pytest.approx(
        evaluate_pairs(model, plain, pairs, max_length=64)["margin"], abs=1e-4
    )
