"""A compat module's version gate: the upstream distribution and the versions the module was checked against."""

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
                f"to its GATE")
