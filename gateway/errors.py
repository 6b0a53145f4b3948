"""Errors shared by every layer; the HTTP API maps each to Consul's status code.

The message is the user-facing text, kept identical to Consul's where Consul has one,
because scripts and tests in the wild grep for it.
"""


class TerminusError(Exception):
    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(TerminusError):
    """Malformed or semantically invalid input: HTTP 400, nothing written."""

    status_code = 400


class PermissionDenied(TerminusError):
    """The token lacks a right: HTTP 403."""

    status_code = 403


class NotFound(TerminusError):
    status_code = 404


class Conflict(TerminusError):
    """A write that contradicts current state (duplicate, stale cas, ...): HTTP 409 or 400 per endpoint."""

    status_code = 409
