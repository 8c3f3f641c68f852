"""Hook specifications: every hook a metazoo plugin may implement.

A plugin is any module or object with functions marked ``@metazoo.hookimpl`` whose names match
the specs below. Built-in plugins live in ``metazoo.plugins``; third-party ones are found
through the ``metazoo`` entry-point group::

    # pyproject.toml of your package
    [project.entry-points.metazoo]
    myalgo = "my_package.my_module"

Hook signatures only ever grow by new parameters, so an implementation may accept any subset
of the parameters documented here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from metazoo.registry import (
        AlgorithmRegistry,
        BackboneRegistry,
        BenchmarkRegistry,
        FormatRegistry,
        SuiteRegistry,
    )
    from metazoo.run import Run

hookspec = pluggy.HookspecMarker("metazoo")


# -- Registration --------------------------------------------------------------------------------


@hookspec
def zoo_register_algorithms(registry: AlgorithmRegistry) -> None:
    """Register meta-learning algorithms.

    Called once per plugin manager, for every plugin, when the algorithm registry is first
    needed. Call ``registry.add(name, factory, family=..., **info)`` for each algorithm:

    :param registry: the algorithm registry. ``factory(model, suite, **hyperparameters)``
        must return a :class:`metazoo.MetaLearner`; ``family`` is ``"model-algorithm"`` or
        ``"model-data"``; ``info`` keys ``paper`` (citation) and ``summary`` (one line) are
        shown by ``zoo list``, and ``kinds`` (the kinds of suite it takes) is obeyed by the
        harness. A learner class with ``trains_on = "labelled"`` meta-trains on labelled batches
        of the suite's training classes instead of tasks (see :class:`metazoo.TaskSuite`). A
        name already taken by another plugin is an error naming both.

    Return value is ignored.
    """


@hookspec
def zoo_register_suites(registry: SuiteRegistry) -> None:
    """Register task suites.

    Called once per plugin manager, for every plugin, when the suite registry is first needed.
    Call ``registry.add(name, factory, uses_data=False, **info)`` for each suite:

    :param registry: the suite registry. ``factory(**protocol)`` must return a
        :class:`metazoo.TaskSuite`, where ``protocol`` holds the suite's settings (for example
        ``shots``, ``queries``, ``ways``); an unknown setting must raise ``TypeError``,
        ``ValueError`` or :class:`metazoo.ZooError`. A suite that reads a dataset registers
        with ``uses_data=True``: its factory is then also called with ``data_dir=`` (the folder
        given by ``zoo bench --data-dir``, or None for the suite's own default), which is not
        part of the protocol, and its ``prepare()`` should find and verify the data, so that
        missing or corrupt data stops ``zoo bench`` before any run. ``info`` keys ``paper``
        and ``summary`` are shown by ``zoo list``.

    Return value is ignored.
    """


@hookspec
def zoo_register_backbones(registry: BackboneRegistry) -> None:
    """Register named backbones that any algorithm can train.

    Called once per plugin manager, for every plugin, when a backbone is first looked up. Call
    ``registry.add(name, factory, **info)`` for each:

    :param registry: the backbone registry. ``factory(suite)`` returns a freshly initialised
        ``torch.nn.Module`` (from torch's global RNG) mapping one task's inputs to ``n_way``
        logits (classification) or to the target's shape (regression); model-data learners use
        its ``body``. A spec selects it with ``backbone = "NAME"`` (top level: every algorithm;
        or in ``[algorithms.X]``), the command line with ``zoo bench --backbone NAME``.

    Return value is ignored.
    """


@hookspec
def zoo_register_benchmarks(registry: BenchmarkRegistry) -> None:
    """Register benchmark specs shipped by a plugin package.

    Called once per plugin manager, for every plugin, when a benchmark is first looked up by
    name. Call ``registry.add(name, path, **info)`` for each spec:

    :param registry: the benchmark registry. ``path`` is a TOML spec file (package data, e.g.
        from :func:`importlib.resources.files`), checked when it is run; ``zoo list`` shows the
        name and ``zoo bench --benchmark NAME`` runs it. A name taken by a built-in benchmark or
        another plugin is an error.

    Return value is ignored.
    """


@hookspec
def zoo_register_formats(registry: FormatRegistry) -> None:
    """Register leaderboard output formats.

    Called once per plugin manager, for every plugin, when ``zoo leaderboard`` starts. Call
    ``registry.add(name, render, **info)`` for each format:

    :param registry: the format registry. ``render(summary) -> str`` receives the leaderboard as
        a pandas DataFrame, one row per table and configuration (the columns of
        ``zoo leaderboard --format csv``), and returns the text that ``zoo leaderboard --format
        NAME`` prints. The built-in names md, csv, latex and html cannot be taken.

    Return value is ignored.
    """


# -- Run callbacks (loggers) ------------------------------------------------------------------------


@hookspec
def zoo_configure_loggers(loggers: tuple[str, ...]) -> None:
    """Called once by ``zoo bench`` before any run, with the names given to ``--log``. A logger
    plugin that is named but cannot work here (a missing package) raises a
    :class:`metazoo.ZooError` saying how to fix it; the bench then stops with exit status 2."""


@hookspec
def zoo_run_start(run: Run, record: dict, loggers: tuple[str, ...], log_dir: Path | None) -> None:
    """Called in the process executing a run, before its first meta-training step.

    :param run: the run (``run.benchmark``, ``run.algorithm``, ``run.seed``, ``run.key``).
    :param record: the run's record so far (identity, protocol, hyperparameters, environment).
    :param loggers: the names given to ``zoo bench --log`` (a logger acts only when named).
    :param log_dir: the run's own folder for logs, ``<out>/<benchmark>/logs/<record name>/``
        (None when the run writes no logs, e.g. on a Ray worker).
    """


@hookspec
def zoo_run_validation(run: Run, step: int, value: float, time_s: float, loss: float,
                       loggers: tuple[str, ...], log_dir: Path | None) -> None:
    """Called after each validation: ``value`` is the mean validation metric at meta-training
    step ``step``, ``time_s`` seconds of meta-training in, ``loss`` the last training loss."""


@hookspec
def zoo_run_end(run: Run, record: dict, loggers: tuple[str, ...], log_dir: Path | None) -> None:
    """Called when a run ends, with its complete record (``record["status"]`` is ``"ok"`` or
    ``"failed"``), before the record is handed back to be written."""
