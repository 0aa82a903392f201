"""A job entry for tests/test_cluster.py, the fast twin of the pipeline's training stage: two
Ray Train workers placed by ``train.resources_per_worker`` (the pipeline's ``scaling_config``),
each saying its node and writing it to the shared storage.

``python tests/cluster_probe.py CONFIG STORAGE [--set k=v ...]``
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir

from valign_ray.job_python import ensure_project_python  # noqa: E402

ensure_project_python()


def _where(config: dict) -> None:
    import ray.train

    from valign_ray.distributed.trainer import say_where

    node = say_where()
    rank = ray.train.get_context().get_world_rank()
    (Path(config["storage"]) / f"rank{rank}.node").write_text(node)


def main(argv: list[str]) -> None:
    from ray.train import RunConfig
    from ray.train.torch import TorchTrainer

    from valign_ray.config import load_config
    from valign_ray.distributed.session import init_ray
    from valign_ray.distributed.trainer import scaling_config

    config, storage, *rest = argv
    sets = rest[1::2]  # --set k=v pairs
    cfg = load_config(config, sets)
    init_ray(cfg.ray)
    TorchTrainer(
        _where,
        train_loop_config={"storage": storage},
        scaling_config=scaling_config(cfg.train),
        run_config=RunConfig(name="probe", storage_path=storage),
    ).fit()


if __name__ == "__main__":
    main(sys.argv[1:])
