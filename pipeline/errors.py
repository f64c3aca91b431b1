"""User-facing exceptions. The CLI turns any of these into one readable line and exit code 1."""

from __future__ import annotations


class TagpipeError(Exception):
    """Base class for errors a user can act on (bad input, unknown names, missing files)."""


class CorpusError(TagpipeError):
    """A corpus file is malformed; the message names the file and the 1-based line number."""

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = message
        super().__init__(f"{self.path}:{line}: {message}")


class UnknownComponentError(TagpipeError, KeyError):
    """A registry name that no plugin registered; the message lists what is available."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class PluginError(TagpipeError):
    """A plugin failed to import or to register; the message names the plugin."""


class ModelError(TagpipeError):
    """A model folder is missing, incomplete or from an incompatible format version."""
