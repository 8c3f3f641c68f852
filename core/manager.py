"""The plugin manager: built-in plugins first, then the ``metazoo`` entry points."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import pluggy
from metazoo import hookspecs
from metazoo.errors import PluginError, UsageError
from metazoo.registry import (
    AlgorithmRegistry,
    BackboneRegistry,
    BenchmarkRegistry,
    FormatRegistry,
    Registry,
    SuiteRegistry,
)

#: Built-in plugins, registered in this order under these names (``-p no:NAME`` blocks one).
BUILTIN_PLUGINS: tuple[str, ...] = (
    "maml",
    "fomaml",
    "reptile",
    "metasgd",
    "anil",
    "boil",
    "protomaml",
    "imaml",
    "mamlpp",
    "cavia",
    "protonet",
    "matchingnet",
    "r2d2",
    "relationnet",
    "baseline",
    "baselinepp",
    "sinusoid",
    "hyperplanes",
    "omniglot",
    "images",
    "navigation2d",
    "bandits",
    "halfcheetah",
    "backbones",
    "csv_logger",
    "tensorboard_logger",
)
ENTRY_POINT_GROUP = "metazoo"
AUTOLOAD_ENV = "METAZOO_DISABLE_PLUGIN_AUTOLOAD"


def get_plugin_manager(
    blocked: Iterable[str] = (), autoload: bool | None = None
) -> pluggy.PluginManager:
    """A fresh plugin manager with the built-ins and (unless turned off) third-party plugins.

    :param blocked: plugin names not to register (built-in module names or entry-point names).
    :param autoload: load the ``metazoo`` entry points; by default yes unless the environment
        variable ``METAZOO_DISABLE_PLUGIN_AUTOLOAD`` is set to a non-empty value.
    """
    pm = pluggy.PluginManager("metazoo")
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    for name in BUILTIN_PLUGINS:
        if not pm.is_blocked(name):
            pm.register(importlib.import_module(f"metazoo.plugins.{name}"), name=name)
    if autoload is None:
        autoload = not os.environ.get(AUTOLOAD_ENV)
    if autoload:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as exc:  # a third-party plugin that fails to import
            raise PluginError(f"could not load a plugin of entry-point group 'metazoo': {exc}") from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from exc
    return pm


def parse_plugin_options(options: Iterable[str]) -> list[str]:
    """``-p no:NAME`` values → names to block (pytest's spelling)."""
    blocked = []
    for option in options:
        if not option.startswith("no:") or not option[3:]:
            raise UsageError(f"-p takes no:NAME to block a plugin, got {option!r}")
        blocked.append(option[3:])
    return blocked


@dataclass(frozen=True)
class PluginInfo:
    name: str
    hooks: tuple[str, ...]
    distribution: str  # "metazoo 0.1.0, built-in" or the third-party distribution and version
    version: str  # the distribution's version


class Zoo:
    """The host: a plugin manager plus the registries its plugins fill (built on first use)."""

    def __init__(self, pm: pluggy.PluginManager | None = None) -> None:
        self.pm = pm if pm is not None else get_plugin_manager()

    @cached_property
    def algorithms(self) -> AlgorithmRegistry:
        return self._fill(AlgorithmRegistry(), "zoo_register_algorithms")

    @cached_property
    def suites(self) -> SuiteRegistry:
        return self._fill(SuiteRegistry(), "zoo_register_suites")

    @cached_property
    def backbones(self) -> BackboneRegistry:
        """Named model factories, selectable for any algorithm."""
        return self._fill(BackboneRegistry(), "zoo_register_backbones")

    @cached_property
    def benchmarks(self) -> BenchmarkRegistry:
        """Benchmark specs shipped by plugins (the built-in ones are package data)."""
        return self._fill(BenchmarkRegistry(), "zoo_register_benchmarks")

    @cached_property
    def formats(self) -> FormatRegistry:
        """Leaderboard formats added by plugins (beside md, csv, latex and html)."""
        return self._fill(FormatRegistry(), "zoo_register_formats")

    def _fill(self, registry: Registry, hook_name: str) -> Registry:
        caller = getattr(self.pm.hook, hook_name)
        infos = {info.name: info for info in self.plugins()}
        # Call each implementation on its own so that every entry knows its plugin.
        for impl in caller.get_hookimpls():  # registration order
            info = infos[impl.plugin_name]
            registry.source = f"plugin {info.name} ({info.distribution})"
            registry.version = info.version
            # By name, as pluggy calls hooks: an implementation takes any subset of the spec's
            # arguments, so specs can grow without breaking it.
            arguments = {"registry": registry}
            impl.function(**{name: arguments[name] for name in impl.argnames if name in arguments})
        registry.source, registry.version = "<unknown>", "unknown"
        return registry

    def plugins(self) -> list[PluginInfo]:
        """Every registered plugin with the hooks it implements and where it comes from."""
        from metazoo import __version__

        dists = {self.pm.get_name(plugin): dist for plugin, dist in self.pm.list_plugin_distinfo()}
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # blocked
                continue
            hooks = tuple(
                sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            )
            if name in dists:
                dist = dists[name]
                infos.append(PluginInfo(name, hooks, f"{dist.project_name} {dist.version}", dist.version))
            else:
                infos.append(PluginInfo(name, hooks, f"metazoo {__version__}, built-in", __version__))
        return infos
