"""User-facing exceptions. The CLI turns any of these into one readable line and exit code 1."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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


class ConfigKeyError(TagpipeError, ValueError):
    """A configuration key nobody reads: a ValueError to the API, one readable line to the CLI."""


class ConfigValueError(TagpipeError, ValueError):
    """A setting of the wrong type or out of range (a config field, ``--device``): a ValueError to the API,
    one readable line to the CLI."""


def check_config_keys(what: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Refuse keys of ``given`` that are not ``known``, naming each with the closest known key, so a misspelt
    setting is an error instead of a silently ignored value."""
    known = sorted(known)
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return
    described = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        described.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    takes = f"known: {', '.join(known)}" if known else "it takes none"
    raise ConfigKeyError(f"unknown {what} key(s): {', '.join(described)}; {takes}")
