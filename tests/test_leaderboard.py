"""Leaderboards from made-up run records: the paired test against a hand computation, ties,
average ranks across benchmarks, budgets kept apart, the environment footnote, every format,
PNG plots, the results index, and corrupt files skipped."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from metazoo.leaderboard import average_ranks, summarize
from metazoo.milestones import milestone_table
from metazoo.render import display_table, render
from metazoo.statistics import paired_t_test


def record(benchmark: str, algorithm: str, per_task: list[float], seed: int = 0, *, metric: str = "accuracy",
           steps: int = 100, protocol_hash: str = "p1", status: str = "ok", digest: str = "d1",
           **extra: Any) -> dict[str, Any]:
    """A minimal schema-1 run record with the fields the leaderboard reads."""
    base = {
        "schema": 1, "key": f"{algorithm}{seed}{steps}{protocol_hash}", "benchmark": benchmark,
        "benchmark_source": f"/somewhere/benchmarks/{benchmark}.toml", "suite": benchmark,
        "algorithm": algorithm, "family": "model-algorithm", "seed": seed, "status": status,
        "protocol_hash": protocol_hash, "budget": {"steps": steps, "time": None, "val_every": steps // 2},
        "metric": metric, "higher_is_better": metric == "accuracy", "published": None,
        "device": "cpu: Test CPU (1 threads)", "torch": "2.9.9", "metazoo": "0.1.0", "git_commit": "abcdef1234567890",
        "peak_memory_mb": 100.0,
    }
    if status == "ok":
        base.update(
            test={"mean": sum(per_task) / len(per_task), "per_task": per_task, "tasks_digest": digest},
            train={"time_s": 2.0, "budget_s": 1.5, "tasks_per_s": 50.0, "steps": steps},
            validation=[{"step": steps // 2, "time_s": 1.0, "value": per_task[0] * 0.9},
                        {"step": steps, "time_s": 2.0, "value": per_task[0]}],
        )
    else:
        base["error"] = "DivergedError: meta-training loss became nan at step 3"
    return {**base, **extra}


def write(folder: Path, *records: dict[str, Any]) -> None:
    for r in records:
        path = folder / r["benchmark"] / "runs" / f"{r['algorithm']}-seed{r['seed']}-{r['key']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))


BEST = [0.9, 0.8, 0.7]
CLOSE = [[0.5, 0.7, 0.4], [0.7, 0.7, 0.6]]  # two seeds, mean [0.6, 0.7, 0.5]: differences −0.3, −0.1, −0.2
FAR = [0.6, 0.49, 0.41]  # differences −0.3, −0.31, −0.29


def by_algorithm(summary) -> dict[str, dict]:
    return {row["algorithm"]: row for row in summary.to_dict("records")}


def test_paired_t_test_matches_closed_forms():
    t = 2 * math.sqrt(3)  # mean −0.2, s.d. 0.1, n = 3
    assert paired_t_test([0.6, 0.7, 0.5], BEST) == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-12)  # df = 2
    assert paired_t_test([0.0, 1.0], [1.0, 3.0]) == pytest.approx(1 - 2 / math.pi * math.atan(3.0), rel=1e-12)  # df = 1
    # differences 1 ± 1.5 alternating, n = 10: mean 1, s.d. 1.5·√(10/9), t = 2, df = 9 (tables: 0.07655)
    assert paired_t_test([2.5, -0.5] * 5, [0.0] * 10) == pytest.approx(0.07655, abs=1e-5)
    assert paired_t_test([1.0, 2.0], [1.0, 2.0]) == 1.0
    assert math.isnan(paired_t_test([1.0], [0.0]))


def test_paired_comparison_against_the_best_on_seed_averaged_tasks():
    records = [record("b", "best", BEST), *(record("b", "close", v, seed) for seed, v in enumerate(CLOSE)),
               record("b", "far", FAR)]
    rows = by_algorithm(summarize(records))
    t = 2 * math.sqrt(3)
    assert rows["best"]["best"] and rows["best"]["rank"] == 1 and math.isnan(rows["best"]["p_value"])
    assert rows["close"]["seeds"] == 2 and rows["close"]["mean"] == pytest.approx(0.6)
    assert rows["close"]["p_value"] == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-12)  # 0.074
    assert rows["close"]["tied_with_best"] is True
    assert rows["far"]["p_value"] < 0.001 and rows["far"]["tied_with_best"] is False
    markdown = render(summarize(records), "md")
    assert "| best " in markdown and "tied (p = 0.074)" in markdown and "p < 0.001" in markdown


def test_no_paired_comparison_on_other_test_tasks_and_failures_are_shown():
    records = [record("b", "best", BEST), record("b", "short", [0.1, 0.2]),
               record("b", "broken", [], status="failed")]
    rows = by_algorithm(summarize(records))
    assert math.isnan(rows["short"]["p_value"]) and rows["short"]["tied_with_best"] is None
    assert rows["broken"]["failed"] == 1 and math.isnan(rows["broken"]["rank"])
    assert "failed: DivergedError" in render(summarize(records), "md")


def test_average_rank_across_two_benchmarks_by_hand():
    records = [
        record("x", "a", [0.9, 0.9]), record("x", "b", [0.8, 0.8]), record("x", "c", [0.7, 0.7]),
        record("y", "a", [0.5, 0.5], metric="mse"), record("y", "b", [0.3, 0.3], metric="mse"),
        record("y", "c", [0.3, 0.3], metric="mse"),
    ]
    summary = summarize(records)
    ranks = average_ranks(summary)[0].set_index("label")
    # x (higher is better): a 1, b 2, c 3; y (lower is better): b and c tie for 1–2 → 1.5 each, a 3.
    assert ranks["average rank"].to_dict() == {"b": 1.75, "a": 2.0, "c": 2.25}
    assert list(ranks.index) == ["b", "a", "c"] and ranks["tables"].tolist() == [2, 2, 2]
    markdown = render(summary, "md")
    assert "### Average rank across benchmarks" in markdown and "| b " in markdown.split("Average rank")[1]
    assert "Average rank" not in render(summary, "md", average_rank=False)


def test_different_budgets_and_protocols_are_not_merged():
    records = [record("b", "a", [0.9, 0.9], steps=100), record("b", "a", [0.5, 0.5], steps=200),
               record("b", "a", [0.1, 0.1], steps=100, protocol_hash="p2")]
    summary = summarize(records)
    assert len(summary) == 3 and sorted(summary["mean"]) == pytest.approx([0.1, 0.5, 0.9])
    assert set(summary["table"]) == {"b — 100 steps, val every 50 steps — protocol p1",
                                     "b — 200 steps, val every 100 steps — protocol p1",
                                     "b — 100 steps, val every 50 steps — protocol p2"}
    markdown = render(summarize(records[:2]), "md")
    assert "### b — 100 steps, val every 50 steps\n" in markdown and "### b — 200 steps" in markdown


def test_environment_footnote():
    records = [record("b", "a", BEST), record("b", "c", BEST, torch="2.9.8", git_commit="1234567890abcdef")]
    markdown = render(summarize(records), "md")
    assert ("Environment: device cpu: Test CPU (1 threads); torch 2.9.8, 2.9.9; metazoo 0.1.0; "
            "git commit 1234567890ab, abcdef123456; test tasks digest d1.") in markdown


def test_slow_throughputs_keep_two_significant_digits():
    train = {"time_s": 2.0, "budget_s": 1.5, "steps": 100}
    records = [record("b", "fast", BEST, train={**train, "tasks_per_s": 1173.4}),
               record("b", "slow", FAR, train={**train, "tasks_per_s": 0.3217})]
    table = display_table(summarize(records))[0].set_index("algorithm")["tasks/s"]
    assert table.to_dict() == {"fast": "1173", "slow": "0.32"}  # not 0: a MuJoCo run's 40 tasks take 130 s


def test_throughput_of_a_cpu_budget_is_per_cpu_second():
    budget = {"steps": None, "time": 300, "val_every": 250, "clock": "cpu"}
    # 7,008 tasks in 300 CPU-s, while other processes shared the core: 5,949 s of wall clock
    train = {"time_s": 5949.0, "budget_s": 300.0, "tasks": 7008, "tasks_per_s": 7008 / 5949.0, "steps": 219}
    row = by_algorithm(summarize([record("b", "maml", BEST, budget=budget, train=train)]))["maml"]
    assert row["tasks_per_s"] == pytest.approx(7008 / 300.0)
    assert display_table(summarize([record("b", "maml", BEST, budget=budget, train=train)]))[0]["tasks per CPU-s"][0] == "23"


@pytest.mark.parametrize(("fmt", "markers"), [
    ("csv", ["benchmark,algorithm,label,table,protocol_hash,budget,rank,", ",p_value,tied_with_best,"]),
    ("latex", ["\\paragraph{b --- 100 steps", "\\toprule", "$\\pm$", "Environment: device"]),
    ("html", ["<h3>b — 100 steps", "<table", "<p>Environment: device"]),
])
def test_formats(fmt, markers):
    records = [record("b", "a", BEST), record("b", "c", FAR), record("d", "a", BEST)]
    text = render(summarize(records), fmt)
    for marker in markers:
        assert marker in text, marker


def test_plots_are_png_files(zoo, tmp_path):
    write(tmp_path, record("b", "a", BEST), record("b", "a", [0.8, 0.8, 0.7], seed=1), record("b", "c", FAR))
    code, _, stderr = zoo("leaderboard", str(tmp_path), "--plots")
    assert code == 0, stderr
    (png,) = (tmp_path / "b").glob("*.png")
    assert png.name == "b-100-steps-val-every-50-steps.png"
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    assert not (tmp_path / "README.md").exists() and not (tmp_path / "b" / "leaderboard.md").exists()


def test_write_publishes_every_folder_and_the_results_index(zoo, tmp_path):
    results = tmp_path / "results"
    command = "zoo bench --benchmark hyperplanes --out results/quick"
    write(results / "quick", record("hyperplanes", "maml", BEST, command=command),
          record("hyperplanes", "maml", BEST, seed=1, command=command), record("hyperplanes", "anil", FAR, command=command))
    write(results, record("sinusoid", "maml", [0.5, 0.4], metric="mse", steps=200),
          record("sinusoid", "anil", [0.6, 0.4], metric="mse", steps=200),
          record("sinusoid", "reptile", [0.9, 0.8], metric="mse", steps=200, status="failed"))
    (results / "sinusoid" / "COMMAND").write_text("zoo bench --benchmark sinusoid --seeds 1 --out results\n")
    (results / "CHANGES.md").write_text("- 2026-12-01: rows are configurations.\n")
    code, stdout, stderr = zoo("leaderboard", str(results), "--write")
    assert code == 0, stderr
    readme = (results / "README.md").read_text()
    assert readme.startswith("# Results") and f"`zoo leaderboard {results} --write`" in readme
    assert "## What changed (CHANGES.md)\n\n- 2026-12-01: rows are configurations.\n" in readme
    assert "## quick/hyperplanes" in readme and "## sinusoid" in readme
    assert "zoo bench --benchmark hyperplanes --out results/quick\n" in readme  # recorded in the records
    assert "zoo bench --benchmark sinusoid --seeds 1 --out results\n" in readme  # from COMMAND
    assert "3 runs · [leaderboard](quick/hyperplanes/leaderboard.md)" in readme and "3 runs, 1 failed" in readme
    assert "## Average rank across benchmarks" in readme
    for folder in (results / "quick" / "hyperplanes", results / "sinusoid"):
        leaderboard = (folder / "leaderboard.md").read_text()
        (png,) = folder.glob("*.png")
        assert f"]({png.name})" in leaderboard and f"{folder.relative_to(results)}/{png.name}" in readme
        assert (folder / "leaderboard.csv").read_text().startswith("benchmark,algorithm,")
        assert "Average rank" not in leaderboard
    assert "### hyperplanes" in stdout and "Average rank across benchmarks" in stdout
    code, _, stderr = zoo("leaderboard", str(results), "--write", "--benchmark", "sinusoid")
    assert code == 2 and "leave out --benchmark" in stderr
    code, _, stderr = zoo("leaderboard", str(results), "--write")  # its own index: written again
    assert code == 0 and (results / "README.md").read_text() == readme


def test_write_never_overwrites_a_readme_it_did_not_write(zoo, tmp_path):
    results = tmp_path / "results"
    write(results / "study", record("sinusoid", "maml", [0.5, 0.4], metric="mse", steps=200))
    notes = "# A study\n\nHand-written notes on the runs below.\n"
    (results / "study" / "README.md").write_text(notes)
    code, _, stderr = zoo("leaderboard", str(results / "study"), "--write")
    assert code == 0, stderr
    assert (results / "study" / "README.md").read_text() == notes
    assert "was not written by `zoo leaderboard --write`; left as it is" in stderr
    assert (results / "study" / "sinusoid" / "leaderboard.md").is_file()  # the tables are still written


def test_corrupt_and_foreign_files_are_skipped_with_a_warning(zoo, tmp_path):
    write(tmp_path, record("b", "a", BEST))
    (tmp_path / "b" / "runs" / "junk.json").write_text("{not json")
    (tmp_path / "b" / "foreign.json").write_text('{"hello": "world"}')
    code, stdout, stderr = zoo("leaderboard", str(tmp_path))
    assert code == 0 and "| a " in stdout
    assert "skipping" in stderr and "junk.json" in stderr and "foreign.json" in stderr


@pytest.mark.parametrize("broken", [{"schema": 1, "key": "x"},
                                    {"schema": 1, "key": "x", "benchmark": "b", "algorithm": "a", "seed": 0,
                                     "status": "ok", "test": {"per_task": [1.0, 2.0]}}])
def test_an_incomplete_record_is_skipped_with_a_warning_not_a_traceback(zoo, tmp_path, broken):
    write(tmp_path, record("b", "a", BEST))
    (tmp_path / "b" / "runs" / "hand-edited.json").write_text(json.dumps(broken))
    code, stdout, stderr = zoo("leaderboard", str(tmp_path))
    assert code == 0 and "| a " in stdout
    assert "hand-edited.json: an incomplete run record (no '" in stderr


# -- time to a score ---------------------------------------------------------------------------------


def curve(*points, wall_clock_only=False):
    """Validation points at budget-clock times ``t``; their wall-clock time is longer (a
    contended machine). ``wall_clock_only``: as records before points had ``budget_s``."""
    return [{"step": 10 * i, "time_s": 1.5 * t, "value": v, **({} if wall_clock_only else {"budget_s": t})}
            for i, (t, v) in enumerate(points, 1)]


CPU_BUDGET = {"steps": None, "time": 20000, "val_every": None, "clock": "cpu"}


def test_the_time_to_each_milestone_is_read_from_the_validation_curves():
    spec = {"milestones": [0.9, 0.95]}
    published = {"value": 0.97, "citation": "Somebody 2017", "ci": None, "steps": 60000}
    records = [
        record("b", "maml", [0.96], seed=0, spec=spec, published=published, budget=CPU_BUDGET,
               validation=curve((3600, 0.8), (7200, 0.92), (10800, float("nan")), (14400, 0.96))),
        record("b", "maml", [0.97], seed=1, spec=spec, published=published, budget=CPU_BUDGET,
               validation=curve((1800, 0.91), (5400, 0.97))),
        record("b", "protonet", [0.99], spec=spec, budget=CPU_BUDGET, validation=curve((360, 0.96), (720, 0.99))),
    ]
    part = summarize(records)
    times = {row["algorithm"]: row for row in milestone_table(part).to_dict("records")}
    assert times["maml"]["90%"] == "1.25 CPU-h"  # 7200 s and 1800 s, averaged
    assert times["maml"]["95%"] == "2.75 CPU-h"  # 14400 s (past a NaN validation) and 5400 s
    assert times["maml"]["published number"] == "1.50 CPU-h (1 of 2 seeds) (97%)"
    assert times["protonet"]["90%"] == "6.0 CPU-min" and times["protonet"]["published number"] == "–"
    assert times["maml"]["longest run"] == "2.75 CPU-h"
    rendered = render(part, "md")
    assert "Time to reach each validation score" in rendered and "| maml        | 1.25 CPU-h" in rendered
    assert "60,000" in rendered  # the paper's steps beside ours
    assert "train CPU time (s)" in rendered


def test_curves_without_budget_clock_times_are_read_and_labelled_as_wall_clock():
    records = [record("b", "maml", [0.96], spec={"milestones": [0.9]}, budget=CPU_BUDGET,
                      validation=curve((3600, 0.8), (7200, 0.92), wall_clock_only=True))]
    (row,) = milestone_table(summarize(records)).to_dict("records")
    assert row["90%"] == "3.00 h (wall clock)"  # 1.5 × 7200 s: what the record has, said to be wall clock


def test_a_lower_is_better_milestone_is_reached_from_above():
    records = [record("b", "maml", [0.3], metric="mse", spec={"milestones": [0.5]},
                      validation=curve((10, 0.9), (20, 0.45)))]
    (row,) = milestone_table(summarize(records)).to_dict("records")
    assert row["0.5"] == "0.3 min (wall clock)"


def test_without_milestones_or_published_numbers_there_is_no_time_table():
    assert milestone_table(summarize([record("b", "maml", BEST)])).empty
    assert "Time to reach" not in render(summarize([record("b", "maml", BEST)]), "md")


def test_a_run_whose_test_diverged_says_so_rather_than_no_runs():
    table, _ = display_table(summarize([record("b", "maml", [0.5, float("nan")]), record("b", "anil", [0.4, 0.6])]))
    assert "NaN: diverged on some test tasks" in list(table.iloc[:, 3])
