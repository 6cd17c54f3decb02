"""The worker's environment: versions, platform, working directory (standard library only).

The checks that run before anything is unpickled live in :mod:`.loader`, the file every NPU bundle
ships, so aipc's worker and a bundle's consumer check and load a model with the same code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import MANIFEST, VERSION_PACKAGES
from . import loader
from .errors import NPUError


def versions() -> dict[str, str]:
    """Versions of this environment, read from package metadata (imports nothing heavy)."""
    return loader.versions(VERSION_PACKAGES)


def check_platform() -> None:
    if sys.platform not in ("linux", "win32"):
        raise NPUError("environment", f"intel-npu-acceleration-library 1.4.0 runs on Linux and Windows only, "
                       f"not on {sys.platform}", fix="run the NPU stages on a Linux or Windows machine")


def manifest_path(artifact: Path, given: str | None) -> Path:
    return Path(given) if given else artifact / MANIFEST


def chdir_private() -> Path:
    """Run in a private temp dir: the library writes ./cache (OpenVINO kernel blobs) and
    neural-compressor ./nc_workspace relative to the CWD; neither may land in the repo."""
    import atexit
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="aipc-npu-"))
    os.chdir(d)
    atexit.register(shutil.rmtree, d, True)
    return d
