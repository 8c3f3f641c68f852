"""Rendering of leaderboards (Markdown, CSV, LaTeX, HTML through pandas and tabulate) and of the
results index, ``results/README.md``."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from metazoo.leaderboard import average_ranks
from metazoo.milestones import milestone_table
from metazoo.statistics import ALPHA

FORMATS = ("md", "csv", "latex", "html")
AFTER_STEPS = "Test {metric} after k adaptation steps"
TIME_TO = ("Time to reach each validation score: training time (the budget's clock, validation excluded) "
           "at the first validation at or beyond it, mean over the seeds that reached it")


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


def _steps(row: Mapping[str, Any]) -> str:
    """Mean outer steps, and the paper's where its published number gives them."""
    if math.isnan(row["steps"]):
        return "–"
    paper = (row["published"] or {}).get("steps")
    return f"{row['steps']:,.0f}" + (f" (paper {paper:,})" if paper else "")


def display_table(summary: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Human-readable columns for one table, and its footnotes (citations, then notes)."""
    citations: list[str] = []
    notes: list[str] = []
    rows = []
    for row in summary.to_dict("records"):
        scale, unit = (100.0, "%") if row["metric"] == "accuracy" else (1.0, "")
        digits = 2 if unit else 3
        metric_name = f"test {row['metric'] or 'result'}{' (%)' if unit else ''}"
        if math.isnan(row["mean"]):
            result = (f"failed: {row['error']}" if row["failed"] and not row["seeds"]
                      else "NaN: diverged on some test tasks" if row["seeds"] else "no runs")
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
        notes += [note for note in row["notes"] if note not in notes]

        def number(value: float, spec: str) -> str:
            return "–" if math.isnan(value) else format(value, spec)

        rows.append({
            "rank": _fmt_rank(row["rank"]),
            "algorithm": row["label"],
            "family": row["family"],
            metric_name: result,
            "vs best (paired)": _versus_best(row),
            "seed s.d.": number(row["seed_sd"] * scale, f".{digits}f"),
            "published": published or "–",
            "seeds": row["seeds"],
            "test tasks": row["test_tasks"],
            "train CPU time (s)" if row["clock"] == "cpu" else "train time (s)": number(row["train_time_s"], ".1f"),
            "outer steps": _steps(row),
            "tasks per CPU-s" if row["clock"] == "cpu" else "tasks/s":
                number(row["tasks_per_s"], ".0f" if not row["tasks_per_s"] < 10 else ".2g"),  # 1173, 38, 0.32
            "peak memory (MB)": number(row["peak_memory_mb"], ".0f"),
        })
    return pd.DataFrame(rows), [f"[{i}] {c}" for i, c in enumerate(citations, 1)] + notes


def _steps_label(k: int) -> str:
    return f"{k} step" + ("" if k == 1 else "s")


def adaptation_table(part: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The test metric of one table's rows after each number of inner steps its records were
    evaluated at (the spec's ``adaptation_steps``), with the paired comparison against the best
    row at each number and the papers' values after those steps; and its footnotes. Empty for a
    table without adaptation steps."""
    rows = part.to_dict("records")
    steps = rows[0]["adaptation_steps"]
    if not steps:
        return pd.DataFrame(), []
    scale, digits = (100.0, 2) if rows[0]["metric"] == "accuracy" else (1.0, 3)
    shown, papers, citations, notes = [], [], [], []
    not_measured, skipped = [], []
    for row in rows:
        if row["family"] == "model-data":
            skipped.append(row["label"])
            continue
        cells: dict[str, Any] = {"algorithm": row["label"]}
        for k in steps:
            entry = row["by_adaptation_steps"].get(str(k))
            if entry is None:
                cells[_steps_label(k)] = "not measured" if row["seeds"] else "–"
                cells[f"vs best ({k})"] = "–"
                if row["seeds"] and row["label"] not in not_measured:
                    not_measured.append(row["label"])
                continue
            cells[_steps_label(k)] = f"{entry['mean'] * scale:.{digits}f} ± {entry['ci95'] * scale:.{digits}f}"
            cells[f"vs best ({k})"] = _versus_best(entry)
            if entry["seeds"] < row["seeds"]:
                notes.append(f"{row['label']}: {_steps_label(k)} measured on {entry['seeds']} of its {row['seeds']} seeds.")
        shown.append(cells)
        published = (row["published"] or {}).get("by_adaptation_steps")
        if published:
            citation = row["published"]["citation"]
            if citation not in citations:
                citations.append(citation)
            paper = {"algorithm": f"{row['label']}: published [{citations.index(citation) + 1}]"}
            for k in steps:
                value = published.get(str(k))
                paper[_steps_label(k)] = "–" if value is None else f"{value * scale:.{digits}f}"
                paper[f"vs best ({k})"] = ""
            papers.append(paper)
    lines = [f"[{i}] {c}" for i, c in enumerate(citations, 1)]
    lines.append("The test tasks of the table above, evaluated again with the tested state adapted by k inner "
                 "steps on each task's support set (0: the meta-learnt initialisation unadapted); mean ± 95% CI "
                 "over tasks as above; vs best: two-sided paired t-test against the best row at the same k.")
    if not_measured:
        lines.append(f"Not measured ({', '.join(not_measured)}): records made before their spec listed "
                     "adaptation_steps (which leaves run keys as they were: run them again into a new folder to "
                     "measure it), or by a learner whose predict takes no number of steps.")
    if skipped:
        lines.append(f"Not in this table: {', '.join(skipped)} (model-data: no inner loop to run for k steps).")
    return pd.DataFrame(shown + papers), lines + notes


def environment(summary: pd.DataFrame) -> str:
    """One line naming the devices, torch and metazoo versions and git commits of a table."""

    def distinct(column: str, shorten=lambda value: value) -> str:
        values = sorted({shorten(v) for cell in summary[column].dropna() for v in str(cell).split(", ")})
        return ", ".join(values) or "unknown"

    def short_commit(commit: str) -> str:  # keeps a "-dirty" mark
        return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")

    digests = distinct("test_digest")
    return (f"Environment: device {distinct('device')}; torch {distinct('torch')}; "
            f"metazoo {distinct('metazoo')}; git commit {distinct('git_commit', short_commit)}; "
            f"test tasks digest {digests}.")


def _method(part: pd.DataFrame) -> str:
    tasks = int(part["test_tasks"].max()) or "recorded"
    return (f"Mean ± 95% CI (1.96·s.d./√n, normal approximation) over the same {tasks} test tasks for every "
            f"row, each task's metric averaged over the row's seeds; a row is one configuration (algorithm, "
            f"plugin version, hyperparameters). vs best: two-sided paired t-test (scipy) against the best "
            f"row on the same tasks; tied = p ≥ {ALPHA:g}. Ranks: ties share the average rank.")


def _latex_escape(text: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", text).replace("±", r"$\pm$").replace("≥", r"$\geq$") \
        .replace("√", r"$\surd$").replace("·", r"$\cdot$").replace("—", "---")


def _csv(summary: pd.DataFrame) -> str:
    published = summary["published"]
    steps = sorted({k for ks in summary["adaptation_steps"] for k in ks})
    after = {f"{name}_after_{k}_steps": [(row.get(str(k)) or {}).get(name) for row in summary["by_adaptation_steps"]]
             for k in steps for name in ("mean", "ci95", "p_value")}
    after |= {f"published_after_{k}_steps": [((p or {}).get("by_adaptation_steps") or {}).get(str(k))
                                             for p in published] for k in steps}
    return summary.drop(columns=["published", "notes", "curves", "milestones", "adaptation_steps",
                                 "by_adaptation_steps"]).assign(
        published=[p["value"] if p else None for p in published],
        published_ci=[p.get("ci") if p else None for p in published],
        published_citation=[p["citation"] if p else None for p in published],
        notes=[" ".join(n) for n in summary["notes"]],
        **after,
    ).to_csv(index=False)


def render(summary: pd.DataFrame, fmt: str = "md", average_rank: bool = True,
           images: Mapping[str, str] | None = None) -> str:
    """The leaderboard of every table in ``summary`` as Markdown, CSV, LaTeX or HTML, followed
    (unless ``average_rank`` is false, or fewer than two tables can be ranked together) by the
    average ranks across tables. ``images`` maps a table title to a plot file to show under it
    (Markdown and HTML)."""
    if fmt == "csv":
        return _csv(summary)
    images = images or {}
    parts = []
    for title, part in summary.groupby("table", sort=True):
        table, notes = display_table(part)
        lines = [*notes, _method(part), environment(part)]
        times = milestone_table(part)
        after, after_notes = adaptation_table(part)
        metric = next((m for m in part["metric"] if isinstance(m, str)), "result")
        after_title = AFTER_STEPS.format(metric=metric + (" (%)" if metric == "accuracy" else ""))
        if fmt == "md":
            image = f"\n![{title}]({images[title]})\n" if title in images else ""
            parts.append(f"### {title}\n\n{table.to_markdown(index=False, tablefmt='github')}\n\n"
                         + "".join(f"{line}  \n" for line in lines) + image)
            if not after.empty:
                parts.append(f"{after_title} ({title}):\n\n{after.to_markdown(index=False, tablefmt='github')}\n\n"
                             + "".join(f"{line}  \n" for line in after_notes))
            if not times.empty:
                parts.append(f"{TIME_TO} ({title}):\n\n{times.to_markdown(index=False, tablefmt='github')}\n")
        elif fmt == "latex":
            body = table.to_markdown(index=False, tablefmt="latex_booktabs")  # escapes all but ±
            parts.append(f"\\paragraph{{{_latex_escape(title)}}}\n" + body.replace("±", r"$\pm$") + "\n"
                         + "".join(f"{_latex_escape(line)}\\\\\n" for line in lines))
            if not after.empty:
                parts.append(f"{_latex_escape(after_title)}:\\\\\n"
                             + after.to_markdown(index=False, tablefmt="latex_booktabs").replace("±", r"$\pm$") + "\n"
                             + "".join(f"{_latex_escape(line)}\\\\\n" for line in after_notes))
            if not times.empty:
                parts.append(f"{_latex_escape(TIME_TO)}:\\\\\n" + times.to_markdown(index=False, tablefmt="latex_booktabs"))
        else:
            image = f'<img src="{html.escape(images[title])}" alt="{html.escape(title)}">\n' if title in images else ""
            parts.append(f"<h3>{html.escape(title)}</h3>\n{table.to_html(index=False)}\n"
                         + "".join(f"<p>{html.escape(line)}</p>\n" for line in lines) + image)
            if not after.empty:
                parts.append(f"<p>{html.escape(after_title)}:</p>\n{after.to_html(index=False)}\n"
                             + "".join(f"<p>{html.escape(line)}</p>\n" for line in after_notes))
            if not times.empty:
                parts.append(f"<p>{html.escape(TIME_TO)}:</p>\n{times.to_html(index=False)}\n")
    ranks, note = average_ranks(summary)
    if average_rank and not ranks.empty:
        parts.append(render_ranks(ranks, note, fmt))
    return "\n".join(parts)


def render_ranks(ranks: pd.DataFrame, note: str, fmt: str, heading: str = "###") -> str:
    """The table of :func:`metazoo.leaderboard.average_ranks` with its note."""
    shown = ranks.rename(columns={"label": "algorithm"})
    for column in shown.columns:
        if column not in ("algorithm", "tables", "average rank"):
            shown[column] = [_fmt_rank(v) for v in shown[column]]
    shown["average rank"] = [f"{v:.2f}" for v in shown["average rank"]]
    if fmt == "md":
        return (f"{heading} Average rank across benchmarks\n\n"
                f"{shown.to_markdown(index=False, tablefmt='github')}\n\n{note}\n")
    if fmt == "latex":
        return ("\\paragraph{Average rank across benchmarks}\n"
                + shown.to_markdown(index=False, tablefmt="latex_booktabs") + f"\n{_latex_escape(note)}\n")
    return f"<h3>Average rank across benchmarks</h3>\n{shown.to_html(index=False)}\n<p>{html.escape(note)}</p>\n"


INDEX_TITLE = "# Results"
INDEX_MARK = "regenerated from the records by `zoo leaderboard"  # the index's line naming its command


def is_results_index(text: str) -> bool:
    """Whether ``text`` is an index :func:`results_index` wrote (so it may be written again)."""
    return text.startswith(INDEX_TITLE + "\n") and INDEX_MARK in text


def results_index(folders: Mapping[str, Mapping[str, Any]], summary: pd.DataFrame, regenerate: str,
                  changes: str = "") -> str:
    """``results/README.md``: every published leaderboard with the command that produced it.

    ``folders`` maps a benchmark folder (relative to the results directory) to ``tables`` (its
    table titles), ``commands``, ``runs``, ``failed`` and ``plots`` (file names in the folder).
    ``summary`` is :func:`metazoo.leaderboard.summarize` of all their records (for the average
    ranks), ``regenerate`` the command that rewrites the index, and ``changes`` the text of the
    results folder's ``CHANGES.md`` (its changelog, shown first).
    """
    lines = [
        INDEX_TITLE,
        "",
        "Published leaderboards, one folder per benchmark: `leaderboard.md` and `leaderboard.csv` (the",
        "tables), PNG plots, and `runs/` (the raw run records they were made from). Each folder was",
        "produced by the command shown with it: the folder's `COMMAND` file where it has one, else the",
        "commands recorded in its records. This index, the tables and the plots are",
        f"regenerated from the records by `{regenerate}`.",  # holds INDEX_MARK
        "",
    ]
    if changes.strip():
        lines += ["## What changed (CHANGES.md)", "", changes.strip(), ""]
    for folder, entry in sorted(folders.items()):
        lines += [f"## {folder}", ""]
        lines += [f"- {title}" for title in entry["tables"]]
        failed = f", {entry['failed']} failed" if entry["failed"] else ""
        links = [f"[leaderboard]({folder}/leaderboard.md)", f"[csv]({folder}/leaderboard.csv)"]
        links += [f"[plot: {Path(p).stem}]({folder}/{p})" for p in entry["plots"]]
        commands = "\n".join(entry["commands"]) or "# no command recorded"
        lines += ["", f"{entry['runs']} runs{failed} · " + " · ".join(links), "", "```sh", commands, "```", ""]
    ranks, note = average_ranks(summary)
    if not ranks.empty:
        lines.append(render_ranks(ranks, note, "md", heading="##"))
    return "\n".join(lines)
