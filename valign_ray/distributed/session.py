"""Connect to Ray: an existing cluster (``ray job submit``, ``ray.address``) or an embedded one.

Also what Ray prints (:mod:`valign_ray.output`): by default its INFO logs, the ``(pid=...)``
prefixes and its notices stay out of the output, its warnings and errors show; ``--verbose``
leaves Ray's output as Ray makes it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from valign_ray.config import RayConfig
from valign_ray.output import QuietWorkerLines, is_verbose, worker_env

WORKER_ENV = {
    # DeepSpeed's CPU accelerator; silences its accelerator probe on machines without a GPU.
    "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"),
    "WANDB_SILENT": "true",
    "TOKENIZERS_PARALLELISM": "false",
    # Ray Train V2 routes print() through its logger, which the driver then shows twice.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def ray_init_kwargs(cfg: RayConfig, joining: bool, verbose: bool) -> dict[str, Any]:
    """``ray.init`` arguments besides the address: the workers' environment and, unless
    verbose, a job logging config at WARNING (INFO logs of every Ray process off; with a
    logging config Ray also leaves the ``(RayTrainWorker pid=...)`` prefix off worker lines)."""
    import ray

    env_vars = {**WORKER_ENV, **worker_env()}
    if joining and (cfg.address or os.environ.get("RAY_ADDRESS")):
        # Ray Train's own actors look the cluster up by RAY_ADDRESS, else they pick among all
        # the Ray instances on the machine and fail when there are several ("Found multiple").
        env_vars["RAY_ADDRESS"] = cfg.address or os.environ["RAY_ADDRESS"]
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env_vars}, "log_to_driver": True}
    if not verbose:
        kwargs["logging_level"] = logging.WARNING
        kwargs["logging_config"] = ray.LoggingConfig(log_level="WARNING")
    if not joining and cfg.num_cpus is not None:
        kwargs["num_cpus"] = cfg.num_cpus
    return kwargs


def init_ray(cfg: RayConfig) -> None:
    """Start or join Ray once per process; a no-op when Ray is already initialised."""
    import ray

    if ray.is_initialized():
        return
    # address "local" always starts a fresh embedded Ray (tests use it), even beside a running
    # cluster that a bare ray.init() would join.
    joining = cfg.address not in (None, "local") or (
        cfg.address is None and "RAY_ADDRESS" in os.environ
    )
    verbose = is_verbose()
    if not verbose:
        # A notice on every fresh local Ray; the warning for a cluster *without* tokens stays.
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
            _DropMessages("Token authentication is enabled for this Ray cluster")
        )
    ray.init(address=cfg.address, **ray_init_kwargs(cfg, joining, verbose))
    if not verbose:
        _filter_forwarded_lines(QuietWorkerLines())
    configure_data_context()


def _filter_forwarded_lines(keep: Callable[[list[str], object], list[str]]) -> None:
    """Pass each batch of worker lines the driver prints through ``keep(lines, stream)``
    (stream: the worker process and whether it is stderr). Ray has no option
    for it, so this wraps its printing handler; without that handler (another Ray version)
    every line shows."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return

    def wrap(handle: Callable[[dict], None]) -> Callable[[dict], None]:
        def handle_kept(data: dict) -> None:
            stream = (data.get("ip"), data.get("pid"), data.get("is_err"))
            lines = keep(list(data.get("lines", [])), stream)
            if lines or not data.get("lines"):
                handle({**data, "lines": lines})

        return handle_kept

    with dispatcher._lock:
        dispatcher.handlers = [
            (name, wrap(handle) if name == "ray_print_logs" else handle)
            for name, handle in dispatcher.handlers
        ]


def quiet_ray_data_logs() -> None:
    """Unless verbose: Ray Data's warnings only (its INFO lines name every dataset it runs),
    and not the notice, once per process, that its progress bars are off (we turn them off:
    our stage lines are the progress output). Call it in every process that runs a dataset
    (the driver, Ray Train workers)."""
    if not is_verbose():
        logging.getLogger("ray.data").setLevel(os.environ.get("RAY_DATA_LOG_LEVEL", "WARNING"))
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def configure_data_context() -> None:
    """Ray Data settings of this process (also of a Ray worker that drives a pipeline run)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = is_verbose()  # our stage lines are the progress output
    ctx.execution_options.preserve_order = True
    quiet_ray_data_logs()
