"""The survey instrument: demographic variables with their categories, and the items asked.

An instrument is written as YAML (see ``data/README.md`` and ``data/examples/instrument.yaml``)
and loaded into an immutable :class:`Instrument`. Ingestion checks every respondent and answer
against it, and :meth:`Instrument.items_table` / :meth:`Instrument.candidates_table` give the
canonical ``items`` and ``candidates`` tables of :mod:`valign_ray.survey.tables`.

Loading is strict: an unknown key, a duplicate id, a missing or empty field, or a YAML value of
the wrong type (``yes`` parses as a boolean, ``1`` as an integer: quote them) is a ValueError
naming the file and the item/field, so a typo cannot silently change what is measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    "statement": {"id", "kind", "text", "dimension", "options"},
}
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
        _check_keys(entry, _ITEM_KEYS[kind], where, optional={"dimension"})
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
        items.append(Item(entry["id"], kind, entry["text"], dimension, tuple(responses), options))
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
            if it.options:
                raise ValueError(f"{where}: field 'options': only statements have options")
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
        else:
            kinds = list(ITEM_KINDS)
            raise ValueError(f"{where}: field 'kind' must be one of {kinds}, got {it.kind!r}")


def _check_unique(values: Sequence[Any], what: str) -> None:
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {v!r}")
        seen.add(v)
