"""Leaderboards: a pure function from run records to tables (pandas + tabulate).

Records are grouped into tables by benchmark, protocol hash and training budget, so that runs
are averaged and compared only on identical test tasks under an identical budget. Within a
table each algorithm's per-task test metric is averaged over its seeds; the mean gets a 95%
confidence interval over tasks, and every algorithm is compared with the best one by a
two-sided paired t-test on the same tasks (Student's t distribution, computed here with the
regularised incomplete beta function, so that scipy is not needed). Across tables, algorithms
are ranked by their average rank, as Meta-Dataset (Triantafillou et al. 2020) ranks learners.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FORMATS = ("md", "csv", "latex", "html")
ALPHA = 0.05  # a p-value at or above it marks an algorithm as tied with the best


# -- statistics -------------------------------------------------------------------------------


def _continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz method)."""
    tiny = 1e-300

    def clamp(value: float) -> float:
        return tiny if abs(value) < tiny else value

    c, d = 1.0, 1.0 / clamp(1.0 - (a + b) * x / (a + 1.0))
    result = d
    for m in range(1, 1000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 / clamp(1.0 + numerator * d)
            c = clamp(1.0 + numerator / c)
            result *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return result


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _continued_fraction(a, b, x) / a
    return 1.0 - front * _continued_fraction(b, a, 1.0 - x) / b


def paired_t_test(a: Iterable[float], b: Iterable[float]) -> float:
    """Two-sided p-value of a paired t-test of mean(a − b) = 0, with n − 1 degrees of freedom.

    NaN for fewer than two pairs; 1 for identical and 0 for constant nonzero differences.
    """
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = diff.size
    if n < 2 or not np.isfinite(diff).all():
        return math.nan
    sd = float(diff.std(ddof=1))
    mean = float(diff.mean())
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    t = mean / (sd / math.sqrt(n))
    df = n - 1
    return betainc(df / 2.0, 0.5, df / (df + t * t))


# -- grouping and summary -----------------------------------------------------------------------


def budget_label(budget: Mapping[str, Any]) -> str:
    """``'1000 steps, val every 250 steps'``: a training budget in words."""
    seconds = "CPU s" if budget.get("clock") == "cpu" else "s"
    limits = []
    if budget.get("steps") is not None:
        limits.append(f"{budget['steps']} steps")
    if budget.get("time") is not None:
        limits.append(f"{budget['time']:g} {seconds}")
    label = " or ".join(limits) or "no budget recorded"
    checks = []
    if budget.get("val_every") is not None:
        checks.append(f"{budget['val_every']} steps")
    if budget.get("val_every_s") is not None:
        checks.append(f"{budget['val_every_s']:g} {seconds}")
    return label + (f", val every {' or '.join(checks)}" if checks else "")


def _budget_key(record: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in (record.get("budget") or {}).items() if v is not None}, sort_keys=True)


def group_records(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records by table: one per (benchmark, protocol hash, budget), keyed by the table's title,
    ``'benchmark — budget'`` (plus the protocol hash where a benchmark has several)."""
    by_key: dict[tuple[str, str, str], list[dict]] = {}
    for record in records:
        key = (record["benchmark"], str(record.get("protocol_hash")), _budget_key(record))
        by_key.setdefault(key, []).append(record)
    hashes: dict[str, set[str]] = {}
    for benchmark, protocol, _ in by_key:
        hashes.setdefault(benchmark, set()).add(protocol)
    tables = {}
    for (benchmark, protocol, budget), runs in sorted(by_key.items()):
        title = f"{benchmark} — {budget_label(runs[0].get('budget') or {})}"
        if len(hashes[benchmark]) > 1:
            title += f" — protocol {protocol}"
        if title in tables:  # budgets that differ in a field the label does not show
            title += f" — budget {budget}"
        tables[title] = runs
    return tables


def slug(title: str) -> str:
    """A file-name-safe form of a table title."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", title).strip("-").lower()


def summarize(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (table, algorithm): test mean and 95% CI over the test tasks (each task's
    metric averaged over seeds), spread over seeds, rank (ties share the average rank), the
    paired p-value against the table's best algorithm, timings, environment and the published
    number."""
    rows = []
    for title, runs in group_records(records).items():
        by_algorithm: dict[str, list[dict]] = {}
        for record in runs:
            by_algorithm.setdefault(record["algorithm"], []).append(record)
        table = [_row(algorithm, algorithm_runs) for algorithm, algorithm_runs in by_algorithm.items()]
        first = runs[0]
        for row in table:
            row.update(table=title, benchmark=first["benchmark"], protocol_hash=first.get("protocol_hash"),
                       budget=budget_label(first.get("budget") or {}))
        _rank_and_compare(table)
        rows.extend(table)
    if not rows:
        return pd.DataFrame()
    summary = pd.DataFrame(rows)
    summary = summary.sort_values(["table", "rank", "algorithm"], na_position="last").reset_index(drop=True)
    front = ["benchmark", "algorithm", "table", "protocol_hash", "budget", "rank"]
    return summary[front + [c for c in summary.columns if c not in front and c != "per_task"]]


def _distinct(runs: list[dict], field: str) -> str | None:
    values = sorted({str(r[field]) for r in runs if r.get(field) is not None})
    return ", ".join(values) or None


def _row(algorithm: str, runs: list[dict]) -> dict[str, Any]:
    ok = sorted((r for r in runs if r.get("status") == "ok"), key=lambda r: r["seed"])
    failed = [r for r in runs if r.get("status") != "ok"]
    first = (ok or runs)[0]
    row: dict[str, Any] = {
        "algorithm": algorithm,
        "family": first.get("family"),
        "metric": first.get("metric"),
        "higher_is_better": first.get("higher_is_better"),
        "seeds": len(ok),
        "failed": len(failed),
        "error": failed[0].get("error") if failed else None,
        "published": first.get("published"),
        "device": _distinct(runs, "device"),
        "torch": _distinct(runs, "torch"),
        "metazoo": _distinct(runs, "metazoo"),
        "git_commit": _distinct(runs, "git_commit"),
    }
    if not ok:
        return {**row, "mean": math.nan, "ci95": math.nan, "seed_sd": math.nan, "test_tasks": 0,
                "train_time_s": math.nan, "tasks_per_s": math.nan, "peak_memory_mb": math.nan,
                "per_task": None}
    per_task = np.mean([r["test"]["per_task"] for r in ok], axis=0)  # [tasks], paired over seeds
    seed_means = [r["test"]["mean"] for r in ok]
    n = per_task.size
    return {
        **row,
        "mean": float(per_task.mean()),
        "ci95": float(1.96 * per_task.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        "seed_sd": float(np.std(seed_means, ddof=1)) if len(ok) > 1 else math.nan,
        "test_tasks": n,
        "train_time_s": float(np.mean([r["train"]["time_s"] for r in ok])),
        "tasks_per_s": float(np.mean([r["train"]["tasks_per_s"] for r in ok])),
        "peak_memory_mb": float(max(r.get("peak_memory_mb") or 0 for r in ok)),
        "per_task": per_task,
    }


def _rank_and_compare(table: list[dict[str, Any]]) -> None:
    """Set ``rank``, ``best``, ``p_value`` and ``tied_with_best`` of one table's rows in place."""
    scored = [row for row in table if not math.isnan(row["mean"])]
    for row in table:
        row.update(rank=math.nan, best=False, p_value=math.nan, tied_with_best=None)
    if not scored:
        return
    sign = -1.0 if scored[0]["higher_is_better"] else 1.0
    ranks = pd.Series([sign * row["mean"] for row in scored]).rank(method="average")
    for row, rank in zip(scored, ranks):
        row["rank"] = float(rank)
    best = min(scored, key=lambda row: (row["rank"], row["algorithm"]))
    best["best"] = True
    for row in scored:
        if row is best or row["test_tasks"] != best["test_tasks"]:
            continue  # the best itself, or not the same test tasks: no paired comparison
        row["p_value"] = paired_t_test(row["per_task"], best["per_task"])
        if not math.isnan(row["p_value"]):
            row["tied_with_best"] = row["p_value"] >= ALPHA


def average_ranks(summary: pd.DataFrame) -> pd.DataFrame:
    """Each algorithm's rank in every table and its average rank over the tables where it has
    a result, best first."""
    ranked = summary[summary["rank"].notna()]
    wide = ranked.pivot_table(index="algorithm", columns="table", values="rank", aggfunc="first")
    wide = wide[sorted(wide.columns)]
    wide["tables"] = wide.notna().sum(axis=1)
    wide["average rank"] = wide.drop(columns="tables").mean(axis=1)
    return wide.sort_values(["average rank", "algorithm"]).reset_index()


# -- rendering --------------------------------------------------------------------------------


def _fmt_rank(rank: float) -> str:
    if math.isnan(rank):
        return "–"
    return f"{rank:.0f}" if rank == int(rank) else f"{rank:.1f}"


def _versus_best(row: Mapping[str, Any]) -> str:
    if row["best"]:
        return "best"
    p = row["p_value"]
    if math.isnan(p):
        return "–"
    value = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    return f"tied ({value})" if row["tied_with_best"] else value


def display_table(summary: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Human-readable columns for one table, and its footnotes (citations)."""
    citations: list[str] = []
    rows = []
    for row in summary.to_dict("records"):
        scale, unit = (100.0, "%") if row["metric"] == "accuracy" else (1.0, "")
        digits = 2 if unit else 3
        metric_name = f"test {row['metric']}{' (%)' if unit else ''}"
        if math.isnan(row["mean"]):
            result = f"failed: {row['error']}" if row["failed"] else "no runs"
        else:
            result = f"{row['mean'] * scale:.{digits}f} ± {row['ci95'] * scale:.{digits}f}"
            if row["failed"]:
                result += f" ({row['failed']} failed)"
        published = row["published"]
        if published:
            if published["citation"] not in citations:
                citations.append(published["citation"])
            ref = citations.index(published["citation"]) + 1
            value = f"{published['value'] * scale:.{digits}f}"
            if published.get("ci") is not None:
                value += f" ± {published['ci'] * scale:.{digits}f}"
            published = f"{value} [{ref}]"

        def number(value: float, spec: str) -> str:
            return "–" if math.isnan(value) else format(value, spec)

        rows.append({
            "rank": _fmt_rank(row["rank"]),
            "algorithm": row["algorithm"],
            "family": row["family"],
            metric_name: result,
            "vs best (paired)": _versus_best(row),
            "seed s.d.": number(row["seed_sd"] * scale, f".{digits}f"),
            "published": published or "–",
            "seeds": row["seeds"],
            "test tasks": row["test_tasks"],
            "train time (s)": number(row["train_time_s"], ".1f"),
            "tasks/s": number(row["tasks_per_s"], ".0f"),
            "peak memory (MB)": number(row["peak_memory_mb"], ".0f"),
        })
    notes = [f"[{i}] {c}" for i, c in enumerate(citations, 1)]
    return pd.DataFrame(rows), notes


def environment(summary: pd.DataFrame) -> str:
    """One line naming the devices, torch and metazoo versions and git commits of a table."""

    def distinct(column: str, shorten=lambda value: value) -> str:
        values = sorted({shorten(v) for cell in summary[column].dropna() for v in str(cell).split(", ")})
        return ", ".join(values) or "unknown"

    def short_commit(commit: str) -> str:  # keeps a "-dirty" mark
        return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")

    return (f"Environment: device {distinct('device')}; torch {distinct('torch')}; "
            f"metazoo {distinct('metazoo')}; git commit {distinct('git_commit', short_commit)}.")


def _method(part: pd.DataFrame) -> str:
    tasks = int(part["test_tasks"].max()) or "recorded"
    return (f"Mean ± 95% CI (1.96·s.d./√n) over the same {tasks} test tasks for every algorithm, each "
            f"task's metric averaged over seeds. vs best: two-sided paired t-test against the best "
            f"algorithm on the same tasks; tied = p ≥ {ALPHA:g}. Ranks: ties share the average rank.")


def _latex_escape(text: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", text).replace("±", r"$\pm$").replace("≥", r"$\geq$") \
        .replace("√", r"$\surd$").replace("·", r"$\cdot$").replace("—", "---")


def render(summary: pd.DataFrame, fmt: str = "md", average_rank: bool = True,
           images: Mapping[str, str] | None = None) -> str:
    """The leaderboard of every table in ``summary`` as Markdown, CSV, LaTeX or HTML, followed
    (unless ``average_rank`` is false, or there is one table) by the average ranks across tables.
    ``images`` maps a table title to a plot file to show under it (Markdown and HTML)."""
    if fmt == "csv":
        published = summary["published"]
        return summary.drop(columns=["published"]).assign(
            published=[p["value"] if p else None for p in published],
            published_ci=[p.get("ci") if p else None for p in published],
            published_citation=[p["citation"] if p else None for p in published],
        ).to_csv(index=False)
    images = images or {}
    parts = []
    for title, part in summary.groupby("table", sort=True):
        table, notes = display_table(part)
        lines = [*notes, _method(part), environment(part)]
        if fmt == "md":
            image = f"\n![{title}]({images[title]})\n" if title in images else ""
            parts.append(f"### {title}\n\n{table.to_markdown(index=False, tablefmt='github')}\n\n"
                         + "".join(f"{line}  \n" for line in lines) + image)
        elif fmt == "latex":
            body = table.to_markdown(index=False, tablefmt="latex_booktabs")  # escapes all but ±
            parts.append(f"\\paragraph{{{_latex_escape(title)}}}\n" + body.replace("±", r"$\pm$") + "\n"
                         + "".join(f"{_latex_escape(line)}\\\\\n" for line in lines))
        else:
            image = f'<img src="{html.escape(images[title])}" alt="{html.escape(title)}">\n' if title in images else ""
            parts.append(f"<h3>{html.escape(title)}</h3>\n{table.to_html(index=False)}\n"
                         + "".join(f"<p>{html.escape(line)}</p>\n" for line in lines) + image)
    ranks = average_ranks(summary)
    if average_rank and _across_tables(ranks):
        parts.append(_render_ranks(ranks, fmt))
    return "\n".join(parts)


def _across_tables(ranks: pd.DataFrame) -> bool:
    """Whether an :func:`average_ranks` table spans two tables or more."""
    return len(ranks.columns) > 4  # algorithm, a column per table, tables, average rank


def _render_ranks(ranks: pd.DataFrame, fmt: str, heading: str = "###") -> str:
    shown = ranks.copy()
    for column in shown.columns:
        if column not in ("algorithm", "tables", "average rank"):
            shown[column] = [_fmt_rank(v) for v in shown[column]]
    shown["average rank"] = [f"{v:.2f}" for v in shown["average rank"]]
    note = ("Rank of each algorithm in each table (ties share the average rank), averaged over "
            "the tables where it has a result.")
    if fmt == "md":
        return (f"{heading} Average rank across benchmarks\n\n"
                f"{shown.to_markdown(index=False, tablefmt='github')}\n\n{note}\n")
    if fmt == "latex":
        return ("\\paragraph{Average rank across benchmarks}\n"
                + shown.to_markdown(index=False, tablefmt="latex_booktabs") + f"\n{_latex_escape(note)}\n")
    return f"<h3>Average rank across benchmarks</h3>\n{shown.to_html(index=False)}\n<p>{html.escape(note)}</p>\n"


# -- the results index ------------------------------------------------------------------------


_OVERRIDE = re.compile(r"-(ways|shots|queries)(\d+)")


def bench_command(records: list[dict[str, Any]], out: str, builtin: Iterable[str]) -> str:
    """The ``zoo bench`` command that produces a benchmark folder's records: its spec (a
    built-in name from ``builtin``, else the spec's path, else ``--suite``), protocol
    overrides (read from the benchmark name, as :meth:`Benchmark.with_overrides` writes them),
    algorithms, seeds 0..N-1, budget and device."""
    first = records[0]
    source = str(first.get("benchmark_source") or "")
    stem = Path(source).stem
    if source.endswith(".toml") and Path(source).parent.name == "benchmarks" and stem in set(builtin):
        spec, base = ["--benchmark", stem], stem
    elif source.endswith(".toml"):
        spec, base = ["--benchmark", source], stem
    else:
        spec, base = ["--suite", first["suite"]], first["suite"]
    name = first["benchmark"]
    overrides = _OVERRIDE.findall(name[len(base):]) if name.startswith(base) else []
    command = ["zoo", "bench", *spec]
    for key, value in overrides:
        command += [f"--{key}", value]
    algorithms = sorted({r["algorithm"] for r in records})
    command += ["--algos", ",".join(algorithms), "--seeds", str(max(r["seed"] for r in records) + 1)]
    budget = first.get("budget") or {}
    if budget.get("steps") is not None:
        command += ["--steps", str(budget["steps"])]
    if budget.get("time") is not None:
        command += ["--time", f"{budget['time']:g}"]
    if str(first.get("device", "")).startswith("cuda"):
        command += ["--device", "cuda"]
    return " ".join([*command, "--out", out])


def results_index(folders: Mapping[str, Mapping[str, Any]], ranks: pd.DataFrame, regenerate: str) -> str:
    """``results/README.md``: every published leaderboard with the command that produced it.

    ``folders`` maps a benchmark folder (relative to the results directory) to ``tables`` (its
    table titles), ``command``, ``runs``, ``failed`` and ``plots`` (file names in the folder).
    ``ranks`` is the average-rank table across all of them (see :func:`average_ranks`), and
    ``regenerate`` the command that rewrites the index.
    """
    lines = [
        "# Results",
        "",
        "Published leaderboards, one folder per benchmark: `leaderboard.md` and `leaderboard.csv` (the",
        "tables), PNG plots, and `runs/` (the raw run records they were made from). Each folder was",
        "produced by the command shown with it: the folder's `COMMAND` file where it has one, else the",
        "`zoo bench` command that its records describe. This index, the tables and the plots are",
        f"regenerated from the records by `{regenerate}`.",
        "",
    ]
    for folder, entry in sorted(folders.items()):
        lines += [f"## {folder}", ""]
        lines += [f"- {title}" for title in entry["tables"]]
        failed = f", {entry['failed']} failed" if entry["failed"] else ""
        links = [f"[leaderboard]({folder}/leaderboard.md)", f"[csv]({folder}/leaderboard.csv)"]
        links += [f"[plot: {Path(p).stem}]({folder}/{p})" for p in entry["plots"]]
        lines += ["", f"{entry['runs']} runs{failed} · " + " · ".join(links), "", "```sh", entry["command"], "```", ""]
    if _across_tables(ranks):
        lines.append(_render_ranks(ranks, "md", heading="##"))
    return "\n".join(lines)
