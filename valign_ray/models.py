"""Load causal LMs and tokenizers from local folders, and build a tiny one deterministically.

Everything loads with ``from_pretrained(local_path)``: there is no hub access anywhere. The tiny
builder writes a real Hugging Face folder (BPE tokenizer trained on the survey's own text plus a
randomly initialised Llama or Qwen2), so tests and the quickstart take the same loading path as a
production model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from valign_ray.config import TinyConfig
from valign_ray.errors import InputError, read_utf8

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def load_tokenizer(path: str | Path) -> Any:
    """Tokenizer from a local folder; a pad token is required for batching, so one must exist."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer at {path} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


def check_model_folder(path: str | Path) -> None:
    """Refuse, naming the folder and file, what :func:`load_model` cannot load safely: a
    missing folder, no or unreadable ``config.json``, an architecture this transformers does
    not know, or weights only in pickle files (``pytorch_model.bin``: unpickling runs code)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    path = Path(path)
    if not path.is_dir():
        raise InputError("model folder not found (model.path)", path=path)
    config = path / "config.json"
    if not config.is_file():
        raise InputError("no config.json: not a Hugging Face model folder", path=path)
    try:
        model_type = json.loads(read_utf8(config, "config.json")).get("model_type")
    except (json.JSONDecodeError, AttributeError):
        raise InputError("not a JSON object with a model_type", path=config) from None
    if model_type not in CONFIG_MAPPING_NAMES:
        raise InputError(
            f"model_type {model_type!r} is not an architecture this transformers knows",
            path=config,
        )
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        what = f"only pickle weights {pickles}" if pickles else "no *.safetensors weights"
        raise InputError(
            f"{what}; valign loads safetensors only (pickle files can run code when loaded): "
            "convert them, e.g. model.save_pretrained(folder, safe_serialization=True)",
            path=path,
        )


def load_model(path: str | Path, *, dtype: str = "float32", device_map: str | None = None) -> Any:
    """Causal LM from a local folder (a full model, or a base model saved with a LoRA merge);
    weights load from safetensors only (see :func:`check_model_folder`). ``device_map="auto"``
    spreads the layers over the visible GPUs (a model too large for one; inference only)."""
    import torch
    from transformers import AutoModelForCausalLM

    check_model_folder(path)
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(path),
            local_files_only=True,
            dtype=getattr(torch, dtype),
            use_safetensors=True,
            device_map=device_map,
        )
    except (OSError, ValueError) as exc:  # e.g. a config that is not a causal LM's
        raise InputError(
            f"cannot load a causal LM: {str(exc).splitlines()[0]}", path=path
        ) from None


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` and save it as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Sorted, deduplicated input makes the merges independent of the order rows arrived in.
    tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS
    )
    fast.save_pretrained(str(out_dir))
    return fast


def build_tiny_model(
    out_dir: str | Path, texts: Iterable[str], spec: TinyConfig | None = None
) -> Path:
    """Write a tokenizer + random-init causal LM to ``out_dir``; same inputs give the same files.

    Returns ``out_dir``; load it back with :func:`load_model` / :func:`load_tokenizer`.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    spec = TinyConfig() if spec is None else spec
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(texts, spec.vocab_size, out)
    common = dict(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    if spec.arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif spec.arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        raise ValueError(f"unknown tiny arch {spec.arch!r}; valid: llama, qwen2")
    model.save_pretrained(str(out))
    return out


def count_parameters(model: Any) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
