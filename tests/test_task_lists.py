"""The test-task list of every built-in benchmark, pinned by its digest.

A change to task sampling (a suite's ``sample``, the task seeds of metazoo.evaluation, a
benchmark's protocol or evaluation settings) changes the tasks every published number was
measured on. It must be deliberate and visible: this test fails, and the leaderboard puts
records of the old and the new list in separate tables (it never pairs them). If the change is
deliberate: regenerate the published folders whose benchmark changed (their COMMAND, with
``--force`` where the run keys did not change), note it in results/CHANGES.md, and paste the
new digests printed by the failure below.
"""

import pytest
from metazoo.benchmark import builtin_benchmarks, load_benchmark
from metazoo.evaluation import TaskList
from metazoo.manager import Zoo
from metazoo.run import make_suite
from test_omniglot import DATA, HAVE_DATA

PINNED = {
    "bandits": "2ebb99ce6885f868",
    "halfcheetah-dir": "0ba6e1471e7d2453",
    "halfcheetah-vel": "9545dd1c91bff256",
    "hyperplanes": "7af95c9d165deac9",
    "navigation2d": "e892af8001f92388",
    "omniglot-20w1s": "63580a9c535bf923",
    "omniglot-20w5s": "97cd24e3c431fa9f",
    "omniglot-5w1s": "402d25e58a6ef158",  # the reproduction's tasks (it extends that spec)
    "omniglot-5w5s": "911924691093d70e",
    "omniglot-reproduce-5w1s": "402d25e58a6ef158",
    "omniglot-reproduce-5w5s": "911924691093d70e",
    "sinusoid": "2189b13859c68a0f",
    "sinusoid-10shot": "25a2f5c4a1ccddf2",
    "sinusoid-5shot": "2189b13859c68a0f",
}


def test_every_built_in_benchmark_is_pinned():
    """All but those of the ``images`` suite, whose tasks are drawn from the user's folder
    (tests/test_image_benchmarks.py pins their protocols instead)."""
    readable = [name for name, path in builtin_benchmarks().items() if load_benchmark(path).suite != "images"]
    assert sorted(PINNED) == sorted(readable)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_test_tasks_of_each_built_in_benchmark_are_the_pinned_ones(name):
    spec = load_benchmark(builtin_benchmarks()[name])
    if spec.suite == "omniglot" and not HAVE_DATA:
        pytest.skip(f"the Omniglot zips are not in {DATA}")
    suite = make_suite(Zoo(), spec, str(DATA))
    evaluation = spec.evaluation
    digest = TaskList(suite, "test", evaluation.test_tasks, evaluation.eval_seed, evaluation.batch_tasks).digest()
    assert digest == PINNED[name], (
        f"the test tasks of benchmark {name} changed (digest {digest}, pinned {PINNED[name]}); "
        "if that is deliberate, see this module's docstring")
