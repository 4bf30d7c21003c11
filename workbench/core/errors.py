"""Errors the user can fix; the CLI and GUI show them as one line, never as a traceback."""

from __future__ import annotations


class ConfigError(Exception):
    """Bad user input, naming the field (dotted key or CLI flag) and what is allowed.

    Deliberately not a ValueError: pydantic would wrap a ValueError raised in a validator,
    losing the key; any other exception passes through unchanged.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupted, tampered with or not ours."""


class DataError(RuntimeError):
    """A dataset could not be found, verified or decoded."""
