"""The model's preferences: scores against a hand loop over tokens, preference formulas by hand."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from valign_ray.config import TinyConfig  # noqa: E402
from valign_ray.eval.preferences import (  # noqa: E402
    DEFAULT_LIKERT_TEMPLATE,
    implicit_reward_preference,
    likert_distribution,
    pair_preference,
    score_completions,
)
from valign_ray.models import build_tiny_model, load_model, load_tokenizer  # noqa: E402

TEXTS = [
    "Statement: Parks should get more money.\nDo you agree? Answer: agree",
    "Statement: Taxes are too high.\nDo you agree? Answer: disagree",
    "How should a city spend its budget? On schools, parks and buses.",
    "strongly disagree, disagree, neutral, agree, strongly agree",
    "Be honest and kind. Refuse to help with harm.",
]
SPEC = TinyConfig(
    vocab_size=320,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    seed=3,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), TEXTS, SPEC)
    return load_model(path), load_tokenizer(path), path


def _hand_score(model: Any, tok: Any, prompt: str, completion: str) -> tuple[float, int]:
    """Unbatched, unpadded: ids = prompt ids + completion ids + EOS; for each completion
    position t, add log_softmax(logits[t-1])[ids[t]]."""
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([p_ids + c_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    total = 0.0
    for t in range(len(p_ids), len(p_ids) + len(c_ids)):
        total += torch.log_softmax(logits[t - 1].double(), dim=-1)[ids[0, t]].item()
    return total, len(c_ids)


def test_scores_match_hand_loop(tiny: tuple[Any, Any, Path]) -> None:
    """Batched (batch 2, right padding, different lengths) scores equal the hand loop."""
    model, tok, _ = tiny
    prompts = ["How should a city spend its budget?", "Be honest.", "Taxes", "Parks and buses"]
    completions = [" On schools.", " Refuse to help with harm and be kind.", " agree", " no"]
    table = score_completions(model, tok, prompts, completions, batch_size=2)
    assert table.columns == ["logp_sum", "n_tokens", "logp_mean"]
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        want_sum, want_n = _hand_score(model, tok, p, c)
        assert table["n_tokens"][i] == want_n
        assert table["logp_sum"][i] == pytest.approx(want_sum, abs=1e-4)
        assert table["logp_mean"][i] == pytest.approx(want_sum / want_n, abs=1e-4)
        assert table["logp_sum"][i] < 0


def test_scoring_runs_in_eval_mode_without_grad_and_restores_mode(
    tiny: tuple[Any, Any, Path],
) -> None:
    model, tok, _ = tiny
    seen: list[tuple[bool, bool]] = []
    # Scoring runs the decoder, then the LM head on completion positions only (not the
    # model's own forward): watch the decoder.
    handle = model.get_decoder().register_forward_hook(
        lambda mod, args, out: seen.append((mod.training, torch.is_grad_enabled()))
    )
    model.train()
    try:
        score_completions(model, tok, ["a"], [" b"])
    finally:
        handle.remove()
    assert seen == [(False, False)]
    assert model.training
    model.eval()
    with pytest.raises(ValueError, match="differ"):
        score_completions(model, tok, ["a", "b"], [" c"])


def test_pair_preference_by_hand() -> None:
    """a - b = [1, 0, -2]: sigmoid -> [1/(1+e^-1), .5, 1/(1+e^2)] = [.7311, .5, .1192];
    at temperature 2: sigmoid([.5, 0, -1]) = [.6225, .5, .2689]. Large gaps do not overflow."""
    a, b = np.array([-1.0, -2.0, -3.0]), np.array([-2.0, -2.0, -1.0])
    np.testing.assert_allclose(pair_preference(a, b), [0.7310586, 0.5, 0.1192029], atol=1e-6)
    np.testing.assert_allclose(
        pair_preference(a, b, temperature=2.0), [0.6224593, 0.5, 0.2689414], atol=1e-6
    )
    np.testing.assert_allclose(pair_preference([1000.0, -1000.0], [0.0, 0.0]), [1.0, 0.0])
    with pytest.raises(ValueError, match="temperature"):
        pair_preference(a, b, temperature=0.0)
    with pytest.raises(ValueError, match="shapes"):
        pair_preference(a, b[:2])


def test_implicit_reward_preference_by_hand() -> None:
    """policy_a -10, ref_a -12 (+2); policy_b -9, ref_b -10 (+1); beta .5
    -> sigmoid(.5 * (2 - 1)) = 1/(1+e^-.5) = .6225. Swapping a and b gives 1 - .6225."""
    got = implicit_reward_preference([-10.0], [-12.0], [-9.0], [-10.0], beta=0.5)
    assert got[0] == pytest.approx(1 / (1 + math.exp(-0.5)))
    swapped = implicit_reward_preference([-9.0], [-10.0], [-10.0], [-12.0], beta=0.5)
    assert swapped[0] == pytest.approx(1 - got[0])
    with pytest.raises(ValueError, match="beta"):
        implicit_reward_preference([0.0], [0.0], [0.0], [0.0], beta=-1.0)


def test_likert_distribution_is_softmax_of_scores_and_tracks_the_model(
    tiny: tuple[Any, Any, Path],
) -> None:
    """Rows sum to 1, equal softmax(logp_mean) of the template + " option" scores, and
    change when the model's weights change."""
    model, tok, path = tiny
    statements = ["Parks should get more money.", "Taxes are too high."]
    options = ["disagree", "neutral", "agree"]
    dist = likert_distribution(model, tok, statements, options)
    assert dist.shape == (2, 3)
    np.testing.assert_allclose(dist.sum(axis=1), [1.0, 1.0])
    assert np.all(dist > 0)

    prompt = DEFAULT_LIKERT_TEMPLATE.format(text=statements[1])
    scores = score_completions(model, tok, [prompt] * 3, [" " + o for o in options])
    logits = scores["logp_mean"].to_numpy()
    want = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(dist[1], want, atol=1e-6)

    other = load_model(path)
    with torch.no_grad():
        torch.manual_seed(0)
        for p in other.parameters():
            p.add_(0.5 * torch.randn_like(p))
    changed = likert_distribution(other, tok, statements, options)
    np.testing.assert_allclose(changed.sum(axis=1), [1.0, 1.0])
    assert np.abs(changed - dist).max() > 1e-3

    with pytest.raises(ValueError, match="distinct"):
        likert_distribution(model, tok, statements, ["agree", "agree"])
    with pytest.raises(ValueError, match="text"):
        likert_distribution(model, tok, statements, options, template="Q: {statement}")
