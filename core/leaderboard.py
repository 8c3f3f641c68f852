"""Leaderboards: a pure function from run records to tables of configurations.

A **table** holds the records of one benchmark, protocol hash and training budget that were
tested on the same task list (equal test-task digests), so that every comparison in it is
paired. A **row** is one configuration: algorithm, plugin version and resolved hyperparameters
(those every record of the algorithm and version in the table has; execution settings aside).
The seeds of a configuration are pooled (each task's metric averaged over seeds); nothing else
is. Two configurations of one algorithm are two rows, labelled by what differs; two records of
one configuration and seed are reported, and only the newest counts. Each row gets the mean
with a 95% confidence interval over tasks, the spread over seeds, a rank (ties share the
average rank) and the paired t-test against the table's best row, and, where its records were
evaluated after several numbers of inner steps (the spec's ``adaptation_steps``), the same at
each number. Across tables, configurations are ranked by their average rank (as Meta-Dataset,
Triantafillou et al. 2020, ranks learners), over the tables in which all of them met.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from metazoo.config import EXECUTION_SETTINGS
from metazoo.statistics import ALPHA, ci95, paired_t_test, ranks

# -- tables -----------------------------------------------------------------------------------


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


def test_digest(record: Mapping[str, Any]) -> str | None:
    """The digest of the task list a record was tested on (None: failed, or an old record)."""
    return (record.get("test") or {}).get("tasks_digest")


def group_records(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records by table, keyed by the table's title: ``'benchmark — budget'``, plus the
    protocol hash where a benchmark has several, plus the test-task digest where records of
    one benchmark, protocol and budget were tested on different task lists. A record without a
    digest (a failed run) joins its group's only task list, if there is one."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for record in records:
        key = (record["benchmark"], str(record.get("protocol_hash")), _budget_key(record))
        groups.setdefault(key, []).append(record)
    hashes: dict[str, set[str]] = {}
    for benchmark, protocol, _ in groups:
        hashes.setdefault(benchmark, set()).add(protocol)
    tables = {}
    for (benchmark, protocol, budget), runs in sorted(groups.items()):
        digests = sorted({d for r in runs if (d := test_digest(r)) is not None})
        by_digest = {d: [r for r in runs if test_digest(r) == d] for d in digests}
        undigested = [r for r in runs if test_digest(r) is None]
        if len(digests) == 1:
            by_digest[digests[0]] += undigested
        elif undigested:
            by_digest[None] = undigested
        title = f"{benchmark} — {budget_label(runs[0].get('budget') or {})}"
        if len(hashes[benchmark]) > 1:
            title += f" — protocol {protocol}"
        if any(title == t or t.startswith(title + " — test tasks") for t in tables):
            title += f" — budget {budget}"  # budgets that differ in a field the label does not show
        for digest, part in by_digest.items():
            tables[title + (f" — test tasks {digest or 'unknown'}" if len(by_digest) > 1 else "")] = part
    return tables


# -- configurations ---------------------------------------------------------------------------


def configuration(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a row is: algorithm, plugin version and resolved hyperparameters (the spec's
    hyperparameters for a record that has no resolved ones), but the execution settings
    (``metazoo.config.EXECUTION_SETTINGS``), which do not change what a run computes."""
    hyperparameters = record.get("hyperparameters")
    if hyperparameters is None:
        hyperparameters = ((record.get("spec") or {}).get("algorithms") or {}).get(record["algorithm"], {})
    hyperparameters = {k: v for k, v in hyperparameters.items() if k not in EXECUTION_SETTINGS}
    training = ((record.get("spec") or {}).get("training_protocol") or {}).get(record["algorithm"], {})
    return {"algorithm": record["algorithm"], "version": record.get("plugin_version"),
            "hyperparameters": {**hyperparameters, **{f"train_{k}": v for k, v in training.items()}}}


def _comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record's configuration, restricted to the hyperparameters that every record of its
    algorithm and plugin version has: a hyperparameter that newer code added (with its default)
    does not split a row, while one that two records set differently does."""
    configs = [configuration(record) for record in records]
    shared: dict[tuple, set[str]] = {}
    for config in configs:
        group = (config["algorithm"], config["version"])
        keys = set(config["hyperparameters"])
        shared[group] = shared[group] & keys if group in shared else keys
    return [{**c, "hyperparameters": {k: v for k, v in c["hyperparameters"].items()
                                      if k in shared[(c["algorithm"], c["version"])]}} for c in configs]


def _labels(configs: list[dict[str, Any]]) -> list[str]:
    """A row label per configuration: the algorithm's name, and where one algorithm has several
    configurations in the table, what differs between them (``anil (inner_lr=0.1)``)."""
    labels = []
    for config in configs:
        siblings = [c for c in configs if c["algorithm"] == config["algorithm"]]
        if len(siblings) == 1:
            labels.append(config["algorithm"])
            continue
        parts = []
        if len({c["version"] for c in siblings}) > 1:
            parts.append(f"version {config['version']}")
        keys = sorted({k for c in siblings for k in c["hyperparameters"]})
        for key in keys:
            values = {json.dumps(c["hyperparameters"].get(key)) for c in siblings}
            if len(values) > 1:
                parts.append(f"{key}={json.dumps(config['hyperparameters'].get(key))}")
        labels.append(f"{config['algorithm']} ({', '.join(parts)})")
    return labels


def row_labels(records: list[dict[str, Any]]) -> dict[str, str]:
    """Each record's row label within its table, keyed by the record's ``key``."""
    comparable = _comparable(records)
    keys = [json.dumps(config, sort_keys=True) for config in comparable]
    configs = dict(zip(keys, comparable))
    label = dict(zip(configs, _labels(list(configs.values()))))
    return {record["key"]: label[key] for record, key in zip(records, keys)}


# -- summary ----------------------------------------------------------------------------------


def summarize(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (table, configuration): test mean and 95% CI over the test tasks (each
    task's metric averaged over seeds), spread over seeds, rank, the paired p-value against the
    table's best configuration, timings, environment, the published number and notes."""
    rows = []
    tables = group_records(records)
    several_lists = {title.split(" — test tasks")[0] for title in tables if " — test tasks" in title}
    for title, runs in tables.items():
        labels = row_labels(runs)
        by_label: dict[str, list[dict]] = {}
        for record in runs:
            by_label.setdefault(labels[record["key"]], []).append(record)
        metric = next((r["metric"] for r in runs if r.get("metric")), None)
        table = [_row(label, label_runs, metric) for label, label_runs in by_label.items()]
        first = runs[0]
        for row in table:
            row.update(table=title, benchmark=first["benchmark"], protocol_hash=first.get("protocol_hash"),
                       budget=budget_label(first.get("budget") or {}))
            if title.split(" — test tasks")[0] in several_lists:
                row["notes"].append("The records of this benchmark, protocol and budget were tested on "
                                    "different task lists (made by different versions of the task sampling): "
                                    "each list is a table of its own, and only records of one list are "
                                    "compared. Re-run the older records with the current code.")
        _rank_and_compare(table)
        _compare_by_steps(table, runs)
        rows.extend(table)
    if not rows:
        return pd.DataFrame()
    summary = pd.DataFrame(rows)
    summary = summary.sort_values(["table", "rank", "label"], na_position="last").reset_index(drop=True)
    front = ["benchmark", "algorithm", "label", "table", "protocol_hash", "budget", "rank"]
    return summary[front + [c for c in summary.columns if c not in front and c not in _PER_TASK]]


_PER_TASK = ("per_task", "per_task_by_steps")  # used for the comparisons, not kept in the summary


def _compare_by_steps(table: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
    """Set each row's ``by_adaptation_steps``: for every number of inner steps k that the table's
    specs ask for or its records hold, ``{"k": {mean, ci95, test_tasks, seeds, rank, best,
    p_value, tied_with_best}}`` over the row's seeds that measured k, the paired t-test against
    the best row at that k; a row that did not measure k has no entry for it. Sets the table's
    ``adaptation_steps`` (the ks, in order) on every row."""
    asked = {k for r in runs for k in (((r.get("spec") or {}).get("evaluation") or {}).get("adaptation_steps") or [])}
    measured = {int(k) for row in table for k in row["per_task_by_steps"]}
    steps = sorted(asked | measured)
    for row in table:
        row.update(adaptation_steps=steps, by_adaptation_steps={})
    rows = {row["label"]: row for row in table}
    for k in map(str, steps):
        at_k = [{"label": row["label"], "higher_is_better": row["higher_is_better"],
                 "per_task": row["per_task_by_steps"][k][0], "seeds": row["per_task_by_steps"][k][1]}
                for row in table if k in row["per_task_by_steps"]]
        for entry in at_k:
            values = entry["per_task"]
            entry.update(mean=float(values.mean()), ci95=ci95(values), test_tasks=values.size)
        _rank_and_compare(at_k)
        for entry in at_k:
            rows[entry.pop("label")]["by_adaptation_steps"][k] = {
                name: value for name, value in entry.items() if name not in ("per_task", "higher_is_better")}


def _distinct(runs: list[dict], field: str) -> str | None:
    values = sorted({str(r[field]) for r in runs if r.get(field) is not None})
    return ", ".join(values) or None


def _newest_per_seed(runs: list[dict], label: str) -> tuple[list[dict], list[str]]:
    """One record per seed (the newest by ``created``) and a note for each duplicate."""
    by_seed: dict[int, list[dict]] = {}
    for record in runs:
        by_seed.setdefault(record["seed"], []).append(record)
    kept, notes = [], []
    for seed, same in sorted(by_seed.items()):
        same.sort(key=lambda r: (r.get("status") == "ok", str(r.get("created", ""))), reverse=True)
        kept.append(same[0])
        if len(same) > 1:
            others = ", ".join(str(r.get("_path") or r["key"]) for r in same[1:])
            notes.append(f"{label} seed {seed} has {len(same)} records of one configuration: only the newest "
                         f"successful one ({same[0].get('_path') or same[0]['key']}) counts; left out: {others}.")
    return kept, notes


def _row(label: str, runs: list[dict], metric: str | None) -> dict[str, Any]:
    runs, notes = _newest_per_seed(runs, label)
    ok = [r for r in runs if r.get("status") == "ok"]
    failed = [r for r in runs if r.get("status") != "ok"]
    first = (ok or runs)[0]
    row: dict[str, Any] = {
        "label": label,
        "algorithm": first["algorithm"],
        "family": first.get("family"),
        "metric": metric,
        "higher_is_better": first.get("higher_is_better", metric == "accuracy"),
        "seeds": len(ok),
        "failed": len(failed),
        "error": failed[0].get("error") if failed else None,
        "published": first.get("published"),
        "milestones": list((first.get("spec") or {}).get("milestones") or []),
        "clock": (first.get("budget") or {}).get("clock", "wall"),
        "test_digest": test_digest(ok[0]) if ok else None,
        "device": _distinct(runs, "device"),
        "torch": _distinct(runs, "torch"),
        "metazoo": _distinct(runs, "metazoo"),
        "git_commit": _distinct(runs, "git_commit"),
        "notes": notes,
    }
    if not ok:
        return {**row, "mean": math.nan, "ci95": math.nan, "seed_sd": math.nan, "test_tasks": 0,
                "train_time_s": math.nan, "steps": math.nan, "tasks_per_s": math.nan,
                "peak_memory_mb": math.nan, "curves": [], "per_task": None, "per_task_by_steps": {}}
    per_task = np.mean([r["test"]["per_task"] for r in ok], axis=0)  # [tasks], paired over seeds
    by_steps: dict[str, list] = {}  # "k" → the per-task lists of the seeds that measured k
    for r in ok:
        for k, values in (r["test"].get("by_adaptation_steps") or {}).items():
            by_steps.setdefault(k, []).append(values)
    seed_means = [r["test"]["mean"] for r in ok]
    return {
        **row,
        "mean": float(per_task.mean()),
        "ci95": ci95(per_task),
        "seed_sd": float(np.std(seed_means, ddof=1)) if len(ok) > 1 else math.nan,
        "test_tasks": per_task.size,
        "train_time_s": float(np.mean([r["train"]["budget_s"] for r in ok])),  # on the budget's clock
        "steps": float(np.mean([r["train"]["steps"] for r in ok])),
        "curves": [r.get("validation") or [] for r in ok],
        "tasks_per_s": float(np.mean([_throughput(r["train"]) for r in ok])),
        "peak_memory_mb": float(max(r.get("peak_memory_mb") or 0 for r in ok)),
        "per_task": per_task,
        "per_task_by_steps": {k: (np.mean(lists, axis=0), len(lists)) for k, lists in by_steps.items()},
    }


def _throughput(train: dict[str, Any]) -> float:
    """Tasks per second on the budget's clock: per CPU-second for a CPU budget, where the wall
    clock (the record's ``tasks_per_s``) also counts the time other processes held the core. NaN
    for a learner that trains on labelled batches, as the record says."""
    tasks, seconds = train.get("tasks"), train.get("budget_s")
    if not tasks or not seconds or math.isnan(train["tasks_per_s"]):
        return train["tasks_per_s"]
    return tasks / seconds


def _rank_and_compare(table: list[dict[str, Any]]) -> None:
    """Set ``rank``, ``best``, ``p_value`` and ``tied_with_best`` of one table's rows in place."""
    scored = [row for row in table if not math.isnan(row["mean"])]
    for row in table:
        row.update(rank=math.nan, best=False, p_value=math.nan, tied_with_best=None)
    if not scored:
        return
    for row, rank in zip(scored, ranks([row["mean"] for row in scored], bool(scored[0]["higher_is_better"]))):
        row["rank"] = rank
    best = min(scored, key=lambda row: (row["rank"], row["label"]))
    best["best"] = True
    for row in scored:
        if row is best or row["test_tasks"] != best["test_tasks"]:
            continue  # the best itself, or not the same test tasks: no paired comparison
        row["p_value"] = paired_t_test(row["per_task"], best["per_task"])
        if not math.isnan(row["p_value"]):
            row["tied_with_best"] = row["p_value"] >= ALPHA


def average_ranks(summary: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The average rank of the configurations that met in every table where two or more met,
    re-ranked among themselves in each table, best first; and a sentence saying which tables
    and configurations that leaves out. The frame is empty when fewer than two tables remain."""
    empty = pd.DataFrame(columns=["label", "tables", "average rank"])
    if summary.empty:
        return empty, ""
    scored = summary[summary["rank"].notna()]
    counts = scored.groupby("table")["label"].nunique()
    tables = sorted(counts[counts >= 2].index)
    alone = sorted(set(counts.index) - set(tables))
    common = sorted(set.intersection(*(set(scored[scored["table"] == t]["label"]) for t in tables))) \
        if tables else []
    left_out = sorted(set(scored[scored["table"].isin(tables)]["label"]) - set(common))
    notes = []
    if alone:
        notes.append(f"left out, one configuration only: {'; '.join(alone)}")
    if left_out:
        notes.append(f"not in every table, so not ranked: {', '.join(left_out)}")
    if len(tables) < 2 or len(common) < 2:
        return empty, ""
    wide = pd.DataFrame(index=common)
    for title in tables:
        part = scored[(scored["table"] == title) & scored["label"].isin(common)]
        wide[title] = pd.Series(ranks(list(part["mean"]), bool(part["higher_is_better"].iloc[0])),
                                index=list(part["label"]))
    wide["tables"] = len(tables)
    wide["average rank"] = wide[tables].mean(axis=1)
    wide = wide.rename_axis("label").reset_index().sort_values(["average rank", "label"])
    note = ("Rank of each configuration in each table where it met all the others (ties share the average "
            "rank), averaged over those tables" + (f"; {'; '.join(notes)}" if notes else "") + ".")
    return wide.reset_index(drop=True), note


def slug(title: str) -> str:
    """A file-name-safe form of a table title."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", title).strip("-").lower()
