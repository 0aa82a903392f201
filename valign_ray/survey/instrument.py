"""The survey instrument: demographic variables with their categories, and the items asked.

An instrument is written as YAML (see ``data/README.md`` and ``data/examples/instrument.yaml``)
and loaded into an immutable :class:`Instrument`. Ingestion checks every respondent and answer
against it, and :meth:`Instrument.items_table` / :meth:`Instrument.candidates_table` give the
canonical ``items`` and ``candidates`` tables of :mod:`valign_ray.survey.tables`.

A statement may place its options on the line (``positions``: option code -> position; by
default code k sits at k) and list ``refusal_codes`` (e.g. Pew's 99) that are not options:
answers with those codes are dropped and counted at ingestion, never scored as an option.

Loading is strict: an unknown key, a duplicate id, a missing or empty field, or a YAML value of
the wrong type (``yes`` parses as a boolean, ``1`` as an integer: quote them) is a ValueError
naming the file and the item/field, so a typo cannot silently change what is measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from valign_ray.errors import InputError, read_utf8
from valign_ray.survey.tables import CANDIDATE_COLUMNS, ITEM_COLUMNS, ITEM_KINDS, polars_schema

# Answer kinds each item kind accepts (tables.py: prompts are rated or compared, statements
# are answered on a Likert scale).
ANSWER_KINDS_FOR_ITEM = {"prompt": ("rating", "pairwise"), "statement": ("likert",)}
# Respondent columns that are not demographics: a variable with one of these names would clash.
RESERVED_COLUMNS = ("respondent_id", "group", "base_weight", "weight")

_TOP_KEYS = {"name", "demographics", "items"}
_ITEM_KEYS = {
    "prompt": {"id", "kind", "text", "dimension", "responses"},
    "statement": {"id", "kind", "text", "dimension", "options", "positions", "refusal_codes"},
}
_OPTIONAL_KEYS = {"dimension", "positions", "refusal_codes"}
_RESPONSE_KEYS = {"id", "text"}


@dataclass(frozen=True)
class Response:
    """A candidate response to a prompt item."""

    id: str
    text: str


@dataclass(frozen=True)
class Item:
    """One survey item: a prompt with candidate responses, or a Likert-scale statement."""

    id: str
    kind: str  # "prompt" | "statement"
    text: str
    dimension: str | None = None
    responses: tuple[Response, ...] = ()  # prompts only
    options: tuple[str, ...] = ()  # statements only: option labels, least to most agreement
    # statements only: option code (1..len(options)) -> position on the line; None: code k at k
    # (OpinionQA puts a "not sure" coded 3 of a yes (1) / no (2) item at 1.5).
    positions: dict[int, float] | None = None
    refusal_codes: tuple[int, ...] = ()  # statements only: answer codes meaning "refused"

    @property
    def option_positions(self) -> tuple[float, ...]:
        """Position of each option, in code order (1..len(options))."""
        if self.positions is None:
            return tuple(float(k) for k in range(1, len(self.options) + 1))
        return tuple(float(self.positions[k]) for k in range(1, len(self.options) + 1))

    @property
    def answer_kinds(self) -> tuple[str, ...]:
        """The answer kinds (``rating``, ``pairwise``, ``likert``) this item accepts."""
        return ANSWER_KINDS_FOR_ITEM[self.kind]

    @property
    def response_ids(self) -> tuple[str, ...]:
        """Ids of the candidate responses, in instrument order."""
        return tuple(r.id for r in self.responses)


@dataclass(frozen=True)
class Instrument:
    """A survey instrument; construction validates it (ValueError naming the item/field)."""

    name: str
    demographics: dict[str, tuple[str, ...]]  # variable -> allowed categories, in order
    items: tuple[Item, ...]

    def __post_init__(self) -> None:
        _check_instrument(self)

    @cached_property
    def items_by_id(self) -> dict[str, Item]:
        """Items keyed by id."""
        return {item.id: item for item in self.items}

    def option_positions(self) -> dict[str, tuple[float, ...]]:
        """Statement id -> its options' positions in code order, for the statements that set
        ``positions`` (the others keep their codes as positions)."""
        return {it.id: it.option_positions for it in self.items if it.positions is not None}

    def refusal_codes(self) -> dict[str, tuple[int, ...]]:
        """Statement id -> its refusal codes, for the statements that list any."""
        return {it.id: it.refusal_codes for it in self.items if it.refusal_codes}

    def items_table(self) -> pl.DataFrame:
        """The canonical ``items`` table (tables.py); ``n_options`` is 0 for prompts."""
        rows = [
            (it.id, it.kind, it.text, it.dimension, len(it.options) if it.options else 0)
            for it in self.items
        ]
        return pl.DataFrame(rows, schema=_schema(ITEM_COLUMNS), orient="row")

    def candidates_table(self) -> pl.DataFrame:
        """The canonical ``candidates`` table: one row per candidate response of each prompt."""
        rows = [(it.id, r.id, r.text) for it in self.items for r in it.responses]
        return pl.DataFrame(rows, schema=_schema(CANDIDATE_COLUMNS), orient="row")

    @classmethod
    def from_tables(
        cls,
        name: str,
        demographics: Mapping[str, Sequence[str]],
        items: pl.DataFrame,
        candidates: pl.DataFrame,
        *,
        options: Mapping[str, Sequence[str]] | None = None,
    ) -> Instrument:
        """Build an instrument from canonical tables, so generators and importers can save one.

        The items table only carries ``n_options``, not the option labels: pass them in
        ``options`` (item id -> labels), or statements get the labels ``"1" .. "n"``.
        """
        for table, cols, what in (
            (items, ITEM_COLUMNS, "items"),
            (candidates, CANDIDATE_COLUMNS, "candidates"),
        ):
            missing = [c for c in cols if c not in table.columns]
            if missing:
                raise ValueError(f"from_tables: {what} table lacks columns {missing}")
        options = dict(options or {})
        by_item: dict[str, list[Response]] = {}
        for item_id, response_id, text in candidates.select(list(CANDIDATE_COLUMNS)).iter_rows():
            by_item.setdefault(item_id, []).append(Response(response_id, text))
        built = []
        for item_id, kind, text, dimension, n_options in items.select(
            list(ITEM_COLUMNS)
        ).iter_rows():
            labels: tuple[str, ...] = ()
            if kind == "statement":
                default = [str(k) for k in range(1, (n_options or 0) + 1)]
                labels = tuple(options.pop(item_id, default))
                if len(labels) != n_options:
                    raise ValueError(
                        f"from_tables: item {item_id!r}: n_options is {n_options} "
                        f"but {len(labels)} option labels were given"
                    )
            elif n_options not in (0, None):
                raise ValueError(f"from_tables: item {item_id!r}: a prompt has n_options 0")
            responses = tuple(by_item.pop(item_id, []))
            built.append(Item(item_id, kind, text, dimension, responses, labels))
        if by_item:
            raise ValueError(f"from_tables: candidates for unknown items {sorted(by_item)}")
        if options:
            raise ValueError(f"from_tables: options for unknown items {sorted(options)}")
        demo = {var: tuple(cats) for var, cats in demographics.items()}
        try:
            return cls(name, demo, tuple(built))
        except ValueError as e:
            raise ValueError(f"from_tables: {e}") from e


def load_instrument(path: str | Path) -> Instrument:
    """Read an instrument YAML file; every problem is a ValueError naming the file and field."""
    path = Path(path)
    text = read_utf8(path, "instrument file")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML: {_one_line(e)}", path=path) from None
    try:
        return _parse(raw)
    except (ValueError, TypeError, AttributeError) as e:  # TypeError: e.g. an unhashable id
        raise InputError(str(e), path=path) from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def save_instrument(inst: Instrument, path: str | Path) -> None:
    """Write ``inst`` as YAML that :func:`load_instrument` reads back to an equal instrument."""
    items = []
    for it in inst.items:
        entry: dict[str, Any] = {"id": it.id, "kind": it.kind, "text": it.text}
        if it.dimension is not None:
            entry["dimension"] = it.dimension
        if it.kind == "prompt":
            entry["responses"] = [{"id": r.id, "text": r.text} for r in it.responses]
        else:
            entry["options"] = list(it.options)
            if it.positions is not None:
                entry["positions"] = dict(it.positions)
            if it.refusal_codes:
                entry["refusal_codes"] = list(it.refusal_codes)
        items.append(entry)
    doc = {
        "name": inst.name,
        "demographics": {var: list(cats) for var, cats in inst.demographics.items()},
        "items": items,
    }
    Path(path).write_text(
        yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8"
    )


def _schema(columns: Mapping[str, str]) -> dict[str, type[pl.DataType]]:
    return polars_schema(dict(columns))


def _parse(raw: Any) -> Instrument:
    """Turn the YAML document into an Instrument, checking keys and types on the way."""
    if not isinstance(raw, dict):
        raise ValueError("the document must be a mapping with keys name, demographics, items")
    _check_keys(raw, _TOP_KEYS, "the document")
    demographics = raw["demographics"]
    if not isinstance(demographics, dict):
        raise ValueError("field 'demographics' must be a mapping: variable -> [categories]")
    demo: dict[str, tuple[str, ...]] = {}
    for var, cats in demographics.items():
        if not isinstance(cats, list):
            raise ValueError(f"demographic {var!r}: categories must be a list")
        demo[var] = tuple(cats)
    if not isinstance(raw["items"], list) or not raw["items"]:
        raise ValueError("field 'items' must be a non-empty list")
    items = []
    for k, entry in enumerate(raw["items"], start=1):
        where = f"item #{k}" + (f" ({entry.get('id')!r})" if isinstance(entry, dict) else "")
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be a mapping")
        kind = entry.get("kind")
        if kind not in ITEM_KINDS:
            raise ValueError(
                f"{where}: field 'kind' must be one of {list(ITEM_KINDS)}, got {kind!r}"
            )
        _check_keys(entry, _ITEM_KEYS[kind], where, optional=_OPTIONAL_KEYS)
        responses: list[Response] = []
        if kind == "prompt":
            if not isinstance(entry["responses"], list):
                raise ValueError(f"{where}: field 'responses' must be a list")
            for j, resp in enumerate(entry["responses"], start=1):
                if not isinstance(resp, dict):
                    raise ValueError(f"{where}: response #{j} must be a mapping with id, text")
                _check_keys(resp, _RESPONSE_KEYS, f"{where}: response #{j}")
                responses.append(Response(resp["id"], resp["text"]))
        elif not isinstance(entry["options"], list):
            raise ValueError(f"{where}: field 'options' must be a list")
        options = tuple(entry.get("options", ()))
        dimension = entry.get("dimension")
        positions = entry.get("positions")
        if positions is not None and not isinstance(positions, dict):
            raise ValueError(
                f"{where}: field 'positions' must be a mapping: option code -> position"
            )
        refusals = entry.get("refusal_codes", [])
        if not isinstance(refusals, list):
            raise ValueError(f"{where}: field 'refusal_codes' must be a list of answer codes")
        item = Item(entry["id"], kind, entry["text"], dimension, tuple(responses), options)
        items.append(replace(item, positions=positions, refusal_codes=tuple(refusals)))
    return Instrument(raw["name"], demo, tuple(items))


def _check_keys(d: dict, allowed: set[str], where: str, optional: set[str] = frozenset()) -> None:
    unknown = sorted(map(str, set(d) - allowed))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys: {sorted(allowed)}")
    missing = sorted(allowed - optional - set(d))
    if missing:
        raise ValueError(f"{where}: missing fields {missing}")


def _check_id(value: Any, where: str) -> None:
    # Ids are matched as exact strings against the data files, so stray spaces would never match.
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValueError(
            f"{where}: must be a non-empty string without surrounding spaces, got {value!r}"
        )


def _check_text(value: Any, where: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: must be non-empty text, got {value!r}")


def _check_instrument(inst: Instrument) -> None:
    """Validate an instrument however it was built (YAML, tables or by hand)."""
    _check_text(inst.name, "field 'name'")
    if not isinstance(inst.demographics, dict):
        raise ValueError("field 'demographics' must be a mapping: variable -> categories")
    for var, cats in inst.demographics.items():
        _check_id(var, f"demographic variable {var!r}")
        if var in RESERVED_COLUMNS:
            raise ValueError(f"demographic variable {var!r}: name is reserved {RESERVED_COLUMNS}")
        if len(cats) < 1:
            raise ValueError(f"demographic {var!r}: needs at least one category")
        for cat in cats:
            _check_id(cat, f"demographic {var!r}: category {cat!r} (quote it in YAML)")
        _check_unique(cats, f"demographic {var!r}: duplicate category")
    if not inst.items:
        raise ValueError("field 'items': the instrument has no items")
    for it in inst.items:
        _check_id(it.id, f"item {it.id!r}: field 'id'")
    _check_unique([it.id for it in inst.items], "duplicate item id")
    for it in inst.items:
        where = f"item {it.id!r}"
        _check_text(it.text, f"{where}: field 'text'")
        if it.dimension is not None:
            _check_id(it.dimension, f"{where}: field 'dimension'")
        if it.kind == "prompt":
            if not it.responses:
                raise ValueError(f"{where}: field 'responses': a prompt needs candidate responses")
            if it.options or it.positions is not None or it.refusal_codes:
                raise ValueError(
                    f"{where}: fields 'options', 'positions', 'refusal_codes': statements only"
                )
            for r in it.responses:
                _check_id(r.id, f"{where}: response id")
                _check_text(r.text, f"{where}: response {r.id!r}: field 'text'")
            _check_unique(it.response_ids, f"{where}: duplicate response id")
        elif it.kind == "statement":
            if len(it.options) < 2:
                raise ValueError(f"{where}: field 'options': a statement needs at least 2 options")
            if it.responses:
                raise ValueError(f"{where}: field 'responses': only prompts have responses")
            for opt in it.options:
                _check_text(opt, f"{where}: field 'options' entry")
            _check_unique(it.options, f"{where}: duplicate option")
            _check_positions(it, where)
        else:
            kinds = list(ITEM_KINDS)
            raise ValueError(f"{where}: field 'kind' must be one of {kinds}, got {it.kind!r}")


def _check_positions(it: Item, where: str) -> None:
    """Positions cover exactly the codes 1..n with finite numbers, not all equal; refusal codes
    are integers that are not option codes."""
    codes = set(range(1, len(it.options) + 1))
    for code in it.refusal_codes:
        if not _is_int(code) or code in codes:
            raise ValueError(
                f"{where}: field 'refusal_codes': {code!r} is not an integer outside "
                f"1..{len(codes)}"
            )
    _check_unique(it.refusal_codes, f"{where}: duplicate refusal code")
    if it.positions is None:
        return
    if set(it.positions) != codes or not all(_is_int(c) for c in it.positions):
        raise ValueError(
            f"{where}: field 'positions' must give every option code 1..{len(codes)} a position, "
            f"got codes {sorted(it.positions, key=str)}"
        )
    values = list(it.positions.values())
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values) or not all(
        math.isfinite(v) for v in values
    ):
        raise ValueError(f"{where}: field 'positions': positions must be finite numbers")
    if len(set(values)) < 2:
        raise ValueError(f"{where}: field 'positions': the options need two distinct positions")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_unique(values: Sequence[Any], what: str) -> None:
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {v!r}")
        seen.add(v)
