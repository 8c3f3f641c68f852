"""The ``zoo`` command line: bench, list, plugins, leaderboard, data."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import metazoo
import pandas as pd
from metazoo import harness
from metazoo.benchmark import builtin_benchmarks, find_benchmark
from metazoo.errors import UsageError, ZooError
from metazoo.leaderboard import FORMATS, render, summarize
from metazoo.manager import Zoo, get_plugin_manager, parse_plugin_options
from metazoo.records import read_records

DEFAULT_BENCHMARK = "sinusoid"
DEFAULT_OUT = "zoo-results"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-p", "plugin_options", multiple=True, metavar="no:NAME",
              help="Block a plugin by name (repeatable), as pytest's -p no:NAME.")
@click.version_option(metazoo.__version__, prog_name="metazoo")
@click.pass_context
def cli(ctx: click.Context, plugin_options: tuple[str, ...]) -> None:
    """metazoo: meta-learning algorithms compared on identical tasks."""
    blocked = parse_plugin_options(plugin_options)
    ctx.obj = Zoo(get_plugin_manager(blocked=blocked))


def _positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"{name} must be a positive number, got {value}")


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".zoo-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to output directory {out}: {exc.strerror or exc}") from None


@cli.command()
@click.option("--algos", default="*", show_default=True,
              help="Comma-separated algorithm names or shell patterns ('maml*').")
@click.option("--benchmark", "benchmark_name", metavar="NAME|PATH",
              help="A built-in benchmark spec (see `zoo list`) or a TOML file.")
@click.option("--suite", help="Run a suite on its default protocol (its built-in spec if any).")
@click.option("--ways", type=int, help="Classes per task (classification suites).")
@click.option("--shots", type=int, help="Support examples per class (or per task, for regression).")
@click.option("--queries", type=int, help="Query examples per class (or per task).")
@click.option("--seeds", type=int, default=1, show_default=True, help="Training seeds 0..N-1 per algorithm.")
@click.option("--steps", type=int, help="Meta-training steps (overrides the spec).")
@click.option("--time", "seconds", type=float, help="Meta-training seconds per run (overrides the spec).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where datasets live (else $METAZOO_DATA).")
@click.option("--out", default=DEFAULT_OUT, show_default=True, type=click.Path(file_okay=False),
              help="Results directory: one JSON record per run plus leaderboards.")
@click.option("--force", is_flag=True, help="Re-run runs that already have a record.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the leaderboard.")
@click.pass_obj
def bench(zoo: Zoo, algos, benchmark_name, suite, ways, shots, queries, seeds, steps, seconds,
          device, data_dir, out, force, quiet) -> None:
    """Meta-train algorithms side by side and print their leaderboard.

    With no options: every algorithm on the quick sinusoid benchmark."""
    for name, value in (("--ways", ways), ("--shots", shots), ("--queries", queries),
                        ("--seeds", seeds), ("--steps", steps), ("--time", seconds)):
        _positive(name, value)
    if benchmark_name and suite:
        raise UsageError("give --benchmark or --suite, not both")
    torch_device = harness.resolve_device(device)
    if suite:
        zoo.suites.get(suite)  # unknown suite → exit 2 with the available names
        spec = find_benchmark(suite) if suite in builtin_benchmarks() else _bare_benchmark(suite)
    else:
        spec = find_benchmark(benchmark_name or DEFAULT_BENCHMARK)
        zoo.suites.get(spec.suite)
    protocol = {k: v for k, v in (("ways", ways), ("shots", shots), ("queries", queries)) if v is not None}
    budget = {}
    if steps is not None or seconds is not None:
        budget = {"steps": steps, "time": seconds}
    spec = spec.with_overrides(protocol, budget)
    out_dir = Path(out)
    _check_writable(out_dir)

    suite_options = {"data_dir": data_dir} if data_dir else {}
    probe_suite = harness.make_suite(zoo, spec, **suite_options)
    explicit = algos != "*"
    entries = zoo.algorithms.select([a.strip() for a in algos.split(",") if a.strip()])
    if probe_suite.kind == "regression":
        skipped = [e.name for e in entries if e.family == "model-data"]
        if skipped and explicit:
            raise UsageError(f"{', '.join(skipped)}: model-data learners need a classification suite, "
                             f"and {spec.suite} is a regression suite")
        entries = [e for e in entries if e.family != "model-data"]
    for entry in entries:  # check every algorithm's hyperparameters before anything runs
        harness.make_learner(harness.Run(spec, entry, 0), probe_suite)

    log = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    log(f"benchmark {spec.name} ({spec.source}): {', '.join(e.name for e in entries)} × {seeds} seed(s) "
        f"on {harness.device_name(torch_device)}")
    records = harness.bench(zoo, spec, entries, list(range(seeds)), torch_device, out_dir, force=force,
                            progress=not quiet and sys.stderr.isatty(), log=log, suite_options=suite_options)
    table = summarize(records)
    markdown = render(table, "md")
    folder = out_dir / spec.name
    (folder / "leaderboard.md").write_text(markdown)
    (folder / "leaderboard.csv").write_text(render(table, "csv"))
    click.echo(markdown)
    log(f"records and leaderboard.md/.csv written to {folder}")


def _bare_benchmark(suite: str):
    from metazoo.benchmark import Benchmark

    return Benchmark(name=suite, suite=suite)


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
    click.echo("\nSuites\n")
    click.echo(pd.DataFrame(
        [{"name": e.name, "plugin": e.source, "summary": e.info.get("summary", "")} for e in suites],
        columns=["name", "plugin", "summary"]).to_markdown(index=False))
    click.echo("\nBenchmarks: " + ", ".join(sorted(builtin_benchmarks())))


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
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True)
@click.option("--benchmark", "benchmarks", multiple=True, help="Only these benchmarks (repeatable).")
def leaderboard(results: str, fmt: str, benchmarks: tuple[str, ...]) -> None:
    """Render the leaderboard of the run records under RESULTS."""
    records = read_records(Path(results), warn=lambda message: click.echo(f"zoo: warning: {message}", err=True))
    if benchmarks:
        records = [r for r in records if r["benchmark"] in benchmarks]
    if not records:
        raise ZooError(f"no run records found under {results}")
    click.echo(render(summarize(records), fmt))


@cli.command()
@click.argument("dataset", type=click.Choice(["omniglot"]))
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where to put it (else $METAZOO_DATA).")
@click.option("--url", help="Base URL to download from (default: the canonical release).")
def data(dataset: str, data_dir: str | None, url: str | None) -> None:
    """Download a dataset and check its published checksums."""
    from metazoo import data as datasets

    target = Path(data_dir) if data_dir else datasets.default_data_dir()
    kwargs = {"base_url": url} if url else {}
    for path in datasets.download_omniglot(target, **kwargs):
        click.echo(f"ok: {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``zoo``: errors are one line on stderr; usage errors exit with status 2."""
    try:
        cli.main(args=argv, prog_name="zoo", standalone_mode=False)
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
