"""Weights for surveys without census margins: each opinion group gets a target share.

A Polis conversation has no demographics to rake to, only the opinion groups Polis found
(the respondents' ``group`` column). Left unweighted, a group counts by how many of its members
happened to vote; here a user chooses instead how much each group counts (equal by default).
Pure numpy / polars, like :mod:`valign_ray.survey.weighting`, whose conventions it follows
(``weight`` column, mean 1 over respondents, optional base weights).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from valign_ray.survey.weighting import WEIGHT_COLUMN, _base_weights

SHARE_TOLERANCE = 1e-6


def opinion_group_weights(
    respondents: pl.DataFrame,
    *,
    group_col: str = "group",
    shares: Mapping[str, float] | None = None,
    base_weight: str | None = None,
) -> pl.DataFrame:
    """The respondents with a ``weight`` column giving each opinion group its target share.

    With base weights b_i (1 without ``base_weight``), B the base total of the grouped
    respondents and B_g that of group g, a member of group g weighs w_i = b_i * s_g * B / B_g,
    so group g's total is s_g * B: its share of the grouped respondents' weight is exactly
    s_g, while members of a group keep their relative base weights. ``shares`` (group ->
    s_g, > 0, summing to 1, naming exactly the groups present) defaults to 1/G for each of
    the G groups. Respondents without a group (Polis did not place them) keep b_i: they are
    neither dropped nor given a group's share. Weights are then scaled to mean 1 over all
    respondents (the convention of :mod:`valign_ray.survey.tables`).
    """
    b = _base_weights(respondents, base_weight)
    if group_col not in respondents.columns:
        raise ValueError(f"respondents: no opinion group column {group_col!r}")
    group = respondents[group_col].cast(pl.Utf8)
    names = sorted(set(group.drop_nulls().to_list()))
    if not names:
        raise ValueError(f"respondents: nobody has an opinion group in {group_col!r}")
    target = dict.fromkeys(names, 1.0 / len(names)) if shares is None else dict(shares)
    _check_shares(target, names)
    labels = group.to_numpy()
    grouped = group.is_not_null().to_numpy()
    total = b[grouped].sum()
    factor = np.ones_like(b)
    for name in names:
        member = labels == name
        factor[member] = target[name] * total / b[member].sum()
    w = b * factor
    return respondents.with_columns(pl.Series(WEIGHT_COLUMN, w * len(w) / w.sum()))


def _check_shares(target: dict[str, float], names: list[str]) -> None:
    """Target shares name exactly the groups present, are > 0 and sum to 1."""
    missing, unknown = sorted(set(names) - set(target)), sorted(set(target) - set(names))
    if missing or unknown:
        raise ValueError(
            f"group_shares: groups without a target {missing}, targets for absent groups "
            f"{unknown}; the groups are {names}"
        )
    values = np.array(list(target.values()), dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"group_shares: shares must be finite and > 0, got {target}")
    if abs(values.sum() - 1.0) > SHARE_TOLERANCE:
        raise ValueError(f"group_shares: shares must sum to 1, got {values.sum():.8g}")
