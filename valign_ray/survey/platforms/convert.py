"""A platform survey end to end: read the mapping and the panel export, convert the response
export, and ingest the rows through the canonical checks and quarantine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from valign_ray.errors import InputError
from valign_ray.survey.ingest import IngestResult, ingest_frames
from valign_ray.survey.instrument import Instrument
from valign_ray.survey.platforms.mapping import Mapping, load_mapping, read_panel
from valign_ray.survey.platforms.responses import convert_export

if TYPE_CHECKING:
    from valign_ray.config import FilesConfig


def ingest_platform(
    inst: Instrument,
    files: FilesConfig,
    *,
    quarantine_dir: str | Path,
    salt: str,
    strict: bool = False,
) -> IngestResult:
    """Convert ``files.responses`` (a ``files.platform`` export) and ingest it; prints the
    panel note. Rows in = kept + quarantined, per file, as for canonical files."""
    if not files.responses:
        raise InputError(f"survey.files.platform is {files.platform}: set survey.files.responses")
    mapping = load_mapping(files.mapping, inst) if files.mapping else Mapping()
    if files.panel and not mapping.panel_id_column:
        raise InputError("survey.files.panel is set but the mapping has no panel.id_column")
    panel = read_panel(files.panel, mapping) if files.panel else None
    converted = convert_export(inst, files.platform, files.responses, mapping, panel)
    for note in converted.notes:
        print(note, flush=True)
    source = Path(files.responses)
    return ingest_frames(
        inst,
        converted.respondents,
        converted.answers,
        sources=(source, source),
        quarantine_dir=quarantine_dir,
        salt=salt,
        strict=strict,
    )
