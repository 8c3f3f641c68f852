"""The test metric after k adaptation steps (``[evaluation] adaptation_steps``): ``predict`` with 0
steps is the unadapted model for every model-algorithm plugin, with k steps the plain inner loop
run k times by hand (float64); the spec key and the papers' per-step values are checked before
anything runs and stay out of the protocol hash; a run records the per-task values per k; the
leaderboard's table of them agrees with an independent computation, and old records render."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from metazoo.benchmark import load_benchmark
from metazoo.errors import ZooError
from metazoo.leaderboard import summarize
from metazoo.render import adaptation_table, render
from reference import adapt, leaf_copy
from scipy import stats
from test_conv4 import RandomImages
from test_leaderboard import record
from torch.func import functional_call

pytestmark = pytest.mark.usefixtures("one_thread")

# (algorithm, hyperparameters): every model-algorithm plugin that adapts a regression model.
SINUSOID_CASES = [
    ("maml", {}), ("fomaml", {}), ("metasgd", {}), ("anil", {}), ("boil", {}), ("imaml", {}), ("cavia", {}),
    ("reptile", {}),
    ("reptile", {"inner_optimizer": "adam", "inner_lr": 0.01, "eval_inner_batch": 3}),  # carried Adam state
]


def build(host, algorithm, suite, **hp):
    torch.manual_seed(0)
    return host.algorithms.get(algorithm).factory(suite.make_model().double(), suite, **hp).double()


def tasks(suite, count=3):
    return suite.sample("test", count, torch.Generator().manual_seed(1)).to("cpu", torch.float64)


def per_task(model, batch):
    """The plain forward of ``model`` on each task's queries (batch norm: on the task's own batch)."""
    return torch.stack([model(qx) for qx in batch.query_x])


@pytest.mark.parametrize("execution", ["vmap", "loop"])
@pytest.mark.parametrize(("algorithm", "hp"), SINUSOID_CASES)
def test_zero_steps_predicts_with_the_unadapted_model(host, algorithm, hp, execution):
    suite = host.suites.get("sinusoid").factory()
    learner = build(host, algorithm, suite, **{"inner_lr": 0.05, "execution": execution, **hp})
    if "inner_optimizer" in hp:  # a carried state that is not Adam's first step
        for buffer in learner.adam_state.buffers():
            buffer.fill_(7 if buffer.dtype == torch.long else 0.3)
    batch = tasks(suite)
    with torch.no_grad():
        expected = per_task(learner.model, batch)  # CAVIA's network holds the zero context
    torch.testing.assert_close(learner.predict(batch, steps=0), expected, rtol=1e-12, atol=1e-12)
    assert (learner.predict(batch, steps=1) - expected).abs().max() > 1e-6  # one step does move it


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_zero_steps_of_mamlpp_keep_the_models_own_batch_norm_weights(execution):
    from metazoo.plugins.mamlpp import MAMLPP

    suite = RandomImages(ways=3, shots=2, queries=2)
    torch.manual_seed(0)
    learner = MAMLPP(suite.make_model(), suite, inner_steps=3, inner_lr=0.3, execution=execution).double()
    with torch.no_grad():  # per-step batch-norm weights that differ from the model's own
        for p in learner.bn_steps.values():
            p.add_(1.0)
    batch = tasks(suite, 2)
    with torch.no_grad():
        expected = per_task(learner.model, batch)
    torch.testing.assert_close(learner.predict(batch, steps=0), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_zero_steps_of_protomaml_are_the_prototype_classifier(host, execution):
    suite = RandomImages(ways=3, shots=2, queries=2)
    learner = build(host, "protomaml", suite, execution=execution)
    batch = tasks(suite, 2)
    expected = []
    with torch.no_grad():
        for sx, sy, qx in zip(batch.support_x, batch.support_y, batch.query_x):
            support, query = learner.model.body(sx), learner.model.body(qx)
            prototypes = torch.stack([support[sy == c].mean(0) for c in range(3)])
            expected.append(-torch.cdist(query, prototypes) ** 2 + (query**2).sum(-1, keepdim=True))
    torch.testing.assert_close(learner.predict(batch, steps=0), torch.stack(expected), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("algorithm", "hp"), [("maml", {}), ("anil", {}), ("maml", {"execution": "loop"})])
def test_k_steps_are_the_plain_inner_loop_run_k_times(host, algorithm, hp):
    suite = host.suites.get("sinusoid").factory()
    learner = build(host, algorithm, suite, inner_lr=0.05, inner_steps=1, eval_inner_steps=3, **hp)
    batch = tasks(suite)
    model = learner.model
    names = [n for n, _ in model.named_parameters() if n.startswith("head.")] if algorithm == "anil" else None
    for k in (1, 2, 5):
        expected = torch.stack([
            functional_call(model, adapt("regression", model, leaf_copy(dict(model.named_parameters())), sx, sy,
                                         steps=k, lrs=0.05, names=names, create_graph=False), (qx,)).detach()
            for sx, sy, qx in zip(batch.support_x, batch.support_y, batch.query_x)])
        torch.testing.assert_close(learner.predict(batch, steps=k), expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(learner.predict(batch, steps=3), learner.predict(batch))  # eval_inner_steps = 3


def test_eval_inner_steps_may_be_zero_but_not_negative(host):
    suite = host.suites.get("sinusoid").factory()
    learner = build(host, "maml", suite, eval_inner_steps=0)
    batch = tasks(suite)
    assert torch.equal(learner.predict(batch), learner.predict(batch, steps=0))
    with pytest.raises(ZooError, match=r"eval_inner_steps must be >= 0 .*got -1"):
        build(host, "maml", suite, eval_inner_steps=-1)
    with pytest.raises(ValueError, match="steps must be a whole number of inner steps >= 0, got -2"):
        learner.predict(batch, steps=-2)


# -- the spec -----------------------------------------------------------------------------------


def spec(tmp_path, evaluation="adaptation_steps = [3, 0, 1]", published=""):
    path = tmp_path / "spec.toml"
    path.write_text(f'suite = "sinusoid"\n[evaluation]\ntest_tasks = 20\n{evaluation}\n{published}')
    return path


def test_adaptation_steps_are_read_sorted_and_left_out_of_the_protocol_hash(tmp_path):
    with_steps = load_benchmark(spec(tmp_path))
    assert with_steps.evaluation.adaptation_steps == (0, 1, 3)
    assert with_steps.hash() == load_benchmark(spec(tmp_path, evaluation="")).hash()
    published = load_benchmark(spec(tmp_path, published=(
        '[published.maml]\nvalue = 0.5\ncitation = "Paper, Figure 4"\nby_adaptation_steps = {0 = -2, 3 = 0.25}\n')))
    assert published.published["maml"].by_adaptation_steps == {"0": -2.0, "3": 0.25}
    from metazoo.benchmark import benchmark_from_dict

    again = benchmark_from_dict(json.loads(json.dumps(published.to_dict())), "record")
    assert again.evaluation == published.evaluation and again.published == published.published


@pytest.mark.parametrize(("evaluation", "published", "message"), [
    ("adaptation_steps = [1, -1]", "", "[evaluation]: adaptation_steps must be a list of distinct whole numbers"),
    ("adaptation_steps = [1, 1]", "", "got [1, 1]"),
    ("adaptation_steps = [1.5]", "", "got [1.5]"),
    ("adaptation_steps = [true]", "", "got [True]"),
    ('adaptation_steps = "0, 1"', "", "such as [0, 1, 3]; got '0, 1'"),
    ("adaptation_steps = [0, 1]", "by_adaptation_steps = {2 = 1.0}",
     "[published.maml]: by_adaptation_steps gives step 2, which [evaluation] adaptation_steps does not list ([0, 1])"),
    ("adaptation_steps = [0, 1]", 'by_adaptation_steps = {x = 1.0}', "got 'x' = 1.0"),
    ("adaptation_steps = [0, 1]", 'by_adaptation_steps = {1 = "high"}', "such as {0 = -40.0, 1 = -10.0}; got '1' = 'high'"),
    ("adaptation_steps = [0, 1]", "by_adaptation_steps = [1.0]", "got [1.0]"),
])
def test_bad_adaptation_steps_are_clear_errors(tmp_path, evaluation, published, message):
    table = f'[published.maml]\nvalue = 0.5\ncitation = "c"\n{published}\n' if published else ""
    path = spec(tmp_path, evaluation, table)
    with pytest.raises(ZooError) as error:
        load_benchmark(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value), str(error.value)


# -- the record and the leaderboard -------------------------------------------------------------


def test_a_run_records_each_step_count_and_the_leaderboard_shows_them(zoo, tmp_path):
    path = tmp_path / "hyper.toml"
    path.write_text('suite = "hyperplanes"\n[evaluation]\ntest_tasks = 12\nval_tasks = 4\n'
                    "adaptation_steps = [0, 1, 2]\n[training]\nsteps = 2\nval_every = 2\n"
                    "[algorithms.maml]\nmeta_batch = 2\ninner_lr = 0.5\neval_inner_steps = 2\n"
                    "[algorithms.protonet]\nmeta_batch = 2\n")
    code, stdout, stderr = zoo("bench", "--benchmark", str(path), "--algos", "maml,protonet",
                               "--out", str(tmp_path / "out"), "--quiet")
    assert code == 0, stdout + stderr
    runs = {r.name.split("-")[0]: json.loads(r.read_text()) for r in (tmp_path / "out/hyper/runs").glob("*.json")}
    maml = runs["maml"]["test"]
    assert set(maml["by_adaptation_steps"]) == {"0", "1", "2"}
    assert all(len(v) == 12 for v in maml["by_adaptation_steps"].values())
    assert maml["by_adaptation_steps"]["2"] == maml["per_task"]  # the main test: eval_inner_steps = 2
    assert maml["by_adaptation_steps"]["0"] != maml["per_task"]
    assert "by_adaptation_steps" not in runs["protonet"]["test"]  # model-data: no inner loop
    board = (tmp_path / "out/hyper/leaderboard.md").read_text()
    assert "Test accuracy (%) after k adaptation steps" in board
    assert "Not in this table: protonet (model-data: no inner loop to run for k steps)." in board


def steps_record(algorithm, main, by_steps, seed=0, **extra):
    made = record("nav", algorithm, main, seed, metric="return", **extra)
    made["test"]["by_adaptation_steps"] = {k: v for k, v in by_steps.items()}
    made["spec"] = {"evaluation": {"adaptation_steps": sorted(int(k) for k in by_steps)}}
    return made


def test_the_table_agrees_with_an_independent_computation():
    rng = np.random.default_rng(0)
    n = 40
    a = {k: rng.normal(-20 + 5 * int(k), 3, n) for k in ("0", "1", "3")}
    b0 = {k: rng.normal(-20 + 4 * int(k), 3, n) for k in ("0", "1", "3")}
    b1 = {k: rng.normal(-20 + 4 * int(k), 3, n) for k in ("0", "1", "3")}
    records = [
        steps_record("maml", list(a["1"]), {k: list(v) for k, v in a.items()},
                     published={"value": -10.0, "citation": "Paper, Figure 4", "by_adaptation_steps": {"1": -9.5}}),
        steps_record("fomaml", list(b0["1"]), {k: list(v) for k, v in b0.items()}, seed=0),
        steps_record("fomaml", list(b1["1"]), {k: list(v) for k, v in b1.items()}, seed=1),
    ]
    for r in records:
        r["higher_is_better"] = True
    summary = summarize(records)
    rows = {row["algorithm"]: row for row in summary.to_dict("records")}
    for k in ("0", "1", "3"):
        pooled = (b0[k] + b1[k]) / 2  # each task averaged over the seeds
        fomaml, maml = rows["fomaml"]["by_adaptation_steps"][k], rows["maml"]["by_adaptation_steps"][k]
        assert fomaml["mean"] == pytest.approx(pooled.mean(), rel=1e-12)
        assert fomaml["ci95"] == pytest.approx(1.96 * pooled.std(ddof=1) / math.sqrt(n), rel=1e-12)
        assert maml["ci95"] == pytest.approx(1.96 * a[k].std(ddof=1) / math.sqrt(n), rel=1e-12)
        best, other = (maml, fomaml) if a[k].mean() > pooled.mean() else (fomaml, maml)
        assert best["best"] and math.isnan(best["p_value"])
        assert other["p_value"] == pytest.approx(stats.ttest_rel(a[k], pooled).pvalue, rel=1e-9)
    table, notes = adaptation_table(summary)
    assert list(table.columns) == ["algorithm", "0 steps", "vs best (0)", "1 step", "vs best (1)",
                                   "3 steps", "vs best (3)"]
    shown = table.set_index("algorithm")
    assert shown.loc["fomaml", "1 step"] == f"{(b0['1'] + b1['1']).mean() / 2:.3f} ± {rows['fomaml']['by_adaptation_steps']['1']['ci95']:.3f}"
    assert shown.loc["maml: published [1]", "1 step"] == "-9.500" and shown.loc["maml: published [1]", "0 steps"] == "–"
    assert notes[0] == "[1] Paper, Figure 4"
    markdown = render(summary, "md")
    assert "Test return after k adaptation steps (nav" in markdown
    assert sum(markdown.count(mark) for mark in ("p = ", "p < 0.001", "tied (")) >= 3  # the non-best row at each k
    csv = render(summary, "csv")
    assert "mean_after_3_steps" in csv and "p_value_after_0_steps" in csv and "published_after_1_steps" in csv


def test_old_records_render_as_not_measured_and_without_the_table():
    old = record("nav", "maml", [1.0, 2.0, 3.0], metric="return")  # no by_adaptation_steps, no spec key
    assert "after k adaptation steps" not in render(summarize([old]), "md")
    new = steps_record("fomaml", [1.0, 2.0, 2.5], {"0": [0.0, 1.0, 1.0], "1": [1.0, 2.0, 2.5]})
    other = record("nav", "protonet", [1.0, 1.0, 1.0], metric="return", family="model-data")
    summary = summarize([old, new, other])
    table, notes = adaptation_table(summary)
    shown = table.set_index("algorithm")
    assert shown.loc["maml", "0 steps"] == "not measured" and shown.loc["fomaml", "1 step"].startswith("1.833 ± ")
    assert "protonet" not in shown.index
    assert any(line.startswith("Not measured (maml)") for line in notes)
    for fmt in ("md", "latex", "html"):
        assert "after k adaptation steps" in render(summary, fmt)


def test_the_plot_has_a_panel_of_return_against_adaptation_steps(tmp_path):
    pytest.importorskip("matplotlib")
    from metazoo.plots import plot_table

    records = [steps_record("maml", [1.0, 2.0, 3.0], {"0": [0.0, 1.0, 1.0], "1": [1.0, 2.0, 3.0]},
                            published={"value": 2.0, "citation": "c", "by_adaptation_steps": {"0": 0.5}}),
               steps_record("fomaml", [1.0, 2.0, 2.5], {"0": [0.0, 1.0, 0.5], "1": [1.0, 2.0, 2.5]})]
    for r in records:
        r["higher_is_better"] = True
    path = plot_table(records, "nav", tmp_path / "nav.png")
    plain = plot_table([record("nav", "maml", [1.0, 2.0, 3.0], metric="return")], "nav", tmp_path / "plain.png")
    from PIL import Image

    assert Image.open(path).size[0] > Image.open(plain).size[0]  # a fourth panel
