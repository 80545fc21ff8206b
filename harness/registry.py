"""The plugin registry: built-ins plus third-party entry points, looked up by kind and name.

Third-party distributions register through the entry-point group ``harness``. One that fails
to import (even by calling ``sys.exit``), or whose hook raises or returns anything but a list
of the kind's :mod:`harness.api` subclasses, is recorded as broken and shown by
``harness list``; every other plugin keeps working. Set ``HARNESS_DISABLE_PLUGIN_AUTOLOAD=1``
to skip entry points.
"""
from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from harness import api, hookspecs
from harness.errors import PluginError

log = logging.getLogger(__name__)

AUTOLOAD_ENV = "HARNESS_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN = "built-in"

#: kind -> (plural used on the command line, hook name)
KINDS: dict[str, tuple[str, str]] = {
    "dataset": ("datasets", "harness_datasets"),
    "backbone": ("backbones", "harness_backbones"),
    "method": ("methods", "harness_methods"),
    "post": ("posts", "harness_postprocessors"),
    "evaluator": ("evaluators", "harness_evaluators"),
}
PLURALS = {plural: kind for kind, (plural, _) in KINDS.items()}
#: kind -> the base class every plugin of that kind subclasses
BASES: dict[str, type] = {
    "dataset": api.Dataset,
    "backbone": api.Backbone,
    "method": api.Method,
    "post": api.PostProcessor,
    "evaluator": api.Evaluator,
}


@dataclass
class PluginEntry:
    """One named plugin as ``harness list`` shows it."""

    kind: str
    name: str
    cls: type | None
    source: str
    status: str = "ok"

    @property
    def description(self) -> str:
        return getattr(self.cls, "description", "") if self.cls is not None else ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class BrokenSource:
    """A third-party entry point, or one of its hooks, that could not be loaded."""

    entry_point: str
    source: str
    reason: str
    #: Names of the plugins it offered, so that using one names this reason.
    names: tuple[str, ...] = ()


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception raised while loading a plugin."""
    if isinstance(exc, SystemExit):  # str() of a bare sys.exit() is empty
        code = "" if exc.code is None else repr(exc.code)
        return f"SystemExit: it called sys.exit({code})"
    return f"{type(exc).__name__}: {exc}"


def _short_repr(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _offered_name(value: Any) -> tuple[str, ...]:
    """The plugin name a wrongly returned value carries, if any."""
    name = getattr(value, "name", None)
    return (name,) if isinstance(name, str) and name else ()


class Registry:
    """All plugins, by kind and name.

    Parameters
    ----------
    autoload : bool, optional
        Load third-party entry points; defaults to on unless
        ``HARNESS_DISABLE_PLUGIN_AUTOLOAD`` is set to a non-empty value other than ``0``.
    extra : list, optional
        Additional plugin objects (modules or objects with hookimpls), e.g. from tests.
    """

    def __init__(self, autoload: bool | None = None, extra: list[tuple[Any, str]] | None = None):
        if autoload is None:
            autoload = os.environ.get(AUTOLOAD_ENV, "") in ("", "0")
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.broken: list[BrokenSource] = []
        #: id of a registered plugin object -> (the name `harness list` shows, its source)
        self._origins: dict[int, tuple[str, str]] = {}

        from harness import builtin_plugins

        self._register(builtin_plugins, "harness-builtins", BUILTIN, "harness-builtins")
        if autoload:
            self._load_entry_points()
        for plugin, source in extra or []:
            label = getattr(plugin, "__name__", type(plugin).__name__)
            self._register(plugin, f"extra:{source}:{id(plugin)}", source, label)
        self._entries: dict[str, dict[str, PluginEntry]] = {kind: {} for kind in KINDS}
        self._collect()

    def _register(self, plugin: Any, name: str, source: str, label: str) -> None:
        self.manager.register(plugin, name=name)
        self._origins[id(plugin)] = (label, source)

    def _record_broken(self, label: str, source: str, reason: str, names: tuple[str, ...] = ()) -> None:
        log.debug("plugin %s (%s) is broken: %s", label, source, reason)
        self.broken.append(BrokenSource(label, source, reason, names))

    def _load_entry_points(self) -> None:
        for ep in entry_points(group=hookspecs.PROJECT):
            dist = getattr(ep, "dist", None)
            source = f"{dist.name} {dist.version}" if dist is not None else f"entry point {ep.value}"
            try:
                plugin = ep.load()
                self._register(plugin, f"{source}:{ep.name}", source, ep.name)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit included: a broken third party must not end the harness
                self._record_broken(ep.name, source, _describe(exc))

    def _collect(self) -> None:
        for kind, (_, hook_name) in KINDS.items():
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                label, source = self._origins[id(impl.plugin)]
                try:
                    returned = impl.function()
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # the hook itself raised or exited: record, keep going
                    self._record_broken(label, source, _describe(exc))
                    continue
                for cls in self._checked_classes(kind, hook_name, returned, label, source):
                    self._add(kind, cls, source)

    def _checked_classes(self, kind: str, hook_name: str, returned: Any, label: str, source: str) -> list[type]:
        """The plugin classes in a hook's return value; anything else is recorded as broken."""
        if returned is None:  # pluggy's "nothing from this plugin"
            return []
        base = BASES[kind]
        if not isinstance(returned, (list, tuple)):
            reason = f"hook {hook_name} returned {_short_repr(returned)}, not a list of {base.__name__} subclasses"
            self._record_broken(label, source, reason, _offered_name(returned))
            return []
        classes = []
        for item in returned:
            if isinstance(item, type) and issubclass(item, base):
                classes.append(item)
                continue
            reason = (f"hook {hook_name} returned a list holding {_short_repr(item)}, "
                      f"which is not a {base.__name__} subclass")
            self._record_broken(label, source, reason, _offered_name(item))
        return classes

    def _add(self, kind: str, cls: type, source: str) -> None:
        name = getattr(cls, "name", "")
        if not name:
            self.broken.append(BrokenSource(repr(cls), source, f"{kind} class has no name"))
            return
        table = self._entries[kind]
        if name in table:
            first = table[name]
            first.status = f"duplicate: {kind} {name!r} comes from both {first.source} and {source}"
            return
        table[name] = PluginEntry(kind, name, cls, source)

    # ---- queries -------------------------------------------------------------------
    def entries(self, kind: str) -> list[PluginEntry]:
        return sorted(self._entries[kind].values(), key=lambda entry: entry.name)

    def names(self, kind: str) -> list[str]:
        return [entry.name for entry in self.entries(kind)]

    def get(self, kind: str, name: str) -> type:
        """The plugin class; a clear error for unknown, duplicated or broken names."""
        entry = self._entries[kind].get(name)
        if entry is None:
            plural = KINDS[kind][0]
            broken = [b for b in self.broken if name in (b.entry_point, *b.names)]
            if broken:
                b = broken[0]
                raise PluginError(
                    f"{kind} {name!r} comes from {b.source}, which failed to load: {b.reason}. "
                    f"Fix or uninstall that distribution."
                )
            close = difflib.get_close_matches(name, self.names(kind), n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise PluginError(
                f"unknown {kind} {name!r}.{hint} Known {plural}: {', '.join(self.names(kind))} "
                f"(see `harness list {plural}`)"
            )
        if entry.status != "ok":
            raise PluginError(f"{entry.status}; uninstall one of them to use {name!r}")
        return entry.cls

    def create(self, kind: str, name: str, args: dict[str, Any] | None = None, **fixed: Any):
        """Instantiate plugin ``name`` with options ``args`` (validated) and ``fixed`` kwargs."""
        cls = self.get(kind, name)
        return cls(**fixed, **(args or {}))


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (built on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the cached registry (tests, or after installing a plugin)."""
    global _REGISTRY
    _REGISTRY = None
