"""One exception type; its ``kind`` picks the exit code and the main side's exception class."""

from __future__ import annotations

from . import EXIT_CODES
from .loader import LoaderError


class NPUError(LoaderError):
    """The worker's errors; the loader's own (:class:`LoaderError`) have the same kinds and shape."""

    def __init__(self, kind: str, message: str, fix: str | None = None):
        assert kind in EXIT_CODES, kind
        super().__init__(kind, message, fix)


def exit_code(err: LoaderError) -> int:
    return EXIT_CODES.get(err.kind, 1)
