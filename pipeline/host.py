"""Building the plugin manager: builtins and third-party plugins through one path.

Builtin plugin modules are listed in :data:`BUILTIN_PLUGINS` under the same names as their
entry points in ``setup.cfg``, so a source checkout (no entry points installed) and an
installed distribution see the same plugins. Third-party plugins come from the ``tagpipe``
entry-point group. Nothing happens at import time: call :func:`get_registry`.

Three rules keep one plugin from breaking or hijacking the others:

1. Builtins win. Hooks are called plugin by plugin in a fixed order, builtins first (in
   :data:`BUILTIN_PLUGINS` order), then third-party plugins in load order, whatever their
   ``tryfirst`` / ``trylast``; a name registered twice keeps the first and refuses the later
   one, naming both plugins.
2. A plugin is checked when it is registered: a hook with no hookspec (a misspelt
   ``register_decoder``) or an argument the hookspec lacks refuses the whole plugin.
3. A plugin that fails to import, calls ``sys.exit()`` at import or in a hook, or whose hook
   raises, is reported by name and left out; ``KeyboardInterrupt`` still stops everything.

Problems are one line each in :attr:`PluginManager.load_errors` / :attr:`Registry.errors`.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from types import ModuleType

import pluggy
from pluggy import HookImpl

from tagpipe import hookspecs
from tagpipe.registry import Register, Registry

# entry-point name -> module; kept equal to the ``tagpipe`` group in setup.cfg.
BUILTIN_PLUGINS: dict[str, str] = {
    "builtin_encoders": "tagpipe.plugins.encoders.hooks",
    "builtin_decoders": "tagpipe.plugins.decoders.hooks",
    "builtin_formats": "tagpipe.plugins.formats.hooks",
    "builtin_tasks": "tagpipe.plugins.tagging.hooks",
    "builtin_optimizers": "tagpipe.plugins.optimizers.hooks",
    "perturbed_masking": "tagpipe.plugins.perturbed_masking.hooks",
    "seq2seq": "tagpipe.plugins.seq2seq.hooks",
    "triples": "tagpipe.plugins.triples.hooks",
    "export": "tagpipe.plugins.export.hooks",
    "multitask": "tagpipe.plugins.multitask.hooks",
}
FAMILY_HOOKS = {"encoder": "register_encoders", "decoder": "register_decoders", "format": "register_formats",
                "task": "register_tasks", "optimizer": "register_optimizers"}
BLOCK_ENV = "TAGPIPE_BLOCK_PLUGINS"  # comma-separated plugin names to leave out


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus the load errors we report instead of raising."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.load_errors: list[str] = []
        self.distributions: dict[str, str] = {}  # plugin name -> distribution that provides it

    def register_module(self, name: str, module: ModuleType | object, dist: str = "tagpipe") -> None:
        """Register one plugin object, refusing it whole (with one line naming it) if pluggy or
        :meth:`unknown_hooks` finds a problem, so a half-registered plugin never runs."""
        if self.get_plugin(name) is not None:
            self.load_errors.append(f"plugin {name!r} from {dist!r} refused: a plugin of that name is loaded")
            return
        try:
            if self.register(module, name=name) is None:
                return  # blocked
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors name no distribution
            if self.get_plugin(name) is module:  # pluggy registers hook by hook: undo the ones before the bad one
                self.unregister(name=name)
            self.load_errors.append(f"plugin {name!r} from {dist!r} refused: {one_line(exc)}")
            return
        unknown = self.unknown_hooks(name)
        if unknown:
            self.unregister(name=name)
            self.load_errors.append(f"plugin {name!r} from {dist!r} refused: {unknown}")
            return
        self.distributions[name] = dist

    def unknown_hooks(self, name: str) -> str:
        """pluggy's ``check_pending()`` for one plugin: its hookimpls that match no hookspec
        (and are not ``optionalhook``), as one line; ``""`` when there are none."""
        plugin = self.get_plugin(name)
        callers = (self.get_hookcallers(plugin) or []) if plugin is not None else []
        unknown = sorted(caller.name for caller in callers if not caller.has_spec()
                         and any(impl.plugin_name == name and not impl.optionalhook for impl in caller.get_hookimpls()))
        if not unknown:
            return ""
        known = sorted(n for n in vars(self.hook) if not n.startswith("_") and getattr(self.hook, n).has_spec())
        parts = []
        for hook_name in unknown:
            close = difflib.get_close_matches(hook_name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"hooks: {', '.join(known)}"
            parts.append(f"unknown hook {hook_name!r} ({hint})")
        return "; ".join(parts)


def make_plugin_manager(*, builtins: bool = True, entry_point_group: str | None = hookspecs.PROJECT) -> PluginManager:
    """A fresh manager with the builtin plugins and every installed entry-point plugin."""
    pm = PluginManager()
    blocked = {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}
    for name in blocked:
        pm.set_blocked(name)
    if builtins:
        for name, module_name in BUILTIN_PLUGINS.items():
            if name not in blocked:
                _load_and_register(pm, name, "tagpipe", lambda m=module_name: importlib.import_module(m))
    if entry_point_group:
        for ep in entry_points(group=entry_point_group):
            dist = ep.dist.name if ep.dist is not None else "?"
            if ep.name in blocked:
                continue
            if BUILTIN_PLUGINS.get(ep.name) == ep.value and pm.get_plugin(ep.name) is not None:
                continue  # our own entry point, already registered from BUILTIN_PLUGINS
            _load_and_register(pm, ep.name, dist, ep.load)
    return pm


def _load_and_register(pm: PluginManager, name: str, dist: str, load: Callable[[], object]) -> None:
    """Import one plugin and register it; an import that fails or exits is one line in ``load_errors``."""
    try:
        module = load()
    except SystemExit:  # would end every command; KeyboardInterrupt is not caught
        pm.load_errors.append(f"plugin {name!r} from {dist!r} called sys.exit() at import")
        return
    except Exception as exc:  # noqa: BLE001 - one broken plugin must not stop the rest
        pm.load_errors.append(f"plugin {name!r} from {dist!r} failed to import: {one_line(exc)}")
        return
    pm.register_module(name, module, dist)


def is_builtin(pm: pluggy.PluginManager, name: str) -> bool:
    """Whether plugin ``name`` is our own module of :data:`BUILTIN_PLUGINS` (not a namesake)."""
    return name in BUILTIN_PLUGINS and getattr(pm.get_plugin(name), "__name__", None) == BUILTIN_PLUGINS[name]


def hookimpls_in_order(pm: pluggy.PluginManager, hook_name: str) -> list[HookImpl]:
    """The implementations of one hook in the order tagpipe calls them: builtin plugins first (in
    :data:`BUILTIN_PLUGINS` order), then the others in load order.

    pluggy's own order (``get_hookimpls()``) moves ``tryfirst`` / ``trylast`` impls around, which
    would let a third-party plugin take a builtin's name; for registration the first one wins.
    """
    loaded = [name for name, plugin in pm.list_name_plugin() if plugin is not None]  # dict order: load order
    builtin = [name for name in BUILTIN_PLUGINS if name in loaded and is_builtin(pm, name)]
    rank = {name: i for i, name in enumerate(builtin + [n for n in loaded if n not in builtin])}
    return sorted(getattr(pm.hook, hook_name).get_hookimpls(), key=lambda impl: rank.get(impl.plugin_name, len(rank)))


def one_line(exc: BaseException) -> str:
    """``ImportError: no module named x``: an exception as one line of a plugin problem."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def build_registry(pm: PluginManager) -> Registry:
    """Call each plugin's ``register_*`` hooks one plugin at a time, so errors have a name."""
    registry = Registry()
    registry.errors.extend(pm.load_errors)
    for kind, hook_name in FAMILY_HOOKS.items():
        for impl in hookimpls_in_order(pm, hook_name):  # builtins first: a clash keeps the builtin
            register = Register(registry, kind, impl.plugin_name)
            try:
                impl.function(register=register)
            except SystemExit:
                registry.errors.append(f"plugin {impl.plugin_name!r}: {hook_name} called sys.exit()")
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
