"""Time to a score: when each configuration's validation curve first reached given values.

A benchmark spec lists the scores to report (``milestones = [0.95, 0.97]``); the published
number of each algorithm is one more, its own. The time is the training time (the budget's
clock, validation excluded) of the first validation at or beyond the score, from the curve in
each run record; the table gives the mean over the seeds that reached it. Validation scores are
means over the benchmark's val tasks, so a milestone is reached within their noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd


def first_reached(curve: Iterable[Mapping[str, Any]], target: float, higher_is_better: bool) -> float | None:
    """Training time of the first point of ``curve`` (``{"time_s", "value"}`` entries, in order)
    at or beyond ``target``; None if none is."""
    for point in curve:
        value = point.get("value")
        if value is None or math.isnan(value):
            continue
        if value >= target if higher_is_better else value <= target:
            return point["time_s"]
    return None


def _hours(seconds: list[float | None], clock: str) -> str:
    reached = [s for s in seconds if s is not None]
    if not reached:
        return "not reached"
    mean = sum(reached) / len(reached)
    cpu = "CPU-" if clock == "cpu" else ""
    text = f"{mean / 3600:.2f} {cpu}h" if mean >= 3600 else f"{mean / 60:.1f} {cpu}min"
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
        shown = {"algorithm": row["label"]}
        for target in milestones:
            shown[f"{target * scale:g}{unit}"] = _hours(
                [first_reached(curve, target, higher) for curve in row["curves"]], row["clock"])
        published = row["published"]
        shown["published number"] = "–" if not published else (
            f"{_hours([first_reached(c, published['value'], higher) for c in row['curves']], row['clock'])} "
            f"({published['value'] * scale:g}{unit})")
        shown["longest run"] = _hours([max((p["time_s"] for p in c), default=None) for c in row["curves"]],
                                      row["clock"])
        rows.append(shown)
    return pd.DataFrame(rows)
