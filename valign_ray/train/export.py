"""The trained model as a Hugging Face folder with a model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from valign_ray.train.worker import TrainJob

HF_EXPORT = "hf_model"  # the export's folder inside the final checkpoint


def export_model(
    module: Any,
    job: TrainJob,
    out: Path,
    tokenizer: Any,
    metrics: dict[str, float],
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """A Hugging Face folder that ``AutoModelForCausalLM.from_pretrained`` loads, with a card.

    A LoRA model is saved as its adapter and, when ``model.lora.merge`` is set, merged into a
    fresh copy of the base weights (on CPU, whatever the ZeRO stage), so the folder is a plain
    model again.
    """
    lora = job.config.model.lora
    if lora.enabled:
        adapter = out.parent / "adapter"
        module.save_pretrained(str(adapter), state_dict=state_dict)
        if lora.merge:
            from peft import PeftModel

            from valign_ray.models import load_model

            merged = PeftModel.from_pretrained(load_model(job.model_path), str(adapter))
            merged.merge_and_unload().save_pretrained(str(out))
        else:
            shutil.copytree(adapter, out)
    else:
        module.save_pretrained(str(out), state_dict=state_dict)
    tokenizer.save_pretrained(str(out))
    (out / "README.md").write_text(model_card(job, metrics))
    return out


def model_card(job: TrainJob, metrics: dict[str, float]) -> str:
    """Markdown: base model, method, training settings, dataset card, final metrics, config
    (the pseudonymisation salt redacted)."""
    from valign_ray.config import public_config_dict

    cfg = job.config
    lines = [
        f"# {cfg.name}: {cfg.loss.name.upper()} on survey-weighted data (valign-ray)",
        "",
        f"- base model: `{job.model_path}`",
        f"- loss: {cfg.loss.name}, beta {cfg.loss.beta}; LoRA: {cfg.model.lora.enabled}",
        f"- training: {cfg.train.epochs} epochs, lr {cfg.train.lr}, ZeRO-{cfg.train.zero_stage}, "
        f"{cfg.train.num_workers} workers, survey weights {'on' if cfg.train.weighted else 'off'}",
        "",
        "## Dataset card",
        "```json",
        json.dumps(job.dataset_card or {}, indent=2),
        "```",
        "## Final training metrics",
        "```json",
        json.dumps({k: round(v, 6) for k, v in metrics.items()}, indent=2),
        "```",
        "## Config",
        "```json",
        json.dumps(public_config_dict(cfg), indent=2),
        "```",
    ]
    return "\n".join(lines) + "\n"
