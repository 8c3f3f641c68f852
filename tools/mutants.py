"""Mutation testing of the modules that compute published numbers (``make mutants``).

Runs mutmut 3 on each module below against that module's fast tests and writes
``results/mutation.md``: mutants, killed, survived and timeouts per module, the kill ratio, the
command, the date and the machine, then every surviving mutant with the reason it is
equivalent (or "not reviewed", which is a to-do: kill it with a test or give its reason here).

Nothing is mutated in the working tree. The code of a commit (``--rev``, default HEAD) is
exported with ``git archive`` into a scratch folder (``--work``, default
``/tmp/metazoo-mutants``) and laid out as the installed package (``metazoo/`` = core,
``metazoo/plugins``, ``metazoo/benchmarks``), with the working tree's ``tests/``
(``--tests-rev REV`` takes them from a commit instead). mutmut runs in its own virtual
environment (created there on first use, ``mutmut==3.8.1``), which sees the project's ``.venv``
through a ``.pth`` line; the editable install's finder is not loaded, so ``import metazoo``
finds the scratch copy.

Why mutmut 3 and not 2: mutmut 3 records which tests reach each function and runs only those
for a mutant of it, in a process forked from a server that has torch and the tests imported
already; mutmut 2 starts a new pytest (and imports torch) for every mutant and runs all the
selected tests. On core/statistics.py mutmut 3 checked 66 mutants in 2 minutes, mutmut 2 32
mutants in 5. mutmut 3 mutates code inside functions only, not module-level constants (such as
``Z95``); tests/test_guards.py checks those against scipy.

Usage::

    python tools/mutants.py                       # every module (long: see results/mutation.md)
    python tools/mutants.py statistics engine     # some modules; the others' rows are kept
    python tools/mutants.py --list                # the modules and their tests
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = "mutmut==3.8.1"
DATA_MARK = "<!-- mutation-data"


@dataclass(frozen=True)
class Module:
    path: str  # in the repository
    tests: tuple[str, ...]  # pytest arguments: the fast tests that guard it

    @property
    def package_path(self) -> str:
        """The module's path in the package layout (core/x.py -> metazoo/x.py)."""
        if self.path.startswith("core/"):
            return "metazoo/" + self.path.removeprefix("core/")
        return "metazoo/" + self.path


# The modules that compute published numbers, smallest first, each with the fewest test files
# that still kill its mutants. test_task_lists' check that every built-in benchmark is pinned is
# about the catalogue of benchmarks, not about sampling, and fails while a new suite awaits its pins.
TASK_LISTS = ("tests/test_task_lists.py", "--deselect=tests/test_task_lists.py::test_every_built_in_benchmark_is_pinned")
MODULES: dict[str, Module] = {
    "statistics": Module("core/statistics.py", ("tests/test_leaderboard.py", "tests/test_guards.py",
                                                "tests/test_mutation_guards.py")),
    "milestones": Module("core/milestones.py", ("tests/test_leaderboard.py", "tests/test_mutation_guards.py")),
    "evaluation": Module("core/evaluation.py", ("tests/test_guards.py", *TASK_LISTS, "tests/test_adaptation_steps.py", "tests/test_mutation_guards.py")),
    "engine": Module("core/engine.py", ("tests/test_engine.py", "tests/test_mutation_guards.py")),
    # Not the tests that write plots and README files, nor those that run a bench: each mutant of
    # summarize() would run them too (several seconds each) for what the others check directly.
    "leaderboard": Module("core/leaderboard.py", (
        "tests/test_leaderboard.py", *(f"--deselect=tests/test_leaderboard.py::test_{name}" for name in (
            "plots_are_png_files", "write_publishes_every_folder_and_the_results_index",
            "write_never_overwrites_a_readme_it_did_not_write")),
        "tests/test_guards.py::test_the_leaderboards_confidence_interval_is_the_normal_95_percent_interval",
        "tests/test_mutation_guards.py", *(f"tests/test_publishing.py::test_{name}" for name in (
            "a_changed_hyperparameter_is_another_row_not_another_seed",
            "plugin_versions_label_rows_and_duplicate_seeds_are_reported_not_averaged",
            "a_folders_leaderboard_holds_every_record_in_it",
            "records_store_the_digest_and_only_equal_digests_are_paired",
            "a_table_of_failed_runs_names_its_metric",
            "average_ranks_only_over_tables_where_the_algorithms_met",
            "a_hyperparameter_added_by_newer_code_does_not_split_a_row")))),
    "sinusoid": Module("plugins/sinusoid.py", (*TASK_LISTS, "tests/test_mutation_guards.py")),
    "omniglot": Module("plugins/omniglot.py", ("tests/test_omniglot.py", *TASK_LISTS)),
    "model_data": Module("core/model_data.py", ("tests/test_model_data.py", "tests/test_mutation_guards.py")),
    # Not the compiled-step tests: mutmut's trampolines (which read os.environ) break the
    # full-graph compilation, so those tests fail on every mutant, even on the unmutated code.
    "learner": Module("core/learner.py", ("tests/test_engine.py", "tests/test_model_data.py")),
    "model_algorithm": Module("core/model_algorithm.py", ("tests/test_engine.py", "tests/test_algorithms.py",
                                                          "-knot learns")),  # not the learning curves (slow)
    "tasks": Module("core/tasks.py", (*TASK_LISTS, "tests/test_engine.py", "tests/test_model_data.py",
                                      "tests/test_mutation_guards.py")),
    "run": Module("core/run.py", ("tests/test_guards.py", "tests/test_publishing.py", *(
        f"--deselect=tests/test_publishing.py::test_{name}" for name in (  # these read the published records
            "every_published_folder_has_a_record_for_each_run_of_its_command",
            "no_training_step_of_the_published_runs_shares_a_generator_with_a_val_or_test_task")))),
}

# Surviving mutants that cannot change a published number, each with the reason:
# (module, function, the mutated line as mutmut shows it after "+", stripped) -> reason.
_FLOATS = ("every caller passes floats (per-task metrics), which np.asarray keeps as float64 with or "
           "without dtype=float; std, the differences and the t-test give the same numbers")
_CONSTANT = ("the branch is reached only when every difference equals the first, so comparing with "
             "diff[1] (there are at least two) is the same test")
_SCALE = ("ranks are invariant under multiplying every mean by the same positive number, and doubling is "
          "exact in floating point, so ties stay ties")
_CLOCKS = ("the default of the clock lookup is never taken: a budget's clock is 'wall' or 'cpu' (checked "
           "when a spec is read) and curve_clock gives 'wall' for older curves")
EQUIVALENT: dict[tuple[str, str, str], str] = {
    ("statistics", "ci95", "values = np.asarray(list(values), dtype=None)"): _FLOATS,
    ("statistics", "ci95", "values = np.asarray(list(values), )"): _FLOATS,
    ("statistics", "paired_t_test", "a, b = np.asarray(list(a), dtype=None), np.asarray(list(b), dtype=float)"): _FLOATS,
    ("statistics", "paired_t_test", "a, b = np.asarray(list(a), ), np.asarray(list(b), dtype=float)"): _FLOATS,
    ("statistics", "paired_t_test", "a, b = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=None)"): _FLOATS,
    ("statistics", "paired_t_test", "a, b = np.asarray(list(a), dtype=float), np.asarray(list(b), )"): _FLOATS,
    ("statistics", "paired_t_test", "if np.all(diff == diff[1]):"): _CONSTANT,
    ("statistics", "paired_t_test", "return 1.0 if diff[1] == 0.0 else 0.0"): _CONSTANT,
    ("statistics", "paired_t_test", 'warnings.simplefilter("ignore", )'):
        "ignores every warning category instead of RuntimeWarning; scipy's ttest_rel emits only "
        "RuntimeWarnings on these inputs (fewer than two pairs never reach it)",
    ("statistics", "ranks", "sign = -2.0 if higher_is_better else 1.0"): _SCALE,
    ("statistics", "ranks", "sign = -1.0 if higher_is_better else 2.0"): _SCALE,
    **{("milestones", "_hours", f'prefix, suffix = {{"cpu": ("CPU-", ""), "wall": ("", " (wall clock)")}}.get(clock, {d})'):
       _CLOCKS for d in ("None", "", '("XXXX", "")', '("", "XXXX")')},
    ("leaderboard", "average_ranks", "wide = pd.DataFrame(index=None)"):
        "setting the first column of a frame without rows gives it that column's index (the same "
        "labels, from the same table), and the rows are sorted afterwards",
    ("leaderboard", "average_ranks",
     'wide[title] = pd.Series(ranks(list(part["mean"]), bool(part["higher_is_better"].iloc[1])),'):
        "every row of one table has the same higher_is_better, and a ranked table has two or more rows",
    ("leaderboard", "summarize", 'summary = summary.sort_values(["table", "rank", "label"], ).reset_index(drop=True)'):
        "na_position='last' is pandas' default",
    ("evaluation", "TaskList.digest", "if self._hashed <= self.count:"):
        "when the list has been hashed to its end, iterating it once more feeds nothing to the digest "
        "(no batch starts at count), so the digest is the same; it only costs a pass over the tasks",
    ("milestones", "milestone_table", 'for row in part.to_dict("RECORDS"):'):
        "pandas reads the orient of to_dict case-insensitively",
}


def _equivalent(module: str, function: str, added: str) -> str | None:
    return EQUIVALENT.get((module, function, added.strip()))


def sh(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, text=True, capture_output=True, **kwargs)


def project_site_packages(venv: Path) -> str:
    return sh([str(venv / "bin" / "python"), "-c",
               "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()


def mutmut_env(work: Path, project_venv: Path) -> Path:
    """mutmut's own virtual environment, which also sees the project's packages (torch, ...)."""
    venv = work / "venv"
    mutmut = venv / "bin" / "mutmut"
    if not mutmut.exists():
        sh([sys.executable, "-m", "venv", str(venv)])
        sh([str(venv / "bin" / "pip"), "install", "--quiet", MUTMUT])
    purelib = Path(sh([str(venv / "bin" / "python"), "-c",
                       "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (purelib / "zz-metazoo-project.pth").write_text(project_site_packages(project_venv) + "\n")
    return mutmut


def export(rev: str, paths: list[str], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", rev, *paths], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit(f"git archive {rev} failed")


def write_config(target: Path, module: Module) -> None:
    """mutmut's and pytest's settings for ``module`` in ``target`` (and its ``mutants/``)."""
    selection = ", ".join(json.dumps(t) for t in module.tests
                          if t.startswith("-") or (target / t.split("::")[0]).exists())
    text = (
        "[tool.mutmut]\n"
        'source_paths = ["metazoo"]\n'
        f"only_mutate = [{json.dumps(module.package_path)}]\n"
        f"pytest_add_cli_args_test_selection = [{selection}]\n"
        '# torch is not fork-safe once the tests have run in a process: fork from a clean server\n'
        'process_isolation = "forkserver"\n'
        "\n[tool.pytest.ini_options]\n"
        'testpaths = ["tests"]\n'
        'addopts = "-p no:cacheprovider"\n')
    for folder in (target, target / "mutants"):
        if folder.is_dir():
            (folder / "pyproject.toml").write_text(text)


def layout(source: Path, tests: Path, target: Path, module: Module) -> None:
    """The package as installed (metazoo/ = core, plugins, benchmarks) and tests/, in target."""
    if target.exists():
        shutil.rmtree(target)
    package = target / "metazoo"
    shutil.copytree(source / "core", package)
    shutil.copytree(source / "plugins", package / "plugins")
    shutil.copytree(source / "benchmarks", package / "benchmarks")
    shutil.copytree(tests, target / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    if (ROOT.parent / "shared").is_dir():  # the tests find data in ../shared (mutmut runs in target/mutants)
        (target / "shared").symlink_to(ROOT.parent / "shared")
    write_config(target, module)


class MutmutFailed(RuntimeError):
    pass


def refresh(source: Path, mutants: Path, module: Module) -> None:
    """The other modules of the package from ``source`` (a newer commit), the mutated one kept."""
    package = mutants / "metazoo"
    keep = mutants / module.package_path
    kept = keep.read_bytes()
    for part, target in (("plugins", package / "plugins"), ("benchmarks", package / "benchmarks")):
        shutil.rmtree(target)
        shutil.copytree(source / part, target)
    for path in (source / "core").glob("*.py"):
        shutil.copy2(path, package / path.name)
    keep.write_bytes(kept)


def parse_diff(text: str) -> tuple[list[str], list[str]]:
    removed = [line[1:] for line in text.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in text.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def function_of(mutant: str) -> str:
    """``metazoo.x.x_f__mutmut_3`` -> ``f``; ``metazoo.x.xǁCǁm__mutmut_3`` -> ``C.m``."""
    name = mutant.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]
    if name.startswith("xǁ"):
        return ".".join(part for part in name[2:].split("ǁ") if part)
    return name.removeprefix("x_")


def run_module(name: str, module: Module, mutmut: Path, folder: Path, jobs: int, nice: int,
               max_minutes: float | None, names: list[str] = ()) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    start = time.monotonic()
    stopped = False
    with open(folder / "mutmut.log", "w") as log:
        process = subprocess.Popen(["nice", "-n", str(nice), str(mutmut), "run", "--max-children", str(jobs),
                                    *names],
                                   cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=None if max_minutes is None else 60 * max_minutes)
        except subprocess.TimeoutExpired:  # stop it, keep what it checked
            stopped = True
            os.killpg(process.pid, signal.SIGINT)
            try:
                code = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    seconds = time.monotonic() - start
    if code != 0 and not stopped:
        tail = (folder / "mutmut.log").read_text(errors="replace")[-3000:]
        raise MutmutFailed(f"mutmut failed on {name} (exit {code}); {folder / 'mutmut.log'} ends:\n{tail}")
    listing = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=folder, env=env,
                             text=True, capture_output=True, check=True).stdout
    statuses = dict(re.findall(r"^\s*(\S+): (.+?)\s*$", listing, flags=re.M))
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    survivors = []
    for mutant, status in sorted(statuses.items(), key=lambda item: _mutant_order(item[0])):
        if status in ("killed", "timeout", "skipped", "not checked"):
            continue
        shown = subprocess.run([str(mutmut), "show", mutant], cwd=folder, env=env, text=True,
                               capture_output=True).stdout
        removed, added = parse_diff(shown)
        survivors.append({"mutant": mutant.rsplit(".", 1)[-1], "status": status, "function": function_of(mutant),
                          "removed": removed, "added": added})
    total = len(statuses)
    checked = total - counts.get("not checked", 0)
    tested = checked - counts.get("skipped", 0)
    caught = counts.get("killed", 0) + counts.get("timeout", 0)
    return {"module": module.path, "tests": list(module.tests), "mutants": total, "checked": checked,
            "killed": counts.get("killed", 0), "timeout": counts.get("timeout", 0),
            "survived": len(survivors), "counts": counts, "partial": checked < total,
            "kill_pct": 100.0 * caught / tested if tested else 0.0, "seconds": seconds,
            "per_mutant_s": seconds / checked if checked else 0.0, "survivors": survivors}


def _mutant_order(mutant: str) -> tuple[str, int]:
    function, _, number = mutant.rpartition("__mutmut_")
    return function, int(number) if number.isdigit() else 0


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{model}, {os.cpu_count()} cores, load average {load} at the start"


def read_previous(report: Path) -> dict:
    if not report.exists():
        return {}
    text = report.read_text()
    start = text.find(DATA_MARK)
    if start < 0:
        return {}
    body = text[start + len(DATA_MARK):text.index("-->", start)]
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return {}


def _tests(tests: list[str]) -> str:
    files: dict[str, int] = {}
    for test in tests:
        if test.startswith("-"):
            continue
        file, _, node = test.removeprefix("tests/").partition("::")
        files[file] = files.get(file, 0) + 1 if node else 0
    return ", ".join(f"{file} ({n} tests)" if n else file for file, n in files.items())


def _reason(name: str, survivor: dict) -> str | None:
    return _equivalent(name, survivor["function"], " ".join(survivor["added"]))


def render(results: dict) -> str:
    lines = [
        "# Mutation testing of the modules that compute published numbers",
        "",
        "Made by `make mutants` (`tools/mutants.py`, mutmut 3): each mutant changes one operator, "
        "constant, argument or call in one function of a module below (the code of the commit "
        "named, in a scratch copy, never the working tree), and the fast tests that reach that "
        "function run against it. *Killed*: a test failed; *timeout*: the tests ran past mutmut's "
        "limit (caught too). *Equivalent*: a survivor listed below with the reason it cannot "
        "change a result. Kill % = (killed + timeouts) / mutants checked; the last column leaves "
        "the equivalent ones out. Target: at least 90% in every module, every other survivor "
        "killed by a test. mutmut 3 mutates code inside functions only: module-level constants "
        "(`Z95 = 1.96`) are checked against scipy by tests/test_guards.py. Rerun some modules "
        "with `make mutants MODULES='statistics engine'` (the other rows are kept).",
        "",
        "| module | mutants | killed | timeouts | survived | equivalent | kill % | kill % of non-equivalent "
        "| time | run |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|:--|",
    ]
    order = [m for m in MODULES if m in results] + [m for m in results if m not in MODULES]
    for name in order:
        r = results[name]
        equivalent = sum(1 for s in r["survivors"] if _reason(name, s))
        caught = r["killed"] + r["timeout"]
        tested = r.get("checked", r["mutants"]) - r["counts"].get("skipped", 0)
        strict = 100.0 * caught / (tested - equivalent) if tested > equivalent else 100.0
        mutants = (f"{r['checked']} of {r['mutants']} (stopped)" if r.get("partial") else str(r["mutants"]))
        stale = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", r["code"], "HEAD", "--", r["module"]],
                               capture_output=True).returncode != 0
        module_cell = f"{r['module']} (changed since: rerun)" if stale else r["module"]
        lines.append(f"| {module_cell} | {mutants} | {r['killed']} | {r['timeout']} | {r['survived']} | "
                     f"{equivalent} | {r['kill_pct']:.1f} | {strict:.1f} | {r['seconds'] / 60:.1f} min "
                     f"({r['per_mutant_s']:.1f} s/mutant) | {r['run']} |")
    missing = [m for m in MODULES if m not in results]
    if missing:
        lines += ["", "Not yet run: " + ", ".join(MODULES[m].path for m in missing) + "."]
    lines += ["", "The tests each module is checked against (mutmut runs, for each mutant, those of them "
              "that reach its function):", ""]
    for name in order:
        lines.append(f"- {results[name]['module']}: {_tests(results[name]['tests'])}")
    runs = sorted({(r["run"], r["date"], r["command"], r["machine"], r["code"], r["tests_from"])
                   for r in results.values()})
    lines += ["", "## Runs", ""]
    for run, date, command, where, code, tests_from in runs:
        lines.append(f"- **{run}**: {date}; `{command}`; the code of commit {code}, the tests of "
                     f"{tests_from}; {where}.")
    lines += ["", "## Surviving mutants", ""]
    any_survivor = False
    for name in order:
        r = results[name]
        if not r["survivors"]:
            continue
        any_survivor = True
        lines += [f"### {r['module']}", ""]
        if r.get("partial"):  # a stopped run: what it found, by function, not reviewed one by one
            by_status: dict[str, int] = {}
            by_function: dict[str, int] = {}
            for s in r["survivors"]:
                by_status[s["status"]] = by_status.get(s["status"], 0) + 1
                by_function[s["function"]] = by_function.get(s["function"], 0) + 1
            lines += [f"Stopped after {r['seconds'] / 60:.1f} min with {r['checked']} of {r['mutants']} mutants "
                      "checked; not reviewed: "
                      + ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()))
                      + " (*no tests*: no test of the selection reaches the function), in "
                      + ", ".join(f"`{f}` {n}" for f, n in sorted(by_function.items(), key=lambda x: -x[1]))
                      + ".", ""]
            continue
        for s in r["survivors"]:
            reason = _reason(name, s)
            reason = f"equivalent: {reason}" if reason else (
                "**not reviewed**" if s["status"] == "survived" else f"**{s['status']}**, not reviewed")
            change = "; ".join(f"`{a.strip()}` → `{b.strip()}`" for a, b in zip(s["removed"], s["added"])) \
                or "; ".join(f"`{b.strip()}`" for b in s["added"])
            lines.append(f"- `{s['function']}` ({s['mutant'].rsplit('__mutmut_', 1)[-1]}): {change} — {reason}")
        lines.append("")
    if not any_survivor:
        lines += ["None.", ""]
    data = json.dumps(results, indent=None, sort_keys=True, ensure_ascii=False)
    lines += [f"{DATA_MARK} {data} -->", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"modules to run (default: all): {', '.join(MODULES)}")
    parser.add_argument("--rev", default="HEAD", help="the commit whose code is mutated (default HEAD)")
    parser.add_argument("--tests-rev", default=None, help="take tests/ from this commit (default: working tree)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/metazoo-mutants"), help="scratch folder")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv", help="the project's virtual environment")
    parser.add_argument("--jobs", type=int, default=1, help="mutants checked at once (default 1)")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the runs (default 10)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop each module after this long and report the mutants checked so far")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "mutation.md")
    parser.add_argument("--list", action="store_true", help="list the modules and their tests")
    parser.add_argument("--render", action="store_true", help="only write the report again from its data")
    parser.add_argument("--survivors", action="store_true",
                        help="check only the last run's survivors again, against the current tests "
                             "(after adding tests; the same commit's code)")
    args = parser.parse_args(argv)
    if args.list:
        for name, module in MODULES.items():
            print(f"{name:16} {module.path:24} {' '.join(module.tests)}")
        return 0
    if args.render:
        args.out.write_text(render(read_previous(args.out)))
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
    chosen = args.modules or list(MODULES)
    work = args.work.resolve()
    if ROOT in (work, *work.parents):
        parser.error("--work must lie outside the repository: mutants never go near the working tree")
    work.mkdir(parents=True, exist_ok=True)
    mutmut = mutmut_env(work, args.venv)
    code = sh(["git", "-C", str(ROOT), "rev-parse", "--short=12", args.rev]).stdout.strip()
    source = work / f"source-{os.getpid()}"  # one per invocation: two may run at once
    atexit.register(shutil.rmtree, source, ignore_errors=True)
    export(code, ["core", "plugins", "benchmarks", "tests"], source)
    if args.tests_rev:
        tests, tests_from = source / "tests", f"commit {args.tests_rev}"
        if args.tests_rev != args.rev:
            shutil.rmtree(tests)
            export(args.tests_rev, ["tests"], source / "tests-rev")
            tests = source / "tests-rev" / "tests"
    else:
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "tests"],
                               text=True, capture_output=True).stdout.strip()
        tests, tests_from = ROOT / "tests", "the working tree" + (" (with uncommitted changes)" if dirty else "")
    results = read_previous(args.out)
    command = "python tools/mutants.py " + " ".join(argv if argv is not None else sys.argv[1:])
    stamp = dt.datetime.now().astimezone()
    run_id = stamp.strftime("%Y-%m-%d %H:%M")
    where = machine()
    failed: list[str] = []
    for name in chosen:
        module = MODULES[name]
        folder = work / name
        previous = results.get(name)
        again = bool(args.survivors and previous and (folder / "mutants").is_dir() and subprocess.run(
            ["git", "-C", str(ROOT), "diff", "--quiet", previous["code"], code, "--", module.path]).returncode == 0)
        if again:  # the same mutants (the module has not changed), new tests: check only the survivors
            for place in (folder / "tests", folder / "mutants" / "tests"):
                shutil.rmtree(place)
                shutil.copytree(tests, place, ignore=shutil.ignore_patterns("__pycache__"))
            refresh(source, folder / "mutants", module)
            write_config(folder, module)  # the module's test selection may have grown
            prefix = module.package_path.removesuffix(".py").replace("/", ".") + "."
            names = [prefix + s["mutant"] for s in previous["survivors"]]
            print(f"mutants: {module.path}: the {len(names)} survivors again ...", flush=True)
            if not names:
                continue
        else:
            names = []
            layout(source, tests, folder, module)
            print(f"mutants: {module.path} against {' '.join(module.tests)} ...", flush=True)
        try:
            result = run_module(name, module, mutmut, folder, args.jobs, args.nice, args.max_minutes, names)
        except MutmutFailed as exc:  # e.g. a test of the selection fails on the unmutated code
            print(str(exc)[-1500:], flush=True)
            failed.append(name)
            continue
        result.update(run=run_id, date=stamp.isoformat(timespec="seconds"), command=command.strip(),
                      machine=where, code=code, tests_from=tests_from)
        if again:  # the others keep the first run's verdicts; the cost of a whole run is the first run's
            killed, timeout = previous["killed"] + result["killed"], previous["timeout"] + result["timeout"]
            checked = previous.get("checked", previous["mutants"])
            tested = checked - previous["counts"].get("skipped", 0)
            counts = {**previous["counts"], "killed": killed, "timeout": timeout}
            counts["survived"] = sum(1 for s in result["survivors"] if s["status"] == "survived")
            result.update(killed=killed, timeout=timeout, checked=checked, partial=previous.get("partial", False),
                          counts=counts, kill_pct=100.0 * (killed + timeout) / tested if tested else 0.0,
                          seconds=previous["seconds"], per_mutant_s=previous["per_mutant_s"],
                          run=f"{previous['run']}, survivors {run_id}")
        results = {**read_previous(args.out), name: result}  # rows another run wrote meanwhile stay
        print(f"  {result['mutants']} mutants, {result['killed']} killed, {result['timeout']} timeouts, "
              f"{result['survived']} survived ({result['kill_pct']:.1f}%) in {result['seconds'] / 60:.1f} min",
              flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render(results))  # after every module: an interrupted run keeps what it measured
    below = [n for n in chosen if n in results and results[n]["kill_pct"] < 90.0]
    print(f"wrote {args.out}" + (f"; below 90%: {', '.join(below)}" if below else "")
          + (f"; mutmut failed on: {', '.join(failed)}" if failed else ""))
    return 1 if below or failed else 0


if __name__ == "__main__":
    sys.exit(main())
