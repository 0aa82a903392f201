"""What ``valign`` prints: by default one line per stage, the tables, a training progress line
and the summary; with ``--verbose`` everything (Ray's logs with their ``(pid=...)`` prefixes,
progress bars, every training step).

The choice travels as the environment variable ``VALIGN_VERBOSE`` so that Ray workers (which
inherit :func:`worker_env` through the job's runtime environment) and one-process runs read the
same setting. Library noise is fixed at its cause where our code causes it; what libraries
print by themselves is quietened here, through variables each library reads at import.
"""

from __future__ import annotations

import os
import re
import warnings

VERBOSE_ENV = "VALIGN_VERBOSE"

# Deprecations raised inside libraries we call (Ray Train's DataConfig sets a deprecated Ray
# Data option; DeepSpeed calls a deprecated torch.distributed function): nothing a user of
# valign can change. Matched as message prefixes (PYTHONWARNINGS: no commas or colons).
LIBRARY_DEPRECATIONS = (
    "`ExecutionOptions.exclude_resources` is deprecated",
    "`torch.distributed.all_gather_into_tensor` is deprecated",
)

# Lines of Ray's own processes that say nothing a user of valign can act on (forwarded worker
# output; shown with --verbose): Ray Train's internal PreemptionWatcher actor logs this C++ note
# on every run (https://github.com/ray-project/ray/issues/53727). The driver prints it once
# itself for the reference scorer's actor: Ray Data's only way to avoid it (max_restarts=0) is
# a deprecated argument of map_batches, and the driver's own C++ log cannot be filtered.
RAY_NOTICES = re.compile(r"has constructor arguments in the object store and max_restarts > 0")

# The last line of a traceback: ``ConnectionError: ...`` (frames hold paths and code instead).
EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(: |$)")

QUIET_ENV = {
    # transformers' "Loading weights" / "Writing model shards" bars, once per load and save.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # Ray Data's per-dataset INFO lines ("Starting execution", "execution finished"); its
    # warnings still show.
    "RAY_DATA_LOG_LEVEL": "WARNING",
}


def is_verbose() -> bool:
    """True when ``--verbose`` (or ``VALIGN_VERBOSE=1``) asked for everything."""
    return os.environ.get(VERBOSE_ENV, "0") == "1"


def set_verbose(verbose: bool) -> None:
    """Choose the output of this process and of the Ray workers it starts afterwards; call it
    before importing Ray, transformers or DeepSpeed (they read their settings at import)."""
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    if not verbose:
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
        quiet_library_warnings()


def quiet_library_warnings() -> None:
    """Ignore the known library deprecations in this process (unless verbose)."""
    if is_verbose():
        return
    for message in LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message)


def worker_env() -> dict[str, str]:
    """Environment variables for Ray workers: the verbosity and, unless verbose, the quiet
    settings (a warning filter in ``PYTHONWARNINGS`` also reaches Ray's own actors)."""
    env = {VERBOSE_ENV: "1" if is_verbose() else "0"}
    if is_verbose():
        return env
    env.update({key: os.environ.get(key, value) for key, value in QUIET_ENV.items()})
    filters = [f"ignore:{message}" for message in LIBRARY_DEPRECATIONS]
    if os.environ.get("PYTHONWARNINGS"):
        filters.insert(0, os.environ["PYTHONWARNINGS"])
    env["PYTHONWARNINGS"] = ",".join(filters)
    return env


class QuietWorkerLines:
    """What the driver shows of the worker lines Ray forwards, unless verbose: without
    :data:`RAY_NOTICES`, and a traceback of a thread (``Exception in thread NAME:``, the
    frames, the exception) as one line with its exception (Ray Train's placement-group cleaner
    fails so when several Ray instances share the machine). A traceback may arrive split over
    batches: the state is kept per stream (a worker's stdout or stderr)."""

    def __init__(self) -> None:
        self._open: dict[object, str] = {}  # stream -> the header of a traceback being read

    def __call__(self, lines: list[str], stream: object = None) -> list[str]:
        out: list[str] = []
        for line in lines:
            header = self._open.get(stream)
            if header is not None:
                if not EXCEPTION_LINE.match(line):
                    continue  # a frame (Ray strips the indent of a batch's first line)
                del self._open[stream]
                out.append(f"{header} {line} (--verbose shows the traceback)")
            elif line.startswith("Exception in thread "):
                self._open[stream] = line
            elif not RAY_NOTICES.search(line):
                out.append(line)
        return out


def run_done_line(label: str, done: int, total: int, elapsed_s: float, failed: bool) -> str:
    """One line per finished run of a grid: ``[grid] run 3/45 dpo_hard-d0-s2 finished,
    elapsed 6m12s, eta 1h26m`` (ETA: the mean time per finished run so far, times the runs
    left; with concurrent runs that is the wall time per run, not a run's own duration)."""
    from valign_ray.train.progress import format_duration

    eta = elapsed_s / max(done, 1) * (total - done)
    state = "FAILED" if failed else "finished"
    return (
        f"[grid] run {done}/{total} {label} {state}, elapsed {format_duration(elapsed_s)}, "
        f"eta {format_duration(eta)}"
    )
