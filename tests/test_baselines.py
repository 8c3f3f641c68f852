"""Baseline and Baseline++ (Chen et al., ICLR 2019) and the labelled batches they train on: the
vectorised test-time head fitting against one torch.optim.SGD per task, the cosine classifier,
pre-training on labelled batches, the suites' capability (Omniglot's real images, an image
folder), the conformance kit, and the harness, which trains them on labelled batches and refuses
them, before any run, on suites without any."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from metazoo.errors import ZooError
from metazoo.evaluation import train_batch
from metazoo.plugins.baseline import Baseline, fit_heads, linear_logits
from metazoo.plugins.baselinepp import BaselinePP, cosine_logits, reference_scale
from metazoo.tasks import LabelledBatch, TaskSuite, offers_labelled_batches, trains_on
from metazoo.testing import (
    GaussianClasses,
    assert_learner_conforms,
    assert_suite_conforms,
    check_suite,
)
from test_images import SPLIT_CLASSES, class_folders, colour
from test_omniglot import DATA, HAVE_DATA

pytestmark = pytest.mark.usefixtures("one_thread")

LEARNERS = [Baseline, BaselinePP]


def built(cls, suite=None, dtype=torch.float64, **hp):
    suite = suite or GaussianClasses()
    torch.manual_seed(0)
    return cls(suite.make_model(), suite, **hp).to(dtype), suite


# -- test-time fine-tuning: vectorised over tasks = one SGD optimiser per task ---------------------


def reference_head(cls, init, n_way, dim):
    """The head as the authors' code builds it: nn.Linear, or a weight-normalised nn.Linear
    without bias whose input is normalised (times the scale) for Baseline++."""
    if cls is Baseline:
        head = torch.nn.Linear(dim, n_way).double()
        with torch.no_grad():
            head.weight.copy_(init["weight"]), head.bias.copy_(init["bias"])
        return head, head
    linear = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(dim, n_way, bias=False).double())
    with torch.no_grad():
        linear.parametrizations.weight.original0.copy_(init["norm"][:, None])  # g
        linear.parametrizations.weight.original1.copy_(init["direction"])  # v

    def forward(z):
        return reference_scale(n_way) * linear(z / (z.norm(dim=-1, keepdim=True) + 1e-5))

    return forward, linear


@pytest.mark.parametrize("cls", LEARNERS)
def test_vectorised_head_fitting_equals_one_sgd_optimiser_per_task(cls):
    learner, suite = built(cls)
    batch = suite.sample("test", 3, torch.Generator().manual_seed(0)).to("cpu", torch.float64)
    c, n_way = learner.config, 3
    with torch.no_grad():
        support, query = learner.embed_tasks(batch)  # [T, S, D]: 6 support examples, minibatches of 4 and 2
    heads = learner.finetune(support, batch.support_y, n_way)
    generator = torch.Generator().manual_seed(c.finetune_seed)  # the draws finetune makes, in its order
    init = {n: p.double() for n, p in learner.init_head(n_way, support.shape[-1], generator).items()}
    orders = [torch.randperm(support.shape[1], generator=generator) for _ in range(c.finetune_epochs)]
    expected = []
    for t in range(batch.num_tasks):
        forward, module = reference_head(cls, init, n_way, support.shape[-1])
        sgd = torch.optim.SGD(module.parameters(), lr=c.finetune_lr, momentum=c.finetune_momentum,
                              dampening=c.finetune_dampening, weight_decay=c.finetune_weight_decay)
        for order in orders:
            for start in range(0, len(order), c.finetune_batch):
                index = order[start : start + c.finetune_batch]
                sgd.zero_grad()
                F.cross_entropy(forward(support[t, index]), batch.support_y[t, index]).backward()
                sgd.step()
        expected.append(forward(query[t]).detach())
        fitted = [p.detach().flatten() for p in module.parameters()]
        ours = [heads[n][t].flatten() for n in (("weight", "bias") if cls is Baseline else ("norm", "direction"))]
        for a, b in zip(ours, fitted, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
        assert not torch.allclose(fitted[-1], init["bias" if cls is Baseline else "direction"].flatten())  # it moved
    torch.testing.assert_close(learner.predict(batch), torch.stack(expected), rtol=1e-9, atol=1e-12)


def test_fit_heads_follows_torch_sgd_without_momentum_or_decay_too():
    torch.manual_seed(1)
    support, labels = torch.randn(2, 5, 3, dtype=torch.float64), torch.randint(2, (2, 5))
    init = {"weight": torch.randn(2, 2, 3, dtype=torch.float64), "bias": torch.randn(2, 2, dtype=torch.float64)}
    orders = torch.stack([torch.randperm(5) for _ in range(3)])
    heads = fit_heads(linear_logits, init, support, labels, orders, batch_size=2, lr=0.5)
    for t in range(2):
        w, b = (init[n][t].clone().requires_grad_(True) for n in ("weight", "bias"))
        sgd = torch.optim.SGD([w, b], lr=0.5)
        for order in orders:
            for index in order.split(2):
                sgd.zero_grad()
                F.cross_entropy(support[t, index] @ w.T + b, labels[t, index]).backward()
                sgd.step()
        torch.testing.assert_close(heads["weight"][t], w.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", LEARNERS)
def test_predictions_depend_on_the_task_only_not_on_its_batch(cls):
    learner, suite = built(cls, dtype=torch.float32)
    batch = suite.sample("test", 4, torch.Generator().manual_seed(3))
    together = learner.predict(batch)
    alone = torch.cat([learner.predict(batch[t]) for t in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    assert not together.requires_grad


# -- Baseline++'s cosine classifier ------------------------------------------------------------------


def test_cosine_classifier_is_a_scaled_cosine_with_a_learnt_norm_per_class():
    torch.manual_seed(0)
    z, v, g = torch.randn(7, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64), torch.rand(4) + 0.5
    logits = cosine_logits({"direction": v, "norm": g.double()}, z, scale=2.0)
    by_hand = 2.0 * g.double() * F.cosine_similarity(z[:, None], v[None], dim=-1)  # [7, 4]
    torch.testing.assert_close(logits, by_hand, rtol=1e-4, atol=0)  # up to the 1e-5 added to ‖z‖
    rescaled = cosine_logits({"direction": 5 * v, "norm": g.double()}, 3 * z, scale=2.0)
    torch.testing.assert_close(rescaled, logits, rtol=1e-4, atol=0)  # only directions matter
    assert (logits.abs() <= 2.0 * g.double() + 1e-12).all()
    plain = cosine_logits({"direction": v}, z, scale=10.0)  # class_norm = false: s · cos
    torch.testing.assert_close(plain, 10 * F.cosine_similarity(z[:, None], v[None], dim=-1), rtol=1e-4, atol=0)
    assert [reference_scale(n) for n in (5, 200, 201, 4400)] == [2.0, 2.0, 10.0, 10.0]


def test_baselinepp_scales_its_training_classifier_by_10_beyond_200_classes_and_a_head_by_2():
    learner, suite = built(BaselinePP, GaussianClasses(classes=300))
    params = dict(learner.classifier.items())
    assert set(params) == {"direction", "norm"} and params["direction"].shape[0] == 300
    torch.testing.assert_close(params["norm"], params["direction"].norm(dim=-1))  # weight norm's start
    z = torch.randn(4, params["direction"].shape[1], dtype=torch.float64)
    torch.testing.assert_close(learner.head_logits(params, z), cosine_logits(params, z, 10.0))
    head = {n: p.double() for n, p in learner.init_head(5, z.shape[1], torch.Generator().manual_seed(0)).items()}
    torch.testing.assert_close(learner.head_logits(head, z), cosine_logits(head, z, 2.0))
    plain, _ = built(BaselinePP, GaussianClasses(), class_norm=False, scale=4.0)
    assert set(dict(plain.classifier.items())) == {"direction"}


def test_baselines_classifier_starts_at_zero_bias_and_its_heads_as_nn_linear():
    learner, _ = built(Baseline)
    assert learner.classifier["bias"].abs().max() == 0  # the authors' code zeroes it
    head = learner.init_head(5, 16, torch.Generator().manual_seed(0))
    assert head["weight"].shape == (5, 16) and head["weight"].abs().max() <= 0.25  # U(±1/√16)
    assert head["bias"].abs().max() > 0


# -- pre-training on labelled batches -----------------------------------------------------------------


@pytest.mark.parametrize("cls", LEARNERS)
def test_training_on_labelled_batches_lowers_the_loss_on_unseen_examples(cls):
    learner, suite = built(cls, dtype=torch.float32, meta_batch=32, outer_lr=0.01)
    assert trains_on(learner) == "labelled"
    held_out = suite.sample_labelled("train", 256, torch.Generator().manual_seed(99))

    def loss() -> float:
        with torch.no_grad():
            return learner.chunk_objective(held_out)[0].item() / len(held_out)

    before = loss()
    losses = [learner.meta_train_step(train_batch(suite, 0, step, 32, labelled=True))["loss"] for step in range(60)]
    assert sum(losses[-10:]) < 0.6 * sum(losses[:10]), losses
    assert loss() < 0.6 * before


def test_chunks_of_a_labelled_batch_pool_to_the_whole_batch_gradient():
    suite = GaussianClasses()
    batch = suite.sample_labelled("train", 12, torch.Generator().manual_seed(0)).to("cpu", torch.float64)
    grads = []
    for chunk_size in (None, 5):
        learner, _ = built(Baseline, suite, chunk_size=chunk_size)
        learner.meta_gradient(batch)  # the model's norm-free MLP: chunks change nothing but the sums
        grads.append([p.grad.clone() for p in learner.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_task_batch_is_refused_by_a_labelled_learner():
    learner, suite = built(Baseline)
    with pytest.raises(ZooError, match="trains on labelled batches.*LabelledBatch, got TaskBatch"):
        learner.meta_train_step(suite.sample("train", 2, torch.Generator().manual_seed(0)))


# -- the suites' capability ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def omniglot_suites():
    if not HAVE_DATA:
        pytest.skip(f"the Omniglot zips are not in {DATA}")
    from metazoo.plugins.omniglot import Omniglot

    return {mode: Omniglot(data_dir=str(DATA), ways=5, shots=1, queries=2, classes=mode)
            for mode in ("rotations", "characters")}


@pytest.mark.parametrize("mode", ["rotations", "characters"])
def test_omniglot_labels_its_real_images_by_character_and_rotation(omniglot_suites, mode):
    suite = omniglot_suites[mode]
    assert_suite_conforms(suite)  # with the labelled-batch checks
    assert [suite.num_classes(s) for s in ("train", "val", "test")] == [4400, 400, 1692]  # 4 × characters
    batch = suite.sample_labelled("val", 12, torch.Generator().manual_seed(5))
    images, _ = suite.data
    table = suite.classes("val")  # class c: character table[c, 0] turned table[c, 1] quarter turns
    for x, y in zip(batch.x, batch.y):
        character, turns = table[y].tolist()
        drawings = torch.rot90(images[character].float() / 255, turns, dims=(-2, -1))  # [20, S, S]
        assert any(torch.equal(x[0], d) for d in drawings), f"example of class {int(y)} is not its image"
    assert batch.x.shape == (12, 1, 28, 28) and len({int(t) for t in table[batch.y, 1]}) > 1  # rotated ones too


@pytest.mark.parametrize("layout", [class_folders])
def test_an_image_folder_labels_each_image_by_its_class(tmp_path, monkeypatch, layout):
    monkeypatch.setenv("METAZOO_CACHE", str(tmp_path / "cache"))
    from metazoo.plugins.images import Images

    suite = Images(data_dir=str(layout(tmp_path / "data")), ways=3, shots=1, queries=2, image_size=16)
    suite.prepare()
    assert_suite_conforms(suite)
    for split, classes in SPLIT_CLASSES.items():
        assert suite.num_classes(split) == classes
        batch = suite.sample_labelled(split, 30, torch.Generator().manual_seed(0))
        greys = [round(float(x.mean()) * 255) for x in batch.x]  # one grey level per class (test_images)
        assert greys == [colour(split, int(y)) for y in batch.y]
        assert set(batch.y.tolist()) == set(range(classes))  # 30 draws meet every class


@pytest.mark.parametrize("name", ["sinusoid", "hyperplanes"])
def test_suites_without_global_classes_refuse_labelled_batches_by_name(host, name):
    suite = host.suites.get(name).factory()
    assert not offers_labelled_batches(suite)
    reason = "a regression suite has no classes" if name == "sinusoid" else "it does not implement them"
    with pytest.raises(ZooError, match=rf"suite {name} offers no labelled batches \({reason}\).*sample_labelled"):
        suite.sample_labelled("train", 4, torch.Generator())
    with pytest.raises(ZooError, match=f"suite {name} offers no labelled batches"):
        suite.num_classes("train")
    assert [f.check for f in check_suite(suite) if "labelled" in f.check] == []  # not checked for them
    with pytest.raises(ZooError, match=f"baseline pre-trains a classifier .* but suite {name} is a regression"
                       if name == "sinusoid" else f"baseline pre-trains a classifier .* but suite {name} offers none"):
        Baseline(suite.make_model(), suite)


# -- the conformance kit ------------------------------------------------------------------------------


class OutOfRange(GaussianClasses):
    def sample_labelled(self, split, batch_size, generator):
        batch = super().sample_labelled(split, batch_size, generator)
        return LabelledBatch(batch.x, batch.y + self.classes)


class GlobalRandom(GaussianClasses):
    def sample_labelled(self, split, batch_size, generator):
        return super().sample_labelled(split, batch_size, torch.Generator().manual_seed(int(torch.randint(9, ()))))


class AnySplit(GaussianClasses):
    def sample_labelled(self, split, batch_size, generator):
        return super().sample_labelled("train" if split == "training" else split, batch_size, generator)


class WrongShape(GaussianClasses):
    def sample_labelled(self, split, batch_size, generator):
        batch = super().sample_labelled(split, batch_size, generator)
        return LabelledBatch(batch.x[:, :-1], batch.y)


@pytest.mark.parametrize(("suite", "check"), [
    (OutOfRange(), "labelled batches follow the contract"),
    (WrongShape(), "labelled batches follow the contract"),
    (GlobalRandom(), "sample_labelled is deterministic and ignores the global RNG"),
    (AnySplit(), "sample_labelled refuses an unknown split"),
])
def test_a_broken_labelled_suite_fails_the_check_it_breaks(suite, check):
    assert_suite_conforms(GaussianClasses())
    assert [f.check for f in check_suite(suite)] == [check]


@pytest.mark.parametrize("cls", LEARNERS)
def test_the_learners_pass_the_kit(cls):
    assert_learner_conforms(cls, GaussianClasses())


def test_zoo_check_passes_both_on_the_kits_labelled_suite(zoo):
    code, stdout, stderr = zoo("check", "baseline", "baselinepp")
    assert code == 0, stdout + stderr
    assert stdout.strip().endswith("2 of 2 passed every check")


def test_a_suite_not_subclassing_tasksuite_offers_labelled_batches_by_having_the_method():
    class Duck:
        name, kind = "duck", "classification"

        def sample_labelled(self, split, batch_size, generator):
            return None

    assert offers_labelled_batches(Duck()) and not offers_labelled_batches(object())
    assert offers_labelled_batches(GaussianClasses()) and TaskSuite.sample_labelled is not GaussianClasses.sample_labelled


# -- the harness ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("suite", "described"), [("sinusoid", "sinusoid (regression)"),
                                                   ("hyperplanes", "hyperplanes (classification)")])
def test_zoo_bench_refuses_them_on_a_suite_without_labelled_batches_before_any_run(zoo, tmp_path, suite, described):
    out = tmp_path / "out"
    code, stdout, stderr = zoo("bench", "--algos", "baseline,baselinepp", "--suite", suite, "--out", str(out))
    assert code == 2, stderr
    line = stderr.strip()
    assert "\n" not in line and "Traceback" not in stderr
    assert "baseline trains on labelled batches: it takes only classification suites that offer them" in line
    assert "baselinepp trains on labelled batches" in line and "TaskSuite.sample_labelled and num_classes" in line
    assert line.endswith(f"and the benchmarks' suites are {described}")
    assert not any(out.rglob("*.json"))  # nothing ran
    code, stdout, _ = zoo("bench", "--suite", suite, "--out", str(out), "--dry-run")  # every algorithm: skipped
    assert code == 0 and "baseline" not in stdout


def test_zoo_bench_trains_them_on_labelled_batches_and_tests_them_on_tasks(zoo, tmp_path, monkeypatch):
    from metazoo.plugins.images import Images

    monkeypatch.setenv("METAZOO_CACHE", str(tmp_path / "cache"))
    calls = []
    original = Images.sample_labelled

    def counted(self, split, batch_size, generator):
        calls.append((split, batch_size))
        return original(self, split, batch_size, generator)

    monkeypatch.setattr(Images, "sample_labelled", counted)
    root = class_folders(tmp_path / "data", size=16)
    spec = tmp_path / "folder.toml"
    spec.write_text('suite = "images"\n[protocol]\nways = 3\nshots = 1\nqueries = 2\nimage_size = 16\n'
                    "[evaluation]\ntest_tasks = 6\nval_tasks = 3\n[training]\nsteps = 3\nval_every = 2\n"
                    "[algorithms.baseline]\nmeta_batch = 8\nfinetune_epochs = 10\n"
                    "[algorithms.baselinepp]\nmeta_batch = 8\nfinetune_epochs = 10\n"
                    "[algorithms.protonet]\nmeta_batch = 2\n")
    out = tmp_path / "out"
    code, stdout, stderr = zoo("bench", "--benchmark", str(spec), "--data-dir", str(root), "--algos",
                               "baseline,baselinepp,protonet", "--out", str(out), "-q")
    assert code == 0, stderr
    records = {r["algorithm"]: r for r in (json.loads(p.read_text()) for p in (out / "folder" / "runs").glob("*.json"))}
    assert set(records) == {"baseline", "baselinepp", "protonet"}
    for name in ("baseline", "baselinepp"):
        record = records[name]
        assert record["status"] == "ok", record.get("error")
        assert record["family"] == "model-data" and record["hyperparameters"]["meta_batch"] == 8
        assert record["train"]["trains_on"] == "labelled" and record["train"]["examples"] == 3 * 8
        assert record["train"]["tasks"] == 0 and len(record["test"]["per_task"]) == 6
        assert [v["step"] for v in record["validation"]] == [2, 3]
    assert records["protonet"]["train"]["tasks"] == 3 * 2 and "trains_on" not in records["protonet"]["train"]
    assert calls.count(("train", 8)) == 2 * 3  # each step of both learners, and nothing else trained on them
    assert "baselinepp" in stdout


# -- data-parallel pre-training -----------------------------------------------------------------------


def _data_parallel_setup():
    learner, suite = built(Baseline, meta_batch=5, outer_optimizer="sgd", outer_lr=0.5)
    return learner, [train_batch(suite, 0, step, 5, labelled=True).to("cpu", torch.float64) for step in range(3)]


def _data_parallel_worker(rank: int, world: int, init_method: str, out: str) -> None:
    import torch.distributed as dist
    from metazoo.train import data_parallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        learner, batches = _data_parallel_setup()
        data_parallel(learner, rank, world)
        losses = [learner.meta_train_step(batch)["loss"] for batch in batches]
        torch.save({"state": learner.state_dict(), "losses": losses}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_pre_train_as_one_on_the_whole_labelled_batch(tmp_path, monkeypatch):
    """Each rank trains on its share of the examples (3 + 2 of 5); the pooled gradient is the mean
    over all of them (the kit's MLP has no batch statistics, which shards would change)."""
    import multiprocessing

    for name, value in {"GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(name, value)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_data_parallel_worker,
                                 args=(rank, 2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path)))
                 for rank in range(2)]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join(120)
        assert [p.exitcode for p in processes] == [0, 0]
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
            process.join()
    reference, batches = _data_parallel_setup()
    losses = [reference.meta_train_step(batch)["loss"] for batch in batches]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert ranks[0]["losses"] == ranks[1]["losses"] == pytest.approx(losses, rel=1e-12, abs=0)
    for name, expected in reference.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][name], expected, rtol=1e-12, atol=1e-14)
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name])
