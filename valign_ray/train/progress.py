"""The training progress line rank 0 prints: step, loss, the method's key numbers and an ETA.

A run prints about 10 of them whatever its length (every ``report_every`` steps, or every
``total // 10`` when that is more); ``--verbose`` prints every step with every number.
"""

from __future__ import annotations

import time
from collections.abc import Callable

LINES_PER_RUN = 10  # progress lines a long run prints by default
QUIET_KEYS = ("z0", "rewards/margin", "rewards/accuracy")
VERBOSE_KEYS = (*QUIET_KEYS, "grad_norm", "lr", "tokens_per_s", "padding_fraction")


def progress_every(total_steps: int, report_every: int, verbose: bool = False) -> int:
    """Steps between progress lines: 1 when verbose, else ``max(report_every, total // 10)``."""
    if verbose:
        return 1
    return max(report_every, total_steps // LINES_PER_RUN, 1)


def format_duration(seconds: float) -> str:
    """``5s``, ``1m12s``, ``2h05m`` (rounded to the second)."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class EtaClock:
    """Seconds left, from the wall time per step since the end of the first step this process
    ran (that step also pays for warm-up: compiling, first allocations, the first gather)."""

    def __init__(self, total_steps: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.clock = total_steps, clock
        self.start_time: float | None = None
        self.first_done: tuple[int, float] | None = None  # (step, time) after the first step

    def start(self) -> None:
        """Call before the first step of this process."""
        self.start_time = self.clock()

    def step_done(self, step: int) -> float | None:
        """Call after step ``step`` (1-based) finished; returns the seconds left (None before
        :meth:`start`)."""
        now = self.clock()
        if self.first_done is None:
            self.first_done = (step, now)
            if self.start_time is None:
                return None
            per_step = now - self.start_time  # one step seen: the best guess there is
        else:
            first_step, first_time = self.first_done
            per_step = (now - first_time) / max(step - first_step, 1)
        return per_step * (self.total - step)


def progress_line(
    metrics: dict[str, float], total: int, eta_s: float | None, verbose: bool = False
) -> str:
    """``[train] step 12/180  loss 0.4891  z0 0.14  rewards/margin 0.078  eta 1m12s``."""
    shown = [f"step {int(metrics['step'])}/{total}", f"loss {metrics['loss']:.4f}"]
    for key in VERBOSE_KEYS if verbose else QUIET_KEYS:
        if key in metrics:
            shown.append(f"{key} {metrics[key]:.4g}")
    if eta_s is not None:
        shown.append(f"eta {format_duration(eta_s)}")
    return "[train] " + "  ".join(shown)
