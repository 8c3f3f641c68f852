"""Leaderboard plots as PNG: validation curves against steps and wall time, test bars, and the
test metric against the number of adaptation steps where a table's records measured it.

matplotlib (the ``plot`` extra) is imported only when a plot is drawn, and only its Agg canvas is
used, so drawing needs no display and leaves pyplot's global state alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from metazoo.errors import ZooError
from metazoo.leaderboard import row_labels, summarize
from metazoo.milestones import curve_clock


def plot_table(records: list[dict[str, Any]], title: str, path: Path) -> Path:
    """Draw one leaderboard table's runs into ``path`` (PNG): the validation metric against
    meta-training steps and against meta-training time for every row (configuration; mean over
    seeds where the seeds validated at the same steps, else one line per seed), and the test
    metric of each row with its 95% CI as bars, best first, with published numbers as diamonds;
    and, for a table evaluated after several numbers of inner steps (``adaptation_steps``), the
    test metric of each row against that number with 95% CI bars, and the papers' values after
    those steps as diamonds."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ZooError("plots need matplotlib: pip install 'metazoo[plot]'") from None

    summary = summarize(records)
    scored = summary[summary["mean"].notna()]
    metric = str(summary["metric"].dropna().iloc[0]) if summary["metric"].notna().any() else "metric"
    scale = 100.0 if metric == "accuracy" else 1.0  # accuracy in %, as in the tables
    if scale != 1.0:
        metric += " (%)"
    algorithms = list(summary["label"])
    colors = {name: f"C{i % 10}" for i, name in enumerate(algorithms)}
    label_of = row_labels(records)

    adapted = [row for row in summary.to_dict("records") if row["by_adaptation_steps"]]
    figure = Figure(figsize=(20 if adapted else 15, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    by_steps, by_time, bars, *after = figure.subplots(1, 4 if adapted else 3)
    clocks = set(summary["clock"])  # one benchmark's runs share a clock; else wall-clock times
    field, clock = curve_clock([r.get("validation") or [] for r in records], clocks.pop()) \
        if len(clocks) == 1 else ("time_s", "wall")
    for algorithm in algorithms:
        runs = [r for r in records if label_of[r["key"]] == algorithm and r.get("status") == "ok" and r.get("validation")]
        curves = [([v["step"] for v in r["validation"]], [v[field] for v in r["validation"]],
                   [v["value"] * scale for v in r["validation"]]) for r in runs]
        if curves and all(c[0] == curves[0][0] for c in curves):
            curves = [(curves[0][0], list(np.mean([c[1] for c in curves], axis=0)),
                       list(np.mean([c[2] for c in curves], axis=0)))]
        for i, (steps, times, values) in enumerate(curves):
            label = algorithm if i == 0 else None
            by_steps.plot(steps, values, marker="o", markersize=3, color=colors[algorithm], label=label)
            by_time.plot(times, values, marker="o", markersize=3, color=colors[algorithm], label=label)
    time_label = "meta-training CPU time (s)" if clock == "cpu" else "meta-training wall-clock time (s)"
    for axes, xlabel in ((by_steps, "meta-training steps"), (by_time, time_label)):
        axes.set_xlabel(xlabel)
        axes.set_ylabel(f"validation {metric}")
        axes.grid(alpha=0.3)
    by_steps.set_title("validation vs steps")
    by_time.set_title("validation vs CPU time" if clock == "cpu" else "validation vs wall-clock time")
    if by_steps.lines:
        by_steps.legend(fontsize="small")

    positions = np.arange(len(scored))
    bars.bar(positions, scored["mean"] * scale, yerr=scored["ci95"] * scale, capsize=4,
             color=[colors[a] for a in scored["label"]])
    published = [(i, p["value"] * scale) for i, p in enumerate(scored["published"]) if p]
    if published:
        bars.scatter(*zip(*published), marker="D", color="black", zorder=3, label="published")
        bars.legend(fontsize="small")
    bars.set_xticks(positions, list(scored["label"]), rotation=30, ha="right")
    bars.set_ylabel(f"test {metric} (mean ± 95% CI)")
    bars.set_title("test")
    bars.grid(axis="y", alpha=0.3)
    if adapted:
        _plot_adaptation_steps(after[0], adapted, colors, scale, metric)
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _plot_adaptation_steps(axes, rows: list[dict[str, Any]], colors: dict[str, str], scale: float,
                           metric: str) -> None:
    """Each row's test metric against the number of inner steps, with 95% CI bars; the paper's
    values after those steps as diamonds of the row's colour."""
    for i, row in enumerate(rows):
        ks = sorted(row["by_adaptation_steps"], key=int)
        offset = 0.03 * (i - (len(rows) - 1) / 2)  # rows side by side, so that the bars stay apart
        axes.errorbar([int(k) + offset for k in ks], [row["by_adaptation_steps"][k]["mean"] * scale for k in ks],
                      yerr=[row["by_adaptation_steps"][k]["ci95"] * scale for k in ks], marker="o", markersize=4,
                      capsize=3, color=colors[row["label"]], label=row["label"])
        paper = (row["published"] or {}).get("by_adaptation_steps") or {}
        if paper:
            axes.scatter([int(k) for k in paper], [v * scale for v in paper.values()], marker="D",
                         facecolors="none", edgecolors=colors[row["label"]], zorder=3,
                         label=f"{row['label']} (published)")
    steps = sorted({int(k) for row in rows for k in row["by_adaptation_steps"]})
    axes.set_xticks(steps)
    axes.set_xlabel("adaptation steps (inner steps at test)")
    axes.set_ylabel(f"test {metric} (mean ± 95% CI)")
    axes.set_title("test vs adaptation steps")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
