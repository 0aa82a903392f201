"""The memory planner: parameter counts, ZeRO arithmetic by hand, and DeepSpeed's own tensors."""

from __future__ import annotations

import pytest

from valign_ray.memory_plan import SHAPES, ModelShape, Setup, estimate, state_bytes

SMALL = dict(
    model_type="qwen2",
    vocab_size=1000,
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
    tie_word_embeddings=False,
)


@pytest.mark.parametrize(
    ("name", "published"),
    # Parameter counts on the Qwen2.5 model cards: 7.61 B, 14.7 B, 32.5 B (the 32B card rounds
    # down; its safetensors index holds 32.76 B).
    [("qwen2.5-7b", 7.61e9), ("qwen2.5-14b", 14.7e9), ("qwen2.5-32b", 32.5e9)],
)
def test_qwen_shapes_match_published_sizes(name, published):
    assert SHAPES[name].total_params() == pytest.approx(published, rel=0.01)


def test_7b_count_by_hand():
    # block: q 3584*3584+3584, k and v 3584*512+512 each, o 3584*3584, MLP 3*3584*18944,
    # norms 2*3584 = 233,057,792; 28 blocks + untied embedding and head 2*152064*3584 + norm.
    assert SHAPES["qwen2.5-7b"].layer_params() == 233_057_792
    assert SHAPES["qwen2.5-7b"].total_params() == 28 * 233_057_792 + 2 * 152064 * 3584 + 3584


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_counts_match_transformers(arch, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    from valign_ray.models import count_parameters

    cfg = {**SMALL, "model_type": arch, "tie_word_embeddings": arch == "llama"}
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
    shape = ModelShape.from_hf_config(cfg)
    assert shape.total_params() == count_parameters(model)
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "down_proj"]))
    trainable = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    assert shape.lora_params(4, ("q_proj", "down_proj")) == trainable
    model.config.to_json_file(tmp_path / "config.json")
    assert ModelShape.from_path(tmp_path).total_params() == shape.total_params()


def test_zero_stages_by_hand():
    # A 1,130-parameter toy in bf16 on 4 GPUs: the ZeRO paper's 2P + 2P + 12P split over N.
    shape = ModelShape("toy", 10, 20, 1, 1, 1, 10, True, False)
    p = shape.total_params()
    # tied embedding 10x10; block: q, k, v, o 4 x 10x10, MLP 3 x 10x20, two norms; final norm
    assert p == 100 + (400 + 600 + 20) + 10 == 1130
    for stage, expect in {
        0: (2 * p, 2 * p, 12 * p),
        1: (2 * p, 2 * p, 12 * p // 4),
        2: (2 * p, 2 * p // 4, 12 * p // 4),
        3: (2 * p // 4, 2 * p // 4, 12 * p // 4),
    }.items():
        assert state_bytes(shape, Setup(zero_stage=stage))[:3] == expect
    # Offloading the optimizer: its 12P and the fp32 gradients 4P leave the GPUs for the host.
    params, grads, opt, host = state_bytes(shape, Setup(zero_stage=3, offload="optimizer"))
    assert (params, grads, opt, host) == (2 * p // 4, 0, 0, 4 * (12 * p // 4 + 4 * p // 4))
    with pytest.raises(ValueError, match="ZeRO-3"):
        state_bytes(shape, Setup(zero_stage=2, offload="all"))


def test_activation_checkpointing_shrinks_activations():
    shape, s = SHAPES["qwen2.5-7b"], Setup()
    full = estimate(shape, s).activations
    ckpt = estimate(shape, Setup(activation_checkpointing=True)).activations
    assert ckpt < full / 10
    assert estimate(shape, s).reference == 0  # cached log-probs: no second model


def test_activation_formula_matches_saved_tensors():
    """Bytes autograd keeps in a Qwen2's blocks (counted through saved-tensor hooks) vs the
    formula: measured 0.97 of it in fp32 and 0.98 in bf16."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from valign_ray.memory_activations import activation_bytes

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**SMALL)).train()
    ids = torch.randint(0, 1000, (2, 64))
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model(input_ids=ids)
    got = sum(n for ptr, n in saved.items() if ptr not in params)
    planned = activation_bytes(ModelShape.from_hf_config(SMALL), 128, "fp32", False)
    assert got == pytest.approx(planned, rel=0.15)


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_plan_matches_deepspeed_tensors(stage, local_process_group):
    """One rank's engine tensors after a step (``memory_probe``) vs the plan; measured equal to
    the byte (fp32, world size 1; world size 2: experiments/benchmarks/validate_memory_plan.py)."""
    from valign_ray.config import TrainConfig
    from valign_ray.train.memory_probe import probe_engine

    got = probe_engine(SMALL, TrainConfig(zero_stage=stage, batch_size=2), 1)
    params, grads, optimizer, _ = state_bytes(
        ModelShape.from_hf_config(SMALL), Setup(gpus=1, zero_stage=stage, precision="fp32")
    )
    assert got.params == pytest.approx(params, rel=0.15)
    assert got.grads == pytest.approx(grads, rel=0.15)
    assert got.optimizer == pytest.approx(optimizer, rel=0.15)


def test_cli_prints_the_a40_table(capsys):
    from valign_ray.cli import main

    assert main(["plan-memory"]) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-32b" in out and "Settings that fit:" in out
    assert "- qwen2.5-32b: LoRA r16 ZeRO-3 offload=none" in out
    assert "- qwen2.5-32b: full ZeRO-2" not in out


@pytest.mark.parametrize("lora", [False, True])
def test_activation_checkpointing_key_keeps_gradients(lora, tiny_model_dir):
    """``train.activation_checkpointing`` recomputes blocks: the same gradients, full or LoRA."""
    import dataclasses

    import torch

    from valign_ray.config import PipelineConfig
    from valign_ray.train.worker import TrainJob, _load_model_for_training

    cfg = PipelineConfig()
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(
            cfg.model, lora=dataclasses.replace(cfg.model.lora, enabled=lora)
        ),
    )
    grads = []
    for ckpt in (False, True):
        run = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, activation_checkpointing=ckpt, zero_stage=2)
        )
        torch.manual_seed(0)
        model = _load_model_for_training(TrainJob(run, str(tiny_model_dir)), {}).train()
        ids = torch.randint(3, 100, (2, 12))
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


def test_logits_are_one_head_chunk_not_every_position() -> None:
    """Qwen2.5-0.5B's shape (V 151,936, h 896), bf16, 8 x 1024 tokens: one chunk of 1,024
    positions x V x (2 + 4 + 8) bytes = 2,178,154,496, plus 8,192 x 896 x 2 = 14,680,064 for
    the hidden states kept; every position at once would be 8x the first term (17.4 GB)."""
    from valign_ray.memory_activations import logits_bytes

    shape = ModelShape(
        name="q", hidden_size=896, intermediate_size=4864, num_layers=24, num_heads=14,
        num_kv_heads=2, vocab_size=151_936, tie_word_embeddings=True, attention_bias=True,
    )  # fmt: skip
    assert logits_bytes(shape, 8 * 1024, "bf16") == 1024 * 151_936 * 14 + 8192 * 896 * 2
    assert 1024 * 151_936 * 14 == 2_178_154_496 and 8192 * 896 * 2 == 14_680_064
    assert logits_bytes(shape, 10, "fp32") == 10 * 151_936 * 16 + 10 * 896 * 4  # under a chunk
