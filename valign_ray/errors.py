"""Errors in what a user hands us (a file, a folder, a command-line argument), and reading text
so that such errors name the file and the line.

An :class:`InputError` is what ``valign`` prints as one line (``error: ...``, exit code 2) with
no traceback: the message names the file and, where there is one, the row and the field, so the
user can fix the input without reading our code. It is a ``ValueError``, so callers that catch
those (and tests that expect them) keep working. A config key or value has its own
:class:`~valign_ray.config_loader.ConfigError`.
"""

from __future__ import annotations

import codecs
from pathlib import Path


class InputError(ValueError):
    """A bad input: the message names the file and, where there is one, the row and field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path, self.row, self.field = path, row, field
        where = "" if path is None else str(path)
        if row is not None:
            where += f" row {row}"
        if field is not None:
            where += f", field {field!r}" if where else f"field {field!r}"
        super().__init__(f"{where}: {message}" if where else message)


def first_bad_utf8_line(data: bytes) -> tuple[int, int] | None:
    """The 1-based line and byte offset of the first bytes that are not UTF-8, or None."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return data.count(b"\n", 0, exc.start) + 1, exc.start
    return None


def read_utf8(path: str | Path, what: str = "file") -> str:
    """A text file's content; a missing file, a folder or bytes that are not UTF-8 are an
    :class:`InputError` naming the file (and the first bad line). A UTF-8 BOM is dropped."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"is a folder, expected a {what}", path=path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read the {what}: {exc.strerror}", path=path) from None
    return decode_utf8(data, path)


def decode_utf8(data: bytes, path: str | Path) -> str:
    """``data`` (a file's bytes) as text, or an :class:`InputError` naming the first bad line."""
    bad = first_bad_utf8_line(data)
    if bad is not None:
        line, offset = bad
        raise InputError(
            f"line {line}: bytes that are not valid UTF-8 (byte offset {offset}); "
            "save the file as UTF-8",
            path=path,
        )
    return data.removeprefix(codecs.BOM_UTF8).decode("utf-8")
