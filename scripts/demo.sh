#!/usr/bin/env bash
# README command 1: set up, then run the whole pipeline (`dvc repro` of the real dvc.yaml) on the
# embedded model, offline, in the workspace demo/ (the release params.yaml is not touched). demo/ is a
# git repository of its own: the result is committed there, so `dvc exp run -S ...` then `dvc exp show`,
# `dvc params diff` and `dvc metrics diff` compare an experiment with it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DVC_NO_ANALYTICS=1
aipc workspace init demo --profile configs/embedded.yaml
cd demo
if [ -x /usr/bin/time ]; then /usr/bin/time -v dvc repro "$@"; else dvc repro "$@"; fi
aipc report
aipc workspace commit . -m "dvc repro: the embedded model (scripts/demo.sh)"
