"""Survey platforms: the instrument exported for LimeSurvey and Qualtrics, and their response
exports (plus a panel provider's demographics) converted into the canonical survey tables.

``questions.py`` lays the instrument out as platform questions (one source for export and
import); ``structure.py`` writes and reads the survey-structure files; ``responses.py`` reads
the response exports; ``mapping.py`` reads the mapping file and the panel export. Conversion
ends in :func:`valign_ray.survey.ingest.ingest_frames`, the same checks and quarantine as
canonical files. Formats and the supported subset: ``docs/PLATFORMS.md``.
"""
