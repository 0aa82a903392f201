"""Ray at the edge: run one plain function in one Ray task, on a GPU when asked.

The RL-CAI feedback model (:mod:`valign_ray.cai.feedback`) is a whole causal LM; on a GPU
cluster the driver may have no GPU, so the labelling runs in a task that reserves one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray


def run_in_task(fn: Callable[..., Any], *args: Any, num_gpus: float = 0.0, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in one Ray task with ``num_gpus`` GPUs; its return value."""
    task = ray.remote(num_cpus=1, num_gpus=num_gpus)(fn)
    return ray.get(task.remote(*args, **kwargs))
