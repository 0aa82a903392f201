"""AI feedback labels: the arithmetic by hand, option scoring against a full forward, batch-size
independence, implicit rewards by hand, and a feedback model trained to prefer kind answers."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import polars as pl
import pytest
import torch

from valign_ray.cai.constitution import CaiConstitution, CaiPrinciple, sample_principles
from valign_ray.cai.feedback import (
    choice_labels,
    clamp_labels,
    implicit_reward_labels,
    option_logprobs,
    option_probability,
    option_token_ids,
    principle_average,
    two_order_labels,
)
from valign_ray.cai.generate import record_seed
from valign_ray.cai.templates import CaiTemplates, load_templates
from valign_ray.train.logprobs import Encoded, collate, completion_logps

REPO = Path(__file__).resolve().parents[1]
LOG = math.log
QUESTIONS = ["Hi?", "Reply?", "Advice?"]
KIND = ["be kind", "kind words", "a kind note", "stay kind"]
OTHER = ["go away", "be rude", "say nothing", "shout"]
PRINCIPLES = (
    CaiPrinciple("nice", "Be nice.", {"a": 0.8, "b": 0.6}, 0.7),
    CaiPrinciple("care", "Care.", {"a": 0.5, "b": 0.9}, 0.6),
    CaiPrinciple("calm", "Stay calm.", {"a": 0.2, "b": 0.4}, 0.3),
)
CONSTITUTION = CaiConstitution("test", "test", PRINCIPLES)
# A short comparison prompt keeps the tiny model's sequences at about 35 tokens.
SHORT = "{principle} Q: {prompt} A: {response_a} B: {response_b} Better:"
CHAT = (
    "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny model's matmuls are too small to split, and on a shared
    2-core machine a second thread spins (the training test: 1.9 s of CPU on one thread, 46 s
    on two, measured under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def templates() -> CaiTemplates:
    base = load_templates(REPO / "configs/cai_templates.yaml")
    return CaiTemplates("short", dict(base.texts, comparison_prompt=SHORT))


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory, templates) -> Path:
    """A tiny Llama whose tokenizer knows the templates, principles and answers (~3 s)."""
    from valign_ray.config import TinyConfig
    from valign_ray.models import build_tiny_model

    texts = templates.literal_texts() + QUESTIONS + KIND + OTHER + ["(A)", "(B)"]
    texts += [p.text for p in PRINCIPLES]
    spec = TinyConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
    )
    return build_tiny_model(tmp_path_factory.mktemp("feedback"), texts, spec)


def _load(folder: Path) -> tuple[torch.nn.Module, object]:
    from valign_ray.models import load_model, load_tokenizer

    return load_model(folder).eval(), load_tokenizer(folder)


def _pairs(rows: list[tuple[str, str, str, str]]) -> pl.DataFrame:
    schema = ["pair_id", "question", "response_a", "response_b"]
    return pl.DataFrame(rows, schema=schema, orient="row")


# -------------------------------------------------------------------- arithmetic by hand


def test_option_probability_renormalises_over_the_two_options():
    """p(A) = 0.6, p(B) = 0.2 (the rest of the vocabulary holds 0.2): 0.6 / 0.8 = 0.75.
    Multi-token options: (A) = "(", "A", ")" with 0.5, 0.8, 0.9 -> 0.36; (B) with 0.5, 0.1, 0.9
    -> 0.045; the sequences' log-probs are the sums, 0.36 / 0.405 = 0.888889."""
    assert option_probability(t(LOG(0.6), LOG(0.2))).item() == pytest.approx(0.75, abs=1e-12)
    seq_a = LOG(0.5) + LOG(0.8) + LOG(0.9)
    seq_b = LOG(0.5) + LOG(0.1) + LOG(0.9)
    assert option_probability(t(seq_a, seq_b)).item() == pytest.approx(0.36 / 0.405, abs=1e-12)
    assert option_probability(t(-1000.0, -1001.0)).item() == pytest.approx(1 / (1 + math.e**-1))


def test_two_orders_average_cancels_position_bias():
    """Order AB: p((A)) = 0.6, p((B)) = 0.2 -> label_ab 0.75. Order BA (answers swapped, so
    "(B)" now names response_a): p((A)) = 0.3, p((B)) = 0.3 -> label_ba 0.5; label 0.625.
    A model that always says "(A)" with 0.9 vs 0.1 gives 0.9 and 0.1: label 0.5."""
    label, ab, ba = two_order_labels(t(LOG(0.6), LOG(0.2)), t(LOG(0.3), LOG(0.3)))
    assert (ab.item(), ba.item(), label.item()) == pytest.approx((0.75, 0.5, 0.625), abs=1e-12)
    label, ab, ba = two_order_labels(t(LOG(0.9), LOG(0.1)), t(LOG(0.9), LOG(0.1)))
    assert (ab.item(), ba.item(), label.item()) == pytest.approx((0.9, 0.1, 0.5), abs=1e-12)


def test_principle_average_and_clamp_by_hand():
    """Principle 1: 0.625 (above). Principle 2: AB 0.9 vs 0.1 -> 0.9; BA p((A)) = 0.2,
    p((B)) = 0.6 -> 0.75; label 0.825. Mean over the two: 0.725. Clamp [0.2, 0.8]:
    0.725 stays, 0.9 -> 0.8, 0.1 -> 0.2; [0.4, 0.6] (the paper's) takes 0.725 to 0.6."""
    ab = torch.tensor([[[LOG(0.6), LOG(0.2)], [LOG(0.9), LOG(0.1)]]], dtype=torch.float64)
    ba = torch.tensor([[[LOG(0.3), LOG(0.3)], [LOG(0.2), LOG(0.6)]]], dtype=torch.float64)
    label, _, _ = two_order_labels(ab, ba)  # [1 pair, 2 principles]
    assert label[0].tolist() == pytest.approx([0.625, 0.825], abs=1e-12)
    assert principle_average(label).tolist() == pytest.approx([0.725], abs=1e-12)
    clamped = clamp_labels(t(0.1, 0.725, 0.9), (0.2, 0.8)).tolist()
    assert clamped == pytest.approx([0.2, 0.725, 0.8], abs=1e-12)
    assert clamp_labels(t(0.725), (0.4, 0.6)).item() == pytest.approx(0.6)
    assert clamp_labels(t(0.1, 0.9), None).tolist() == [0.1, 0.9]


# ------------------------------------------------------------------------ option scoring


def test_option_logprobs_sum_the_option_tokens_of_a_full_forward(feedback_dir):
    """Per prompt and option: the log-softmax of one full forward over prompt ids + option ids
    (each tokenised on its own), summed over the option's tokens, computed here in float64."""
    model, tok = _load(feedback_dir)
    prompts = ["Be nice. Q: Hi? A: be kind B: shout Better:", "Care. Q: Advice?"]
    options = ("(A)", " (B)")
    opt_ids = option_token_ids(tok, options)
    assert min(len(o) for o in opt_ids) >= 2  # multi-token options
    got = option_logprobs(model, tok, prompts, options, batch_size=2)
    for row, prompt in enumerate(prompts):
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        for col, o_ids in enumerate(opt_ids):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([p_ids + o_ids])).logits[0].double()
            logp = torch.log_softmax(logits, dim=-1)
            hand = sum(logp[len(p_ids) - 1 + k, tok_id].item() for k, tok_id in enumerate(o_ids))
            assert got[row, col].item() == pytest.approx(hand, abs=1e-4)


def test_option_logprobs_do_not_depend_on_batch_size(feedback_dir):
    """Batch sizes 1, 3 and 8 and a shuffled order give the same numbers (to 1e-5) for prompts
    of different lengths (so the right padding differs), including an empty prompt (BOS)."""
    model, tok = _load(feedback_dir)
    prompts = [
        f"{p.text} Q: {q} A: {a} B: {b} Better:"
        for p, q, a, b in zip(
            PRINCIPLES * 3, QUESTIONS * 3, KIND + OTHER, OTHER + KIND, strict=False
        )
    ] + ["", "Q:", "Stay calm. Q: Reply? A: say nothing at all, never, ever B: shout Better:"]
    one = option_logprobs(model, tok, prompts, ("(A)", "(B)"), batch_size=1)
    assert one.shape == (len(prompts), 2) and torch.isfinite(one).all()
    for size in (3, 8):
        got = option_logprobs(model, tok, prompts, ("(A)", "(B)"), batch_size=size)
        torch.testing.assert_close(got, one, atol=1e-5, rtol=0)
    order = [5, 9, 0, 10, 3, 7, 1, 8, 2, 6, 4]
    shuffled = option_logprobs(model, tok, [prompts[i] for i in order], ("(A)", "(B)"), 8)
    torch.testing.assert_close(shuffled, one[order], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("options", "what"),
    [
        (("(A)", "(A)"), "identical"),
        (("", "(B)"), "empty"),
        (("(A)", "   "), "empty"),
        (("(A)",), "exactly two"),
    ],
)
def test_bad_options_name_the_config_key(feedback_dir, templates, options, what):
    model, tok = _load(feedback_dir)
    pairs = _pairs([("p0", "Hi?", "be kind", "shout")])
    with pytest.raises(ValueError, match=rf"cai\.feedback\.options.*{what}"):
        choice_labels(pairs, CONSTITUTION, templates, model, tok, options=options)
    with pytest.raises(ValueError, match=r"cai\.feedback\.options"):
        option_logprobs(model, tok, ["Hi?"], options)


def test_bad_clamp_and_pairs(feedback_dir, templates):
    model, tok = _load(feedback_dir)
    pairs = _pairs([("p0", "Hi?", "be kind", "shout")])
    for clamp in [(0.7, 0.3), (-0.1, 0.5), (0.2, 1.5)]:
        with pytest.raises(ValueError, match=r"cai\.feedback\.clamp"):
            choice_labels(pairs, CONSTITUTION, templates, model, tok, clamp=clamp)
    with pytest.raises(ValueError, match=r"lack column\(s\) \['response_b'\]"):
        choice_labels(pairs.drop("response_b"), CONSTITUTION, templates, model, tok)


# ----------------------------------------------------------------------- choice labels


def test_choice_labels_are_the_arithmetic_of_the_scored_prompts(feedback_dir, templates):
    """M = 3 principles per pair from record_seed(seed, "feedback:{pair_id}:{m}"); every
    label recomputed here from single-prompt scores of the rendered prompts, both orders; a
    pair's label does not depend on the other pairs, their order or the batch size; clamping
    touches only ``label``."""
    model, tok = _load(feedback_dir)
    rows = [(f"p{i}", QUESTIONS[i % 3], KIND[i], OTHER[(i + 1) % 4]) for i in range(4)]
    pairs = _pairs(rows)
    kw = dict(principles_per_pair=3, seed=11, batch_size=4)
    out = choice_labels(pairs, CONSTITUTION, templates, model, tok, **kw)
    assert out.columns == [
        *pairs.columns,
        "label",
        "label_ab",
        "label_ba",
        "principle_ids",
        "template_hash",
    ]
    assert out["template_hash"].unique().to_list() == [templates.hash("comparison_prompt")]
    texts = {p.id: p.text for p in PRINCIPLES}
    for (pid, q, a, b), got in zip(rows, out.iter_rows(named=True), strict=True):
        seeds = [record_seed(11, f"feedback:{pid}:{m}") for m in range(3)]
        ids = sample_principles(PRINCIPLES, "population_support", seeds)
        assert got["principle_ids"] == ids
        ab, ba = [], []
        for principle in (texts[i] for i in ids):
            for first, second, into in ((a, b, ab), (b, a, ba)):
                prompt = SHORT.format(
                    principle=principle, prompt=q, response_a=first, response_b=second
                )
                la, lb = option_logprobs(model, tok, [prompt], ("(A)", "(B)"), 1)[0].tolist()
                p_first = math.exp(la) / (math.exp(la) + math.exp(lb))
                into.append(p_first if into is ab else 1 - p_first)
        assert got["label_ab"] == pytest.approx(sum(ab) / 3, abs=1e-5)
        assert got["label_ba"] == pytest.approx(sum(ba) / 3, abs=1e-5)
        assert got["label"] == pytest.approx((sum(ab) + sum(ba)) / 6, abs=1e-5)
    alone = choice_labels(pairs.reverse().head(2), CONSTITUTION, templates, model, tok, **kw)
    expect = out.reverse().head(2)
    assert alone["principle_ids"].to_list() == expect["principle_ids"].to_list()
    assert alone["label"].to_list() == pytest.approx(expect["label"].to_list(), abs=1e-5)
    lo, hi = sorted(out["label"].to_list())[1:3]  # clamp between the 2nd and 3rd labels
    clamped = choice_labels(pairs, CONSTITUTION, templates, model, tok, clamp=(lo, hi), **kw)
    assert clamped["label"].to_list() == pytest.approx(
        [min(max(x, lo), hi) for x in out["label"]], abs=1e-5
    )
    assert clamped["label_ab"].to_list() == pytest.approx(out["label_ab"].to_list(), abs=1e-5)
    empty = choice_labels(pairs.head(0), CONSTITUTION, templates, model, tok, **kw)
    assert empty.height == 0 and "label" in empty.columns


def _train_to_prefer_kind(model, tok, templates, steps: int = 100) -> None:
    """Plain torch: minimise -log P(option naming the kind answer), the two options' sequence
    probabilities renormalised, over every kind x other answer pair in both positions, for two
    of the three questions and all three principles."""
    opt = option_token_ids(tok, ("(A)", "(B)"))
    examples = []
    for p, q, k, o in itertools.product(PRINCIPLES, QUESTIONS[:2], KIND, OTHER):
        for a, b, right in ((k, o, 0), (o, k, 1)):
            prompt = templates.render(
                "comparison_prompt", tok, principle=p.text, prompt=q, response_a=a, response_b=b
            )
            ids = tok(prompt, add_special_tokens=False)["input_ids"]
            examples.append([Encoded(ids, opt[right]), Encoded(ids, opt[1 - right])])
    torch.manual_seed(0)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(examples))[:16].tolist()
        batch = collate([e for i in idx for e in examples[i]], tok.pad_token_id)
        logps, _ = completion_logps(model, batch)
        right, wrong = logps.view(-1, 2).unbind(-1)
        loss = -torch.nn.functional.logsigmoid(right - wrong).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()


def test_feedback_model_trained_to_prefer_kind_answers(feedback_dir, templates):
    """A feedback model trained (100 plain torch steps) to pick the option naming the answer with
    "kind" gives, on the held-out third question, label > 0.98 when response_a is the kind one
    and < 0.02 when response_b is, in each order separately: the label follows the answer, not
    its position. The untrained model is near 0.5 everywhere."""
    model, tok = _load(feedback_dir)
    rows = []
    for i, (k, o) in enumerate(itertools.product(KIND, OTHER)):
        rows += [(f"k{i}", QUESTIONS[2], k, o), (f"o{i}", QUESTIONS[2], o, k)]
    pairs = _pairs(rows)
    before = choice_labels(pairs, CONSTITUTION, templates, model, tok, principles_per_pair=2)
    assert before["label"].is_between(0.2, 0.8).all()
    _train_to_prefer_kind(model, tok, templates)
    out = choice_labels(pairs, CONSTITUTION, templates, model, tok, principles_per_pair=2)
    kind_a = out.filter(pl.col("pair_id").str.starts_with("k"))
    kind_b = out.filter(pl.col("pair_id").str.starts_with("o"))
    cols = ("label", "label_ab", "label_ba")
    worst = {c: (kind_a[c].min(), kind_b[c].max()) for c in cols}
    print("worst (kind in a: min, kind in b: max):", worst)
    assert all(lo > 0.98 and hi < 0.02 for lo, hi in worst.values()), worst


# --------------------------------------------------------------------- implicit reward


def _hand_logp(model, tok, question: str, response: str) -> float:
    """Sum of log p(response token | ...) after "<|user|>{question}<|assistant|>" (the chat
    template written out by hand), the response tokenised alone with EOS appended."""
    p_ids = tok(f"<|user|>{question}<|assistant|>", add_special_tokens=False)["input_ids"]
    c_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p_ids + c_ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(logp[len(p_ids) - 1 + k, c].item() for k, c in enumerate(c_ids))


def test_implicit_reward_labels_by_hand(feedback_dir):
    """reward = sum log pi - sum log pi_ref of the response after the chat-formatted question;
    label = sigmoid(beta * (reward_a - reward_b)); the reference is the policy with noise
    added to every weight. With policy == reference every label is exactly 0.5."""
    policy, tok = _load(feedback_dir)
    reference, _ = _load(feedback_dir)
    tok.chat_template = CHAT
    torch.manual_seed(1)
    with torch.no_grad():
        for w in reference.parameters():
            w.add_(0.05 * torch.randn_like(w))
    rows = [("x", "Hi?", "be kind", "go away"), ("y", "Advice?", "shout", "a kind note")]
    pairs = _pairs(rows + [("z", "Reply?", "say nothing", "say nothing")])
    out = implicit_reward_labels(pairs, policy, reference, tok, beta=0.5, batch_size=2)
    assert out.columns == [*pairs.columns, "reward_a", "reward_b", "label"]
    for (_, q, a, b), got in zip(rows, out.iter_rows(named=True), strict=False):
        r_a = _hand_logp(policy, tok, q, a) - _hand_logp(reference, tok, q, a)
        r_b = _hand_logp(policy, tok, q, b) - _hand_logp(reference, tok, q, b)
        assert abs(r_a - r_b) > 0.01  # the noise moved the rewards apart
        assert (got["reward_a"], got["reward_b"]) == pytest.approx((r_a, r_b), abs=1e-4)
        assert got["label"] == pytest.approx(1 / (1 + math.exp(-0.5 * (r_a - r_b))), abs=1e-5)
    assert out["label"][2] == pytest.approx(0.5, abs=1e-6)  # identical answers
    same = implicit_reward_labels(pairs, policy, policy, tok, beta=0.5)
    assert same["label"].to_list() == [0.5, 0.5, 0.5]
    assert same["reward_a"].to_list() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="beta"):
        implicit_reward_labels(pairs, policy, reference, tok, beta=0.0)
