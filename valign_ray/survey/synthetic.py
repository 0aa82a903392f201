"""A synthetic population with known values, and a biased survey sample drawn from it.

Real surveys never reveal the population's true preferences, so the claim "survey weighting
makes the aligned model represent the population better" cannot be checked on them. Here the
truth is known by construction. The model of the world (all draws from one seeded
``numpy.random.Generator``):

1. **Demographics.** ``n_population`` people; each variable drawn independently from its
   margin shares.
2. **Value positions.** On dimension d a person sits at
   ``theta_d = sum_v effect[d][v][category_v] + noise * N(0, 1)``. Per (dimension, variable)
   the category effects are N(0, 1) draws centred to a margin-weighted mean of 0 and scaled to a
   margin-weighted SD of ``group_effect * U(0.5, 1)``, so every variable separates its groups
   on every dimension and over-sampling any group biases the sample.
3. **Prompt items.** Item i of dimension d has one response per value pole. A person prefers
   the pole-positive one iff ``theta_d + L > tau_i``, ``L ~ Logistic(0, 1)`` per (person,
   item). Ratings: preferred response 1, other 0, except with probability ``flip`` both get the
   same rating (1 or 0, evenly). Pairwise answers follow the preference, without flips.
4. **Thresholds.** ``tau_i`` sits at a population quantile of ``theta_d + L``, so realised
   population shares form an even grid over ``share_range``, except for ``contested_fraction``
   of all items, placed between the population median and the sample's expected
   (propensity-weighted, exact for n_sample << n_population) median: their unweighted sample
   majority is expected to be wrong. They go to dimensions on which the design shifts the
   expected sample share by at least ``MIN_CONTESTED_SHIFT``, at most half of a dimension's
   items each. Contested items are the only part of the world that depends on the sampling
   design (``contested_fraction=0`` removes them); they make the headline question testable:
   with the defaults about 1/3 of sample majorities are wrong (>= 20% for 98 of seeds 0-99).
5. **Statements.** ``theta_d + L - offset_j`` cut at ``LIKERT_CUTS`` gives 1..5
   (5 = strongest agreement with the pole-positive sentence): groups split on these.
   ``consensus_per_dimension`` more per dimension (ids ``<dim>_c<j>``) are near-universal
   values: ``CONSENSUS_LOADING * theta_d + L + CONSENSUS_SHIFT``, so even a group at
   ``theta_d = -2`` agrees (4 or 5) with probability about 0.82, and the constitution is not
   empty. Their noise comes from a second stream seeded by ``(seed, 1)``: adding them leaves
   every other answer unchanged.
6. **Sample.** Propensity = product of ``oversample`` odds times product of ``response_rate``
   over a person's categories (1 where unlisted); ``n_sample`` people drawn without replacement
   with probability proportional to it. Defaults: 65+ x3, South Island x2, men answer at 0.6.
   A ``sample_seed`` other than ``seed`` draws it from a stream of its own (:func:`sample_rng`).

Respondents' answers are their own simulated population answers, so ``truth`` (realised shares
over the whole population, overall and per category) is the finite-population quantity a
weighted estimate should hit. The item texts (templates per dimension, ``DIMENSIONS``) live in
:mod:`valign_ray.survey.synthetic_text`; the sampling design (points 4 and 6) in
:mod:`valign_ray.survey.synthetic_design`. What to simulate is a
:class:`~valign_ray.config.SyntheticConfig` (``survey.synthetic`` in a run config).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from valign_ray.config import SyntheticConfig
from valign_ray.survey.synthetic_design import (
    Margins,
    design_factors,
    place_thresholds,
    selection_propensity,
)
from valign_ray.survey.synthetic_text import (
    DIMENSIONS,
    DimensionText,
    consensus_text,
    prompt_text,
    response_texts,
    statement_text,
)
from valign_ray.survey.tables import ANSWER_COLUMNS, CANDIDATE_COLUMNS, ITEM_COLUMNS

LIKERT_OPTIONS = 5
LIKERT_CUTS = np.array([-2.4, -0.8, 0.8, 2.4])  # theta + Logistic(0, 1) has SD about 2.5
CONSENSUS_LOADING = 0.25  # a consensus statement barely depends on the value position
CONSENSUS_SHIFT = 2.8  # ... and sits high: agree (y >= 0.8) iff L >= -2 - 0.25 theta
MARGIN_TOLERANCE = 1e-3
_DTYPES = {"str": pl.Utf8, "i64": pl.Int64}
_ITEM_SCHEMA = {k: _DTYPES[t] for k, t in ITEM_COLUMNS.items()}
_CANDIDATE_SCHEMA = {k: _DTYPES[t] for k, t in CANDIDATE_COLUMNS.items()}
_ANSWER_SCHEMA = {k: _DTYPES[t] for k, t in ANSWER_COLUMNS.items()}


@dataclass(frozen=True)
class SyntheticSurvey:
    """The biased sample in the canonical tables (``tables.py``) plus the population truth.

    ``truth``: ``item_id``, ``kind`` (``rating`` | ``pairwise`` | ``likert``), ``response_id``
    (rating: each response; pairwise: the pole-positive response; likert: null), ``variable``
    and ``category`` (``"all"`` for the whole population), ``share`` (rating: share rating the
    response desirable; pairwise: share preferring the pole-positive response; likert: share in
    the top two options; NaN for a category nobody in the population has), ``dist`` (likert:
    distribution over options 1..5, else null).
    ``flips``: per prompt item, ``population_share`` and unweighted ``sample_share`` preferring
    the pole-positive response, ``flipped`` when they fall on different sides of 0.5, and
    ``contested`` when the item was placed to flip (module docstring, point 4).
    """

    respondents: pl.DataFrame
    items: pl.DataFrame
    candidates: pl.DataFrame
    answers: pl.DataFrame
    demographics: dict[str, list[str]]
    truth: pl.DataFrame
    flips: pl.DataFrame
    population_shares: Margins

    def population_margins(self) -> Margins:
        """Realised category shares of the simulated population: raking the sample to these
        estimates ``truth`` without the population's own sampling error in the margins."""
        return {v: dict(cats) for v, cats in self.population_shares.items()}


@dataclass(frozen=True)
class _Responses:
    """Every population member's simulated answers (rows: people)."""

    pos_ids: list[str]  # pole-positive response per prompt item
    neg_ids: list[str]
    prefers_pos: np.ndarray  # (people, prompt items) bool
    rate_pos: np.ndarray  # rating of the pole-positive response, bool
    rate_neg: np.ndarray
    stmt_ids: list[str]
    likert: np.ndarray  # (people, statements) int in 1..5

    @property
    def item_ids(self) -> list[str]:
        return [r.rsplit("_", 1)[0] for r in self.pos_ids]


def generate_synthetic(
    spec: SyntheticConfig,
    margins: Margins,
    variables: Sequence[str] = ("age_band", "gender", "region_group"),
) -> SyntheticSurvey:
    """Simulate the population of the module docstring and draw the biased sample from it.

    Deterministic in ``spec.seed``. Raises ValueError naming the field, variable or category
    for an impossible spec, or margins that miss a variable or do not sum to 1 (within 1e-3).
    """
    _check_spec(spec)
    shares = _checked_shares(margins, variables)
    schemes = design_factors(spec, shares)
    rng = np.random.default_rng(spec.seed)
    n_pop, dims = spec.n_population, DIMENSIONS[: spec.n_dimensions]

    codes = {
        v: rng.choice(len(cats), size=n_pop, p=list(cats.values())) for v, cats in shares.items()
    }
    theta = spec.noise * rng.standard_normal((n_pop, len(dims)))
    for d in range(len(dims)):
        for v, cats in shares.items():
            theta[:, d] += _category_effects(rng, np.array(list(cats.values())), spec)[codes[v]]
    propensity = selection_propensity(shares, codes, schemes)

    items, candidates, pos_ids, neg_ids, item_dim = _prompt_tables(rng, dims, spec)
    latent = theta[:, item_dim] + rng.logistic(size=(n_pop, len(pos_ids)))
    tau, contested = place_thresholds(rng, spec, latent, item_dim, propensity)
    prefers_pos = latent > tau
    same = rng.random(latent.shape) < spec.flip
    same_value = rng.random(latent.shape) < 0.5
    statements, stmt_dim = _statement_table(
        dims, spec.statements_per_dimension, "s", statement_text
    )
    per_dim = spec.statements_per_dimension
    offsets = np.tile(
        np.linspace(-1.0, 1.0, per_dim) if per_dim > 1 else np.zeros(per_dim), len(dims)
    )
    y = theta[:, stmt_dim] + rng.logistic(size=(n_pop, len(stmt_dim))) - offsets
    consensus, cons_dim = _statement_table(dims, spec.consensus_per_dimension, "c", consensus_text)
    cons_noise = np.random.default_rng([spec.seed, 1]).logistic(size=(n_pop, len(cons_dim)))
    y_cons = CONSENSUS_LOADING * theta[:, cons_dim] + cons_noise + CONSENSUS_SHIFT
    statements = pl.concat([statements, consensus])
    y = np.concatenate([y, y_cons], axis=1)
    world = _Responses(
        pos_ids=pos_ids,
        neg_ids=neg_ids,
        prefers_pos=prefers_pos,
        rate_pos=np.where(same, same_value, prefers_pos),
        rate_neg=np.where(same, same_value, ~prefers_pos),
        stmt_ids=statements["item_id"].to_list(),
        likert=1 + np.searchsorted(LIKERT_CUTS, y),
    )

    rng = sample_rng(spec, rng)
    sample = np.sort(
        rng.choice(n_pop, spec.n_sample, replace=False, p=propensity / propensity.sum())
    )
    respondent_ids = [f"r{k:06d}" for k in range(len(sample))]
    respondents = pl.DataFrame(
        {"respondent_id": respondent_ids}
        | {v: np.array(list(cats))[codes[v][sample]].tolist() for v, cats in shares.items()}
    )
    return SyntheticSurvey(
        respondents=respondents,
        items=pl.concat([items, statements]),
        candidates=candidates,
        answers=_answers(rng, spec, respondent_ids, sample, world),
        demographics={v: list(cats) for v, cats in shares.items()},
        truth=_truth(shares, codes, world),
        flips=_flips(world, sample, contested),
        population_shares={
            v: {c: float(np.mean(codes[v] == k)) for k, c in enumerate(cats)}
            for v, cats in shares.items()
        },
    )


def sample_rng(spec: SyntheticConfig, population_rng: np.random.Generator) -> np.random.Generator:
    """The stream that draws the sample and its answer formats: the population's own stream,
    continued, when ``sample_seed`` is null or equals ``seed`` (the numbers of every config
    written before ``sample_seed`` existed), else a stream of its own seeded by
    ``(seed, 2, sample_seed)``. The population, its truth and the thresholds are drawn before
    it, so another ``sample_seed`` draws another sample of the very same population."""
    if spec.sample_seed is None or spec.sample_seed == spec.seed:
        return population_rng
    return np.random.default_rng([spec.seed, 2, spec.sample_seed])


def _flips(world: _Responses, sample: np.ndarray, contested: np.ndarray) -> pl.DataFrame:
    """Per prompt item: population vs unweighted sample share preferring the positive pole."""
    pop_pref, sample_pref = world.prefers_pos.mean(axis=0), world.prefers_pos[sample].mean(axis=0)
    return pl.DataFrame(
        {
            "item_id": world.item_ids,
            "population_share": pop_pref,
            "sample_share": sample_pref,
            "flipped": (pop_pref > 0.5) != (sample_pref > 0.5),
            "contested": contested,
        }
    )


def _check_spec(spec: SyntheticConfig) -> None:
    """The limits a config cannot state alone: they depend on the written item texts and on
    other keys (the config checks each key's own range when it is built)."""
    limits = {
        "n_dimensions": (1, len(DIMENSIONS)),
        "items_per_dimension": (1, min(len(d.topics) for d in DIMENSIONS)),
        "statements_per_dimension": (0, min(len(d.statements) for d in DIMENSIONS)),
        "consensus_per_dimension": (0, min(len(d.consensus) for d in DIMENSIONS)),
        "n_sample": (1, spec.n_population),
    }
    for name, (low, high) in limits.items():
        value = getattr(spec, name)
        if not (value >= low and (high is None or value <= high)):
            raise ValueError(f"survey.synthetic.{name}={value} must be in [{low}, {high}]")
    low, high = spec.share_range
    if not 0.0 < low <= high < 1.0:
        raise ValueError(f"survey.synthetic.share_range={spec.share_range} needs 0 < lo <= hi < 1")


def _checked_shares(margins: Margins, variables: Sequence[str]) -> Margins:
    """The margins of ``variables``, renormalised after checking they sum to 1 (1e-3)."""
    if not variables or len(set(variables)) != len(variables):
        raise ValueError(f"variables {list(variables)} must be non-empty and distinct")
    out = {}
    for v in variables:
        if not margins.get(v):
            raise ValueError(f"margins have no variable {v!r} (have {sorted(margins)})")
        bad = [c for c, s in margins[v].items() if not (np.isfinite(s) and s >= 0)]
        if bad:
            raise ValueError(f"margins[{v!r}]: shares of categories {bad} must be finite, >= 0")
        total = sum(margins[v].values())
        if abs(total - 1.0) > MARGIN_TOLERANCE:
            raise ValueError(f"margins[{v!r}]: shares sum to {total:.6f}, not 1")
        out[v] = {c: s / total for c, s in margins[v].items()}
    return out


def _category_effects(rng: np.random.Generator, p: np.ndarray, spec: SyntheticConfig) -> np.ndarray:
    """Effects with margin-weighted mean 0 and SD ``group_effect * U(0.5, 1)``."""
    z = rng.standard_normal(len(p))
    z -= p @ z
    sd = np.sqrt(p @ z**2)
    scale = spec.group_effect * rng.uniform(0.5, 1.0)
    return z * (scale / sd) if sd > 0 else z


def _prompt_tables(
    rng: np.random.Generator, dims: Sequence[DimensionText], spec: SyntheticConfig
) -> tuple[pl.DataFrame, pl.DataFrame, list[str], list[str], np.ndarray]:
    """Items and candidates. Which of ``<item>_r1`` / ``<item>_r2`` is pole-positive is random
    per item, so ids and candidate order carry no pole information."""
    item_rows, cand_rows, pos_ids, neg_ids, item_dim = [], [], [], [], []
    for d, dim in enumerate(dims):
        for i in range(spec.items_per_dimension):
            item_id = f"{dim.name}_p{i:02d}"
            pos, neg = response_texts(dim, i)
            item_rows.append((item_id, "prompt", prompt_text(dim, i), dim.name, 0))
            ids = [f"{item_id}_r1", f"{item_id}_r2"]
            if rng.random() < 0.5:
                ids.reverse()
            cand_rows += sorted([(item_id, ids[0], pos), (item_id, ids[1], neg)])
            pos_ids.append(ids[0])
            neg_ids.append(ids[1])
            item_dim.append(d)
    items = pl.DataFrame(item_rows, schema=_ITEM_SCHEMA, orient="row")
    candidates = pl.DataFrame(cand_rows, schema=_CANDIDATE_SCHEMA, orient="row")
    return items, candidates, pos_ids, neg_ids, np.array(item_dim)


def _statement_table(
    dims: Sequence[DimensionText], per_dimension: int, suffix: str, text: Callable[..., str]
) -> tuple[pl.DataFrame, np.ndarray]:
    """``per_dimension`` Likert statements of every dimension (ids ``<dim>_<suffix><j>``) and
    each one's dimension index: the divisive statements (``s``) or the consensus ones (``c``)."""
    rows = [
        (f"{dim.name}_{suffix}{j}", "statement", text(dim, j), dim.name, LIKERT_OPTIONS)
        for dim in dims
        for j in range(per_dimension)
    ]
    dim_index = np.repeat(np.arange(len(dims)), per_dimension)
    return pl.DataFrame(rows, schema=_ITEM_SCHEMA, orient="row"), dim_index


def _answers(
    rng: np.random.Generator,
    spec: SyntheticConfig,
    respondent_ids: list[str],
    sample: np.ndarray,
    world: _Responses,
) -> pl.DataFrame:
    """Two ratings per respondent and prompt item, a pairwise answer on a random
    ``pairwise_fraction`` of the items (drawn per respondent), one Likert answer per statement."""
    n, n_items, n_stmt = len(sample), len(world.pos_ids), len(world.stmt_ids)
    rid = np.array(respondent_ids)
    item_ids, pos, neg = np.array(world.item_ids), np.array(world.pos_ids), np.array(world.neg_ids)
    r, i = np.repeat(np.arange(n), n_items), np.tile(np.arange(n_items), n)
    pref = world.prefers_pos[sample].ravel()
    rank = np.argsort(np.argsort(rng.random((n, n_items)), axis=1), axis=1)
    pm = (rank < round(spec.pairwise_fraction * n_items)).ravel()
    winner, loser = np.where(pref, pos[i], neg[i])[pm], np.where(pref, neg[i], pos[i])[pm]

    def frame(
        who: np.ndarray, item: np.ndarray, kind: str, value: np.ndarray, a=None, b=None
    ) -> pl.DataFrame:
        columns = (who, item, kind, a, b, np.asarray(value, dtype=np.int64), None)
        return pl.DataFrame(dict(zip(_ANSWER_SCHEMA, columns, strict=True)), schema=_ANSWER_SCHEMA)

    frames = [
        frame(rid[r], item_ids[i], "rating", world.rate_pos[sample].ravel(), pos[i]),
        frame(rid[r], item_ids[i], "rating", world.rate_neg[sample].ravel(), neg[i]),
        frame(rid[r][pm], item_ids[i][pm], "pairwise", np.ones(pm.sum()), winner, loser),
        frame(
            np.repeat(rid, n_stmt),
            np.tile(np.array(world.stmt_ids, dtype=str), n),
            "likert",
            world.likert[sample].ravel(),
        ),
    ]
    return pl.concat(frames).sort(["respondent_id", "item_id", "kind"], maintain_order=True)


def _truth(shares: Margins, codes: dict[str, np.ndarray], world: _Responses) -> pl.DataFrame:
    """Realised population shares, overall and per (variable, category)."""
    groups = [("all", "all", np.ones(len(world.prefers_pos), dtype=bool))]
    groups += [(v, c, codes[v] == k) for v, cats in shares.items() for k, c in enumerate(cats)]
    rows = []
    for v, c, mask in groups:
        size = mask.sum()

        def share(x: np.ndarray, size: int = size, mask: np.ndarray = mask) -> float:
            # NaN, not an error: a tiny margin can leave a category without anybody
            return float(x[mask].mean()) if size else float("nan")

        for i, item in enumerate(world.item_ids):
            pos, neg = world.pos_ids[i], world.neg_ids[i]
            rows.append((item, "rating", pos, v, c, share(world.rate_pos[:, i]), None))
            rows.append((item, "rating", neg, v, c, share(world.rate_neg[:, i]), None))
            rows.append((item, "pairwise", pos, v, c, share(world.prefers_pos[:, i]), None))
        for j, item in enumerate(world.stmt_ids):
            counts = np.bincount(world.likert[mask, j], minlength=LIKERT_OPTIONS + 1)[1:]
            dist = (counts / size).tolist() if size else None
            rows.append((item, "likert", None, v, c, share(world.likert[:, j] >= 4), dist))
    schema = {
        "item_id": pl.Utf8,
        "kind": pl.Utf8,
        "response_id": pl.Utf8,
        "variable": pl.Utf8,
        "category": pl.Utf8,
        "share": pl.Float64,
        "dist": pl.List(pl.Float64),
    }
    return pl.DataFrame(rows, schema=schema, orient="row")
