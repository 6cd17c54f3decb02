#!/usr/bin/env bash
# Create/refresh the isolated NPU environment: intel-npu-acceleration-library 1.4.0 with its own
# torch / transformers 4.x / openvino 2024.4 (the main .venv has transformers 5, which cannot load
# the library's pickled models).
#
#   bash envs/npu/setup.sh [ENV_DIR]        (default: $AIPC_NPU_ENV_DIR or <repo>/.venv-npu)
#
# Idempotent: a stamp file in ENV_DIR keyed by the hash of this script, requirements.txt and the
# patch makes a second run a no-op. PyPI has no Linux wheel of the library, only an sdist whose
# CMakeLists.txt accepts only Ubuntu and downloads an OpenVINO toolkit tarball; the patch in
# patches/ makes it build against the openvino==2024.4.0 wheel instead. The built wheel (~45 MB,
# compiled with -march=native, so tied to this CPU) is cached per machine under
#   ${AIPC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aipc}/wheels/<key>/
# so another environment (e.g. a test's) installs it without compiling.
set -euo pipefail
# an isolated environment: the caller's PYTHONPATH (e.g. a test runner's plugins) must not reach its pip check
unset PYTHONPATH PYTHONHOME
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
env_dir="${1:-${AIPC_NPU_ENV_DIR:-$repo/.venv-npu}}"
log() { echo "setup-npu: $*"; }

case "$(uname -s)" in
  Linux) ;;
  *)
    log "skipped: this script builds the NPU environment on Linux only (this is $(uname -s));"
    log "on Windows install intel-npu-acceleration-library==1.4.0 (PyPI has a Windows wheel) with the pins of"
    log "envs/npu/requirements.txt into a venv and point params.yaml npu.env_dir at it"
    exit 0 ;;
esac

LIB=intel-npu-acceleration-library
LIB_VERSION=1.4.0
SDIST=intel_npu_acceleration_library-$LIB_VERSION.tar.gz
SDIST_SHA256=85bc37169189a0bfdb536a74de454925a4750adc1000d29a6c87de1f1a3a8d7d
PATCH="$here/patches/$LIB-$LIB_VERSION-ov-wheel.patch"
REQS="$here/requirements.txt"

stamp_key=$(cat "$here/setup.sh" "$REQS" "$PATCH" | sha256sum | cut -c1-16)
stamp="$env_dir/.aipc-npu-setup-$stamp_key"
if [ -f "$stamp" ] && [ -x "$env_dir/bin/python" ]; then
  log "$env_dir is up to date"
  exit 0
fi

t_start=$SECONDS
PY=${AIPC_PYTHON:-$(command -v python3.11 || command -v python3)}
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x "$env_dir/bin/python" ]; then
  log "creating $env_dir with $PY"
  "$PY" -m venv "$env_dir"
fi
vpy="$env_dir/bin/python"
pip() { "$vpy" -m pip "$@"; }

pip install -q --upgrade "pip>=24"
pip install -q "$(grep -E '^torch==' "$REQS")"
pip install -q -r "$REQS"
log "dependencies installed ($((SECONDS - t_start)) s)"

# ---- the library wheel: built once per machine, then reused from the cache
ov_dir=$("$vpy" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("openvino").origin))')
ov_version=$("$vpy" -c 'import importlib.metadata as m; print(m.version("openvino"))')
py_tag=$("$vpy" -c 'import sys; print(sys.implementation.cache_tag)')
cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
wheel_key=$(printf '%s\n' "$SDIST_SHA256" "$(sha256sum < "$PATCH")" "$py_tag" "$ov_version" "$(uname -m)" \
  "$(c++ --version 2>/dev/null | head -1)" "$cpu_flags" | sha256sum | cut -c1-16)
cache_root="${AIPC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aipc}"
wheel_dir="$cache_root/wheels/$LIB-$LIB_VERSION-$wheel_key"
mkdir -p "$cache_root/wheels"

exec 9>"$cache_root/wheels/.$LIB.lock"
flock 9  # one build at a time per machine; a waiting run then finds the cached wheel
wheel=$(ls "$wheel_dir"/*.whl 2>/dev/null | head -1 || true)
if [ -n "$wheel" ]; then
  log "reusing cached wheel $wheel"
else
  for tool in cmake c++ make patch; do
    command -v "$tool" >/dev/null || { log "error: '$tool' not found; install it (Debian/Ubuntu: apt-get install cmake g++ make patch)"; exit 1; }
  done
  t_build=$SECONDS
  build=$(mktemp -d "$cache_root/wheels/.build-XXXXXX")
  trap 'rm -rf "$build"' EXIT
  log "building $LIB $LIB_VERSION from the PyPI sdist (about 30 s; cached at $wheel_dir)"
  pip download -q --no-binary :all: --no-deps "$LIB==$LIB_VERSION" -d "$build"
  echo "$SDIST_SHA256  $build/$SDIST" | sha256sum -c --quiet - \
    || { log "error: $SDIST does not have the expected sha256 $SDIST_SHA256"; exit 1; }
  tar -xzf "$build/$SDIST" -C "$build"
  (cd "$build/intel_npu_acceleration_library-$LIB_VERSION" && patch -p1 --binary --quiet < "$PATCH")
  if ! OV_WHEEL_DIR="$ov_dir" pip wheel --no-deps --no-build-isolation --no-cache-dir \
      -w "$build/wheel" "$build/intel_npu_acceleration_library-$LIB_VERSION" > "$build/build.log" 2>&1; then
    tail -n 40 "$build/build.log"
    log "error: building the $LIB wheel failed (log above)"
    exit 1
  fi
  rm -rf "$wheel_dir"
  mv "$build/wheel" "$wheel_dir"
  wheel=$(ls "$wheel_dir"/*.whl | head -1)
  log "built $wheel ($((SECONDS - t_build)) s)"
fi
flock -u 9
pip install -q --no-deps --force-reinstall "$wheel"
pip check

# the library prints and warns at import, and writes ./cache at run time: check it from a temp dir
probe=$(mktemp -d)
if ! (cd "$probe" && "$vpy" -W ignore -c 'import intel_npu_acceleration_library' >/dev/null 2>&1); then
  rm -rf "$probe"
  log "error: the installed library does not import; see: $vpy -c 'import intel_npu_acceleration_library'"
  exit 1
fi
rm -rf "$probe"
rm -f "$env_dir"/.aipc-npu-setup-*
touch "$stamp"
log "$env_dir ready ($((SECONDS - t_start)) s)"
