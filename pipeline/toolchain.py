"""Versions of the toolchain that made an artifact (recorded in every export record and manifest)."""

from __future__ import annotations

import logging
import platform
from importlib import metadata

PACKAGES = (
    "aipc",
    "torch",
    "transformers",
    "tokenizers",
    "huggingface-hub",
    "optimum",
    "optimum-intel",
    "nncf",
    "openvino",
    "openvino-tokenizers",
    "openvino-genai",
    "onnxruntime",
    "onnxruntime-genai",
    "onnx",
)


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


class _DropRecords(logging.Filter):
    """Drops a logger's records whose message starts with ``prefix``; nothing else."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def drop_log_records(logger_name: str, prefix: str) -> None:
    """Third-party noise filtered at its source: the logger ``logger_name`` no longer emits records whose
    message starts with ``prefix`` (idempotent; a filter on that logger, so its other records pass)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _DropRecords) and f.prefix == prefix for f in logger.filters):
        logger.addFilter(_DropRecords(prefix))


def disable_telemetry() -> None:
    """Decline OpenVINO telemetry for this process only (no consent file is written).

    Offline, openvino-telemetry forks a child per event (~2x export time), its sender starts a thread
    (which would make the stage worker's fork unsafe), and a pipeline should not phone home from
    users' CI. This is the library's own "declined" path.
    """
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # pragma: no cover - telemetry package absent: nothing to disable
        return
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED


LOCK = "requirements/lock.txt"  # the main environment's pins, relative to the repository (scripts/setup.sh installs them)
DRIFT_OVERRIDE = "AIPC_ALLOW_TOOLCHAIN_DRIFT"


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def read_pins(path) -> dict[str, str]:
    """``{normalized name: version}`` of the ``name==version`` lines of a requirements file."""
    from pathlib import Path

    pins = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[_norm(name.split("[", 1)[0])] = version.strip()
    return pins


def installed_versions() -> dict[str, str]:
    """``{normalized name: version}`` of what this interpreter's environment has installed: its own
    site-packages only (not whatever else is on sys.path, where a test or a plugin may have put another
    environment's packages), the first of a name winning as for an import."""
    import sysconfig

    paths = list(dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))
    out: dict[str, str] = {}
    for d in metadata.distributions(path=paths):
        if d.metadata["Name"]:
            out.setdefault(_norm(d.metadata["Name"]), d.version)
    return out


def drift(pins: dict[str, str], installed: dict[str, str] | None = None) -> list[str]:
    """``"name: installed X, lock Y"`` for every pinned package installed at another version (or not at all)."""
    if installed is None:
        installed = installed_versions()
    return [f"{name}: installed {installed.get(name, 'nothing')}, pinned {want}"
            for name, want in sorted(pins.items()) if installed.get(name) != want]


def check_toolchain(repo_root=None) -> None:
    """Refuse to run a stage in an environment that differs from the lock every stage depends on in
    dvc.yaml: its outputs would be recorded as made by the locked toolchain. ``AIPC_ALLOW_TOOLCHAIN_DRIFT=1``
    runs anyway (a warning), e.g. to try a new release before locking it."""
    import logging
    import os
    from pathlib import Path

    from .errors import EnvironmentProblem

    root = Path(repo_root) if repo_root else Path(__file__).resolve().parent.parent
    lock = root / LOCK
    if not lock.is_file():
        return  # an installed package without its repository: nothing to compare with
    bad = drift(read_pins(lock))
    if not bad:
        return
    shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
    if os.environ.get(DRIFT_OVERRIDE) == "1":
        logging.getLogger(__name__).warning("the environment differs from %s (%s), running anyway (%s=1)",
                                            LOCK, shown, DRIFT_OVERRIDE)
        return
    raise EnvironmentProblem(
        f"this environment differs from {LOCK}, which every stage's outputs depend on: {shown}",
        fix=f"bash scripts/setup.sh reinstalls the locked versions; or, to try another version, update {LOCK} "
            f"(the stages rerun) or run with {DRIFT_OVERRIDE}=1")
