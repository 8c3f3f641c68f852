"""Leaderboards: a pure function from run records to tables (pandas + tabulate)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

FORMATS = ("md", "csv", "latex", "html")


def summarize(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (benchmark, algorithm): test mean and 95% CI over the test tasks (each task's
    metric averaged over seeds), spread over seeds, rank, timings and the published number."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["benchmark"], record["algorithm"]), []).append(record)
    rows = [_row(bench, algo, runs) for (bench, algo), runs in groups.items()]
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["rank"] = pd.NA
    for _, index in table.groupby("benchmark").groups.items():
        part = table.loc[index]
        ok = part[part["mean"].notna()]
        if not ok.empty:
            ascending = not bool(ok["higher_is_better"].iloc[0])
            table.loc[ok.index, "rank"] = ok["mean"].rank(ascending=ascending, method="min").astype(int)
    return table.sort_values(["benchmark", "rank", "algorithm"], na_position="last").reset_index(drop=True)


def _row(benchmark: str, algorithm: str, runs: list[dict]) -> dict[str, Any]:
    ok = sorted((r for r in runs if r.get("status") == "ok"), key=lambda r: r["seed"])
    failed = [r for r in runs if r.get("status") != "ok"]
    first = (ok or runs)[0]
    row: dict[str, Any] = {
        "benchmark": benchmark,
        "algorithm": algorithm,
        "family": first.get("family"),
        "metric": first.get("metric"),
        "higher_is_better": first.get("higher_is_better"),
        "seeds": len(ok),
        "failed": len(failed),
        "error": failed[0].get("error") if failed else None,
        "published": first.get("published"),
        "device": first.get("device"),
    }
    if not ok:
        return {**row, "mean": math.nan, "ci95": math.nan, "seed_sd": math.nan, "test_tasks": 0,
                "train_time_s": math.nan, "tasks_per_s": math.nan, "peak_memory_mb": math.nan}
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
    }


def display_table(summary: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Human-readable columns for one benchmark, and the footnotes (citations)."""
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
            value = f"{published['value']:.{digits}f}"
            if published.get("ci") is not None:
                value += f" ± {published['ci']:.{digits}f}"
            published = f"{value} [{ref}]"
        rows.append({
            "rank": row["rank"] if not pd.isna(row["rank"]) else "–",
            "algorithm": row["algorithm"],
            "family": row["family"],
            metric_name: result,
            "seed s.d.": "–" if math.isnan(row["seed_sd"]) else f"{row['seed_sd'] * scale:.{digits}f}",
            "published": published or "–",
            "seeds": row["seeds"],
            "test tasks": row["test_tasks"],
            "train time (s)": "–" if math.isnan(row["train_time_s"]) else f"{row['train_time_s']:.1f}",
            "tasks/s": "–" if math.isnan(row["tasks_per_s"]) else f"{row['tasks_per_s']:.0f}",
        })
    notes = [f"[{i}] {c}" for i, c in enumerate(citations, 1)]
    return pd.DataFrame(rows), notes


def render(summary: pd.DataFrame, fmt: str = "md") -> str:
    """The leaderboard of every benchmark in ``summary`` as Markdown, CSV, LaTeX or HTML."""
    if fmt == "csv":
        return summary.drop(columns=["published"]).assign(
            published=[p["value"] if p else None for p in summary["published"]],
            published_ci=[p.get("ci") if p else None for p in summary["published"]],
            published_citation=[p["citation"] if p else None for p in summary["published"]],
        ).to_csv(index=False)
    parts = []
    for benchmark, part in summary.groupby("benchmark", sort=True):
        table, notes = display_table(part)
        tablefmt = {"md": "github", "latex": "latex_booktabs", "html": "html"}[fmt]
        body = table.to_markdown(index=False, tablefmt=tablefmt) if fmt != "html" else table.to_html(index=False)
        device = part["device"].dropna().iloc[0] if part["device"].notna().any() else "unknown"
        if fmt == "md":
            parts.append(f"### {benchmark}\n\n{body}\n\n" + "".join(f"{n}  \n" for n in notes)
                         + f"\nMean ± 95% CI (1.96·s.d./√n) over the same test tasks for every algorithm; "
                         f"device: {device}.\n")
        else:
            parts.append(body + "".join(f"\n{n}" for n in notes))
    return "\n".join(parts)
