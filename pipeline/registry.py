"""Named factories and which plugin registered each.

The registry is filled by calling every plugin's ``register_*`` hook one plugin at a time,
each with a :class:`Register` that knows the plugin's name, so a duplicate name can be
refused with a message naming both plugins, and a plugin whose hook raises is reported and
skipped while the others keep working.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tagpipe.errors import PluginError, UnknownComponentError

KINDS = ("encoder", "decoder", "format", "task", "optimizer")


@dataclass
class Entry:
    """One registered name: its family, its factory (or import string) and its plugin."""

    name: str
    kind: str
    factory: Callable[..., Any] | str
    plugin: str

    def load(self) -> Any:
        """Return the factory, importing it first if it was registered as ``"module:attr"``."""
        if isinstance(self.factory, str):
            module_name, _, attr = self.factory.partition(":")
            try:
                obj: Any = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except Exception as exc:  # noqa: BLE001 - any failure is the plugin's, name it
                raise PluginError(
                    f"plugin {self.plugin!r}: cannot import {self.kind} {self.name!r} "
                    f"from {self.factory!r}: {exc}"
                ) from exc
            self.factory = obj
        return self.factory


@dataclass
class Registry:
    """All registered components, by family and name, plus the problems met on the way."""

    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, kind: str, name: str, factory: Callable[..., Any] | str, plugin: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}; expected one of {KINDS}")
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {kind} with an empty or non-string name")
        existing = self.entries.get((kind, name))
        if existing is not None:
            self.errors.append(
                f"{kind} {name!r} from plugin {plugin!r} refused: already registered by plugin "
                f"{existing.plugin!r}"
            )
            return
        self.entries[(kind, name)] = Entry(name, kind, factory, plugin)

    def get(self, kind: str, name: str) -> Any:
        """The loaded factory for ``name``; an unknown name lists the names available."""
        entry = self.entry(kind, name)
        return entry.load()

    def entry(self, kind: str, name: str) -> Entry:
        try:
            return self.entries[(kind, name)]
        except KeyError:
            available = ", ".join(self.names(kind)) or "none"
            raise UnknownComponentError(
                f"no {kind} named {name!r} is registered (available: {available}); "
                f"is the plugin that provides it installed? See `tagpipe plugins`."
            ) from None

    def names(self, kind: str) -> list[str]:
        return sorted(name for (k, name) in self.entries if k == kind)

    def __iter__(self):
        return iter(sorted(self.entries.values(), key=lambda e: (e.kind, e.name)))


class Register:
    """The callable a ``register_*`` hook receives: ``register(name, factory)``."""

    def __init__(self, registry: Registry, kind: str, plugin: str) -> None:
        self._registry = registry
        self.kind = kind
        self.plugin = plugin

    def __call__(self, name: str, factory: Callable[..., Any] | str) -> None:
        self._registry.add(self.kind, name, factory, self.plugin)
