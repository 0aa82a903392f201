"""A Ray job's entrypoint runs in the project's environment, whatever ``python`` resolves to.

``ray job submit -- python experiments/pipeline.py ...`` runs ``python`` through the head's
PATH. A head started as ``.venv/bin/ray start`` (no activated venv) has the system Python
there, without polars or torch, and the job died with ``ModuleNotFoundError``. Ray's workers,
though, run the interpreter that started the node (the raylet's ``--python_worker_command``):
the project's environment, and the one the job's driver must match. So an entrypoint whose
Python lacks the project's packages re-executes itself under ``$VALIGN_PYTHON`` when set (for
example through the job's ``runtime_env`` ``env_vars``), else under the interpreter of the Ray
node it runs on.

Standard library only, and Python 3.8 syntax: it runs under whichever Python the PATH gave.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

REQUIRED = ("ray", "polars", "torch")  # what the pipeline cannot start without
_REEXEC = "VALIGN_JOB_REEXEC"  # set before re-executing: never loop
_WORKER_FLAG = b"--python_worker_command="


def has_project_packages() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in REQUIRED)


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the (command name)


def ray_node_python(pid: int | None = None) -> str | None:
    """The Python of the Ray node that started this process: the raylet among its ancestors
    names it in ``--python_worker_command``. None off Linux or outside a Ray job."""
    try:
        pid = _parent(os.getpid() if pid is None else pid)
        while pid > 1:
            for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                if arg.startswith(_WORKER_FLAG):
                    return arg[len(_WORKER_FLAG) :].split()[0].decode()
            pid = _parent(pid)
    except (OSError, ValueError, IndexError):
        return None
    return None


def ensure_project_python(argv: list[str] | None = None) -> None:
    """Return when this Python has the project's packages; else re-execute ``argv`` (default
    ``sys.argv``) under the project's interpreter, or exit 2 saying how to give one."""
    if has_project_packages():
        return
    python = os.environ.get("VALIGN_PYTHON") or ray_node_python()
    if python and not os.environ.get(_REEXEC) and os.access(python, os.X_OK):
        os.environ[_REEXEC] = "1"
        args = sys.argv if argv is None else argv
        os.execv(python, [python, *args])
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    print(
        f"error: {sys.executable} lacks {', '.join(missing)} and no project interpreter was "
        f"found (tried: {python or 'none'}). Start the Ray head from the project's "
        "environment (.venv/bin/ray start --head ...), or name the interpreter with "
        '--runtime-env-json \'{"env_vars": {"VALIGN_PYTHON": "/path/to/.venv/bin/python"}}\'',
        file=sys.stderr,
    )
    sys.exit(2)
