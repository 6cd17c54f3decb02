"""Every private call into an upstream library, every patch of one and every version gate, one module per
upstream: :mod:`.optimum_intel`, :mod:`.nncf`, :mod:`.ortgenai_builder`, :mod:`.dvc` (the NPU environment's
neural-compressor patch, gated on its version, lives in that environment's ``aipc_npu.packing``).

Each module names the upstream versions it was written and tested against (``TESTED``). The pipeline
itself runs only on the locked toolchain (:mod:`pipeline.toolchain` refuses drift from
requirements/lock.txt), so an unknown version reaches these modules only through a lock update;
tests/test_compat.py then fails, naming the module to re-check, until ``TESTED`` names the new version.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True)
class Gate:
    """An upstream distribution and the versions its compat module was checked against."""

    dist: str
    tested: tuple[str, ...]
    module: str  # the compat module to re-check when the installed version is not in ``tested``

    def installed(self) -> str | None:
        try:
            return metadata.version(self.dist)
        except metadata.PackageNotFoundError:
            return None

    def problem(self) -> str | None:
        """None when the installed version is a tested one; otherwise what to re-check."""
        found = self.installed()
        if found in self.tested:
            return None
        return (f"{self.dist} {found or '(not installed)'} is not a version {self.module} was checked against "
                f"({', '.join(self.tested)}): re-check every private call and patch in it, then add the version "
                f"to its TESTED")


def gates() -> list[Gate]:
    """Every upstream gate of the main environment."""
    from . import dvc, nncf, optimum_intel, ortgenai_builder

    return [optimum_intel.GATE, nncf.GATE, ortgenai_builder.GATE, dvc.GATE]
