"""Errors a user can act on. The CLI prints their message as one line and exits non-zero."""


class PostroomError(Exception):
    """Base for every error whose message is meant for the operator."""

    exit_code = 1


class InvalidInput(PostroomError):
    """The caller gave something unusable: a bad address, an unknown name, a bad value."""

    exit_code = 2


class NotFound(PostroomError):
    """A record, partner, message, plugin or action that does not exist."""

    exit_code = 3


class Conflict(PostroomError):
    """The request is valid but the current state refuses it (e.g. an action already running)."""

    exit_code = 4


class ConfigError(PostroomError):
    """The configuration file is malformed or names something impossible."""

    exit_code = 78  # sysexits EX_CONFIG


class DatabaseUnavailable(PostroomError):
    """The database cannot be reached; nothing was written."""

    exit_code = 75  # sysexits EX_TEMPFAIL


def first_line(value) -> str:
    """The first line of an exception's message (or of any text), stripped; "" when it has
    none. For one-line reports of foreign errors: `first_line(exc) or type(exc).__name__`."""
    lines = str(value).strip().splitlines()
    return lines[0].strip() if lines else ""
