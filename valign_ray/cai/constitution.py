"""The constitution CAI works from: loaded, checked, and one principle sampled per record.

The file is the survey stage's ``constitution.yaml`` (:mod:`valign_ray.survey.constitution`:
per principle ``id``, ``text``, ``rank``, ``consensus``, ``support`` and ``n`` per group,
``overall_support``, ``overall_n``) or a user-written one in the same schema with a top-level
``source`` naming where its principles came from (the survey stage's file has none: its source
is ``survey``). Only ``id``, ``text``, ``support`` and ``overall_support`` are needed here.

Which principle a record is critiqued against (:data:`SAMPLING_MODES`):

- ``uniform``: every principle equally often;
- ``population_support``: in proportion to the weighted share of the population that endorses
  it (``overall_support``), so the data reflect what the population agrees with most;
- ``worst_group_support``: in proportion to its lowest group's support, favouring principles
  that no group merely tolerates.

The draw for a record uses only that record's seed, so it does not depend on which other
records exist or in what order they are processed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SAMPLING_MODES = ("uniform", "population_support", "worst_group_support")
_PRINCIPLE_STREAM = 7  # numpy seed-sequence key: principle draws apart from token sampling


class ConstitutionFileError(ValueError):
    """A constitution file is unusable; the message names the file and what to change."""


@dataclass(frozen=True)
class CaiPrinciple:
    """One principle: its id, text, support per group and weighted overall support."""

    id: str
    text: str
    support: dict[str, float]
    overall_support: float

    @property
    def worst_group_support(self) -> float:
        return min(self.support.values())


@dataclass(frozen=True)
class CaiConstitution:
    """The principles of one file, in file order, and where they came from."""

    path: str
    source: str
    principles: tuple[CaiPrinciple, ...]

    def by_id(self, principle_id: str) -> CaiPrinciple:
        return next(p for p in self.principles if p.id == principle_id)


def _share(path: Path, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConstitutionFileError(f"{path}: {where}={value!r} must be a share in [0, 1]")
    return float(value)


def _principle(path: Path, k: int, raw: Any) -> CaiPrinciple:
    where = f"principles[{k}]"
    if not isinstance(raw, dict):
        raise ConstitutionFileError(f"{path}: {where} must be a mapping (id, text, support, ...)")
    missing = [key for key in ("id", "text", "support", "overall_support") if key not in raw]
    if missing:
        raise ConstitutionFileError(
            f"{path}: {where} has no {missing}; every principle needs id, text, support "
            "(group -> share) and overall_support"
        )
    if not isinstance(raw["text"], str) or not raw["text"].strip():
        raise ConstitutionFileError(f"{path}: {where} (id {raw['id']!r}) has an empty text")
    support = raw["support"]
    if not isinstance(support, dict) or not support:
        raise ConstitutionFileError(
            f"{path}: {where} (id {raw['id']!r}): support must map each group to its share"
        )
    return CaiPrinciple(
        id=str(raw["id"]),
        text=raw["text"].strip(),
        support={str(g): _share(path, f"{where}.support.{g}", s) for g, s in support.items()},
        overall_support=_share(path, f"{where}.overall_support", raw["overall_support"]),
    )


def load_constitution(path: str | Path) -> CaiConstitution:
    """Read and check a constitution file; an empty or malformed one raises
    :class:`ConstitutionFileError` naming the file and the fix."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConstitutionFileError(
            f"{path}: no such constitution file; run the constitution stage or set "
            "cai.constitution to a YAML file with principles"
        )
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not doc.get("principles"):
        raise ConstitutionFileError(
            f"{path}: the constitution has no principles, so there is nothing to critique "
            "against. A survey constitution is empty when no statement reaches "
            "constitution.threshold in every group: lower the threshold, choose a coarser "
            "constitution.group_column, or write principles under `principles:` (id, text, "
            "support, overall_support) and set cai.constitution to that file"
        )
    if not isinstance(doc["principles"], list):
        raise ConstitutionFileError(f"{path}: principles must be a list")
    principles = tuple(_principle(path, k, raw) for k, raw in enumerate(doc["principles"]))
    ids = [p.id for p in principles]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ConstitutionFileError(f"{path}: principle id {dup!r} appears more than once")
    return CaiConstitution(str(path), str(doc.get("source", "survey")), principles)


def principle_probabilities(principles: Sequence[CaiPrinciple], mode: str) -> np.ndarray:
    """The probability of each principle under ``mode`` (module docstring)."""
    if mode not in SAMPLING_MODES:
        raise ValueError(f"principle sampling {mode!r}; valid: {', '.join(SAMPLING_MODES)}")
    if mode == "uniform":
        mass = np.ones(len(principles))
    elif mode == "population_support":
        mass = np.array([p.overall_support for p in principles])
    else:
        mass = np.array([p.worst_group_support for p in principles])
    if not len(mass) or mass.sum() <= 0:
        raise ValueError(f"principle sampling {mode!r}: every principle has support 0")
    return mass / mass.sum()


def sample_principles(
    principles: Sequence[CaiPrinciple], mode: str, seeds: Sequence[int]
) -> list[str]:
    """One principle id per record seed, drawn by inverse CDF from the record's own stream."""
    cdf = np.cumsum(principle_probabilities(principles, mode))
    ids = []
    for seed in seeds:
        u = np.random.default_rng([int(seed), _PRINCIPLE_STREAM]).random() * cdf[-1]
        ids.append(principles[min(int(np.searchsorted(cdf, u, side="right")), len(cdf) - 1)].id)
    return ids
