"""Tests written to kill the mutants that ``make mutants`` (tools/mutants.py) found surviving in
the modules that compute published numbers; each checks a behaviour that a table relies on,
against an independent computation or a property, never against a stored output."""

import math
import statistics
import warnings
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from metazoo import engine
from metazoo.engine import GradientPool, choose_execution, map_tasks
from metazoo.errors import ZooError
from metazoo.evaluation import TaskList, evaluate, summary, task_generator, train_batch
from metazoo.leaderboard import average_ranks, budget_label, slug, summarize
from metazoo.milestones import first_reached, milestone_table
from metazoo.model_data import embedding
from metazoo.models import Conv4
from metazoo.plugins.hyperplanes import Hyperplanes
from metazoo.plugins.relationnet import RelationNet
from metazoo.plugins.sinusoid import Sinusoid
from metazoo.statistics import ci95, paired_t_test, ranks
from scipy import stats
from test_leaderboard import CPU_BUDGET, curve, record

# -- statistics: confidence intervals, the paired test, ranks -------------------------------


@pytest.mark.parametrize("values", [[0.3, 0.8], [0.3, 0.8, 0.1], [2.0, -1.0, 0.5, 0.25]])
def test_ci95_from_two_values_on_is_the_normal_interval(values):
    expected = stats.norm.ppf(0.975) * stats.sem(values)
    assert math.isclose(ci95(values), expected, rel_tol=1e-3)


@pytest.mark.parametrize("values", [[], [0.7]])
def test_ci95_of_fewer_than_two_values_is_zero(values):
    assert ci95(values) == 0.0


def test_a_constant_nonzero_paired_difference_is_significant_and_none_is_not():
    a = [0.5, 0.7, 0.9]
    assert paired_t_test(a, [x - 0.25 for x in a]) == 0.0
    assert paired_t_test([x - 0.25 for x in a], a) == 0.0
    assert paired_t_test(a, a) == 1.0


def test_nearly_constant_differences_give_a_p_value_quietly():
    """scipy warns of precision loss here; the table gets a p-value and no warning."""
    a = np.array([1.0, 1.0 + 2**-52, 1.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = paired_t_test(a, np.zeros(4))
    assert 0.0 <= p <= 1.0


def test_ranks_put_the_best_mean_first_and_ties_share_the_average():
    means = [0.2, 0.9, 0.5, 0.9]
    assert ranks(means, higher_is_better=True) == [4.0, 1.5, 3.0, 1.5]
    assert ranks(means, higher_is_better=False) == [1.0, 3.5, 2.0, 3.5]


# -- milestones: the time to a score --------------------------------------------------------


def times(*records) -> dict[str, dict]:
    return {row["algorithm"]: row for row in milestone_table(summarize(records)).to_dict("records")}


def test_first_reached_reads_the_budget_clock_and_skips_points_without_a_value():
    points = [{"step": 1, "time_s": 10.0, "budget_s": 5.0, "value": None},
              {"step": 2, "time_s": 20.0, "budget_s": 8.0, "value": 0.9}]
    assert first_reached(points, 0.5, higher_is_better=True) == 8.0
    assert first_reached(points, 0.95, higher_is_better=True) is None


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_a_score_equal_to_the_target_reaches_it(higher_is_better):
    points = [{"step": 1, "time_s": 2.0, "budget_s": 1.0, "value": 0.5}]
    assert first_reached(points, 0.5, higher_is_better) == 1.0


def test_milestone_times_switch_to_hours_at_one_hour_and_say_when_never_reached():
    spec = {"milestones": [0.9]}
    got = times(record("b", "hour", [0.95], spec=spec, budget=CPU_BUDGET, validation=curve((3600, 0.95))),
                record("b", "long", [0.95], spec=spec, budget=CPU_BUDGET, validation=curve((360000, 0.95))),
                record("b", "never", [0.5], spec=spec, budget=CPU_BUDGET, validation=curve((60, 0.5))))
    assert got["hour"]["90%"] == "1.00 CPU-h"
    assert got["long"]["90%"] == "100.00 CPU-h"
    assert got["never"]["90%"] == "not reached"


def test_the_time_to_a_lower_is_better_published_number_on_wall_clock_curves():
    """An MSE table whose curves are from records before ``budget_s``: the published number is
    reached from above, timed on the wall clock."""
    got = times(record("b", "maml", [0.4], metric="mse", budget=CPU_BUDGET, published={"value": 0.5},
                       validation=curve((60, 0.9), (120, 0.4), wall_clock_only=True)))
    assert got["maml"]["published number"] == "3.0 min (wall clock) (0.5)"  # 1.5 × 120 s


def test_a_seed_without_validation_points_is_left_out_of_the_longest_run():
    spec = {"milestones": [0.9]}
    got = times(record("b", "maml", [0.95], seed=0, spec=spec, budget=CPU_BUDGET, validation=curve((120, 0.95))),
                record("b", "maml", [0.95], seed=1, spec=spec, budget=CPU_BUDGET, validation=[]))
    assert got["maml"]["longest run"] == "2.0 CPU-min (1 of 2 seeds)"
    assert got["maml"]["90%"] == "2.0 CPU-min (1 of 2 seeds)"


# -- evaluation: training batches, per-task metrics, the run summary ------------------------


class AnsweringSuite:
    """Answers a request for tasks with what was asked: the method, split, count and the
    generator's state."""

    kind = "regression"

    def sample(self, split, num_tasks, generator):
        return "tasks", split, num_tasks, generator.get_state()

    def sample_labelled(self, split, batch_size, generator):
        return "labelled", split, batch_size, generator.get_state()


@pytest.mark.parametrize("labelled", [None, False, True])
def test_a_training_batch_is_the_train_split_drawn_from_the_generator_of_its_seed_and_step(labelled):
    options = {} if labelled is None else {"labelled": labelled}
    method, split, count, state = train_batch(AnsweringSuite(), 3, 7, 4, **options)
    assert (method, split, count) == ("labelled" if labelled else "tasks", "train", 4)
    assert torch.equal(state, task_generator("train", 3, 7).get_state())


class OnDevice:
    """A task batch that records the device it is moved to."""

    def __init__(self, batch, moves):
        self.batch, self.moves = batch, moves

    def to(self, device):
        self.moves.append(device)
        return self.batch


class AlwaysOne:
    def predict(self, batch):
        return torch.nn.functional.one_hot(torch.ones_like(batch.query_y), 2).float()


def test_evaluate_moves_every_batch_to_the_device_and_scores_it_by_the_suites_metric(host):
    suite = host.suites.get("hyperplanes").factory()
    batches = list(TaskList(suite, "test", 6, 0, 4))  # 4 tasks, then 2
    moves = []
    values = evaluate(AlwaysOne(), suite, [OnDevice(b, moves) for b in batches], torch.device("cpu"))
    expected = torch.cat([(b.query_y == 1).float().mean(dim=1) for b in batches])  # accuracy, not MSE
    assert torch.equal(values, expected)
    assert moves == [torch.device("cpu")] * len(batches)


def test_a_task_list_serves_each_task_once_in_batches_of_at_most_batch_tasks(host):
    suite = host.suites.get("sinusoid").factory()
    batches = list(TaskList(suite, "test", 10, 0, 4))
    assert [len(b) for b in batches] == [4, 4, 2]
    whole = TaskList(suite, "test", 10, 0, 10)
    assert torch.equal(torch.cat([b.query_x for b in batches]), next(iter(whole)).query_x)


def test_the_summary_of_one_task_has_no_interval():
    assert summary(torch.tensor([0.25])) == {"mean": 0.25, "ci95": 0.0, "n": 1}


def test_the_summary_of_two_tasks_has_the_normal_interval():
    values = [0.25, 0.75]
    result = summary(torch.tensor(values, dtype=torch.float64))
    assert math.isclose(result["ci95"], stats.norm.ppf(0.975) * stats.sem(values), rel_tol=1e-3)


# -- engine: stacking per-task outputs, pooling meta-gradients ------------------------------


@pytest.mark.parametrize("execution", ["loop", "vmap"])
def test_map_tasks_over_a_single_task_keeps_the_structure_of_the_outputs(execution):
    x = torch.arange(6.0).reshape(1, 2, 3)  # one task
    out = map_tasks(lambda t: {"sum": t.sum(), "pair": (t[0], 2 * t)}, [x], execution)
    assert torch.equal(out["sum"], x.sum(dim=(1, 2)))
    assert torch.equal(out["pair"][0], x[:, 0]) and torch.equal(out["pair"][1], 2 * x)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_models_with_running_statistics_run_task_by_task(device):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    assert choose_execution("auto", model, torch.device(device), per_task_weights=False) == "loop"


def test_map_tasks_vectorises_only_when_asked_and_draws_different_randomness_per_task():
    x = torch.zeros(4, 3)

    def fn(t):
        return t.sum() + torch.rand(()) + float(torch._C._are_functorch_transforms_active())

    vmapped, looped = map_tasks(fn, [x], "vmap"), map_tasks(fn, [x], "loop")
    assert (vmapped >= 1).all() and (looped < 1).all()  # under vmap, and not
    assert len(set(vmapped.tolist())) == 4  # each task its own random draw


def test_the_pooled_loss_is_summed_in_double_precision_and_a_missing_gradient_is_zero():
    params = [torch.zeros(2), torch.zeros(3)]
    pool = GradientPool(params)
    pool.add([torch.ones(2), None], torch.tensor(1e8, dtype=torch.float32), 1)
    pool.add([torch.ones(2), None], torch.tensor(1.0, dtype=torch.float32), 1)  # lost in a float32 sum
    assert pool.apply() == (1e8 + 1.0) / 2
    assert torch.equal(params[0].grad, torch.ones(2)) and torch.equal(params[1].grad, torch.zeros(3))


class TwinWorld:
    """torch.distributed for a group of two processes that hold the same pool: all_reduce
    doubles each tensor in place."""

    @staticmethod
    def is_available():
        return True

    @staticmethod
    def is_initialized():
        return True

    @staticmethod
    def all_reduce(tensor):
        tensor.mul_(2)


def test_all_reduce_pools_every_gradient_the_losses_and_the_task_count(monkeypatch):
    params = [torch.zeros(2), torch.zeros(3)]  # the second gets no gradient from this process
    given = torch.tensor([1.0, 3.0])
    pool = GradientPool(params)
    pool.add([given, None], torch.tensor(6.0), 3)
    monkeypatch.setattr(engine, "dist", TwinWorld)
    pool.all_reduce()
    assert pool.tasks == 6
    loss = pool.apply()
    assert loss == 2.0  # (6 + 6) / 6 tasks
    assert torch.equal(params[0].grad, given / 3) and torch.equal(params[1].grad, torch.zeros(3))
    assert torch.equal(given, torch.tensor([1.0, 3.0]))  # the tensor given to add() is intact


# -- the sinusoid suite: its task distribution and network -----------------------------------


def test_every_sinusoid_task_of_a_batch_is_a_sine_wave_of_its_own_amplitude_and_phase():
    """y = A·sin(x − φ), A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5] (Finn et al. 2017, §5.1), each
    task of a meta-batch its own A and φ: fitted by least squares, y = A cos φ·sin x − A sin φ·cos x."""
    batch = Sinusoid().sample("train", 8, torch.Generator().manual_seed(0))
    x = torch.cat([batch.support_x, batch.query_x], 1).squeeze(-1).double()  # [T, K+Q]
    y = torch.cat([batch.support_y, batch.query_y], 1).double()
    assert x.shape == (8, 15) and x.min() >= -5 and x.max() <= 5
    basis = torch.stack([torch.sin(x), torch.cos(x)], -1)  # [T, K+Q, 2]
    coef = torch.linalg.lstsq(basis, y).solution  # [T, 2, 1]
    assert torch.allclose(basis @ coef, y, atol=1e-4)  # every task is one sine wave
    a, b = coef[:, 0, 0], coef[:, 1, 0]
    amplitude, phase = torch.hypot(a, b), torch.atan2(-b, a)
    assert ((amplitude > 0.1 - 1e-4) & (amplitude < 5 + 1e-4)).all()
    assert ((phase > -1e-4) & (phase < math.pi + 1e-4)).all()
    assert len(set(amplitude.round(decimals=3).tolist())) == 8  # each task its own amplitude
    assert len(set(phase.round(decimals=3).tolist())) == 8  # and phase


def test_the_sinusoid_network_is_the_papers_1_40_40_1_mlp():
    shapes = [tuple(p.shape) for p in Sinusoid().make_model().parameters()]
    assert shapes == [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]


@pytest.mark.parametrize("setting", ["shots", "queries"])
def test_the_sinusoid_suite_refuses_a_count_below_one_and_names_itself(setting):
    with pytest.raises(ZooError, match=f"^suite sinusoid: .*{setting}"):
        Sinusoid(**{setting: 0})


# -- leaderboard: average ranks, file names -------------------------------------------------

RANK_COLUMNS = ["label", "tables", "average rank"]
RANK_NOTE = ("Rank of each configuration in each table where it met all the others (ties share the "
             "average rank), averaged over those tables")


def test_average_ranks_of_nothing_or_of_a_single_shared_table_are_an_empty_frame_and_no_note():
    for board in (pd.DataFrame(),
                  summarize([record("x", "a", [0.9, 0.9]), record("x", "b", [0.8, 0.8]),
                             record("alone", "a", [0.5, 0.5])])):
        frame, note = average_ranks(board)
        assert frame.empty and list(frame.columns) == RANK_COLUMNS and note == ""


def test_the_average_rank_note_lists_every_table_and_configuration_left_out():
    records = [record(t, a, [v, v]) for t in ("x", "y") for a, v in (("a", 0.9), ("b", 0.8))]
    records += [record("x", "c", [0.1, 0.1]), record("y", "d", [0.1, 0.1]),
                record("p", "a", [0.5, 0.5]), record("q", "b", [0.5, 0.5])]
    frame, note = average_ranks(summarize(records))
    assert frame["label"].tolist() == ["a", "b"]
    assert note == (f"{RANK_NOTE}; left out, one configuration only: p — 100 steps, val every 50 steps; "
                    "q — 100 steps, val every 50 steps; not in every table, so not ranked: c, d.")


def test_the_average_rank_frame_has_a_column_per_table_and_no_other():
    records = [record(t, a, [v, v]) for t in ("x", "y") for a, v in (("a", 0.9), ("b", 0.8))]
    frame, note = average_ranks(summarize(records))
    titles = ["x — 100 steps, val every 50 steps", "y — 100 steps, val every 50 steps"]
    assert list(frame.columns) == ["label", *titles, "tables", "average rank"]
    assert list(frame.index) == [0, 1] and note == f"{RANK_NOTE}."


def test_a_table_title_becomes_a_lower_case_file_name_without_leading_or_trailing_dashes():
    assert slug(" Xmas — 5-way, 1-shot (X) ") == "xmas-5-way-1-shot-x"


@pytest.mark.parametrize(("budget", "title"), [
    ({"steps": 1000, "time": None, "val_every": 250}, "1000 steps, val every 250 steps"),
    ({"steps": None, "time": 300, "clock": "cpu", "val_every": 250, "val_every_s": 100},
     "300 CPU s, val every 250 steps or 100 CPU s"),
    ({"steps": 500, "time": 60.5, "clock": "wall", "val_every": None, "val_every_s": 30},
     "500 steps or 60.5 s, val every 30 s"),
    ({}, "no budget recorded"),
])
def test_a_budget_in_words(budget, title):
    assert budget_label(budget) == title


def test_a_budget_is_one_table_whatever_the_order_of_its_fields():
    first = record("b", "a", [0.9, 0.8], budget={"steps": 100, "time": None, "val_every": 50})
    second = record("b", "c", [0.5, 0.4], budget={"val_every": 50, "steps": 100})
    assert summarize([first, second])["table"].tolist() == ["b — 100 steps, val every 50 steps"] * 2


TITLE = "b — 100 steps, val every 50 steps"


def test_a_failed_run_joins_the_only_task_list_of_its_table():
    summary = summarize([record("b", "a", [0.9, 0.8]), record("b", "c", [], status="failed")])
    assert summary["table"].tolist() == [TITLE] * 2


def test_budgets_that_read_alike_and_several_task_lists_each_get_a_table_of_their_own():
    """Two budgets with one label (the clock shows only with a time limit): the second is told
    apart by its fields, also when the first is split by task list (failed runs: 'unknown')."""
    cpu = {"steps": 100, "val_every": 50, "clock": "cpu"}
    wall = {"steps": 100, "val_every": 50, "clock": "wall"}
    records = [record("b", "a", [0.9, 0.8], budget=cpu, digest="d1"),
               record("b", "c", [0.9, 0.8], budget=cpu, digest="d2"),
               record("b", "e", [], budget=cpu, status="failed"),
               record("b", "a", [0.7, 0.6], budget=wall, digest="d1")]
    tables = set(summarize(records)["table"])
    assert tables == {f"{TITLE} — test tasks d1", f"{TITLE} — test tasks d2", f"{TITLE} — test tasks unknown",
                      f'{TITLE} — budget {{"clock": "wall", "steps": 100, "val_every": 50}}'}


def test_records_without_resolved_hyperparameters_are_told_apart_by_their_specs():
    records = [record("b", "anil", [0.9, 0.8], key=f"k{lr}", spec={"algorithms": {"anil": {"inner_lr": lr}}})
               for lr in (0.1, 0.5)]
    assert sorted(summarize(records)["label"]) == ["anil (inner_lr=0.1)", "anil (inner_lr=0.5)"]


# -- model-data learners: the embedding, the training objective ------------------------------


def test_the_embedding_is_the_body_or_every_layer_before_the_head():
    conv = Conv4()
    assert embedding(conv) is conv.body
    two = torch.nn.Sequential(OrderedDict(body_layer=torch.nn.Linear(3, 4), head=torch.nn.Linear(4, 2)))
    x = torch.randn(5, 3)
    assert torch.equal(embedding(two)(x), two.body_layer(x))
    for model in (torch.nn.Sequential(OrderedDict(head=torch.nn.Linear(3, 2))), torch.nn.Linear(3, 2)):
        with pytest.raises(ZooError, match=f"but {type(model).__name__} has neither a submodule 'body' nor is it "
                                           "an nn.Sequential whose last layer is 'head'$"):
            embedding(model)


def test_relation_networks_train_on_the_mse_of_their_scores_against_one_hot_labels():
    """RelationNet's objective reads the way; the summed objective is the per-task mean × T."""
    suite = Hyperplanes()
    learner = RelationNet(suite.make_model(), suite)
    batch = suite.sample("train", 3, torch.Generator().manual_seed(0))
    total, loss = learner.chunk_objective(batch)
    scores = learner.logits(batch)
    expected = (scores - torch.nn.functional.one_hot(batch.query_y, 2).to(scores.dtype)).pow(2).mean() * 3
    assert torch.allclose(total, expected) and torch.equal(total, loss)


def test_an_algorithms_own_training_protocol_is_part_of_its_row():
    records = [record("b", "maml", [0.9, 0.8], key=f"k{ways}", hyperparameters={"inner_lr": 0.4},
                      spec={"training_protocol": {"maml": {"ways": ways}}}) for ways in (5, 20)]
    assert sorted(summarize(records)["label"]) == ["maml (train_ways=20)", "maml (train_ways=5)"]


SEVERAL_LISTS = ("The records of this benchmark, protocol and budget were tested on different task lists "
                 "(made by different versions of the task sampling): each list is a table of its own, and "
                 "only records of one list are compared. Re-run the older records with the current code.")


def test_rows_name_their_benchmark_protocol_and_budget_and_tables_split_by_task_list_say_why():
    summary = summarize([record("b", "a", [0.9, 0.8], digest="d1"), record("b", "c", [0.7, 0.6], digest="d2")])
    assert summary["protocol_hash"].tolist() == ["p1", "p1"]
    assert summary["budget"].tolist() == ["100 steps, val every 50 steps"] * 2
    assert all(notes == [SEVERAL_LISTS] for notes in summary["notes"])
    assert list(summary.index) == [0, 1] and "index" not in summary.columns


def test_one_configuration_is_one_row_whatever_the_order_of_its_hyperparameters():
    records = [record("b", "anil", [0.9, 0.8], seed=0, key="k0", hyperparameters={"inner_lr": 0.1, "steps": 5}),
               record("b", "anil", [0.7, 0.6], seed=1, key="k1", hyperparameters={"steps": 5, "inner_lr": 0.1})]
    (row,) = summarize(records).to_dict("records")
    assert row["label"] == "anil" and row["seeds"] == 2


def test_a_label_names_every_hyperparameter_that_differs():
    records = [record("b", "anil", [0.9, 0.8], key=f"k{lr}", hyperparameters={"inner_lr": lr, "steps": steps})
               for lr, steps in ((0.1, 5), (0.5, 10))]
    assert sorted(summarize(records)["label"]) == ["anil (inner_lr=0.1, steps=5)", "anil (inner_lr=0.5, steps=10)"]


def test_a_table_whose_records_name_no_metric_is_still_summarized():
    (row,) = summarize([record("b", "a", [], status="failed", metric=None)]).to_dict("records")
    assert row["metric"] is None and row["failed"] == 1


def test_a_row_lists_each_distinct_environment_once():
    (row,) = summarize([record("b", "a", [0.9, 0.8], seed=0, torch="2.9.9"),
                        record("b", "a", [0.7, 0.6], seed=1, torch="2.9.8")]).to_dict("records")
    assert row["torch"] == "2.9.8, 2.9.9" and row["notes"] == []
    assert row["seeds"] == 2 and row["failed"] == 0 and row["error"] is None


def test_of_two_records_of_one_seed_the_successful_then_the_dated_newest_counts():
    ok = record("b", "a", [0.9, 0.8], key="old", created="2026-01-01T00:00:00")
    failed = record("b", "a", [], key="failed", status="failed", created="2026-02-01T00:00:00")
    undated = record("b", "a", [0.1, 0.2], key="undated")
    for records in ([ok, failed], [failed, ok], [undated, ok], [ok, undated]):
        (row,) = summarize(records).to_dict("records")
        assert row["mean"] == pytest.approx(0.85) and row["seeds"] == 1 and len(row["notes"]) == 1


@pytest.mark.parametrize("seeds", [1, 2, 3])
def test_the_seed_spread_is_the_sample_sd_of_the_seed_means(seeds):
    per_seed = [[0.9, 0.7], [0.6, 0.5], [0.8, 0.75]][:seeds]
    (row,) = summarize([record("b", "a", values, seed=i) for i, values in enumerate(per_seed)]).to_dict("records")
    means = [sum(v) / len(v) for v in per_seed]
    if seeds == 1:
        assert math.isnan(row["seed_sd"])
    else:
        assert row["seed_sd"] == pytest.approx(statistics.stdev(means))
    assert row["family"] == "model-algorithm" and row["seeds"] == seeds


@pytest.mark.parametrize(("metric", "higher"), [("accuracy", True), ("mse", False)])
def test_a_record_without_higher_is_better_takes_it_from_its_metric(metric, higher):
    runs = [record("b", a, v, metric=metric) for a, v in (("a", [0.9, 0.8]), ("c", [0.5, 0.4]))]
    for run in runs:
        del run["higher_is_better"]
    rows = {row["algorithm"]: row for row in summarize(runs).to_dict("records")}
    assert rows["a"]["higher_is_better"] is higher and rows["a"]["rank"] == (1.0 if higher else 2.0)


def test_a_table_of_failed_runs_has_the_columns_of_any_other_and_no_numbers():
    failed = summarize([record("b", "a", [], status="failed")])
    ok = summarize([record("b", "a", [0.9, 0.8])])
    assert sorted(failed.columns) == sorted(ok.columns)
    (row,) = failed.to_dict("records")
    assert math.isnan(row["ci95"]) and row["test_tasks"] == 0 and row["curves"] == [] and row["failed"] == 1


def test_exactly_one_row_of_a_table_is_the_best():
    summary = summarize([record("b", "a", [0.9, 0.8]), record("b", "c", [0.5, 0.4]), record("b", "e", [0.1, 0.2])])
    assert summary["best"].tolist() == [True, False, False]
