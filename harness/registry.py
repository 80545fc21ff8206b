"""The plugin registry: built-ins plus third-party entry points, looked up by kind and name.

Third-party distributions register through the entry-point group ``harness``. One that fails
to import (or whose hook raises) is recorded as broken and shown by ``harness list``; every
other plugin keeps working. Set ``HARNESS_DISABLE_PLUGIN_AUTOLOAD=1`` to skip entry points.
"""
from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from harness import hookspecs
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
    """A third-party entry point that could not be loaded."""

    entry_point: str
    source: str
    reason: str


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
        self._sources: dict[int, str] = {}

        from harness import builtin_plugins

        self._register(builtin_plugins, "harness-builtins", BUILTIN)
        if autoload:
            self._load_entry_points()
        for plugin, source in extra or []:
            self._register(plugin, f"extra:{source}:{id(plugin)}", source)
        self._entries: dict[str, dict[str, PluginEntry]] = {kind: {} for kind in KINDS}
        self._collect()

    def _register(self, plugin: Any, name: str, source: str) -> None:
        self.manager.register(plugin, name=name)
        self._sources[id(plugin)] = source

    def _load_entry_points(self) -> None:
        for ep in entry_points(group=hookspecs.PROJECT):
            dist = getattr(ep, "dist", None)
            source = f"{dist.name} {dist.version}" if dist is not None else f"entry point {ep.value}"
            try:
                plugin = ep.load()
                self._register(plugin, f"{source}:{ep.name}", source)
            except Exception as exc:  # a broken third party must not break the harness
                reason = f"{type(exc).__name__}: {exc}"
                log.debug("plugin %s (%s) failed to load: %s", ep.name, source, reason)
                self.broken.append(BrokenSource(ep.name, source, reason))

    def _collect(self) -> None:
        for kind, (_, hook_name) in KINDS.items():
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                source = self._sources.get(id(impl.plugin), impl.plugin_name)
                try:
                    classes = impl.function() or []
                except Exception as exc:  # the hook itself raised: record, keep going
                    self.broken.append(
                        BrokenSource(impl.plugin_name, source, f"{type(exc).__name__}: {exc}")
                    )
                    continue
                for cls in classes:
                    self._add(kind, cls, source)

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
            broken = [b for b in self.broken if b.entry_point == name]
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
