"""Ray Tune at the edge of the experiment runner: one trial per point of an explicit grid.

The edge is handed what it runs: ``trial_fn(point) -> dict`` and the points (plain picklable
dicts); it knows nothing of pipelines or configs. Tune supplies the queue, the placement over a
cluster, ``max_concurrent`` and a record of every trial; a failing point fails its own trial
only, and comes back with its error.

Each trial runs ``trial_fn`` in a child Ray task rather than in the trial's own process, for
two reasons, both measured here (Ray 2.60, Train V2):

- environment variables set in the trial process do not reach the Ray Train workers it
  starts (they are actors created with the job's runtime env), while a task's ``runtime_env``
  env vars are inherited by every task and actor it starts, workers included, merged with the
  job's own (``WANDB_RUN_GROUP`` set this way arrives in the rank-0 worker that calls
  ``wandb.init``);
- Tune moves a trial's working directory into its trial folder; the child task runs in the
  job's working directory, so relative paths in a config mean what they mean in a plain run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from valign_ray.config import RayConfig
from valign_ray.distributed.session import configure_data_context, init_ray
from valign_ray.output import is_verbose, run_done_line

TrialFn = Callable[[dict[str, Any]], dict[str, Any]]


def _run_point(trial_fn: TrialFn, point: dict[str, Any]) -> dict[str, Any]:
    configure_data_context()
    return trial_fn(point)


def _trial(
    config: dict[str, Any],
    *,
    trial_fn: TrialFn,
    points: list[dict[str, Any]],
    env_vars: dict[str, str],
) -> None:
    index = config["index"]
    options: dict[str, Any] = {
        "num_cpus": 0,  # it works on the CPU this trial holds while waiting for it
        "max_retries": 0,  # a failed run is reported, not silently repeated
        # Same node as the trial, whose CPU it uses (Train V2 pins its controller there too).
        "scheduling_strategy": NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False
        ),
    }
    if env_vars:
        options["runtime_env"] = {"env_vars": env_vars}
    out = ray.get(ray.remote(_run_point).options(**options).remote(trial_fn, points[index]))
    tune.report({"result": out, "index": index})  # nested: apart from Tune's own keys


class _RunProgress(tune.Callback):
    """Prints :func:`~valign_ray.output.run_done_line` as each trial ends."""

    def __init__(self, labels: list[str]) -> None:
        self.labels, self.done, self.start = labels, 0, time.monotonic()

    def _done(self, trial: Any, failed: bool) -> None:
        self.done += 1
        label = self.labels[trial.config["index"]] or f"point {trial.config['index']}"
        elapsed = time.monotonic() - self.start
        print(run_done_line(label, self.done, len(self.labels), elapsed, failed), flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._done(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._done(trial, failed=True)


def check_cpus(cpus_per_trial: float, worker_cpus: int, concurrent: int) -> None:
    """A trial holds its CPU while its Ray Train workers need ``worker_cpus`` more: with too
    few CPUs Tune would wait forever instead of failing."""
    need = (cpus_per_trial + worker_cpus) * concurrent
    have = ray.cluster_resources().get("CPU", 0)
    if have < need:
        raise ValueError(
            f"the trials need {need:g} CPUs ({concurrent} concurrent trial(s) x ({cpus_per_trial:g}"
            f" for the trial + {worker_cpus} for its Ray Train workers)) but Ray has {have:g}: "
            "set ray.num_cpus, lower max_concurrent or train.num_workers"
        )


def _error_text(error: BaseException) -> str:
    """The original exception behind Ray's wrappers (trial error -> task error -> cause)."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return f"{type(error).__name__}: {error}"[:2000]


def run_grid(
    trial_fn: TrialFn,
    points: list[dict[str, Any]],
    *,
    storage_path: str | Path,
    name: str,
    max_concurrent: int = 1,
    resources_per_trial: dict[str, float] | None = None,
    ray_config: RayConfig | None = None,
    worker_cpus: int = 0,
    env_vars: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One Tune trial per point (``tune.grid_search`` over the point indices); returns, in the
    points' order, ``{"status": "ok" | "error", "error": str | None, "result": dict}`` where
    ``result`` is what ``trial_fn`` returned.

    ``worker_cpus``: CPUs each trial's own Ray Train workers take (checked up front);
    ``env_vars``: set for ``trial_fn`` and everything it starts on Ray; ``ray_config``: how to
    start or join Ray (a no-op when it is up). Trial folders are ``storage_path/name/``, each
    named after its point's ``"run"`` when it has one.
    """
    if not points:
        return []
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
    init_ray(ray_config or RayConfig())
    resources = resources_per_trial or {"cpu": 1}
    check_cpus(resources.get("cpu", 0), worker_cpus, max_concurrent)
    labels = [str(p.get("run", "")) for p in points]
    trainable = tune.with_parameters(
        _trial, trial_fn=trial_fn, points=points, env_vars=dict(env_vars or {})
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={"index": tune.grid_search(list(range(len(points))))},
        tune_config=tune.TuneConfig(
            # Tune ignores TuneConfig.max_concurrent_trials beside a search generator; too many
            # trials at once deadlock (each holds a CPU its workers then lack).
            search_alg=BasicVariantGenerator(max_concurrent=max_concurrent),
            trial_dirname_creator=lambda t: f"{t.config['index']:03d}-{labels[t.config['index']]}",
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(Path(storage_path).resolve()),
            # quiet: one line per finished run instead of Tune's status tables
            verbose=1 if is_verbose() else 0,
            callbacks=[_RunProgress(labels)],
        ),
    )
    out: list[dict[str, Any]] = [
        {"status": "error", "error": "the trial never ran", "result": {}} for _ in points
    ]
    for res in tuner.fit():
        index = res.config["index"]
        if res.error is not None:
            out[index] = {"status": "error", "error": _error_text(res.error), "result": {}}
        else:
            result = (res.metrics or {}).get("result", {})
            out[index] = {"status": "ok", "error": None, "result": result}
    return out
