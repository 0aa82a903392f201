"""Personal data in what valign prints and logs: respondent ids (raw or pseudonymised),
one respondent's demographic values and free-text answers stay out of messages, logs and W&B
unless ``privacy.log_personal_data`` opts in.

What is personal and what is not: a respondent id or a participant id is; a free-text answer
is; an item's or a candidate response's text is not (the instrument's own words), nor a
category the instrument lists, nor an aggregate (a count, a share, a per-group metric of a group
with at least ``report.min_group_n`` respondents). Messages about a bad row name the file, the
row and the field; the row finds the value. Local run outputs (the survey tables, the quarantine
file) keep the rows: they are the data, not a log of it.

The setting is per process, set by :func:`valign_ray.pipeline.run_pipeline` (and everything that
runs stages) for the duration of a run with :func:`personal_data_logging`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

WITHHELD = "<withheld: privacy.log_personal_data is false>"
_allowed = False


def personal(value: Any) -> str:
    """``repr(value)`` when personal data may be logged, else a placeholder saying why not."""
    return repr(value) if _allowed else WITHHELD


def personal_data_allowed() -> bool:
    return _allowed


@contextmanager
def personal_data_logging(allowed: bool) -> Iterator[None]:
    """Within the block, :func:`personal` shows values when ``allowed``; restored after."""
    global _allowed
    before, _allowed = _allowed, bool(allowed)
    try:
        yield
    finally:
        _allowed = before
