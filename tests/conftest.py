"""Shared fixtures: one local Ray per test session (a warm TorchTrainer.fit costs ~15 s, and
ray.init ~3 s: pay that once), and a tiny model folder built once."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

REPO = Path(__file__).resolve().parents[1]
# Test-support modules (tests/toy_method.py) are imported by path, as "tests.toy_method", here
# and in Ray workers (Ray puts the driver's working directory, the repository, on their path).
sys.path.insert(0, str(REPO))
SHARED_DATA = Path(os.environ.get("VALIGN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray for the whole test session (3 CPUs: a trainer driver plus 2 workers)."""
    from valign_ray.config import RayConfig
    from valign_ray.distributed.session import init_ray

    init_ray(RayConfig(address="local", num_cpus=3))
    import ray

    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama (hidden 32, 2 layers) with a tokenizer trained on synthetic survey text."""
    from valign_ray.config import TinyConfig
    from valign_ray.models import build_tiny_model

    texts = [
        f"Question: Should the council {verb} the {thing}?\nAnswer:"
        for verb in ("protect", "fund", "sell", "close", "expand")
        for thing in ("bush", "harbour", "library", "rail line", "wetland")
    ] + [" Yes, protect the native bush.", " No, keep costs low for families."]
    spec = TinyConfig(
        vocab_size=400,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
    )
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), texts, spec)


@pytest.fixture(scope="session")
def smoke_run(ray_session, tmp_path_factory):
    """The main job at smoke size (configs/smoke.yaml), run once per test session:
    ``(config, summary)`` (a :class:`~valign_ray.results.RunSummary`); the run directory is
    ``config.run_dir``."""
    from valign_ray.config import load_config
    from valign_ray.pipeline import run_pipeline

    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(REPO / "configs/smoke.yaml", [f"output_dir={out}"])
    return cfg, run_pipeline(cfg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def local_process_group() -> None:
    """torch.distributed for this one process (world size 1), as ``LocalContext`` runs expect:
    DeepSpeed adopts an initialised process group instead of looking for MPI."""
    import torch.distributed as dist

    os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed's engine asserts it is set
    if not dist.is_initialized():
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
        )


def _weighted_survey(n_sample: int) -> tuple[Any, Any]:
    """A small synthetic survey and its respondents with random weights in [0.5, 2]."""
    import numpy as np
    import polars as pl

    from valign_ray.config import SyntheticConfig
    from valign_ray.survey.margins import load_margins
    from valign_ray.survey.synthetic import generate_synthetic

    survey = generate_synthetic(
        SyntheticConfig(n_sample=n_sample, n_dimensions=2, items_per_dimension=2, seed=3),
        load_margins(REPO / "data/margins/nz_2023.csv"),
    )
    rng = np.random.default_rng(0)
    weights = pl.Series("weight", rng.uniform(0.5, 2.0, survey.respondents.height))
    return survey, survey.respondents.with_columns(weights)


def _with_reference(rows: Any, method: str, model_dir: Path, max_length: int) -> Any:
    from valign_ray.methods import get_method
    from valign_ray.models import load_model, load_tokenizer
    from valign_ray.train.reference import score_reference

    model, tok = load_model(model_dir), load_tokenizer(model_dir)
    return score_reference(model, tok, rows, get_method(method).reference, max_length=max_length)


@pytest.fixture(scope="session")
def kto_rows(tiny_model_dir: Path):
    """96 KTO rows of a small synthetic survey with random weights and reference log-probs
    from ``tiny_model_dir`` (what the training loop reads)."""
    from valign_ray.data.builders import assign_kl_completions, build_kto_rows

    survey, resp = _weighted_survey(40)
    rows = build_kto_rows(
        survey.answers, survey.items, survey.candidates, resp, group_column="age_band"
    ).head(96)
    rows = assign_kl_completions(rows.with_row_index("row_idx"), seed=0)
    return _with_reference(rows, "kto", tiny_model_dir, 48)


@pytest.fixture(scope="session")
def dpo_rows(tiny_model_dir: Path):
    """DPO pairs of the same kind of survey as :func:`kto_rows` (one respondent's two ratings
    of one prompt), with random weights and reference log-probs from ``tiny_model_dir``."""
    from valign_ray.data.builders import build_dpo_pairs

    survey, resp = _weighted_survey(60)
    pairs = build_dpo_pairs(
        survey.answers, survey.items, survey.candidates, resp, group_column="age_band"
    )
    return _with_reference(pairs.head(64).with_row_index("row_idx"), "dpo", tiny_model_dir, 96)
