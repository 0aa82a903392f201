"""What ``valign`` prints: the progress line and its ETA, how often it shows, what is left of
Ray's forwarded lines, and ``--verbose``. (The output of a whole run, at most 60 lines, is
checked on the CLI runs of tests/test_faults.py.)"""

from __future__ import annotations

import os

import pytest

from valign_ray import output
from valign_ray.train.progress import EtaClock, format_duration, progress_every, progress_line


@pytest.fixture
def quiet_env():
    """Each test starts with none of the variables set_verbose writes; they are restored after
    (a verbose setting left behind would make the session's Ray and later runs verbose)."""
    keys = (output.VERBOSE_ENV, *output.QUIET_ENV, "PYTHONWARNINGS")
    saved = {key: os.environ.pop(key, None) for key in keys}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_progress_interval_gives_about_ten_lines_whatever_the_length() -> None:
    assert progress_every(180, 10) == 18  # smoke: 180 // 10; lines at 18, 36, ..., 180
    assert progress_every(50, 10) == 10  # short runs keep report_every
    assert progress_every(3000, 10) == 300
    assert progress_every(5, 10) == 10
    assert progress_every(180, 10, verbose=True) == 1  # --verbose: every step


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0s"), (4.6, "5s"), (59.4, "59s"), (72, "1m12s"), (600, "10m00s"), (7500, "2h05m")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_eta_counts_the_time_per_step_after_the_first_step() -> None:
    now = [100.0]
    eta = EtaClock(total_steps=10, clock=lambda: now[0])
    eta.start()
    now[0] = 130.0  # step 1 took 30 s (warm-up): alone, it is the only guess: 9 x 30
    assert eta.step_done(1) == pytest.approx(270.0)
    now[0] = 132.0
    assert eta.step_done(2) == pytest.approx(16.0)  # 2 s per step since step 1, 8 left
    now[0] = 138.0
    assert eta.step_done(4) == pytest.approx(16.0)  # (138 - 130) / 3 steps = 8/3 s x 6 left
    now[0] = 148.0
    assert eta.step_done(10) == pytest.approx(0.0)


def test_eta_of_a_resumed_run_counts_from_its_own_first_step() -> None:
    now = [0.0]
    eta = EtaClock(total_steps=100, clock=lambda: now[0])
    eta.start()
    now[0] = 5.0
    eta.step_done(41)  # resumed from step 40
    now[0] = 15.0
    assert eta.step_done(51) == pytest.approx(49.0)  # 1 s per step, 49 left


def test_progress_line_shows_step_loss_eta_and_verbose_shows_more() -> None:
    m = {"step": 36.0, "loss": 0.42637, "z0": 0.5, "rewards/margin": 0.7157, "grad_norm": 0.3}
    m["tokens_per_s"] = 2.5e4
    line = progress_line(m, 180, 72.0)
    assert line == "[train] step 36/180  loss 0.4264  z0 0.5  rewards/margin 0.7157  eta 1m12s"
    verbose = progress_line(m, 180, 72.0, verbose=True)
    assert "grad_norm 0.3" in verbose and "tokens_per_s 2.5e+04" in verbose
    assert progress_line(m, 180, None).endswith("rewards/margin 0.7157")  # no ETA yet


def test_ray_notices_are_dropped_and_thread_tracebacks_condensed() -> None:
    lines = [
        "[train] step 18/180  loss 0.4762  eta 16s",
        "[2026-12-01 18:03:23,629 E 24708 24788] core_worker.cc:2465: Actor with class name: "
        "'PreemptionWatcher' and ID: 'e0c0' has constructor arguments in the object store and "
        "max_restarts > 0. If the arguments ...",
        "Exception in thread PlacementGroupCleanerMonitor:",
        "Traceback (most recent call last):",
        '  File "threading.py", line 1045, in _bootstrap_inner',
        "    self.run()",
        "           ^^^^^^^^",
        "ConnectionError: Found multiple active Ray instances: {'a:1', 'b:2'}.",
        "a user's warning",
    ]
    assert output.QuietWorkerLines()(lines) == [
        "[train] step 18/180  loss 0.4762  eta 16s",
        "Exception in thread PlacementGroupCleanerMonitor: ConnectionError: Found multiple "
        "active Ray instances: {'a:1', 'b:2'}. (--verbose shows the traceback)",
        "a user's warning",
    ]


def test_a_traceback_split_over_batches_is_condensed_per_stream() -> None:
    keep = output.QuietWorkerLines()
    assert keep(["Exception in thread T:", "Traceback (most recent call last):"], "a") == []
    assert keep(["[train] step 36/180"], "b") == ["[train] step 36/180"]  # another worker
    assert keep(['  File "x.py", line 1, in f', "    f()"], "a") == []
    assert keep(["self.run()", "           ^^^^^^", 'File "y.py", line 2'], "a") == []  # no indent
    assert keep(["ValueError: v", "next"], "a") == [
        "Exception in thread T: ValueError: v (--verbose shows the traceback)",
        "next",
    ]


def test_quiet_worker_env_and_verbose_worker_env(quiet_env) -> None:
    os.environ["PYTHONWARNINGS"] = "error::UserWarning"
    output.set_verbose(False)
    env = output.worker_env()
    assert env[output.VERBOSE_ENV] == "0"
    assert env["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and env["RAY_DATA_LOG_LEVEL"] == "WARNING"
    # The user's own filters stay, ours come after (later entries take precedence).
    assert env["PYTHONWARNINGS"] == (
        "error::UserWarning,"
        "ignore:`ExecutionOptions.exclude_resources` is deprecated,"
        "ignore:`torch.distributed.all_gather_into_tensor` is deprecated"
    )
    output.set_verbose(True)
    assert output.worker_env() == {output.VERBOSE_ENV: "1"}


@pytest.mark.parametrize(
    "argv",
    [
        ["--verbose", "plan-memory", "--shape", "qwen2.5-7b", "--zero-stage", "3"],
        ["plan-memory", "--shape", "qwen2.5-7b", "--zero-stage", "3", "--verbose"],
    ],
)
def test_verbose_before_or_after_the_subcommand(quiet_env, argv, capsys) -> None:
    from valign_ray.cli import main

    assert main(argv) == 0
    assert os.environ[output.VERBOSE_ENV] == "1"
    assert main([a for a in argv if a != "--verbose"]) == 0
    assert os.environ[output.VERBOSE_ENV] == "0"  # without the flag: quiet again
    capsys.readouterr()


def test_ray_init_keeps_everything_only_when_verbose(quiet_env) -> None:
    from valign_ray.config import RayConfig
    from valign_ray.distributed.session import ray_init_kwargs

    quiet = ray_init_kwargs(RayConfig(num_cpus=2), joining=False, verbose=False)
    # A logging config at WARNING: no INFO from any Ray process, no "(pid=...)" prefixes.
    assert quiet["logging_config"].log_level == "WARNING" and quiet["num_cpus"] == 2
    output.set_verbose(True)
    verbose = ray_init_kwargs(RayConfig(num_cpus=2), joining=False, verbose=True)
    assert "logging_config" not in verbose and "logging_level" not in verbose
    assert verbose["runtime_env"]["env_vars"][output.VERBOSE_ENV] == "1"
