"""The mapping file (platform answers -> the instrument's census categories) and the panel
provider's demographic export (e.g. Prolific's), joined to responses by participant id.

A mapping file (YAML; ``data/examples/platforms/mapping.yaml`` is commented)::

    respondent_id: PROLIFIC_PID      # response column naming the respondent (null: platform id)
    panel:                           # optional: the panel export's columns
      id_column: Participant id      # participant id, matched against respondent_id
      status_column: Status          # optional, with accept_status
      accept_status: [APPROVED, AWAITING REVIEW]
    demographics:                    # instrument variable -> how its category is found
      age_band: {panel_column: Age, bands: {"15-64": [15, 64], "65+": [65, 130]}}
      gender: {panel_column: Sex, values: {Female: female, Male: male}}
      region_group: {values: {Auckland region: Auckland}}   # survey answers, recoded

A variable not listed is asked in the survey with the instrument's categories as its choices.
Loading is strict: an unknown key, a category the instrument does not list, overlapping bands
or a panel column without a ``panel`` section is an InputError naming the file and the key.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from valign_ray.errors import InputError, read_utf8
from valign_ray.survey.instrument import Instrument


@dataclass(frozen=True)
class VariableMap:
    """How one demographic variable's category is found: a panel column or the survey's
    question, through ``values`` (text -> category) or ``bands`` (whole numbers, ends in)."""

    panel_column: str | None = None
    values: dict[str, str] = field(default_factory=dict)
    bands: dict[str, tuple[int, int]] = field(default_factory=dict)

    def category(self, raw: str) -> str | None:
        """The category of a platform answer, or None when the map has none for it."""
        raw = raw.strip()
        if self.bands:
            try:
                number = int(raw)
            except ValueError:
                return None
            return next((c for c, (lo, hi) in self.bands.items() if lo <= number <= hi), None)
        return self.values.get(raw)


@dataclass(frozen=True)
class Mapping:
    respondent_id: str | None = None
    panel_id_column: str | None = None
    panel_status_column: str | None = None
    accept_status: tuple[str, ...] = ()
    demographics: dict[str, VariableMap] = field(default_factory=dict)

    @property
    def panel_variables(self) -> tuple[str, ...]:
        """The variables a panel export supplies (not asked in the survey)."""
        return tuple(v for v, m in self.demographics.items() if m.panel_column)


def _keys(d: Any, allowed: set[str], where: str, path: Path) -> dict:
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected a mapping", path=path)
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; valid: {sorted(allowed)}", path=path)
    return d


def load_mapping(path: str | Path, inst: Instrument) -> Mapping:
    """Read and check a mapping file against the instrument's variables and categories."""
    path = Path(path)
    try:
        raw = yaml.safe_load(read_utf8(path, "mapping file")) or {}
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML: {' '.join(str(e).split())}", path=path) from None
    raw = _keys(raw, {"respondent_id", "panel", "demographics"}, "top level", path)
    panel = _keys(
        raw.get("panel") or {}, {"id_column", "status_column", "accept_status"}, "panel", path
    )
    demo = _keys(raw.get("demographics") or {}, set(inst.demographics), "demographics", path)
    maps = {
        var: _variable_map(spec, var, inst.demographics[var], path) for var, spec in demo.items()
    }
    if any(m.panel_column for m in maps.values()) and not panel.get("id_column"):
        raise InputError(
            "demographics name a panel_column but panel.id_column is not set", path=path
        )
    if bool(panel.get("status_column")) != bool(panel.get("accept_status")):
        raise InputError("panel: give status_column and accept_status together", path=path)
    return Mapping(
        respondent_id=_text(raw.get("respondent_id"), "respondent_id", path, optional=True),
        panel_id_column=_text(panel.get("id_column"), "panel.id_column", path, optional=True),
        panel_status_column=_text(
            panel.get("status_column"), "panel.status_column", path, optional=True
        ),
        accept_status=tuple(str(s) for s in panel.get("accept_status") or ()),
        demographics=maps,
    )


def _text(value: Any, where: str, path: Path, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: expected non-empty text", path=path)
    return value


def _variable_map(spec: Any, var: str, cats: tuple[str, ...], path: Path) -> VariableMap:
    where = f"demographics.{var}"
    spec = _keys(spec, {"panel_column", "values", "bands"}, where, path)
    values = spec.get("values") or {}
    bands = spec.get("bands") or {}
    if not isinstance(values, dict) or not isinstance(bands, dict):
        raise InputError(f"{where}: values and bands are mappings", path=path)
    if bool(values) == bool(bands) and spec.get("panel_column"):
        raise InputError(f"{where}: a panel column needs values or bands (one of them)", path=path)
    if values and bands:
        raise InputError(f"{where}: give values or bands, not both", path=path)
    for cat in list(values.values()) + list(bands):
        if str(cat) not in cats:
            raise InputError(
                f"{where}: {cat!r} is not a category of {var}: {list(cats)}", path=path
            )
    parsed: dict[str, tuple[int, int]] = {}
    for cat, ends in bands.items():
        ok = isinstance(ends, list) and len(ends) == 2 and all(type(e) is int for e in ends)
        if not ok or ends[0] > ends[1]:
            raise InputError(f"{where}.bands.{cat}: expected [low, high] whole numbers", path=path)
        for other, (lo, hi) in parsed.items():
            if ends[0] <= hi and lo <= ends[1]:
                raise InputError(f"{where}.bands: {cat!r} overlaps {other!r}", path=path)
        parsed[str(cat)] = (ends[0], ends[1])
    column = _text(spec.get("panel_column"), where + ".panel_column", path, optional=True)
    return VariableMap(column, {str(k): str(v) for k, v in values.items()}, parsed)


@dataclass(frozen=True)
class Panel:
    """A panel export: participant id -> its rows (1-based data records; the header is not
    counted), so an id on several rows can be told apart from one on one row."""

    path: Path
    rows: dict[str, list[tuple[int, dict[str, str]]]]

    def unmatched(self, ids: set[str]) -> int:
        """Panel participants with no survey response among ``ids``."""
        return sum(1 for pid in self.rows if pid not in ids)


def read_panel(path: str | Path, mapping: Mapping) -> Panel:
    """Read the panel export (CSV with a header) keyed by ``mapping.panel_id_column``."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO(read_utf8(path, "panel export"), newline=""))
    needed = [mapping.panel_id_column, mapping.panel_status_column]
    needed += [m.panel_column for m in mapping.demographics.values()]
    missing = [c for c in needed if c and c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"missing column(s) {missing} the mapping names", path=path)
    rows: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for n, rec in enumerate(reader, start=1):
        pid = (rec.get(mapping.panel_id_column or "") or "").strip()
        if pid:
            rows.setdefault(pid, []).append((n, rec))
    return Panel(path, rows)
