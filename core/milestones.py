"""Time to a score: when each configuration's validation curve first reached given values.

A benchmark spec lists the scores to report (``milestones = [0.95, 0.97]``); the published
number of each algorithm is one more, its own. The time is the training time (validation
excluded) of the first validation at or beyond the score, from the curve in each run record, on
the budget's clock (``budget_s`` of each point; CPU time for a CPU-clock budget); a record
written before the points had that field gives its wall-clock ``time_s``, and the table says so.
The table gives the mean over the seeds that reached it. Validation scores are means over the
benchmark's val tasks, so a milestone is reached within their noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd


def first_reached(curve: Iterable[Mapping[str, Any]], target: float, higher_is_better: bool,
                  time: str = "budget_s") -> float | None:
    """Training time (the ``time`` entry) of the first point of ``curve`` (``{"step", "time_s",
    "budget_s", "value"}`` entries, in order) at or beyond ``target``; None if none is."""
    for point in curve:
        value = point.get("value")
        if value is None or math.isnan(value):
            continue
        if value >= target if higher_is_better else value <= target:
            return point[time]
    return None


def curve_clock(curves: list[list[Mapping[str, Any]]], clock: str) -> tuple[str, str]:
    """``(field, clock)``: the budget's clock where every point of ``curves`` has its time
    (``budget_s``), else the wall-clock ``time_s`` of older records."""
    if all("budget_s" in point for curve in curves for point in curve):
        return "budget_s", clock
    return "time_s", "wall"


#: How a time on each budget clock is labelled: (unit prefix, suffix).
CLOCK_LABELS = {"cpu": ("CPU-", ""), "wall": ("", " (wall clock)")}


def _hours(seconds: list[float | None], clock: str) -> str:
    reached = [s for s in seconds if s is not None]
    if not reached:
        return "not reached"
    mean = sum(reached) / len(reached)
    prefix, suffix = CLOCK_LABELS[clock]
    text = f"{mean / 3600:.2f} {prefix}h{suffix}" if mean >= 3600 else f"{mean / 60:.1f} {prefix}min{suffix}"
    return text if len(reached) == len(seconds) else f"{text} ({len(reached)} of {len(seconds)} seeds)"


def milestone_table(part: pd.DataFrame) -> pd.DataFrame:
    """For the rows of one leaderboard table: the time each took to reach each of the spec's
    milestones and its published number (empty when the table has neither, or no curves)."""
    milestones = sorted({m for row in part["milestones"] for m in row})
    if not (milestones or part["published"].any()) or not any(part["curves"]):
        return pd.DataFrame()
    rows = []
    for row in part.to_dict("records"):
        higher = bool(row["higher_is_better"])
        scale, unit = (100.0, "%") if row["metric"] == "accuracy" else (1.0, "")
        field, clock = curve_clock(row["curves"], row["clock"])
        shown = {"algorithm": row["label"]}
        for target in milestones:
            shown[f"{target * scale:g}{unit}"] = _hours(
                [first_reached(curve, target, higher, field) for curve in row["curves"]], clock)
        published = row["published"]
        shown["published number"] = "–" if not published else (
            f"{_hours([first_reached(c, published['value'], higher, field) for c in row['curves']], clock)} "
            f"({published['value'] * scale:g}{unit})")
        shown["longest run"] = _hours([max((p[field] for p in c), default=None) for c in row["curves"]], clock)
        rows.append(shown)
    return pd.DataFrame(rows)
