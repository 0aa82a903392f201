"""``valign release``: a run's weighted survey as a dataset others can load, with a datasheet.

The release is Parquet tables (respondents with their weights, answers, items, candidates, the
constitution), ``README.md`` (a datasheet in the sections of Gebru et al., "Datasheets for
Datasets", answered from the run where the run knows and marked "to be filled by the data
owner" where it does not; its YAML header names one ``datasets`` config per table) and
``release.json`` (the options, the licence and a sha256 per file).

What never leaves the run: raw respondent ids (only the salted pseudonyms, checked to be ones),
the quarantine (it points into the raw files), the raw survey files, and respondent columns
named like direct identifiers (:data:`DIRECT_IDENTIFIERS`). Free-text answers (``free_text``,
a respondent's own words) are left out unless ``include_free_text``. Item and candidate texts
are the instrument, written by the survey's authors (for Polis: the conversation's moderated
statements, published with the export), and always ship: without them no answer means anything.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from valign_ray.errors import InputError
from valign_ray.release_licence import Licence, resolve_licence
from valign_ray.results import RunSummary, SummaryError
from valign_ray.run_layout import RunLayout, write_parquet_atomic, write_text_atomic

TABLES = ("respondents", "answers", "items", "candidates")
PSEUDONYM = re.compile(r"^[0-9a-f]{16}$")
# Respondent columns dropped as direct identifiers (names compared lower-case, with spaces and
# dashes read as underscores). Ingestion only admits declared demographics, so one of these can
# only arrive as a demographic variable an instrument named so.
DIRECT_IDENTIFIERS = frozenset(
    {
        "name",
        "full_name",
        "first_name",
        "last_name",
        "surname",
        "given_name",
        "email",
        "e_mail",
        "email_address",
        "phone",
        "phone_number",
        "mobile",
        "address",
        "street_address",
        "postcode",
        "post_code",
        "zip",
        "zip_code",
        "ip",
        "ip_address",
        "date_of_birth",
        "dob",
        "birth_date",
        "national_id",
        "passport",
        "nhi",
        "ird_number",
        "participant",
        "participant_id",
        "voter_id",
        "raw_id",
    }
)


@dataclass(frozen=True)
class RunFacts:
    """What the datasheet answers from: the run's summary, config snapshot and tables."""

    layout: RunLayout
    summary: RunSummary
    config: dict[str, Any]
    tables: dict[str, pl.DataFrame]  # the released tables
    dropped_identifiers: tuple[str, ...]
    free_text: bool  # included
    free_text_answers: int  # answers with free text in the run
    licence: Licence
    weight_diagnostics: dict[str, Any] = field(default_factory=dict)
    margins: pl.DataFrame | None = None  # the margins file, where it is still there
    margins_hash_now: str | None = None
    constitution: dict[str, Any] | None = None
    instrument_name: str = "unnamed"
    default_salt: bool | None = None  # pseudonyms re-derivable with the public default salt


def release_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    licence: str | None = None,
    include_free_text: bool = False,
) -> dict[str, Path]:
    """Write the release of the run in ``run_dir`` to ``out``; return ``{name: path}``.

    A missing or incomplete run (no summary, a survey table or the weights missing, a
    respondent without exactly one weight, ids that are not pseudonyms) is an InputError.
    """
    from valign_ray.release_datasheet import render_datasheet

    facts = gather_facts(Path(run_dir), licence=licence, include_free_text=include_free_text)
    out = Path(out)
    _clear_out(out, facts.layout.run_dir)
    paths: dict[str, Path] = {}
    for name, frame in facts.tables.items():
        paths[name] = out / f"{name}.parquet"
        write_parquet_atomic(frame, paths[name])
    if facts.constitution is not None:
        paths["constitution.yaml"] = out / "constitution.yaml"
        shutil.copyfile(facts.layout.constitution, paths["constitution.yaml"])
    paths["README.md"] = out / "README.md"
    write_text_atomic(paths["README.md"], render_datasheet(facts))
    record = {
        "run": facts.summary.name,
        "git_commit": facts.summary.manifest.get("git_commit"),
        "fingerprints": facts.summary.fingerprints,
        "licence": facts.licence.spdx,
        "include_free_text": facts.free_text,
        "dropped_identifier_columns": list(facts.dropped_identifiers),
        "files": {p.name: _sha256(p) for p in paths.values()},
    }
    paths["release.json"] = out / "release.json"
    write_text_atomic(paths["release.json"], json.dumps(record, indent=2) + "\n")
    return paths


def _clear_out(out: Path, run_dir: Path) -> None:
    """Make ``out`` ready: a new or empty folder, or an earlier release (its files, as its
    ``release.json`` lists them, are removed so none goes stale). Anything else is refused."""
    if out.resolve().is_relative_to(run_dir.resolve()):
        raise InputError("the release folder must be outside the run directory", path=out)
    record = out / "release.json"
    if record.is_file():
        for name in [*json.loads(record.read_text())["files"], "release.json"]:
            (out / Path(name).name).unlink(missing_ok=True)
    if out.exists() and any(out.iterdir()):
        raise InputError("not empty, and not an earlier release: give a new folder", path=out)
    out.mkdir(parents=True, exist_ok=True)


def gather_facts(run_dir: Path, *, licence: str | None, include_free_text: bool) -> RunFacts:
    """Read and check the run; build the tables to release and everything the datasheet says."""
    layout = RunLayout(run_dir, run_dir.parent)
    summary, config = _read_run(layout)
    tables = {t: _read_table(layout.survey_table(t)) for t in TABLES}
    respondents, dropped = _respondents_with_weights(tables["respondents"], layout)
    answers = tables["answers"]
    _check_pseudonyms(answers["respondent_id"], layout.survey_table("answers"))
    n_free = int(answers["free_text"].is_not_null().sum()) if "free_text" in answers else 0
    if not include_free_text and "free_text" in answers.columns:
        answers = answers.drop("free_text")
    released = {"respondents": respondents, "answers": answers}
    released |= {"items": tables["items"], "candidates": tables["candidates"]}
    constitution = None
    if layout.constitution.exists():
        constitution = yaml.safe_load(layout.constitution.read_text())
        released["constitution"] = constitution_table(constitution)
    source = config["survey"]["source"]
    margins, margins_hash = _margins(summary, config)
    return RunFacts(
        layout=layout,
        summary=summary,
        config=config,
        tables=released,
        dropped_identifiers=dropped,
        free_text=include_free_text,
        free_text_answers=n_free,
        licence=resolve_licence(source, config, licence),
        weight_diagnostics=_json_or_empty(layout.weight_diagnostics),
        margins=margins,
        margins_hash_now=margins_hash,
        constitution=constitution,
        instrument_name=_instrument_name(layout, config),
        default_salt=default_salt_used(source, respondents["respondent_id"], layout),
    )


def _read_run(layout: RunLayout) -> tuple[RunSummary, dict[str, Any]]:
    if not layout.run_dir.is_dir():
        raise InputError("not a run directory (no such folder)", path=layout.run_dir)
    for path in (layout.summary, layout.config_snapshot):
        if not path.is_file():
            raise InputError("missing: not a run directory, or its run has not started", path=path)
    try:
        summary = RunSummary.load(layout.summary)
    except (SummaryError, KeyError, ValueError) as exc:
        raise InputError(f"unreadable run summary ({exc})", path=layout.summary) from None
    for section in ("survey", "weighting"):
        if section not in summary.results:
            raise InputError(
                f"no {section!r} section: the run stopped before its weights "
                "(run `valign prepare` on its config first)",
                path=layout.summary,
            )
    return summary, yaml.safe_load(layout.config_snapshot.read_text())


def _read_table(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise InputError("missing: the run's survey stage did not finish", path=path)
    return pl.read_parquet(path)


def _respondents_with_weights(
    respondents: pl.DataFrame, layout: RunLayout
) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """The respondents with their ``weight`` (exactly one each), direct identifiers dropped."""
    _check_pseudonyms(respondents["respondent_id"], layout.survey_table("respondents"))
    weights = _read_table(layout.weights) if layout.weights.exists() else None
    if weights is None:
        raise InputError("missing: the run's weights stage did not finish", path=layout.weights)
    counts = weights.group_by("respondent_id").len()
    twice = counts.filter(pl.col("len") > 1)
    if twice.height:
        rid = twice["respondent_id"][0]
        raise InputError(f"respondent {rid} has {twice['len'][0]} weights", path=layout.weights)
    joined = respondents.join(weights, on="respondent_id", how="left")
    unweighted = joined.filter(pl.col("weight").is_null())
    if unweighted.height:
        rid = unweighted["respondent_id"][0]
        raise InputError(
            f"{unweighted.height} respondent(s) have no weight (first: {rid}); rerun the "
            "weights stage",
            path=layout.weights,
        )
    dropped = tuple(c for c in joined.columns if _normalise(c) in DIRECT_IDENTIFIERS)
    return joined.drop(dropped), dropped


def _normalise(column: str) -> str:
    return re.sub(r"[\s\-]+", "_", column.strip().lower())


def _check_pseudonyms(ids: pl.Series, path: Path) -> None:
    bad = ids.filter(~ids.cast(pl.String).str.contains(PSEUDONYM.pattern).fill_null(False))
    if bad.len() or ids.null_count():
        first = bad[0] if bad.len() else None
        raise InputError(
            f"respondent_id {first!r} is not a pseudonym (16 hex characters of a salted "
            "sha256): refusing to release ids that may be raw",
            path=path,
            field="respondent_id",
        )


def constitution_table(doc: dict[str, Any]) -> pl.DataFrame:
    """One row per principle; support per group as a list of ``{group, support, n}``."""
    rows = [
        {
            "rank": int(p["rank"]),
            "item_id": str(p["id"]),
            "text": str(p["text"]),
            "consensus": float(p["consensus"]),
            "overall_support": float(p["overall_support"]),
            "overall_n": int(p["overall_n"]),
            "support_by_group": [
                {"group": str(g), "support": float(s), "n": int(p["n"][g])}
                for g, s in p["support"].items()
            ],
        }
        for p in doc.get("principles") or []
    ]
    schema = {
        "rank": pl.Int64,
        "item_id": pl.String,
        "text": pl.String,
        "consensus": pl.Float64,
        "overall_support": pl.Float64,
        "overall_n": pl.Int64,
        "support_by_group": pl.List(
            pl.Struct({"group": pl.String, "support": pl.Float64, "n": pl.Int64})
        ),
    }
    return pl.DataFrame(rows, schema=schema)


def default_salt_used(source: str, ids: pl.Series, layout: RunLayout) -> bool | None:
    """Whether the pseudonyms are re-derivable with the public default salt: tried on the raw
    ids the run kept (synthetic) or on Polis participant numbers 0..10n; None: cannot tell."""
    from valign_ray.config import DEFAULT_SALT

    if source == "synthetic":
        raw_path = layout.raw_survey_dir / "respondents.csv"
        if not raw_path.is_file():
            return None
        raw = pl.read_csv(raw_path, columns=["respondent_id"], infer_schema=False)
        candidates = raw["respondent_id"].to_list()
    elif source == "polis":
        candidates = [str(k) for k in range(10 * ids.len() + 1000)]
    else:  # collected files: the pipeline refuses the default salt
        return False
    known = set(ids.to_list())
    return any(_hash(DEFAULT_SALT, c) in known for c in candidates)


def _hash(salt: str, raw: str) -> str:
    return hashlib.sha256((salt + raw).encode("utf-8")).hexdigest()[:16]


def _margins(summary: RunSummary, config: dict[str, Any]) -> tuple[pl.DataFrame | None, str | None]:
    """The margins file the weights were raked to and its hash now (None when not raking or
    the file is gone)."""
    from valign_ray.provenance import file_hash

    if summary.results["weighting"].method != "raking":
        return None, None
    path = Path(config["weighting"]["margins"])
    if not path.is_file():
        return None, None
    return pl.read_csv(path, infer_schema=False), file_hash(path)


def _instrument_name(layout: RunLayout, config: dict[str, Any]) -> str:
    source = config["survey"]["source"]
    if source == "polis":
        return f"Polis conversation {Path(config['survey']['polis_dir']).name}"
    path = (
        layout.raw_survey_dir / "instrument.yaml"
        if source == "synthetic"
        else Path(config["survey"]["files"]["instrument"])
    )
    if not path.is_file():
        return f"unknown ({path} is not there now)"
    doc = yaml.safe_load(path.read_text())
    return str(doc.get("name")) if isinstance(doc, dict) and doc.get("name") else "unnamed"


def _json_or_empty(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
