"""Connect to Ray: an existing cluster (``ray job submit``, ``ray.address``) or an embedded one."""

from __future__ import annotations

import os

from valign_ray.config import RayConfig

WORKER_ENV = {
    # DeepSpeed's CPU accelerator; silences its accelerator probe on machines without a GPU.
    "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"),
    "WANDB_SILENT": "true",
    "TOKENIZERS_PARALLELISM": "false",
    # Ray Train V2 routes print() through its logger, which the driver then shows twice.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}


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
    env_vars = dict(WORKER_ENV)
    if joining and (cfg.address or os.environ.get("RAY_ADDRESS")):
        # Ray Train's own actors look the cluster up by RAY_ADDRESS, else they pick among all
        # the Ray instances on the machine and fail when there are several ("Found multiple").
        env_vars["RAY_ADDRESS"] = cfg.address or os.environ["RAY_ADDRESS"]
    kwargs: dict = {"runtime_env": {"env_vars": env_vars}, "log_to_driver": True}
    if not joining and cfg.num_cpus is not None:
        kwargs["num_cpus"] = cfg.num_cpus
    ray.init(address=cfg.address, **kwargs)
    configure_data_context()


def configure_data_context() -> None:
    """Ray Data settings of this process (also of a Ray worker that drives a pipeline run)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our stage lines are the progress output
    ctx.execution_options.preserve_order = True
