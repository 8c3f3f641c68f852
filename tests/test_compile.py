"""The compiled outer step against the eager one: same parameters and optimiser state after
several steps (float64), no recompilation for a fixed protocol, a fallback with one warning for
a learner that cannot be compiled, and the compile time recorded apart from training time."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

CASES = {  # name: (algorithm, suite, hyperparameters)
    "maml-second-order-adam": ("maml", "sinusoid", {"meta_batch": 4}),
    "maml-chunked-sgd": ("maml", "sinusoid", {"meta_batch": 5, "chunk_size": 2, "outer_optimizer": "sgd",
                                              "outer_lr": 0.1}),
    "metasgd": ("metasgd", "sinusoid", {"meta_batch": 4}),
    "reptile": ("reptile", "sinusoid", {"meta_batch": 4, "inner_steps": 2}),
    "protonet": ("protonet", "hyperplanes", {"meta_batch": 4}),
}


def _pair(host, case):
    algorithm, suite_name, hyperparameters = CASES[case]
    suite = host.suites.get(suite_name).factory()
    learners = []
    for compile_step in (False, True):
        torch.manual_seed(0)
        learner = host.algorithms.get(algorithm).factory(suite.make_model(), suite, compile=compile_step,
                                                         **hyperparameters)
        learners.append(learner.to(torch.float64))
    generator = torch.Generator().manual_seed(1)
    batches = [suite.sample("train", hyperparameters["meta_batch"], generator).to("cpu", torch.float64)
               for _ in range(4)]
    return learners, batches


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_step_equals_the_eager_step(host, one_thread, case):
    (eager, compiled), batches = _pair(host, case)
    for i, batch in enumerate(batches[:3]):
        # after its first step, a learner on a fixed protocol never compiles again
        with torch._dynamo.config.patch(error_on_recompile=i > 0):
            reference = eager.meta_train_step(batch)
            stats = compiled.meta_train_step(batch)
        assert ("compile_s" in stats) == (i == 0)
        assert stats["loss"] == pytest.approx(reference["loss"], rel=1e-10)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=name)
    # the optimiser state is torch.optim's own: an eager step continues where the compiled left off
    compiled.config = type(compiled.config)(**{**compiled.config.__dict__, "compile": False})
    eager.meta_train_step(batches[3])
    compiled.meta_train_step(batches[3])
    for a, b in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_a_learner_that_cannot_be_compiled_falls_back_with_one_warning(host, one_thread):
    from metazoo.model_algorithm import ModelAlgorithmLearner

    class Chatty(ModelAlgorithmLearner):
        def chunk_objective(self, chunk):
            total, loss = super().chunk_objective(chunk)
            print(f"loss {loss.item():.3f}")  # a graph break: no full graph
            return total, loss

    suite = host.suites.get("sinusoid").factory()
    torch.manual_seed(0)
    eager = Chatty(suite.make_model(), suite, meta_batch=3)
    torch.manual_seed(0)
    chatty = Chatty(suite.make_model(), suite, meta_batch=3, compile=True)
    batches = [suite.sample("train", 3, torch.Generator().manual_seed(i)) for i in range(2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for batch in batches:
            assert chatty.meta_train_step(batch)["loss"] == eager.meta_train_step(batch)["loss"]
    messages = [str(w.message) for w in caught if "compiled meta-step failed" in str(w.message)]
    assert len(messages) == 1 and "chatty" in messages[0] and "using the eager step" in messages[0]


def test_the_record_counts_compile_time_apart(host, one_thread, tmp_path):
    from metazoo.benchmark import load_benchmark
    from metazoo.run import Run, execute

    spec = tmp_path / "compiled.toml"
    spec.write_text('suite = "sinusoid"\n[evaluation]\ntest_tasks = 10\nval_tasks = 5\n'
                    "[training]\nsteps = 5\n[algorithms.maml]\nmeta_batch = 4\ncompile = true\n")
    record = execute(Run(load_benchmark(spec), host.algorithms.get("maml"), 0), host, torch.device("cpu"))
    assert record["status"] == "ok", record.get("error")
    assert record["hyperparameters"]["compile"] is True and record["train"]["steps"] == 5
    assert record["train"]["compile_s"] > 0.5 > record["train"]["time_s"]


def test_compile_is_an_execution_setting_not_part_of_the_run_or_the_row(zoo, tmp_path):
    from metazoo.leaderboard import summarize
    from test_leaderboard import record

    spec = tmp_path / "tiny.toml"
    spec.write_text('suite = "sinusoid"\n[evaluation]\ntest_tasks = 10\nval_tasks = 5\n[training]\nsteps = 3\n'
                    "[algorithms.fomaml]\nmeta_batch = 4\n")
    out = tmp_path / "out"
    code, _, stderr = zoo("bench", "--benchmark", str(spec), "--algos", "fomaml", "--no-compile", "--out", str(out), "-q")
    assert code == 0, stderr
    (path,) = (out / "tiny" / "runs").glob("*.json")
    assert json.loads(path.read_text())["hyperparameters"]["compile"] is False
    code, stdout, _ = zoo("bench", "--benchmark", str(spec), "--algos", "fomaml", "--compile", "--out", str(out),
                          "--dry-run")
    assert code == 0 and stdout.splitlines()[-1] == "0 of 1 run(s) to run"
    rows = summarize([record("b", "maml", [0.5, 0.6], seed=0, hyperparameters={"inner_lr": 0.1, "compile": True}),
                      record("b", "maml", [0.7, 0.6], seed=1, hyperparameters={"inner_lr": 0.1, "compile": False})])
    assert list(rows["label"]) == ["maml"] and list(rows["seeds"]) == [2]


@pytest.mark.filterwarnings("error:Detected call of:UserWarning")  # no spurious scheduler warning
@pytest.mark.parametrize("compile_step", [False, True])
def test_the_outer_rate_follows_its_schedule_in_both_steps(host, one_thread, compile_step):
    suite = host.suites.get("hyperplanes").factory()
    torch.manual_seed(0)
    learner = host.algorithms.get("protonet").factory(suite.make_model(), suite, meta_batch=2, outer_lr=0.1,
                                                      lr_schedule="step", lr_step_every=2, lr_gamma=0.5,
                                                      compile=compile_step)
    rates = []
    for i in range(5):
        with torch._dynamo.config.patch(error_on_recompile=i > 0):  # a new rate is no new graph
            learner.meta_train_step(suite.sample("train", 2, torch.Generator().manual_seed(i)))
        rates.append(learner.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.1, 0.05, 0.05, 0.025, 0.025])


def test_a_cosine_schedule_needs_its_length(host):
    from metazoo.errors import ZooError

    suite = host.suites.get("hyperplanes").factory()
    with pytest.raises(ZooError, match="lr_schedule 'cosine' needs lr_anneal_steps"):
        host.algorithms.get("protonet").factory(suite.make_model(), suite, lr_schedule="cosine")


def test_a_linear_schedule_anneals_the_outer_rate_to_zero(host, one_thread):
    suite = host.suites.get("hyperplanes").factory()
    torch.manual_seed(0)
    learner = host.algorithms.get("reptile").factory(suite.make_model(), suite, meta_batch=2, outer_lr=1.0,
                                                     lr_schedule="linear", lr_anneal_steps=4)
    rates = []
    for i in range(6):
        learner.meta_train_step(suite.sample("train", 2, torch.Generator().manual_seed(i)))
        rates.append(learner.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.75, 0.5, 0.25, 0.0, 0.0, 0.0])


@pytest.mark.parametrize(("algorithm", "suite", "backbone", "budget", "expected"), [
    ("maml", "sinusoid", None, "steps = 70000", True),  # an MLP, a long run: compiled
    ("maml", "sinusoid", None, "time = 1200", True),
    ("maml", "sinusoid", None, "steps = 4000", False),  # too short to repay the compilation
    ("protonet", "omniglot", "conv4", "steps = 20000", True),  # convolutions on shared weights
    ("maml", "omniglot", "conv4", "steps = 20000", False),  # convolutions on per-task weights
    ("protonet", "omniglot", "conv4-running-bn", "steps = 20000", False),  # running statistics
])
def test_compile_auto_compiles_long_runs_where_the_benchmarks_show_it_pays(host, tmp_path, algorithm, suite,
                                                                           backbone, budget, expected):
    from metazoo.benchmark import load_benchmark
    from metazoo.run import Run, make_learner, make_suite
    from test_omniglot import DATA, HAVE_DATA

    if suite == "omniglot" and not HAVE_DATA:
        pytest.skip(f"the Omniglot zips are not in {DATA}")
    spec = tmp_path / "auto.toml"
    spec.write_text(f'suite = "{suite}"\n' + (f'backbone = "{backbone}"\n' if backbone else "")
                    + f"[training]\n{budget}\n")
    benchmark = load_benchmark(spec)
    learner = make_learner(Run(benchmark, host.algorithms.get(algorithm), 0),
                           make_suite(host, benchmark, str(DATA)), host.backbones)
    assert learner.config.compile == "auto" and learner.compiles is expected
    explicit = dataclasses.replace(learner.config, compile=not expected)  # an explicit setting wins
    learner.config = explicit
    assert learner.compiles is (not expected)
