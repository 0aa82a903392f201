"""Typed, immutable configuration: every default and every allowed range lives here, once.

A YAML file under ``configs/`` states only what differs from these defaults. The classes are
pydantic dataclasses: unknown keys, wrong types and out-of-range values are rejected whenever a
config is built (from YAML, in code, or by ``dataclasses.replace``), and
:mod:`valign_ray.config_loader` names the key, the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

# The Constitutional AI section lives in its own module (kept under 400 lines); re-exported.
from valign_ray.config_cai import CaiConfig as CaiConfig
from valign_ray.config_cai import CaiFeedbackConfig as CaiFeedbackConfig
from valign_ray.config_cai import CaiPromptsConfig as CaiPromptsConfig
from valign_ray.config_cai import CaiSamplingConfig as CaiSamplingConfig
from valign_ray.config_loader import (
    STRICT,
    Bool,
    Float,
    Int,
    Str,
    ZeroStage,
    apply_overrides,
    from_dict,
    load_yaml,
)

DEFAULT_SALT = "change-me"
Factors = dict[Str, dict[Str, Float]]  # variable -> category -> factor (unlisted categories: 1)


@dataclass(frozen=True, config=STRICT)
class SyntheticConfig:
    """What :func:`~valign_ray.survey.synthetic.generate_synthetic` simulates; the defaults build
    the quickstart survey (about 0.2 s). Limits that depend on the item texts or on other keys
    (n_sample <= n_population, n_dimensions <= the dimensions written) are the generator's."""

    seed: Int = Field(
        0, ge=0
    )  # the population (and, sample_seed null, the sample) depends only on this and the design
    sample_seed: Int | None = Field(None, ge=0)  # which sample is drawn; null: seed's own draw
    n_population: Int = Field(20000, ge=1)  # simulated population
    n_sample: Int = Field(600, ge=1)  # respondents in the (biased) survey sample
    n_dimensions: Int = Field(3, ge=1)  # latent value dimensions
    items_per_dimension: Int = Field(8, ge=1)  # prompt items per dimension
    statements_per_dimension: Int = Field(2, ge=0)  # Likert statements per dimension
    consensus_per_dimension: Int = Field(1, ge=0)  # Likert statements nearly all groups endorse
    pairwise_fraction: Float = Field(0.5, ge=0, le=1)  # share of items each respondent compares
    group_effect: Float = Field(1.5, ge=0)  # strength of subgroup differences on the dimensions
    noise: Float = Field(1.0, ge=0)  # idiosyncratic spread of respondents' positions
    flip: Float = Field(0.05, ge=0, le=1)  # probability of rating both responses the same
    oversample: Factors | None = None  # relative inclusion odds; null: 65+ x3, South Island x2
    response_rate: Factors | None = None  # probability of answering, in (0, 1]; null: men 0.6
    share_range: tuple[Float, Float] = (0.3, 0.75)  # population shares of the positive pole
    contested_fraction: Float = Field(0.25, ge=0, le=1)  # items placed to flip the sample majority


@dataclass(frozen=True, config=STRICT)
class FilesConfig:
    instrument: Str = "data/examples/instrument.yaml"  # items, candidates and demographics
    respondents: Str = "data/examples/respondents.csv"  # one row per respondent
    answers: Str = "data/examples/answers.csv"  # one row per answer
    # canonical: the respondents and answers files above; qualtrics / limesurvey: a platform's
    # response export (responses), converted through the mapping (docs/PLATFORMS.md).
    platform: Literal["canonical", "qualtrics", "limesurvey"] = "canonical"
    responses: Str | None = None  # the platform's response export (CSV)
    panel: Str | None = None  # a panel provider's demographic export (e.g. Prolific's CSV)
    mapping: Str | None = None  # platform answers -> census categories (YAML); null: none


@dataclass(frozen=True, config=STRICT)
class SurveyConfig:
    source: Literal["synthetic", "files", "polis"] = "synthetic"  # where the survey comes from
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # source: synthetic
    files: FilesConfig = field(default_factory=FilesConfig)  # source: files
    polis_dir: Str = "data/polis/scoop-hivemind.biodiversity"  # any Polis export folder
    # Pseudonymisation salt; keep it secret. Left at the default, VALIGN_SALT is used when set;
    # collected survey files (source: files) refuse the default (see survey_salt).
    salt: Str = DEFAULT_SALT
    strict: Bool = False  # fail on the first bad row instead of quarantining


@dataclass(frozen=True, config=STRICT)
class WeightingConfig:
    enabled: Bool = True  # false: every respondent weighs 1 (the "unweighted" baseline)
    # raking: to the census margins below; opinion_groups: each opinion group ("group" column,
    # e.g. Polis's) gets a target share of the weight, for data without census margins;
    # balanced: raking to equal shares of each variable's categories (every group counts equally).
    scheme: Literal["raking", "opinion_groups", "balanced"] = "raking"
    group_shares: dict[Str, Annotated[Float, Field(gt=0)]] | None = None  # null: equal shares
    margins: Str = "data/margins/nz_2023.csv"  # population shares per variable and category
    variables: tuple[Str, ...] = ("age_band", "gender", "region_group")  # raked variables
    trim_max: Annotated[Float, Field(gt=1)] | None = 5.0  # cap on weight / mean weight, re-rake
    # When the cap stops the margins being met: raise_cap (the smallest cap up to
    # trim_max_limit that meets them, said in the output), error (stop), accept (continue).
    on_cap_binding: Literal["raise_cap", "error", "accept"] = "raise_cap"
    trim_max_limit: Float = Field(20.0, gt=1)  # raise_cap: the highest cap it may go to
    tol: Float = Field(1e-10, gt=0)  # raking stops when margins are this close
    max_iter: Int = Field(1000, ge=1)  # raking iterations before giving up


@dataclass(frozen=True, config=STRICT)
class DataConfig:
    holdout_respondents: Float = Field(0.25, ge=0, lt=1)  # share of respondents held out
    holdout_items: Float = Field(0.0, ge=0, lt=1)  # share of items kept out of training
    split_seed: Int = Field(0, ge=0)  # seeds both hold-out draws
    max_length: Int = Field(96, ge=1)  # tokens per prompt + completion
    group_column: Str = "age_band"  # respondent group recorded on each training row
    answers: Literal["ratings", "likert"] = "ratings"  # train on ratings, or on Likert answers
    likert_options: dict[Int, Str] | None = None  # answer value -> option text; null: Polis's


@dataclass(frozen=True, config=STRICT)
class ConstitutionConfig:
    enabled: Bool = True  # build constitution.yaml when the survey has statements
    # Groups that must all agree; null: the opinion groups ("group") when respondents have
    # them, else data.group_column.
    group_column: Str | None = None
    threshold: Float = Field(0.6, ge=0, le=1)  # minimum weighted agree share in every group
    min_votes_per_group: Int = Field(5, ge=1)  # fewer answers in a group: statement ineligible


@dataclass(frozen=True, config=STRICT)
class TinyConfig:
    """Shape of the tiny model; the defaults give about 1 M parameters on the quickstart survey."""

    arch: Literal["llama", "qwen2"] = "llama"  # Hugging Face architecture
    vocab_size: Int = Field(2048, ge=1)  # BPE vocabulary trained on the survey's text (a cap)
    hidden_size: Int = Field(144, ge=1)  # model width
    intermediate_size: Int = Field(384, ge=1)  # MLP width
    num_layers: Int = Field(4, ge=1)  # transformer blocks
    num_heads: Int = Field(4, ge=1)  # attention heads (must divide hidden_size)
    num_kv_heads: Int = Field(2, ge=1)  # key/value heads (must divide num_heads)
    max_position_embeddings: Int = Field(512, ge=1)  # longest sequence the model accepts
    seed: Int = Field(0, ge=0)  # seeds the random initialisation


@dataclass(frozen=True, config=STRICT)
class LoraConfig:
    enabled: Bool = False  # train a LoRA adapter instead of every weight
    r: Int = Field(8, ge=1)  # adapter rank
    alpha: Int = Field(16, ge=1)  # adapter scale numerator (scale = alpha / r)
    dropout: Float = Field(0.0, ge=0, lt=1)  # dropout on the adapter input
    target_modules: tuple[Str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # adapted layers
    merge: Bool = True  # export the adapter merged into the base weights


@dataclass(frozen=True, config=STRICT)
class ModelConfig:
    path: Str | None = None  # a local Hugging Face folder; null builds the tiny model
    tiny: TinyConfig = field(default_factory=TinyConfig)  # the model built when path is null
    lora: LoraConfig = field(default_factory=LoraConfig)  # optional adapter training


NonNegative = Annotated[Float, Field(ge=0)]


@dataclass(frozen=True, config=STRICT)
class LossConfig:
    # The training method: kto, dpo, sft (valign_ray.methods) or a "module:ATTR" import path.
    name: Str = "kto"
    beta: Float = Field(0.1, gt=0)  # KTO/DPO strength of the pull towards the reference model
    lambda_d: NonNegative | Literal["auto"] = 1.0  # KTO weight of desirable examples
    lambda_u: NonNegative | Literal["auto"] = 1.0  # KTO weight of undesirable examples
    dpo_type: Literal["sigmoid", "ipo"] = "sigmoid"  # DPO variant
    label_smoothing: Float = Field(0.0, ge=0, lt=0.5)  # conservative DPO
    soft_labels: Bool = False  # DPO target = the survey's weighted share preferring


@dataclass(frozen=True, config=STRICT)
class TrainConfig:
    num_workers: Int = Field(2, ge=1)  # Ray Train workers (data-parallel ranks)
    use_gpu: Bool = False  # one GPU per worker
    resources_per_worker: dict[Str, NonNegative] | None = None  # Ray resources; null: CPU 1
    batch_size: Int = Field(8, ge=1)  # per worker, per micro-step
    grad_accum: Int = Field(1, ge=1)  # micro-steps per optimizer step
    epochs: Int = Field(1, ge=1)  # passes over the training rows
    max_steps: Annotated[Int, Field(ge=1)] | None = None  # optimizer steps; null: run the epochs
    lr: Float = Field(5e-4, gt=0)  # peak learning rate
    weight_decay: Float = Field(0.0, ge=0)  # AdamW weight decay
    warmup_ratio: Float = Field(0.1, ge=0, le=1)  # share of the steps spent warming up
    schedule: Literal["linear", "cosine", "constant"] = "linear"  # learning-rate decay
    grad_clip: Float = Field(1.0, ge=0)  # gradient norm cap; 0: no clipping
    zero_stage: ZeroStage = 2  # DeepSpeed ZeRO stage
    precision: Literal["fp32", "bf16"] = "fp32"  # training precision
    activation_checkpointing: Bool = False  # recompute each block in backward: less memory
    # CPU offload (ZeRO-Offload): "optimizer" moves optimizer state and gradient partitions to
    # host RAM (ZeRO 1-3); "all" also the parameter partitions (ZeRO-3 only).
    offload: Literal["none", "optimizer", "all"] = "none"
    # > 0: rows of similar length share an optimizer step, sorted within windows of this many
    # steps (less padding at any grad_accum; less random batches); 0: uniform batches.
    bucket_steps: Int = Field(0, ge=0)
    # Pack each micro-batch's sequences end to end into rows of up to data.max_length tokens
    # (position ids restart per sequence, no token attends across): less padding.
    packing: Bool = False
    # torch.compile each decoder block (regional: one graph for all blocks, compiled once per
    # worker). Off by default: on CPU it costs ~50 s and gains nothing (benchmarks README).
    compile: Bool = False
    # GPUs per reference-scoring actor (with use_gpu): more than one splits a model too large
    # for one GPU across them (device_map auto), e.g. 2 for a 32 B model in bf16 on 48 GB GPUs.
    reference_gpus: Int = Field(1, ge=1)
    checkpoint_every: Int = Field(0, ge=0)  # optimizer steps between checkpoints; 0: final only
    # Steps between metric reports to Ray Train (W&B and metrics.jsonl get every step): the
    # Train V2 controller takes one report per worker per poll, so per-step reports stall.
    report_every: Int = Field(10, ge=1)
    max_failures: Int = Field(0, ge=0)  # Ray Train restarts from the latest checkpoint
    weighted: Bool = True  # false ignores survey weights in the loss (ablation)
    seed: Int = Field(0, ge=0)  # seeds the batch order and dropout


@dataclass(frozen=True, config=STRICT)
class WandbConfig:
    enabled: Bool = True  # log the run to Weights & Biases
    mode: Literal["offline", "online", "disabled"] = "offline"  # offline: sync later
    project: Str = "valign-ray"  # W&B project
    entity: Str | None = None  # W&B team or user; null: the default


@dataclass(frozen=True, config=STRICT)
class RayConfig:
    address: Str | None = None  # null: join RAY_ADDRESS or start a local Ray; "local": always new
    # For the embedded Ray; null lets Ray count the cores.
    num_cpus: Annotated[Int, Field(ge=1)] | None = None


@dataclass(frozen=True, config=STRICT)
class EvalConfig:
    batch_size: Int = Field(64, ge=1)  # rows per scoring batch
    bootstrap: Int = Field(200, ge=0)  # respondent-bootstrap replicates (re-weighted); 0: none
    bootstrap_seed: Int = Field(0, ge=0)  # seeds the respondent bootstrap's draws


@dataclass(frozen=True, config=STRICT)
class ReportConfig:
    # Groups with fewer held-out respondents get no per-group metric in the printed summary,
    # the report or W&B (summary.json keeps it, listed under suppressed_groups).
    min_group_n: Int = Field(10, ge=1)


@dataclass(frozen=True, config=STRICT)
class PrivacyConfig:
    # true lets respondent ids, demographic values and free text into messages and logs.
    log_personal_data: Bool = False


@dataclass(frozen=True, config=STRICT)
class PipelineConfig:
    name: Str = "run"  # the run's name and folder
    output_dir: Str = "runs"  # the run directory is output_dir/name
    survey: SurveyConfig = field(default_factory=SurveyConfig)  # where answers come from
    weighting: WeightingConfig = field(default_factory=WeightingConfig)  # raking to margins
    constitution: ConstitutionConfig = field(default_factory=ConstitutionConfig)  # principles
    cai: CaiConfig = field(default_factory=CaiConfig)  # Constitutional AI data generation
    data: DataConfig = field(default_factory=DataConfig)  # splits and training rows
    model: ModelConfig = field(default_factory=ModelConfig)  # base model
    loss: LossConfig = field(default_factory=LossConfig)  # objective
    train: TrainConfig = field(default_factory=TrainConfig)  # Ray Train + DeepSpeed
    wandb: WandbConfig = field(default_factory=WandbConfig)  # experiment tracking
    ray: RayConfig = field(default_factory=RayConfig)  # cluster
    eval: EvalConfig = field(default_factory=EvalConfig)  # held-out scoring
    report: ReportConfig = field(default_factory=ReportConfig)  # what reports may show
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)  # personal data in logs

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


Counts = dict[Str, dict[Str, Annotated[Int, Field(ge=0)]]]  # variable -> category -> count
Propensities = dict[Str, dict[Str, Annotated[Float, Field(gt=0)]]]


@dataclass(frozen=True, config=STRICT)
class DesignConfig:
    """What ``valign design`` plans: quotas from the margins and the precision they give."""

    margins: Str = "data/margins/nz_2023.csv"  # population shares per variable and category
    variables: tuple[Str, ...] = ("age_band", "gender", "region_group")  # quota variables
    interlock: tuple[Str, ...] = ()  # quotas per cell of these (two or more) variables too
    joint: Str | None = None  # CSV of the interlocked cells' shares; null: independence
    minimum: Counts = field(default_factory=dict)  # at least this many in a subgroup of interest
    propensity: Propensities = field(default_factory=dict)  # relative response; unlisted: 1
    target_moe: Float = Field(0.05, gt=0, lt=1)  # margin of error wanted in every subgroup


def load_design_config(
    path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> DesignConfig:
    """A design file: one ``design:`` mapping (plus ``--set design.x=...`` overrides)."""
    from valign_ray.config_loader import ConfigError

    data = apply_overrides(load_yaml(path), list(overrides))
    if set(data) != {"design"}:
        raise ConfigError(f"{path}: a design file has one top-level key 'design', got {list(data)}")
    return from_dict(DesignConfig, data["design"])


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Load a pipeline config from YAML plus ``--set`` overrides; errors name the bad key."""
    from valign_ray.methods import get_method

    data = apply_overrides(load_yaml(path), list(overrides))
    cfg = from_dict(PipelineConfig, data)
    get_method(cfg.loss.name).check(cfg)  # an unknown method, or one the config cannot run
    _check_offload(cfg.train)
    return cfg


def _check_offload(train: TrainConfig) -> None:
    from valign_ray.config_loader import ConfigError

    if train.offload == "all" and train.zero_stage != 3:
        raise ConfigError(
            f"train.offload: 'all' offloads parameter partitions, which needs train.zero_stage=3 "
            f"(got {train.zero_stage}); use offload 'optimizer' with ZeRO-{train.zero_stage}"
        )
    if train.offload != "none" and train.zero_stage == 0:
        raise ConfigError(
            f"train.offload: {train.offload!r} needs ZeRO stage 1, 2 or 3 (train.zero_stage is 0)"
        )


def survey_salt(survey: SurveyConfig) -> str:
    """The pseudonymisation salt: ``survey.salt`` when set, else ``$VALIGN_SALT``, else the
    default, which only public (Polis) and synthetic data may use: with a known salt the
    pseudonyms of a collected survey's respondents could be re-derived from their ids."""
    import os

    from valign_ray.config_loader import ConfigError

    if survey.salt != DEFAULT_SALT:
        return survey.salt
    salt = os.environ.get("VALIGN_SALT", "")
    if salt:
        return salt
    if survey.source == "files":
        raise ConfigError(
            f"survey.salt is the default {DEFAULT_SALT!r}, which does not protect collected "
            "survey files: set a secret salt with the environment variable VALIGN_SALT "
            "(export VALIGN_SALT=...) or survey.salt in the config (--set survey.salt=...)"
        )
    return DEFAULT_SALT


def public_config_dict(cfg: PipelineConfig) -> dict:
    """The config as a plain dict for places others can read (W&B, model cards): the
    pseudonymisation salt is redacted, since with it respondent ids could be re-derived."""
    from valign_ray.config_loader import to_dict

    data = to_dict(cfg)
    data["survey"]["salt"] = "<redacted>"
    return data
