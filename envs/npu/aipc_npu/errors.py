"""One exception type; its ``kind`` picks the exit code and the main side's exception class."""

from __future__ import annotations

from . import EXIT_CODES


class NPUError(Exception):
    def __init__(self, kind: str, message: str, fix: str | None = None):
        assert kind in EXIT_CODES, kind
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.fix = fix

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]

    def to_json(self) -> dict:
        return {"kind": self.kind, "message": self.message, "fix": self.fix}
