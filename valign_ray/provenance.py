"""Fingerprints of stage inputs and the run manifest (code version, packages, input files).

A stage's fingerprint hashes what defines its output: its config section(s), the fingerprints
of the stages it reads from and the content of its input files. A rerun whose fingerprint
matches the one recorded in ``summary.json`` skips the stage and says so.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch",
    "ray",
    "deepspeed",
    "transformers",
    "peft",
    "polars",
    "wandb",
    "numpy",
    "tokenizers",
)


def file_hash(path: str | Path, chunk: int = 1 << 20, *, key: str = "input") -> str:
    """sha256 of a file's bytes, or of a folder's files (names and bytes, sorted); a missing
    or empty input is an InputError naming the path and ``key`` (the config key that gave it)."""
    from valign_ray.errors import InputError

    path = Path(path)
    h = hashlib.sha256()
    if not path.exists():
        raise InputError(f"not found ({key})", path=path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise InputError(f"an empty folder ({key})", path=path)
    for p in files:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        with p.open("rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()[:16]


def fingerprint(inputs: Any) -> str:
    """A short, stable hash of JSON-serialisable ``inputs``."""
    raw = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@functools.cache
def _environment() -> dict[str, Any]:
    """The code and environment part of the manifest, read once per process (git runs in a
    subprocess, and the pipeline records a manifest after every stage)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
    }


def manifest(input_files: dict[str, str] | None = None) -> dict[str, Any]:
    """What reproduces a run: the git commit and whether the tree was dirty, Python and
    package versions, and hashes of the input files (``name -> hash``)."""
    return {**_environment(), "input_files": dict(sorted((input_files or {}).items()))}
