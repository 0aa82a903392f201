"""Real Ray nodes for tests, started as ``ray start --block`` in a session of their own, on
ports picked free here, and stopped by killing exactly the processes they started: never
``ray stop``, which stops every Ray on the machine (other test runs' too)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")  # the venv's CLI, as the README's .venv/bin/ray
TOKEN_FILE = Path.home() / ".ray" / "auth_token"


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port(low: int = 20000, high: int = 29999, taken: set[int] | None = None) -> int:
    taken = set() if taken is None else taken
    for _ in range(500):
        port = random.randint(low, high)
        if port not in taken and _is_free(port):
            taken.add(port)
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


def free_range(width: int, taken: set[int]) -> tuple[int, int]:
    """``width`` consecutive free ports (for a node's worker ports)."""
    for _ in range(100):
        start = random.randint(30000, 39000)
        ports = range(start, start + width)
        if not taken.intersection(ports) and all(_is_free(p) for p in ports[::10]):
            taken.update(ports)
            return start, start + width - 1
    raise RuntimeError("no free port range")


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN_FILE.read_text().strip()}"}


@dataclass
class Node:
    """One ``ray start --block`` process (and everything it starts) in its own session."""

    proc: subprocess.Popen
    log: Path

    def _ours(self) -> set[int]:
        """The session's processes plus their descendants (job drivers start sessions of
        their own, found through their parents)."""
        import psutil

        sid = self.proc.pid
        found = set()
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == sid:
                    found.add(p.pid)
                    found |= {c.pid for c in p.children(recursive=True)}
            except (OSError, psutil.Error):
                continue
        return found

    def stop(self) -> None:
        """SIGKILL every process this node started (Ray's own drain takes up to 30 s)."""
        for _ in range(2):  # a second pass for anything started meanwhile
            for pid in sorted(self._ours()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    continue
        self.proc.wait(timeout=30)


def start_node(args: list[str], tmp: Path, name: str) -> Node:
    """A node that authenticates with the token (a joining node needs RAY_AUTH_MODE=token)."""
    log = tmp / f"{name}.log"
    proc = subprocess.Popen(
        [str(RAY), "start", "--block", "--disable-usage-stats", *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "RAY_AUTH_MODE": "token"},
    )
    return Node(proc, log)


@dataclass
class Cluster:
    """A head (``node_a``) and a worker node (``node_b``), each with one ``trainslot``."""

    head: Node
    worker: Node
    dashboard: str
    temp_dir: Path

    def stop(self) -> None:
        for node in (self.worker, self.head):
            node.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _get(url: str, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(check, what: str, node: Node, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            raise RuntimeError(f"{what}: ray start exited\n{node.log.read_text()[-3000:]}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s\n{node.log.read_text()[-3000:]}")


def _nodes(dashboard: str) -> list[dict]:
    status, body = _get(f"{dashboard}/api/v0/nodes?detail=false", auth_headers())
    return json.loads(body)["data"]["result"]["result"] if status == 200 else []


def _alive_nodes(dashboard: str) -> int:
    return sum(1 for row in _nodes(dashboard) if row.get("state") == "ALIVE")


def _node_args(taken: set[int], num_cpus: int, resources: dict, temp_dir: Path) -> list[str]:
    low, high = free_range(40, taken)
    return [
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}",
        f"--resources={json.dumps(resources)}",
        f"--temp-dir={temp_dir}",
        f"--node-manager-port={free_port(taken=taken)}",
        f"--object-manager-port={free_port(taken=taken)}",
        f"--dashboard-agent-listen-port={free_port(taken=taken)}",
        f"--dashboard-agent-grpc-port={free_port(taken=taken)}",
        f"--metrics-export-port={free_port(taken=taken)}",
        f"--runtime-env-agent-port={free_port(taken=taken)}",
        f"--min-worker-port={low}",
        f"--max-worker-port={high}",
    ]


def _start_worker(args: list[str], log_dir: Path, dashboard: str, tries: int = 3) -> Node:
    """Join the worker node; on a loaded machine its first GCS call can time out ("Deadline
    Exceeded") and ``ray start`` exits, so a start that exits is retried (a hang is not)."""
    for attempt in range(1, tries + 1):
        worker = start_node(args, log_dir, f"worker-{attempt}")
        try:
            wait_for(lambda: _alive_nodes(dashboard) == 2, "worker node", worker)
            return worker
        except RuntimeError:
            worker.stop()
            if attempt == tries:
                raise
        except BaseException:
            worker.stop()
            raise
    raise AssertionError("unreachable")


def start_cluster(log_dir: Path) -> Cluster:
    """Two nodes on this machine, 2 CPUs each. Each node has a temp dir of its own, as on two
    machines: with one shared, the second node unpacked a job's working_dir over the folder the
    driver was running in (which then failed to load libtorch). Short paths: Unix sockets."""
    temp_dir = Path(tempfile.mkdtemp(prefix="vr12-"))
    taken: set[int] = set()
    gcs, dash = free_port(6420, 6499, taken), free_port(8290, 8399, taken)
    client = free_port(taken=taken)
    head_args = [
        "--head",
        f"--port={gcs}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}",
        *_node_args(taken, 2, {"node_a": 1, "trainslot": 1}, temp_dir / "a"),
    ]
    head = start_node(head_args, log_dir, "head")
    dashboard = f"http://127.0.0.1:{dash}"
    try:
        wait_for(lambda: _get(f"{dashboard}/api/jobs/", auth_headers())[0] == 200, "head", head)
        wait_for(lambda: _alive_nodes(dashboard) == 1, "head node", head)
        # The GCS listens on the address the head chose for itself (it may not be 127.0.0.1).
        worker_args = [
            f"--address={_nodes(dashboard)[0]['node_ip']}:{gcs}",
            *_node_args(taken, 2, {"node_b": 1, "trainslot": 1}, temp_dir / "b"),
        ]
        worker = _start_worker(worker_args, log_dir, dashboard)
    except BaseException:
        head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return Cluster(head, worker, dashboard, temp_dir)
