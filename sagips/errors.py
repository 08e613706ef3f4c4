"""The ways a command ends badly, shared by the CLI, the launchers and the config checks."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """Bad input for one key: ``str()`` is the one-line ``key=value: reason`` users see (exit 2)."""

    def __init__(self, key: str, value: Any, reason: str) -> None:
        super().__init__(f"{key}={value!r}: {reason}")
        self.key, self.value, self.reason = key, value, reason

    def __reduce__(self) -> tuple:  # a sweep's job hands it to the launcher through a pipe
        return type(self), (self.key, self.value, self.reason)


class JobFailed(RuntimeError):
    """The MPI job of one run folder ended badly; a sweep goes on with its other jobs."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code if 0 < exit_code < 256 else 1

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.exit_code)


class Stopped(SystemExit):
    """Ctrl-C or a scheduler's SIGTERM ended the work; exits 128 + the signal's number, as a shell does.

    A ``SystemExit``, so that Hydra's job runner, which records a job's exceptions as
    its result, lets it through: a stop ends the whole sweep, not only this job.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(128 + signum)
        self.signum, self.message = signum, message

    def __reduce__(self) -> tuple:
        return type(self), (self.signum, self.message)

    def __str__(self) -> str:
        return self.message
