"""The project's exception classes.

Every user-facing failure is a :class:`PipelineError`. Its message names what is wrong (the
parameter or file and the offending value) and ``fix`` says what to do. The CLI turns these into
one message and an exit code (see ``stages/cli.py``); nothing else catches them.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"


class ConfigError(PipelineError):
    """params.yaml (or a CLI option) is invalid."""

    exit_code = 2


class ContextTooLong(ConfigError):
    """A prompt plus the tokens asked for does not fit the model's context window."""


class SourceError(PipelineError):
    """The model source is missing, incomplete, corrupt or not a Phi-3 checkpoint."""

    exit_code = 3


class HubError(SourceError):
    """The Hugging Face Hub can't be reached, refused the token, or lacks the repo/revision."""

    exit_code = 4


class ExportError(PipelineError):
    """A backend export failed."""

    exit_code = 5


class ValidationFailed(PipelineError):
    """An artifact failed its smoke checks or accuracy gates."""

    exit_code = 6


class EnvironmentProblem(PipelineError):
    """The machine or an auxiliary environment can't run the step (memory, NPU env, device)."""

    exit_code = 7


class PublishError(PipelineError):
    """A bundle can't be published or verified."""

    exit_code = 8


class ArtifactIntegrityError(ValidationFailed):
    """An artifact's files differ from the sha256 recorded at export (tampered or corrupted)."""


class RecordError(PipelineError):
    """A record on disk (export record, manifest, metrics) is not what the stage that writes it writes:
    edited by hand, damaged, or written by another version (pipeline/records.py)."""

    exit_code = 10


class StagesFailed(PipelineError):
    """Stages of ``aipc repro`` failed (each one's own output, above, says why)."""

    exit_code = 9
