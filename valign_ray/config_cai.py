"""The ``cai`` section of the pipeline config (:class:`~valign_ray.config.PipelineConfig`):
Constitutional AI from the survey's constitution. Same rules as :mod:`valign_ray.config`:
frozen, strict, every default and range here; re-exported by ``valign_ray.config``."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from valign_ray.config_loader import STRICT, Bool, Float, Int, Str


@dataclass(frozen=True, config=STRICT)
class CaiSamplingConfig:
    """How the CAI stages sample text (:mod:`valign_ray.cai.generate`)."""

    temperature: Float = Field(0.7, ge=0)  # 0: greedy
    top_p: Float = Field(0.95, gt=0, le=1)  # nucleus: smallest set of tokens with this mass
    max_new_tokens: Int = Field(64, ge=1)  # tokens generated per record at most
    max_prompt_tokens: Int = Field(448, ge=1)  # longer prompts lose tokens from the left
    stop: tuple[Str, ...] = ()  # generation ends at the first of these (cut from the text)
    seed: Int = Field(0, ge=0)  # record seeds derive from this and the record's key


Share = Annotated[Float, Field(ge=0, le=1)]


@dataclass(frozen=True, config=STRICT)
class CaiPromptsConfig:
    """Where SL-CAI prompts come from (:mod:`valign_ray.cai.prompts`); sources add up."""

    survey_items: Bool = True  # every survey item's text
    file: Str | None = None  # JSONL or CSV with prompt_id, prompt (bad rows quarantined)
    hh_rlhf: Str | None = None  # HH-RLHF .jsonl(.gz): each conversation's first human turn
    hh_rlhf_max: Int = Field(200, ge=1)  # at most this many HH-RLHF prompts (file order)


@dataclass(frozen=True, config=STRICT)
class CaiFeedbackConfig:
    """How RL-CAI labels its pairs (:mod:`valign_ray.cai.feedback`)."""

    # choice: a feedback model picks the option that better follows a principle; implicit_reward:
    # the run's survey-aligned model scores each answer (log pi - log pi_ref, beta = loss.beta).
    mode: Literal["choice", "implicit_reward"] = "choice"
    model: Str | None = None  # choice: a local HF folder; null: the SL-CAI model
    options: tuple[Str, Str] = ("(A)", "(B)")  # choice: the continuations scored for A and B
    principles_per_pair: Int = Field(1, ge=1)  # choice: labels averaged over M principles
    clamp: tuple[Share, Share] | None = None  # choice: labels clamped to [lo, hi]; null: none
    batch_size: Int = Field(16, ge=1)  # sequences per feedback forward pass


@dataclass(frozen=True, config=STRICT)
class CaiConfig:
    """Constitutional AI from the survey's constitution (critique, revise, compare)."""

    # A user-written constitution YAML (the survey stage's schema plus `source`); null: the
    # survey stage's constitution.yaml.
    constitution: Str | None = None
    templates: Str = "configs/cai_templates.yaml"  # critique / revision / comparison templates
    # Which principle each record gets: uniform, population_support (proportional to the
    # weighted overall support), worst_group_support (to the lowest group's support).
    principle_sampling: Literal["uniform", "population_support", "worst_group_support"] = (
        "population_support"
    )
    sampling: CaiSamplingConfig = field(default_factory=CaiSamplingConfig)  # text generation
    batch_size: Int = Field(16, ge=1)  # prompts per generate call
    replicas: Int = Field(1, ge=1)  # Ray Data model replicas (one per GPU in production)
    prompts: CaiPromptsConfig = field(default_factory=CaiPromptsConfig)  # SL-CAI input
    rounds: Int = Field(1, ge=1)  # SL-CAI critique-revision rounds per prompt
    # SFT row weight: support (the overall support of the final round's principle) or one.
    sft_weight: Literal["support", "one"] = "support"
    samples_per_prompt: Int = Field(2, ge=2)  # RL-CAI: answers per prompt, every two paired
    # RL-CAI pairs: generated (samples_per_prompt answers from the SL-CAI model) or
    # survey_items (the candidate responses of the items data.holdout_items keeps out of
    # training, or of every prompt item when it is 0; nothing is generated).
    rl_candidates: Literal["generated", "survey_items"] = "generated"
    feedback: CaiFeedbackConfig = field(default_factory=CaiFeedbackConfig)  # labels
    rl_loss: Literal["dpo", "kto"] = "dpo"  # RL-CAI: soft-label DPO, or KTO weighted by label
    rl_epochs: Annotated[Int, Field(ge=1)] | None = None  # RL-CAI passes; null: train.epochs
