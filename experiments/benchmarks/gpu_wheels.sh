#!/usr/bin/env bash
# Wheels gpu_check.sh installs on the device machine (Python 3.12, x86-64), written to .whl/:
# DeepSpeed built here without ops (a py3-none-any wheel; ../shared/STACK.md), and the
# packages the training worker imports that the device image lacks. About 58 MB in all, under
# the 64 MiB a device call may carry.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
mkdir -p .whl
PY=.venv/bin/python
ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl \
  "deepspeed==$(ver deepspeed)"
pkgs=()
for name in hjson pydantic pydantic-core annotated-types typing-inspection polars; do
  pkgs+=("$name==$(ver "$name")")
done
# polars >= 1.34 keeps its compiled engine in a separate runtime package.
for rt in polars-runtime-32 polars-runtime-64 polars-runtime-compat; do
  if v=$(ver "$rt" 2> /dev/null); then pkgs+=("$rt==$v"); fi
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "${pkgs[@]}"
du -ch .whl/*.whl | tail -1
