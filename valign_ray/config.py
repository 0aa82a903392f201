"""Typed, immutable configuration: every default lives here, once.

A YAML file under ``configs/`` states only what differs from these defaults; unknown keys and
wrong types are rejected by :mod:`valign_ray.config_loader` with the valid keys listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from valign_ray.config_loader import apply_overrides, from_dict, load_yaml


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    n_population: int = 20000
    n_sample: int = 600
    n_dimensions: int = 3
    items_per_dimension: int = 8
    statements_per_dimension: int = 2
    pairwise_fraction: float = 0.5
    group_effect: float = 1.5
    noise: float = 1.0
    flip: float = 0.05
    oversample: dict[str, dict[str, float]] | None = None  # None: the generator's default bias
    response_rate: dict[str, dict[str, float]] | None = None


@dataclass(frozen=True)
class FilesConfig:
    instrument: str = "data/examples/instrument.yaml"
    respondents: str = "data/examples/respondents.csv"
    answers: str = "data/examples/answers.csv"


@dataclass(frozen=True)
class SurveyConfig:
    source: Literal["synthetic", "files", "polis"] = "synthetic"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    polis_dir: str = "data/polis/scoop-hivemind.biodiversity"  # any Polis export folder
    salt: str = "change-me"  # pseudonymisation salt; keep it secret in production
    strict: bool = False  # fail on the first bad row instead of quarantining


@dataclass(frozen=True)
class WeightingConfig:
    enabled: bool = True  # false: every respondent weighs 1 (the "unweighted" baseline)
    margins: str = "data/margins/nz_2023.csv"
    variables: tuple[str, ...] = ("age_band", "gender", "region_group")
    trim_max: float | None = 5.0  # cap on weight / mean weight, then re-rake
    tol: float = 1e-10
    max_iter: int = 1000


@dataclass(frozen=True)
class DataConfig:
    holdout_respondents: float = 0.25  # share of respondents held out for evaluation
    holdout_items: float = 0.0  # share of items kept out of training (answers_heldout_items)
    split_seed: int = 0
    max_length: int = 96  # tokens per prompt + completion
    group_column: str = "age_band"  # respondent group recorded on each training row
    answers: Literal["ratings", "likert"] = "ratings"  # train on ratings, or on Likert answers
    likert_options: dict[int, str] | None = None  # answer value -> option text; null: Polis's


@dataclass(frozen=True)
class ConstitutionConfig:
    enabled: bool = True  # build constitution.yaml when the survey has statements
    # Groups that must all agree; null: the opinion groups ("group") when respondents have
    # them, else data.group_column.
    group_column: str | None = None
    threshold: float = 0.6  # minimum weighted agree share in every group
    min_votes_per_group: int = 5  # fewer answers in a group make a statement ineligible


@dataclass(frozen=True)
class TinyConfig:
    arch: Literal["llama", "qwen2"] = "llama"
    vocab_size: int = 2048
    hidden_size: int = 144
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    seed: int = 0


@dataclass(frozen=True)
class LoraConfig:
    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    merge: bool = True  # export the adapter merged into the base weights


@dataclass(frozen=True)
class ModelConfig:
    path: str | None = None  # a local Hugging Face folder; null builds the tiny model
    tiny: TinyConfig = field(default_factory=TinyConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass(frozen=True)
class LossConfig:
    name: Literal["kto", "dpo", "sft"] = "kto"
    beta: float = 0.1
    lambda_d: float | Literal["auto"] = 1.0  # KTO weight of desirable examples
    lambda_u: float | Literal["auto"] = 1.0  # KTO weight of undesirable examples
    dpo_type: Literal["sigmoid", "ipo"] = "sigmoid"
    label_smoothing: float = 0.0  # conservative DPO
    soft_labels: bool = False  # DPO target = the survey's weighted share preferring


@dataclass(frozen=True)
class TrainConfig:
    num_workers: int = 2
    use_gpu: bool = False
    batch_size: int = 8  # per worker, per micro-step
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; null: run the epochs
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    grad_clip: float = 1.0
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["fp32", "bf16"] = "fp32"
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0: only the final one
    # Steps between metric reports to Ray Train (W&B and metrics.jsonl get every step): the
    # Train V2 controller takes one report per worker per poll, so per-step reports stall.
    report_every: int = 10
    max_failures: int = 0  # Ray Train restarts from the latest checkpoint
    weighted: bool = True  # false ignores survey weights in the loss (ablation)
    seed: int = 0


@dataclass(frozen=True)
class WandbConfig:
    enabled: bool = True
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "valign-ray"
    entity: str | None = None


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # null: join RAY_ADDRESS or start a local Ray; "local": always new
    num_cpus: int | None = None  # for the embedded Ray; null lets Ray count the cores


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 64


@dataclass(frozen=True)
class PipelineConfig:
    name: str = "run"
    output_dir: str = "runs"  # the run directory is output_dir/name
    survey: SurveyConfig = field(default_factory=SurveyConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    constitution: ConstitutionConfig = field(default_factory=ConstitutionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Load a pipeline config from YAML plus ``--set`` overrides; errors name the bad key."""
    data = apply_overrides(load_yaml(path), list(overrides))
    return from_dict(PipelineConfig, data)


def public_config_dict(cfg: PipelineConfig) -> dict:
    """The config as a plain dict for places others can read (W&B, model cards): the
    pseudonymisation salt is redacted, since with it respondent ids could be re-derived."""
    from valign_ray.config_loader import to_dict

    data = to_dict(cfg)
    data["survey"]["salt"] = "<redacted>"
    return data
