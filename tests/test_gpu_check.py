"""The GPU check script (experiments/benchmarks/gpu_check.py) smoke-tested on CPU: the same
code path a device machine runs (run_training with a LocalContext for ZeRO-0/2/3 and LoRA),
at a tiny size; and the comparison that decides its exit code."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments/benchmarks/gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_runs_every_setup(local_process_group, tmp_path, capsys) -> None:
    gpu_check = _module()
    argv = ["--device", "cpu", "--tiny", "--seq-len", "32", "--batch", "4", "--steps", "3",
            "--setups", "zero0,zero2,zero3,lora"]  # fmt: skip
    # (zero0_compile: train.compile through the same loop in test_train_options.py)
    rc = gpu_check.main([*argv, "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert rc == 0, out
    results = json.loads((tmp_path / "o/gpu_check.json").read_text())
    assert [r["setup"] for r in results] == ["zero0", "zero2", "zero3", "lora"]
    for r in results:
        assert len(r["losses"]) == 3 and r["tokens_per_s"] > 0
        assert r["padding"] == 0.0  # every sequence fills max_length
    assert "ZeRO-2/3 and compiled ZeRO-0 follow ZeRO-0 within 1e-2: yes" in out
    assert "| zero3 |" in out


def test_comparison_flags_a_stage_that_drifts() -> None:
    gpu_check = _module()
    results = [
        {"setup": "zero0", "losses": [0.5, 0.4]},
        {"setup": "zero2", "losses": [0.5, 0.4039]},  # 0.98 % off: within 1e-2
        {"setup": "zero3", "losses": [0.5, 0.41]},  # 2.5 % off
        {"setup": "lora", "losses": [0.9, 0.1]},  # other parameters: not compared
        {"setup": "zero0_compile", "losses": [0.5, 0.3]},  # 25 % off
    ]
    assert gpu_check.compare(results) == ["zero3", "zero0_compile"]
    assert abs(results[1]["max_rel_diff_vs_zero0"] - 0.0039 / 0.4) < 1e-12


def test_shell_scripts_parse() -> None:
    for name in ("gpu_check.sh", "gpu_wheels.sh"):
        subprocess.run(["bash", "-n", str(REPO / "experiments/benchmarks" / name)], check=True)
