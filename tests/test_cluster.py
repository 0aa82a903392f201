"""A real two-node Ray cluster on this machine, jobs through the Job Submission API, the
README's commands as written, and ``cluster.yaml`` through Ray's own validation.

The nodes are ``ray start`` processes on ports picked free here (tests/ray_nodes.py), stopped by
killing the processes they started: never ``ray stop``, which stops every Ray on the machine.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests import ray_nodes

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
JOB_TIMEOUT_S = 540.0
# One worker per node: every node has one "trainslot", and each worker takes one.
ONE_PER_NODE = "train.resources_per_worker={CPU: 1, trainslot: 1}"
SMOKE = ["--set", "train.max_steps=3", "--set", "wandb.enabled=false"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("cluster_logs")
    c = ray_nodes.start_cluster(logs)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def jobs(cluster):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.dashboard, headers=ray_nodes.auth_headers())


def _entrypoint(*args: str) -> str:
    return shlex.join(["python", "experiments/pipeline.py", *args])


def _wait(jobs, job_id: str) -> tuple[str, str]:
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        status = jobs.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status), jobs.get_job_logs(job_id)
        time.sleep(1.0)
    jobs.stop_job(job_id)
    pytest.fail(f"job {job_id} still running after {JOB_TIMEOUT_S:.0f} s")


def test_resources_per_worker_reach_the_scaling_config():
    from valign_ray.config import TrainConfig, load_config
    from valign_ray.distributed.trainer import scaling_config

    cfg = load_config(REPO / "configs/smoke.yaml", [ONE_PER_NODE])
    assert scaling_config(cfg.train).resources_per_worker == {"CPU": 1.0, "trainslot": 1.0}
    default = scaling_config(TrainConfig())
    assert default.resources_per_worker is None and default.num_workers == 2  # Ray: 1 CPU each


def _placed(logs: str) -> dict[str, str]:
    placed = dict(re.findall(r"\[train\] worker (\d+)/2 on node ([0-9a-f]+)", logs))
    assert set(placed) == {"0", "1"}, logs[-4000:]
    assert placed["0"] != placed["1"], f"both workers on node {placed['0']}"
    return placed


def _submit(jobs, entrypoint: str) -> tuple[str, str]:
    """Submit with a runtime_env (the repository as working_dir); wait for the end."""
    env = {"env_vars": {"WANDB_MODE": "offline", "RAY_DEDUP_LOGS": "0"}}
    job_id = jobs.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(REPO), **env})
    return _wait(jobs, job_id)


def test_job_places_one_training_worker_on_each_node(jobs, tmp_path):
    """The fast twin of the slow pipeline job below: a job through the Job Submission API whose
    `python` is the system one (the head was started from the venv's `ray`, not activated, so
    the entry re-executes under the node's Python), two Ray Train workers placed by
    train.resources_per_worker, each writing its node to storage both nodes see."""
    shared = tmp_path / "shared"  # storage every node sees: on one machine, any folder
    shared.mkdir()
    entry = shlex.join(["python", "tests/cluster_probe.py", "configs/smoke.yaml", str(shared)])
    status, logs = _submit(jobs, f"{entry} --set {shlex.quote(ONE_PER_NODE)}")
    assert status == "SUCCEEDED", logs[-4000:]
    placed = _placed(logs)
    assert {r: (shared / f"rank{r}.node").read_text() for r in "01"} == placed


@pytest.mark.slow
def test_pipeline_job_on_two_nodes_one_worker_each(jobs, tmp_path):
    """The whole pipeline as a job: SUCCEEDED, one training worker on each node, the run
    directory (summary, checkpoint) on the shared storage. About 5 min on a loaded machine."""
    shared = tmp_path / "shared"
    args = ["configs/smoke.yaml", "--output-dir", str(shared), *SMOKE, "--set", ONE_PER_NODE]
    status, logs = _submit(jobs, _entrypoint(*args))
    assert status == "SUCCEEDED", logs[-4000:]
    _placed(logs)
    run_dir = shared / "smoke"
    assert (run_dir / "summary.json").is_file()
    assert any((run_dir / "ray_train").rglob("checkpoint_*")), "no checkpoint on shared storage"


def test_broken_config_fails_with_the_error_in_the_logs(jobs):
    status, logs = _submit(jobs, _entrypoint("configs/smoke.yaml", "--set", "train.batch_size=0"))
    assert status == "FAILED"
    assert "train.batch_size" in logs and "out of range" in logs, logs[-2000:]


def test_submission_without_the_token_is_refused(cluster):
    body = b'{"entrypoint": "echo hi"}'
    req = urllib.request.Request(f"{cluster.dashboard}/api/jobs/", data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 401
    wrong = dict(req.headers, Authorization="Bearer not-the-token")
    req = urllib.request.Request(req.full_url, data=body, headers=wrong, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code in (401, 403)


def test_entry_under_a_python_without_the_packages_reexecutes_or_says_how(tmp_path):
    """What a job whose `python` is the system one goes through (ray_node_python finds the
    interpreter in a real job; here VALIGN_PYTHON names it)."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    has = "import importlib.util as u; print(u.find_spec('polars') is not None)"
    if subprocess.run([base, "-c", has], capture_output=True, text=True).stdout.strip() != "False":
        pytest.skip("the base Python has the project's packages: nothing to re-execute")
    entry = [str(base), str(REPO / "experiments/pipeline.py"), str(tmp_path / "none.yaml")]
    env = {k: v for k, v in os.environ.items() if k not in ("VALIGN_PYTHON", "PYTHONPATH")}
    lost = subprocess.run(entry, capture_output=True, text=True, env=env)
    assert lost.returncode == 2 and "lacks" in lost.stderr and "VALIGN_PYTHON" in lost.stderr
    found = subprocess.run(
        entry, capture_output=True, text=True, env={**env, "VALIGN_PYTHON": sys.executable}
    )
    assert found.returncode == 2 and "config file not found" in found.stderr, found.stderr


def test_cluster_yaml_passes_rays_validation_and_keeps_the_dashboard_local():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in head_start
    readme = README.read_text()
    assert "ray dashboard cluster.yaml" in readme


def readme_job_commands() -> str:
    """The shell block of README.md's "Ray jobs and clusters" that submits a job."""
    section = README.read_text().split("## Ray jobs and clusters", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return next(b for b in blocks if "ray job submit" in b)


def test_readme_job_commands_name_what_exists():
    """Fast check of the block the slow test runs: paths, config and flags that exist."""
    from valign_ray.config import load_config

    block = readme_job_commands()
    assert ".venv/bin/ray start --head" in block and ".venv/bin/ray stop" in block
    assert "RAY_AUTH_MODE=token" in block
    cmd = block.split("-- ", 1)[1].split("\n")[0].split()
    assert cmd[:2] == ["python", "experiments/pipeline.py"]
    assert (REPO / cmd[1]).is_file()
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    load_config(REPO / cmd[2], sets)


def _fresh_clone(dest: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked plus new, not ignored), with
    `.venv` the environment running these tests (the README's install step made it)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    (dest / ".venv").symlink_to(Path(sys.prefix))
    return dest


ISOLATED = """set -e
ip link set lo up
mkdir -p /tmp/ray && mount --bind "$1" /tmp/ray
cd "$2"
bash -e -x -c "$3"
"""


def _can_isolate() -> bool:
    probe = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child", "true"]
    return shutil.which("unshare") is not None and subprocess.run(probe).returncode == 0


@pytest.mark.slow
def test_readme_job_commands_as_written(tmp_path):
    """The README's block, verbatim, in a fresh clone: in a network and process namespace of
    its own, so that its default ports and its `ray stop` touch no other Ray on this machine."""
    if not _can_isolate():
        pytest.skip("needs unshare (network, PID and mount namespaces)")
    clone = _fresh_clone(tmp_path / "clone")
    private_tmp_ray = Path(tempfile.mkdtemp(prefix="vr12-readme-"))
    argv = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
    argv += ["bash", "-c", ISOLATED, "isolated", str(private_tmp_ray), str(clone)]
    try:
        done = subprocess.run(
            [*argv, readme_job_commands()],
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S + 60,
            start_new_session=True,
        )
    finally:
        shutil.rmtree(private_tmp_ray, ignore_errors=True)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    assert "succeeded" in out
    assert (clone / "runs" / "smoke" / "summary.json").is_file(), out[-3000:]
