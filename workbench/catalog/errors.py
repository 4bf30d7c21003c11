"""Errors of the catalog that a user can act on; the CLI prints them as one line (exit 2) and
the GUI shows them in a dialog, never as a traceback."""

from __future__ import annotations


class CatalogError(Exception):
    """The catalog file cannot be used: not a catalog, made by a newer version, damaged,
    read-only for a command that writes, or gone."""


class RunBusyError(CatalogError):
    """Another live process owns the run (its lease has not expired): refused, not waited for."""


class LeaseLost(CatalogError):
    """This process no longer owns the run (marked interrupted, or taken over): it must stop
    writing."""


class NotRunningError(CatalogError):
    """A control request (pause, resume, stop) to a run that no live process owns: there is
    nobody to take it."""
