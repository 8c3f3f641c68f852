"""The ``zoo`` command line: bench, list, plugins, leaderboard, data."""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import sys
import tempfile
from pathlib import Path

import click
import metazoo
import pandas as pd
import torch
from metazoo.bench import pending, plan, run_bench, run_from_record
from metazoo.benchmark import Benchmark, builtin_benchmarks, find_benchmark
from metazoo.errors import UsageError, ZooError
from metazoo.executors import Executor, InProcess, ProcessPool, RayExecutor, WorkerContext
from metazoo.leaderboard import group_records, slug, summarize
from metazoo.manager import Zoo, get_plugin_manager, parse_plugin_options
from metazoo.records import read_records
from metazoo.render import FORMATS, is_results_index, render, results_index
from metazoo.run import STOP, device_name, resolve_device, suite_options

DEFAULT_BENCHMARK = "sinusoid"
DEFAULT_OUT = "zoo-results"
ARGV = "metazoo.argv"  # key of the command line in the click context's meta, for the records


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-p", "plugin_options", multiple=True, metavar="no:NAME",
              help="Block a plugin by name (repeatable), as pytest's -p no:NAME.")
@click.version_option(metazoo.__version__, prog_name="metazoo")
@click.pass_context
def cli(ctx: click.Context, plugin_options: tuple[str, ...]) -> None:
    """metazoo: meta-learning algorithms compared on identical tasks."""
    blocked = parse_plugin_options(plugin_options)
    if isinstance(ctx.obj, dict):  # from main(): the arguments, recorded with each run
        ctx.meta[ARGV] = ctx.obj.get("argv", [])
    ctx.obj = Zoo(get_plugin_manager(blocked=blocked))


def _positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"{name} must be a positive number, got {value}")


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".zoo-write-test-"):
            pass  # a name of its own, so that concurrent processes do not race on one probe
    except OSError as exc:
        raise UsageError(f"cannot write to output directory {out}: {exc.strerror or exc}") from None


@cli.command()
@click.option("--algos", default="*", show_default=True,
              help="Comma-separated algorithm names or shell patterns ('maml*').")
@click.option("--benchmark", "benchmark_names", multiple=True, metavar="NAME|PATH[,...]",
              help="Built-in benchmark specs (see `zoo list`) or TOML files; repeat the option or "
                   "separate with commas.")
@click.option("--suite", help="Run a suite on its default protocol (its built-in spec if any).")
@click.option("--ways", type=int, help="Classes per task (classification suites).")
@click.option("--shots", type=int, help="Support examples per class (or per task, for regression).")
@click.option("--queries", type=int, help="Query examples per class (or per task).")
@click.option("--backbone", help="A registered backbone for every algorithm (see `zoo list`).")
@click.option("--seeds", type=int, default=1, show_default=True, help="Training seeds 0..N-1 per algorithm.")
@click.option("--steps", type=int, help="Meta-training steps (overrides the spec).")
@click.option("--time", "seconds", type=float, help="Meta-training seconds per run (overrides the spec).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where datasets live (else $METAZOO_DATA).")
@click.option("--out", default=DEFAULT_OUT, show_default=True, type=click.Path(file_okay=False),
              help="Results directory: one JSON record per run plus leaderboards.")
@click.option("--force", is_flag=True, help="Re-run runs that already have a record.")
@click.option("--threads", type=int,
              help="Torch threads per run (default: 1 in this process, where the small models of "
                   "meta-learning run fastest single-threaded; with --workers, cores ÷ workers).")
@click.option("--workers", type=int,
              help="Runs at once: a local pool of N processes (default 1: in this process); with "
                   "--executor ray, at most N Ray tasks (default: the cluster's CPUs).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where runs execute: this machine, or a Ray cluster (pip install 'metazoo[ray]').")
@click.option("--address", metavar="ADDR",
              help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray on 127.0.0.1).")
@click.option("--retries", type=int, default=2, show_default=True,
              help="Times a run is started again when its worker process dies (pool and Ray).")
@click.option("--from-record", "from_records", multiple=True, type=click.Path(dir_okay=False),
              metavar="FILE", help="Re-run exactly the run of this record (repeatable) into --out "
                                     "(where a record of it is kept unless --force).")
@click.option("--compile/--no-compile", "compile_step", default=None,
              help="Compile every learner's whole outer step with torch.compile, or not (default: "
                   "the spec's `compile` hyperparameter). Not part of the run key.")
@click.option("--checkpoint-every", type=float, default=300.0, show_default=True, metavar="SECONDS",
              help="Save each run's state beside its record this often; a killed run started again by "
                   "the same command resumes from it (not with --executor ray).")
@click.option("--log", "log_names", default="", metavar="NAME[,...]",
              help="Loggers for every run: csv (the validation curve), tensorboard "
                   "(pip install 'metazoo[tensorboard]'), or one a plugin adds; files go to "
                   "OUT/BENCHMARK/logs/RUN/.")
@click.option("--dry-run", is_flag=True,
              help="Check the configuration and list the runs, each done (has a record) or to run; run nothing.")
@click.option("--progress-every", type=float, default=60.0, show_default=True, metavar="SECONDS",
              help="When stderr is not a terminal: one progress line per run every SECONDS.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the leaderboard (and warnings): no progress.")
@click.pass_obj
def bench(zoo: Zoo, algos, benchmark_names, suite, ways, shots, queries, backbone, seeds, steps, seconds,
          device, data_dir, out, force, threads, workers, executor, address, retries, from_records,
          compile_step, checkpoint_every, log_names, dry_run, progress_every, quiet) -> None:
    """Meta-train algorithms side by side on benchmarks × seeds and print their leaderboards.

    With no options: every algorithm on the quick sinusoid benchmark. Finished runs are kept
    (resume by running the same command again); concurrent processes on one --out share the runs.
    """
    for name, value in (("--ways", ways), ("--shots", shots), ("--queries", queries), ("--threads", threads),
                        ("--seeds", seeds), ("--steps", steps), ("--time", seconds), ("--workers", workers)):
        _positive(name, value)
    _positive("--progress-every", progress_every)
    if checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be 0 or more seconds, got {checkpoint_every}")
    if retries < 0:
        raise UsageError(f"--retries must be 0 or more, got {retries}")
    if address and executor != "ray":
        raise UsageError("--address is for --executor ray")
    names = [n.strip() for value in benchmark_names for n in value.split(",") if n.strip()]
    if names and suite:
        raise UsageError("give --benchmark or --suite, not both")
    torch_device = resolve_device(device)
    out_dir = Path(out)
    _check_writable(out_dir)
    log = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))

    try:  # every configuration error stops here, before any run: exit status 2
        if from_records:
            given = [option for option, value in (
                ("--algos", algos != "*"), ("--benchmark", names), ("--suite", suite), ("--ways", ways),
                ("--shots", shots), ("--queries", queries), ("--backbone", backbone), ("--seeds", seeds != 1),
                ("--steps", steps),
                ("--time", seconds)) if value]
            if given:
                raise UsageError(f"--from-record takes the benchmark, algorithm, seed and budget from the "
                                 f"record; drop {', '.join(given)}")
            runs = [run_from_record(zoo, Path(path), data_dir, _warn) for path in from_records]
        else:
            if suite:
                zoo.suites.get(suite)  # unknown suite → exit 2 with the available names
                specs = [find_benchmark(suite) if suite in builtin_benchmarks() else Benchmark(name=suite, suite=suite)]
            else:
                specs = [find_benchmark(name, zoo.benchmarks) for name in names or [DEFAULT_BENCHMARK]]
            protocol = {k: v for k, v in (("ways", ways), ("shots", shots), ("queries", queries)) if v is not None}
            budget = {"steps": steps, "time": seconds} if steps is not None or seconds is not None else {}
            specs = [spec.with_overrides(protocol, budget) for spec in specs]
            if backbone:
                zoo.backbones.get(backbone)  # unknown → exit 2 with the available names
                specs = [dataclasses.replace(spec, backbone=backbone, algorithms={
                    name: {k: v for k, v in table.items() if k != "backbone"} for name, table in spec.algorithms.items()})
                    for spec in specs]
            patterns = [a.strip() for a in algos.split(",") if a.strip()]
            runs = plan(zoo, specs, patterns, list(range(seeds)), data_dir, _warn, compile_step)
        loggers = tuple(n.strip() for n in log_names.split(",") if n.strip())
        _check_loggers(zoo, loggers)
    except UsageError:
        raise
    except ZooError as exc:
        raise UsageError(str(exc)) from None
    if data_dir and not any(zoo.suites.get(r.benchmark.suite).info.get("uses_data") for r in runs):
        _warn(f"--data-dir {data_dir} is not used: no suite of these benchmarks reads data")
    benchmarks = list(dict.fromkeys(run.benchmark.name for run in runs))
    if dry_run:
        todo = pending(runs, out_dir)
        for run in runs:
            click.echo(f"{run.label}: {'to run' if run in todo else 'done'} ({run.path(out_dir)})")
        click.echo(f"{len(todo)} of {len(runs)} run(s) to run")
        return

    progress = "off" if quiet else "auto"
    context = WorkerContext.of(zoo, device, data_dir, threads, progress, progress_every, str(out_dir),
                               checkpoint_every, loggers)
    if executor == "ray":
        runner: Executor = RayExecutor(dataclasses.replace(context, progress="off"), address, retries)
        runner.slots = workers or runner.slots
        where = f"Ray, {runner.slots} at once"
    elif workers and workers > 1:
        threads = threads or max(1, (os.cpu_count() or 1) // workers)
        runner = ProcessPool(dataclasses.replace(context, threads=threads), workers, retries, log)
        where = f"{workers} worker processes, {threads} torch thread(s) each"
    else:
        torch.set_num_threads(threads or 1)
        runner = InProcess(zoo, context)
        where = f"in this process, {torch.get_num_threads()} torch thread(s)"
    log(f"{len(runs)} run(s): {', '.join(benchmarks)} × {', '.join(dict.fromkeys(r.algorithm.name for r in runs))} "
        f"× seed(s) {', '.join(map(str, sorted({r.seed for r in runs})))} on {device_name(torch_device)}, "
        f"{where}")
    command = shlex.join(["zoo", *click.get_current_context().meta.get(ARGV, ["bench"])])
    STOP.clear()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:  # not where the shell ignores it (background jobs)
        signal.signal(signal.SIGINT, _interrupt)
    try:
        records = run_bench(runs, runner, out_dir, torch_device, force=force, log=log, warn=_warn,
                            command=command)
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        signal.signal(signal.SIGINT, previous_int if previous_int is not None else signal.SIG_DFL)
    folder_records = []
    for name in benchmarks:  # each folder's leaderboard holds every record in it, whoever wrote it
        folder = out_dir / name
        records_here = read_records(folder / "runs", warn=_warn)
        (folder / "leaderboard.md").write_text(render(summarize(records_here), "md"))
        (folder / "leaderboard.csv").write_text(render(summarize(records_here), "csv"))
        folder_records += records_here
    click.echo(render(summarize(folder_records), "md"))
    log(f"records and leaderboard.md/.csv written to {', '.join(str(out_dir / n) for n in benchmarks)}")
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        raise ZooError(f"{len(failed)} of {len(records)} run(s) failed: "
                       + "; ".join(f"{r['algorithm']} seed {r['seed']} ({r['error']})" for r in failed[:3])
                       + ("; …" if len(failed) > 3 else ""))


def _check_loggers(zoo: Zoo, loggers: tuple[str, ...]) -> None:
    """Every ``--log`` name is a plugin implementing run callbacks, and can work here."""
    callbacks = {"zoo_run_start", "zoo_run_validation", "zoo_run_end"}
    available = sorted(p.name.removesuffix("_logger") for p in zoo.plugins() if callbacks & set(p.hooks))
    unknown = [name for name in loggers if name not in available]
    if unknown:
        raise UsageError(f"unknown logger {', '.join(map(repr, unknown))}; available: {', '.join(available)}")
    zoo.pm.hook.zoo_configure_loggers(loggers=loggers)


def _warn(message: str) -> None:
    click.echo(f"zoo: warning: {message}", err=True)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (and Ctrl-C) stop ``zoo bench``: runs in progress are stopped, claims released.
    The flag stops the run at its next step should the exception be swallowed on its way."""
    STOP.set()
    raise KeyboardInterrupt


@cli.command(name="list")
@click.argument("patterns", nargs=-1)
@click.pass_obj
def list_(zoo: Zoo, patterns: tuple[str, ...]) -> None:
    """List algorithms, suites and built-in benchmarks (optionally matching shell PATTERNS)."""
    patterns = patterns or ("*",)
    algorithms = [e for e in zoo.algorithms if any(_match(e.name, p) for p in patterns)]
    suites = [e for e in zoo.suites if any(_match(e.name, p) for p in patterns)]
    click.echo("Algorithms\n")
    click.echo(pd.DataFrame(
        [{"name": e.name, "family": e.family, "plugin": e.source, "paper": e.info.get("paper", "")}
         for e in algorithms], columns=["name", "family", "plugin", "paper"]).to_markdown(index=False))
    click.echo("\nBackbones\n")
    backbones = [e for e in zoo.backbones if any(_match(e.name, p) for p in patterns)]
    click.echo(pd.DataFrame(
        [{"name": e.name, "plugin": e.source, "summary": e.info.get("summary", "")} for e in backbones],
        columns=["name", "plugin", "summary"]).to_markdown(index=False))
    click.echo("\nSuites\n")
    click.echo(pd.DataFrame(
        [{"name": e.name, "plugin": e.source, "summary": e.info.get("summary", "")} for e in suites],
        columns=["name", "plugin", "summary"]).to_markdown(index=False))
    from_plugins = [f"{e.name} ({e.source})" for e in zoo.benchmarks if any(_match(e.name, p) for p in patterns)]
    click.echo("\nBenchmarks: " + ", ".join(sorted(builtin_benchmarks())))
    if from_plugins:
        click.echo("Benchmarks from plugins: " + ", ".join(from_plugins))


def _match(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern)


@cli.command()
@click.pass_obj
def plugins(zoo: Zoo) -> None:
    """List plugins, the hooks each implements, and where each comes from."""
    rows = [{"plugin": p.name, "hooks": ", ".join(p.hooks), "distribution": p.distribution}
            for p in zoo.plugins()]
    click.echo(pd.DataFrame(rows).to_markdown(index=False))


@cli.command()
@click.argument("results", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", default="md", show_default=True,
              help=f"{', '.join(FORMATS)}, or a format a plugin adds (see `zoo plugins`).")
@click.option("--benchmark", "benchmarks", multiple=True, help="Only these benchmarks (repeatable).")
@click.option("--plots", is_flag=True, help="Also write PNG plots into each benchmark folder.")
@click.option("--write", is_flag=True,
              help="Write leaderboard.md, leaderboard.csv and plots into every benchmark folder under "
                   "RESULTS, and regenerate RESULTS/README.md, the index of them.")
@click.pass_obj
def leaderboard(zoo: Zoo, results: str, fmt: str, benchmarks: tuple[str, ...], plots: bool, write: bool) -> None:
    """Render the leaderboard of the run records under RESULTS (a pure function of them)."""
    if fmt not in FORMATS and fmt not in zoo.formats:
        raise UsageError(f"unknown format {fmt!r}; available: {', '.join([*FORMATS, *zoo.formats.names()])}")
    if write and benchmarks:
        raise UsageError("--write regenerates every leaderboard under RESULTS and its index; "
                         "leave out --benchmark")
    root = Path(results)
    records = read_records(root, warn=lambda message: click.echo(f"zoo: warning: {message}", err=True))
    if benchmarks:
        records = [r for r in records if r["benchmark"] in benchmarks]
    if not records:
        raise ZooError(f"no run records found under {results}")
    if plots or write:
        _publish(root, records, results, write)
    summary = summarize(records)
    click.echo(render(summary, fmt) if fmt in FORMATS else zoo.formats.get(fmt).factory(summary))


def _publish(root: Path, records: list[dict], shown_root: str, write: bool) -> None:
    """Write each benchmark folder's plots (and with ``write`` its leaderboard.md/.csv and the
    index ``root/README.md``). A record's benchmark folder is the one holding its ``runs/``."""
    from metazoo.plots import plot_table

    folders: dict[Path, list[dict]] = {}
    for record in records:
        folder = Path(record["_path"]).parent
        folders.setdefault(folder.parent if folder.name == "runs" else folder, []).append(record)
    index = {}
    for folder, folder_records in sorted(folders.items()):
        tables = group_records(folder_records)
        images = {title: plot_table(runs, title, folder / f"{slug(title)}.png").name
                  for title, runs in tables.items()}
        written = [folder / name for name in images.values()]
        if write:
            summary = summarize(folder_records)
            (folder / "leaderboard.md").write_text(render(summary, "md", average_rank=False, images=images))
            (folder / "leaderboard.csv").write_text(render(summary, "csv"))
            written += [folder / "leaderboard.md", folder / "leaderboard.csv"]
            relative = folder.relative_to(root)
            command_file = folder / "COMMAND"
            commands = command_file.read_text().strip().splitlines() if command_file.is_file() \
                else sorted({r["command"] for r in folder_records if r.get("command")})
            index[relative.as_posix()] = {
                "tables": list(tables),
                "commands": commands,
                "runs": len(folder_records),
                "failed": sum(r.get("status") != "ok" for r in folder_records),
                "plots": list(images.values()),
            }
        click.echo(f"zoo: wrote {', '.join(str(p) for p in written)}", err=True)
    if write:
        readme = root / "README.md"
        if readme.is_file() and not is_results_index(readme.read_text()):
            click.echo(f"zoo: warning: {readme} was not written by `zoo leaderboard --write`; left as it is "
                       "(no index written: run --write on the results folder above it for one)", err=True)
            return
        regenerate = f"zoo leaderboard {shown_root} --write"
        changes = root / "CHANGES.md"
        readme.write_text(results_index(index, summarize(records), regenerate,
                                        changes.read_text() if changes.is_file() else ""))
        click.echo(f"zoo: wrote {readme}", err=True)


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where datasets live (else $METAZOO_DATA).")
@click.pass_obj
def check(zoo: Zoo, names: tuple[str, ...], data_dir: str | None) -> None:
    """Run the conformance kit (metazoo.testing) on installed algorithms and suites (names or
    shell patterns; default: all). Algorithms are checked on hyperplanes, a data-free
    classification suite that both families take, and those that train on labelled batches on
    the kit's data-free GaussianClasses. One line per failed check; exit 1 if any."""
    from metazoo import testing
    from metazoo.tasks import trains_on

    patterns = names or ("*",)
    suites = [e for e in zoo.suites if any(_match(e.name, p) for p in patterns)]
    algorithms = [e for e in zoo.algorithms if any(_match(e.name, p) for p in patterns)]
    if not suites and not algorithms:
        raise UsageError(f"no algorithm or suite matches {' '.join(patterns)}; see `zoo list`")
    failed = checked = 0
    for entry in suites:
        try:
            suite = entry.factory(**suite_options(entry, data_dir))
            suite.prepare()
            failures = testing.check_suite(suite)
        except ZooError as exc:
            failures = [testing.Failure("builds and finds its data", str(exc))]
        checked += 1
        failed += bool(failures)
        for failure in failures:
            click.echo(f"FAIL suite {entry.name}: {failure}")
    for entry in algorithms:
        suite = testing.GaussianClasses() if trains_on(entry.factory) == "labelled" \
            else zoo.suites.get("hyperplanes").factory()
        failures = testing.check_learner(entry.factory, suite)
        checked += 1
        failed += bool(failures)
        for failure in failures:
            click.echo(f"FAIL algorithm {entry.name}: {failure}")
    click.echo(f"{checked - failed} of {checked} passed every check")
    if failed:
        raise ZooError(f"{failed} of {checked} failed the conformance kit")


@cli.command(name="new-plugin")
@click.argument("name")
@click.option("--algorithm", "kind", flag_value="algorithm", default=True, help="A model-algorithm learner (default).")
@click.option("--suite", "kind", flag_value="suite", help="A task suite.")
@click.option("--dir", "where", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Where to create the folder metazoo-NAME.")
def new_plugin(name: str, kind: str, where: str) -> None:
    """Write a ready plugin package: pyproject with the entry point, the module, a test that runs
    the conformance kit, and a README."""
    from metazoo.scaffold import new_plugin as write

    folder = write(name, kind, Path(where))
    click.echo(f"wrote {folder}: pip install -e {folder}, then zoo check {name}")


@cli.command()
@click.argument("dataset", type=click.Choice(["omniglot", "check"]))
@click.argument("folder", required=False, type=click.Path(file_okay=False))
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where to put it (else $METAZOO_DATA).")
@click.option("--url", help="Base URL to download from (default: the canonical release).")
def data(dataset: str, folder: str | None, data_dir: str | None, url: str | None) -> None:
    """Download a dataset and check its published checksums (``zoo data omniglot``), or report
    what an image folder for the ``images`` suite holds (``zoo data check DIR``)."""
    if dataset == "check":
        from metazoo.image_folder import describe_folder

        if folder is None:
            raise UsageError("zoo data check DIR: give the image folder to check")
        click.echo(describe_folder(folder))
        return
    from metazoo import data as datasets

    target = Path(data_dir) if data_dir else datasets.default_data_dir()
    kwargs = {"base_url": url} if url else {}
    for path in datasets.download_omniglot(target, **kwargs):
        click.echo(f"ok: {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``zoo``: errors are one line on stderr; usage errors exit with status 2."""
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        cli.main(args=args, prog_name="zoo", standalone_mode=False, obj={"argv": args})
    except click.exceptions.Abort:
        click.echo("zoo: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"zoo: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except UsageError as exc:
        click.echo(f"zoo: error: {exc}", err=True)
        return 2
    except ZooError as exc:
        click.echo(f"zoo: error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("zoo: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
