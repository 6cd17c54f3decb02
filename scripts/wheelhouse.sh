#!/usr/bin/env bash
# The wheels of the runtimes a bundle's model card tells its consumer to install (OpenVINO GenAI, Optimum
# Intel, ONNX Runtime GenAI, huggingface_hub, model-signing to check the signature, with their dependencies)
# at the versions of
# requirements/lock.txt, so the tests can build a clean environment from each card's install line without
# the network (tests/test_bundle_consumer.py). Idempotent: a stamp keyed by this script and the lock file.
#
#   bash scripts/wheelhouse.sh        (scripts/setup.sh runs it)
#
# Where: ${AIPC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aipc}/wheelhouse (~0.5 GB, shared by checkouts).
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(openvino-genai openvino optimum-intel onnxruntime-genai huggingface_hub model-signing pyopenssl)
cache_root="${AIPC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aipc}"
dir="$cache_root/wheelhouse"
key=$(cat scripts/wheelhouse.sh requirements/lock.txt | sha256sum | cut -c1-16)
stamp="$dir/.complete-$key"
if [ -f "$stamp" ]; then
  echo "wheelhouse: $dir is up to date"
  exit 0
fi
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9  # one download at a time per machine
py=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch on its own first, as scripts/setup.sh installs it (the CPU build), then the rest pinned by the lock
"$py" -m pip download -q -d "$dir" --no-deps "torch==2.13.0"
"$py" -m pip download -q -d "$dir" --find-links "$dir" -c requirements/lock.txt "${PACKAGES[@]}"
rm -f "$dir"/.complete-*
touch "$stamp"
echo "wheelhouse: $dir ready ($(ls "$dir"/*.whl | wc -l) wheels)"
