"""Building the plugin manager: builtins and third-party plugins through one path.

Builtin plugin modules are listed in :data:`BUILTIN_PLUGINS` under the same names as their
entry points in ``setup.cfg``, so a source checkout (no entry points installed) and an
installed distribution see the same plugins. Third-party plugins come from the ``tagpipe``
entry-point group. A plugin that fails to import, or whose hook raises, is reported by name
and left out; the rest keep working. Nothing happens at import time: call
:func:`get_registry`.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points
from types import ModuleType

import pluggy
from tagpipe import hookspecs
from tagpipe.registry import Register, Registry

# entry-point name -> module; kept equal to the ``tagpipe`` group in setup.cfg.
BUILTIN_PLUGINS: dict[str, str] = {
    "builtin_encoders": "tagpipe.plugins.encoders.hooks",
    "builtin_decoders": "tagpipe.plugins.decoders.hooks",
    "builtin_formats": "tagpipe.plugins.formats.hooks",
    "builtin_tasks": "tagpipe.plugins.tagging.hooks",
    "perturbed_masking": "tagpipe.plugins.perturbed_masking.hooks",
    "seq2seq": "tagpipe.plugins.seq2seq.hooks",
    "triples": "tagpipe.plugins.triples.hooks",
}
FAMILY_HOOKS = {"encoder": "register_encoders", "decoder": "register_decoders", "format": "register_formats",
                "task": "register_tasks"}
BLOCK_ENV = "TAGPIPE_BLOCK_PLUGINS"  # comma-separated plugin names to leave out


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus the load errors we report instead of raising."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.load_errors: list[str] = []
        self.distributions: dict[str, str] = {}  # plugin name -> distribution that provides it

    def register_module(self, name: str, module: ModuleType | object, dist: str = "tagpipe") -> None:
        """Register one plugin object, refusing a second plugin of the same name."""
        if self.get_plugin(name) is not None:
            self.load_errors.append(f"plugin {name!r} from {dist!r} refused: a plugin of that name is loaded")
            return
        try:
            self.register(module, name=name)
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors name no plugin
            self.load_errors.append(f"plugin {name!r} from {dist!r} refused: {one_line(exc)}")
            return
        self.distributions[name] = dist


def make_plugin_manager(*, builtins: bool = True, entry_point_group: str | None = hookspecs.PROJECT) -> PluginManager:
    """A fresh manager with the builtin plugins and every installed entry-point plugin."""
    pm = PluginManager()
    blocked = {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}
    for name in blocked:
        pm.set_blocked(name)
    if builtins:
        for name, module_name in BUILTIN_PLUGINS.items():
            if name not in blocked:
                _register_import(pm, name, module_name, "tagpipe")
    if entry_point_group:
        for ep in entry_points(group=entry_point_group):
            dist = ep.dist.name if ep.dist is not None else "?"
            if ep.name in blocked:
                continue
            if BUILTIN_PLUGINS.get(ep.name) == ep.value and pm.get_plugin(ep.name) is not None:
                continue  # our own entry point, already registered from BUILTIN_PLUGINS
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not stop the rest
                pm.load_errors.append(f"plugin {ep.name!r} from {dist!r} failed to import: {one_line(exc)}")
                continue
            pm.register_module(ep.name, module, dist)
    return pm


def _register_import(pm: PluginManager, name: str, module_name: str, dist: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001
        pm.load_errors.append(f"plugin {name!r} from {dist!r} failed to import: {one_line(exc)}")
        return
    pm.register_module(name, module, dist)


def one_line(exc: BaseException) -> str:
    """``ImportError: no module named x``: an exception as one line of a plugin problem."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def build_registry(pm: PluginManager) -> Registry:
    """Call each plugin's ``register_*`` hooks one plugin at a time, so errors have a name."""
    registry = Registry()
    registry.errors.extend(pm.load_errors)
    for kind, hook_name in FAMILY_HOOKS.items():
        hook = getattr(pm.hook, hook_name)
        # get_hookimpls() is in registration order: builtins first, so a clash keeps the builtin.
        for impl in hook.get_hookimpls():
            register = Register(registry, kind, impl.plugin_name)
            try:
                impl.function(register=register)
            except Exception as exc:  # noqa: BLE001
                registry.errors.append(f"plugin {impl.plugin_name!r}: {hook_name} failed: {one_line(exc)}")
    return registry


_state: dict[str, object] = {}


def get_plugin_manager() -> PluginManager:
    """The process-wide manager, built on first use."""
    if "pm" not in _state:
        _state["pm"] = make_plugin_manager()
    return _state["pm"]  # type: ignore[return-value]


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    if "registry" not in _state:
        _state["registry"] = build_registry(get_plugin_manager())
    return _state["registry"]  # type: ignore[return-value]


def reset(pm: PluginManager | None = None) -> None:
    """Forget the process-wide manager and registry (tests), or install ``pm`` in their place."""
    _state.clear()
    if pm is not None:
        _state["pm"] = pm
