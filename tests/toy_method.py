"""A toy training method, defined outside the package as a user would, for the registry tests.

"Desirable NLL": keep the ratings a respondent found desirable and minimise their weighted
negative log-likelihood (summed over completion tokens). It needs no reference model. It is
named in configs by its import path, ``tests.toy_method:METHOD``, which Ray workers import too.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from valign_ray.methods.base import Method, RowInputs, StepInputs, StepOutput

PATH = "tests.toy_method:METHOD"


@dataclass(frozen=True)
class ToyParams:
    scale: float


def build_rows(inp: RowInputs) -> pl.DataFrame:
    from valign_ray.data.builders import build_kto_rows, canonical_order

    rows = inp.map_answers(build_kto_rows, **inp.lookups)
    return canonical_order(rows.filter("label").drop("row_idx", "label"))


def step(inp: StepInputs, params: ToyParams) -> StepOutput:
    logps, _, real, padded = inp.policy_logps(inp.enc["completion"])
    w = inp.rows["weight"]
    loss = -params.scale * (w * logps).sum() / inp.weight_total
    return loss, {"nll": (-(w * logps).sum() / w.sum()).detach()}, real, padded


METHOD = Method(
    name="toy",
    loss_keys=("beta",),
    data_keys=(),
    sweepable=("beta",),
    sequences={"completion": "completion"},
    reference=(),
    build_rows=build_rows,
    params=lambda cfg, rows: ToyParams(scale=1.0),
    step=step,
)
