#!/usr/bin/env bash
# The release: what .github/workflows/release.yml runs on a version tag, and what tests/test_publish.py
# runs against the local Hub-protocol server.
#
#   bash scripts/release.sh [WORKSPACE]        WORKSPACE: folder with dvc.yaml + params.yaml (default: the repo)
#
#   1. setup: bash scripts/setup.sh (the README command)                    skip with AIPC_SKIP_SETUP=1
#   2. dvc pull (when a DVC remote is configured), dvc repro, dvc push       skip with AIPC_SKIP_REPRO=1
#      AIPC_DVC_REMOTE_URL (e.g. s3://bucket/aipc-dvc) is added as the default remote, in the local
#      config only; see docs/dvc-remote.example
#   3. aipc publish --all [--tag VERSION]
#      VERSION: AIPC_RELEASE_TAG, else the pushed tag (GITHUB_REF_NAME when GITHUB_REF_TYPE=tag)
#      AIPC_PUBLISH_ARGS: extra flags, e.g. "--dry-run" or "--private"
#
# The Hub token is read by huggingface_hub from HF_TOKEN (or `hf auth login`), the signing key by the
# bundle stages from AIPC_SIGNING_KEY (docs/release.md); this script never prints either and never
# enables tracing.
set -euo pipefail
set +x
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ws="$(cd "${1:-$repo}" && pwd)"

if [ -z "${AIPC_SKIP_SETUP:-}" ]; then
  bash "$repo/scripts/setup.sh"
fi
export PATH="$repo/.venv/bin:$PATH" DVC_NO_ANALYTICS=1 HF_HUB_DISABLE_TELEMETRY=1
cd "$ws"

if [ -z "${AIPC_SKIP_REPRO:-}" ]; then
  if [ -n "${AIPC_DVC_REMOTE_URL:-}" ]; then
    dvc remote add --local --force --default ci "$AIPC_DVC_REMOTE_URL"
  fi
  remote="$(dvc remote list)"
  if [ -n "$remote" ]; then
    echo "release: dvc pull (stages whose outputs are cached will not run again)"
    dvc pull --allow-missing || echo "release: dvc pull was incomplete; dvc repro rebuilds what is missing"
  fi
  echo "release: dvc repro"
  dvc repro
  if [ -n "$remote" ]; then
    echo "release: dvc push"
    dvc push
  fi
fi

tag="${AIPC_RELEASE_TAG:-}"
if [ -z "$tag" ] && [ "${GITHUB_REF_TYPE:-}" = "tag" ]; then
  tag="${GITHUB_REF_NAME:-}"
fi
args=(publish --all)
if [ -n "$tag" ]; then
  args+=(--tag "$tag")
fi
read -r -a extra <<< "${AIPC_PUBLISH_ARGS:-}"
echo "release: aipc ${args[*]} ${extra[*]:-}"
exec aipc "${args[@]}" "${extra[@]}"
