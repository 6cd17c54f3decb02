#!/usr/bin/env bash
# Create/refresh the main environment at .venv (idempotent: a second run reuses it).
# torch==2.13.0 is installed first and on its own, so the CPU build is used; everything else is
# installed with the lock file as constraints (the known-good, `pip check`-clean set).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${AIPC_PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=".venv/.aipc-setup-$(cat pyproject.toml requirements/lock.txt scripts/setup.sh | sha256sum | cut -c1-16)"
bash envs/npu/setup.sh  # the isolated NPU env (.venv-npu; its own stamp, so it runs before .venv's early exit)
if [ -f "$stamp" ]; then
  echo "setup: .venv is up to date"
  bash scripts/wheelhouse.sh  # the wheels the bundle-consumer tests build clean environments from (own stamp)
  exit 0
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q --upgrade "pip>=24"
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -c requirements/lock.txt -e ".[test]"
.venv/bin/python -m pip check
rm -f .venv/.aipc-setup-*
touch "$stamp"
echo "setup: .venv ready"
bash scripts/wheelhouse.sh
