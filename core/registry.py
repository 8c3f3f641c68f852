"""Registries of algorithms and suites, filled by plugins through the registration hooks."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metazoo.errors import PluginError, UsageError

FAMILIES = ("model-algorithm", "model-data")


@dataclass(frozen=True)
class Entry:
    """One registered algorithm or suite and the plugin it came from."""

    name: str
    factory: Callable[..., Any]
    source: str
    version: str
    family: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Name → :class:`Entry`, with shell-style pattern lookup (``'maml*'``)."""

    kind = "entry"

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        # The plugin currently registering and its distribution version; set by the plugin manager.
        self.source = "<unknown>"
        self.version = "unknown"

    def _add(self, name: str, factory: Callable[..., Any], family: str | None, info: dict) -> None:
        if not isinstance(name, str) or not name or any(c in name for c in " ,*?[]"):
            raise PluginError(
                f"plugin {self.source} registered the {self.kind} name {name!r}: a name is a "
                "non-empty string without spaces, commas or pattern characters"
            )
        if not callable(factory):
            raise PluginError(f"plugin {self.source}: the factory of {self.kind} {name!r} is not callable")
        if name in self._entries:
            raise PluginError(
                f"{self.kind} name clash: {name!r} is registered by both "
                f"{self._entries[name].source} and {self.source}; block one with -p no:PLUGIN"
            )
        self._entries[name] = Entry(name, factory, self.source, self.version, family, dict(info))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or '(none)'}"
            ) from None

    def select(self, patterns: Iterable[str]) -> list[Entry]:
        """Entries matching any shell pattern, in the order first matched; an unmatched pattern
        is an error listing the available names."""
        chosen: dict[str, Entry] = {}
        for pattern in patterns:
            matches = fnmatch.filter(self.names(), pattern)
            if not matches:
                raise UsageError(
                    f"unknown {self.kind} {pattern!r}; available: {', '.join(self.names()) or '(none)'}"
                )
            for name in matches:
                chosen.setdefault(name, self._entries[name])
        return list(chosen.values())


class AlgorithmRegistry(Registry):
    kind = "algorithm"

    def add(self, name: str, factory: Callable[..., Any], *, family: str, **info: Any) -> None:
        """Register ``factory(model, suite, **hyperparameters) -> MetaLearner`` as ``name``.
        ``kinds=("classification",)`` says which kinds of suite it takes (default: every kind
        for model-algorithm learners, classification for model-data ones); the harness runs it
        on those only. A factory (a learner class) whose attribute ``trains_on`` is
        ``"labelled"`` meta-trains on labelled batches (:func:`metazoo.tasks.trains_on`) and runs
        only on suites that offer them."""
        if family not in FAMILIES:
            raise PluginError(
                f"plugin {self.source}: algorithm {name!r} has family {family!r}; "
                f"expected one of {', '.join(FAMILIES)}"
            )
        self._add(name, factory, family, info)


def suite_kinds(entry: Entry) -> tuple[str, ...] | None:
    """The kinds of suite an algorithm takes (None: every kind)."""
    kinds = entry.info.get("kinds")
    if kinds is None and entry.family == "model-data":
        return ("classification",)
    return tuple(kinds) if kinds is not None else None


class BackboneRegistry(Registry):
    kind = "backbone"

    def add(self, name: str, factory: Callable[..., Any], **info: Any) -> None:
        """Register ``factory(suite) -> torch.nn.Module`` as ``name``: a freshly initialised model
        for the suite's tasks (inputs as the suite's ``support_x``, outputs ``n_way`` logits or
        the regression target), which a spec (``backbone = "NAME"``, for all its algorithms or in
        ``[algorithms.X]``) or ``zoo bench --backbone NAME`` selects."""
        self._add(name, factory, None, info)


class BenchmarkRegistry(Registry):
    kind = "benchmark"

    def add(self, name: str, spec: str | os.PathLike, **info: Any) -> None:
        """Register the TOML benchmark spec at path ``spec`` as ``name`` (``--benchmark NAME``)."""
        from metazoo.benchmark import builtin_benchmarks

        if name in builtin_benchmarks():
            raise PluginError(f"plugin {self.source}: benchmark name {name!r} is taken by a built-in benchmark")
        path = Path(spec)
        if not path.is_file():
            raise PluginError(f"plugin {self.source}: benchmark {name!r}: spec {path} is not a file")
        self._add(name, lambda: _load_benchmark(path), None, {**info, "path": str(path)})


class FormatRegistry(Registry):
    kind = "leaderboard format"

    def add(self, name: str, render: Callable[..., str], **info: Any) -> None:
        """Register ``render(summary) -> str`` as ``zoo leaderboard --format NAME``; ``summary`` is
        the frame of :func:`metazoo.leaderboard.summarize` (one row per table and configuration)."""
        from metazoo.render import FORMATS

        if name in FORMATS:
            raise PluginError(f"plugin {self.source}: leaderboard format {name!r} is built in; pick another name")
        self._add(name, render, None, info)


def _load_benchmark(path: Path):
    from metazoo.benchmark import load_benchmark

    return load_benchmark(path)


class SuiteRegistry(Registry):
    kind = "suite"

    def add(self, name: str, factory: Callable[..., Any], *, uses_data: bool = False, **info: Any) -> None:
        """Register ``factory(**protocol) -> TaskSuite`` as ``name``. A suite that reads a
        dataset says ``uses_data=True``; its factory then also takes ``data_dir`` (the folder
        given by ``--data-dir``, or None for the suite's own default), which is not part of
        the protocol."""
        self._add(name, factory, None, {**info, "uses_data": bool(uses_data)})
