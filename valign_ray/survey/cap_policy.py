"""What weighting does when the trim cap stops the margins being met: never continue silently.

Trimming (``trim_max``) caps each weight at a multiple of the mean and re-rakes. On a badly
biased sample no weights can meet the cap and the margins at once: a category with 3.5 % of
the sample and a 20 % target needs weights of about 5.7, so a cap of 5 leaves it about 3
points short. :func:`rake_with_cap_policy` makes the choice explicit:

- ``raise_cap``: the smallest cap at or above the configured one (up to ``trim_max_limit``) at
  which every margin is met within ``MARGIN_MET``; said in the diagnostics' notes. Found by
  bisection, since a higher cap only loosens the constraint.
- ``error``: stop, naming the margins that cannot be met.
- ``accept``: continue with the capped weights; the misses are in the diagnostics.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Literal

import polars as pl

from valign_ray.survey.margins import Margins
from valign_ray.survey.weighting import WeightingResult, rake_to_margins
from valign_ray.survey.weighting_report import margin_misses

if TYPE_CHECKING:
    from valign_ray.config import WeightingConfig

CapPolicy = Literal["raise_cap", "error", "accept"]
MARGIN_MET = 1e-6  # a margin within this of its target counts as met
SEARCH_ROUNDS = 300  # cap-then-rerake rounds per tried cap (it converges only linearly)
POLISH_ROUNDS = 1000  # for the raised cap, once found (stops as soon as cap and margins hold)
CAP_STEP = 0.01  # the raised cap is found to (and rounded up to) this resolution


class CapBindingError(ValueError):
    """The trim cap cannot be met together with the margins (policy ``error``, or no cap up
    to ``trim_max_limit`` meets them under ``raise_cap``)."""


def rake_as_configured(
    respondents: pl.DataFrame,
    margins: Margins,
    wcfg: WeightingConfig,
    *,
    base_weight: str | None = None,
) -> WeightingResult:
    """:func:`rake_with_cap_policy` with the cap, policy and tolerances of ``wcfg`` (what the
    weights stage, the respondent bootstrap and the sample-size study all rake with)."""
    return rake_with_cap_policy(
        respondents,
        margins,
        trim_max=wcfg.trim_max,
        on_cap_binding=wcfg.on_cap_binding,
        trim_max_limit=wcfg.trim_max_limit,
        base_weight=base_weight,
        tol=wcfg.tol,
        max_iter=wcfg.max_iter,
    )


def rake_with_cap_policy(
    respondents: pl.DataFrame,
    margins: Margins,
    *,
    trim_max: float | None,
    on_cap_binding: CapPolicy = "raise_cap",
    trim_max_limit: float = 20.0,
    base_weight: str | None = None,
    tol: float = 1e-10,
    max_iter: int = 1000,
) -> WeightingResult:
    """Rake to ``margins`` with trimming at ``trim_max``, then apply ``on_cap_binding`` if the
    cap binds (the margins are missed by more than ``MARGIN_MET``).

    The diagnostics' ``trim_max`` is the cap used; under ``raise_cap`` a note says it was raised
    and from what.

    Raises:
        CapBindingError: under ``error`` when the cap binds, naming the missed margins; under
            ``raise_cap`` when even ``trim_max_limit`` does not meet them, naming the limit.
        ValueError: ``trim_max_limit`` below ``trim_max``, and whatever raking raises.
    """
    if on_cap_binding not in ("raise_cap", "error", "accept"):
        raise ValueError(f"on_cap_binding must be raise_cap, error or accept: {on_cap_binding!r}")

    def rake(cap: float | None, rounds: int = 10) -> WeightingResult:
        return rake_to_margins(
            respondents,
            margins,
            base_weight=base_weight,
            tol=tol,
            max_iter=max_iter,
            trim_max=cap,
            trim_rounds=rounds,
        )

    result = rake(trim_max)
    if trim_max is None or not _binds(result):
        return result
    if on_cap_binding == "accept":
        return result
    if on_cap_binding == "error":
        raise CapBindingError(
            f"weighting: trim cap {trim_max:g} x mean binds (on_cap_binding: error); "
            f"margins missed: {_misses_text(result)}. Set weighting.on_cap_binding to "
            "raise_cap or accept, raise weighting.trim_max, or rake to fewer variables"
        )
    if trim_max_limit < trim_max:
        raise ValueError(
            f"weighting.trim_max_limit ({trim_max_limit:g}) is below weighting.trim_max "
            f"({trim_max:g})"
        )
    return _raised_cap(rake, result, trim_max, trim_max_limit)


def _binds(result: WeightingResult) -> bool:
    return result.diagnostics.max_margin_error > MARGIN_MET


def _misses_text(result: WeightingResult, top: int = 6) -> str:
    misses = margin_misses(result.diagnostics, MARGIN_MET)
    shown = [f"{k} {v * 100:+.2f} points" for k, v in list(misses.items())[:top]]
    return ", ".join(shown) + (f" (+{len(misses) - top} more)" if len(misses) > top else "")


def _raised_cap(rake, binding: WeightingResult, trim_max: float, limit: float):
    """Bisect [trim_max, limit] for the smallest cap meeting every margin within MARGIN_MET."""
    first = rake(trim_max, SEARCH_ROUNDS)  # more rounds may be all the configured cap needs
    if not _binds(first):
        return _noted(first, f"trim cap {trim_max:g} met the margins after {SEARCH_ROUNDS} rounds")
    untrimmed = rake(None).diagnostics.weight_max
    high = min(limit, untrimmed)  # no cap at or above the untrimmed maximum can bind
    best = rake(high, SEARCH_ROUNDS)
    if _binds(best):
        raise CapBindingError(
            f"weighting: no trim cap up to weighting.trim_max_limit={limit:g} meets the margins "
            f"(untrimmed max weight {untrimmed:.3g}); at {limit:g}: {_misses_text(best)}. "
            "Raise trim_max_limit, set on_cap_binding: accept, or rake to fewer variables"
        )
    low = trim_max
    while high - low > CAP_STEP:
        mid = (low + high) / 2
        tried = rake(mid, SEARCH_ROUNDS)
        if _binds(tried):
            low = mid
        else:
            high, best = mid, tried
    rounded = math.ceil(high / CAP_STEP) * CAP_STEP
    if rounded <= limit and rounded != high:
        tried = rake(rounded, SEARCH_ROUNDS)
        if not _binds(tried):
            high, best = rounded, tried
    # Within MARGIN_MET after SEARCH_ROUNDS; more rounds usually reach the raking tolerance.
    polished = rake(high, POLISH_ROUNDS)
    if polished.diagnostics.max_margin_error <= best.diagnostics.max_margin_error:
        best = polished
    missed = binding.diagnostics.max_margin_error
    return _noted(
        best,
        f"trim cap raised from {trim_max:g} to {high:.4g} x mean (on_cap_binding: raise_cap): "
        f"at {trim_max:g} margins were up to {missed * 100:.2f} points off; now all within "
        f"{MARGIN_MET:g}",
    )


def _noted(result: WeightingResult, note: str) -> WeightingResult:
    diag = result.diagnostics
    return WeightingResult(result.respondents, dataclasses.replace(diag, notes=(*diag.notes, note)))
