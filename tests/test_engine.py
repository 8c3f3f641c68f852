"""Correctness of the functional engine: the vectorised meta-gradient of every model-algorithm
learner equals a plain per-task reference loop (tests/reference.py), the looped execution equals
the vectorised one, chunking a meta-batch changes nothing, and evaluation adapts without a graph.

Everything runs in float64 so that agreement to ~1e-10 is meaningful. Learners are built through
the plugin registry, as the harness builds them.
"""

from __future__ import annotations

import metazoo
import pytest
import torch
from reference import adapt, leaf_copy, meta_gradient, reptile_pseudo_gradient
from torch.func import functional_call

pytestmark = pytest.mark.usefixtures("one_thread")


REL = 1e-10  # relative tolerance of float64 comparisons
ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd", "anil")
SUITES = ("sinusoid", "hyperplanes")
INNER_LR = {"sinusoid": 0.05, "hyperplanes": 0.5}  # large enough for second-order terms to matter

# (algorithm, extra hyperparameters, whether the reference is first order); None for Reptile,
# whose pseudo-gradient has no order.
GRADIENT_CASES = [
    ("maml", {}, False),
    ("maml", {"first_order": True}, True),
    ("fomaml", {}, True),
    ("metasgd", {}, False),
    ("metasgd", {"first_order": True}, True),
    ("anil", {}, False),
    ("anil", {"first_order": True}, True),
    ("reptile", {}, None),
]


def build(host, algorithm, suite_name, seed=0, **hp):
    """A float64 learner on the suite's default backbone, built through the registry."""
    torch.manual_seed(seed)
    suite = host.suites.get(suite_name).factory()
    model = suite.make_model().double()
    return host.algorithms.get(algorithm).factory(model, suite, **hp), suite


def sample(suite, num_tasks=5, seed=0) -> metazoo.TaskBatch:
    return suite.sample("train", num_tasks, torch.Generator().manual_seed(seed)).to("cpu", torch.float64)


def snapshot(learner) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in learner.named_parameters()}


def inner_lrs(learner) -> dict[str, torch.Tensor]:
    """Meta-SGD's α by model-parameter name (its ParameterDict spells dots as '__')."""
    return {name: learner.inner_lrs[name.replace(".", "__")] for name, _ in learner.model.named_parameters()}


def reference(algorithm, learner, suite, batch, steps, lr, first_order):
    """The expected mean meta-gradient, by learner parameter name, and the mean query loss."""
    model = learner.model
    params = dict(model.named_parameters())
    tensors = batch.tensors()
    if algorithm == "reptile":
        grads = reptile_pseudo_gradient(suite.kind, model, params, tensors, steps=steps, lr=lr)
        return {"model." + n: g for n, g in grads.items()}, None
    lrs = inner_lrs(learner) if algorithm == "metasgd" else lr
    names = [n for n in params if n.startswith("head.")] if algorithm == "anil" else None
    grads, lr_grads, loss = meta_gradient(
        suite.kind, model, params, tensors, steps=steps, lrs=lrs, names=names, first_order=first_order
    )
    expected = {"model." + n: g for n, g in grads.items()}
    expected.update({"inner_lrs." + n.replace(".", "__"): g for n, g in lr_grads.items()})
    return expected, loss


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, rel: float = REL) -> None:
    """max |actual − expected| ≤ rel · max |expected| (a relative test robust to tiny entries)."""
    assert actual.shape == expected.shape, what
    error = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert error <= rel * scale, f"{what}: max error {error:.3e} vs scale {scale:.3e}"


def assert_same_params(a: dict, b: dict, what: str, rel: float = REL) -> None:
    assert a.keys() == b.keys(), what
    for name in a:
        assert_close(a[name], b[name], f"{what}: {name}", rel)


# -- vectorised = plain per-task reference loop ---------------------------------------------------


@pytest.mark.parametrize("suite_name", SUITES)
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize(
    ("algorithm", "extra", "first_order"),
    GRADIENT_CASES,
    ids=[f"{a}-{'ref' if fo is None else 'fo' if fo else 'so'}" for a, _, fo in GRADIENT_CASES],
)
def test_vmap_step_equals_reference_meta_gradient(host, algorithm, extra, first_order, steps, suite_name):
    """An outer SGD step at rate 1 moves every meta-parameter by exactly −(mean meta-gradient)."""
    lr = INNER_LR[suite_name]
    learner, suite = build(
        host, algorithm, suite_name, inner_steps=steps, inner_lr=lr, execution="vmap",
        outer_optimizer="sgd", outer_lr=1.0, **extra,
    )
    batch = sample(suite, num_tasks=4)
    expected, expected_loss = reference(algorithm, learner, suite, batch, steps, lr, first_order)
    before = snapshot(learner)
    stats = learner.meta_train_step(batch)
    after = snapshot(learner)
    assert before.keys() == expected.keys()  # every meta-parameter is covered (Meta-SGD's α too)
    for name, grad in expected.items():
        assert grad.abs().max() > 0, f"reference gradient of {name} vanishes: a useless test"
        assert_close(before[name] - after[name], grad, name)
    if expected_loss is not None:
        assert stats["loss"] == pytest.approx(expected_loss, rel=REL)


@pytest.mark.parametrize("suite_name", SUITES)
@pytest.mark.parametrize("algorithm", ["maml", "metasgd", "anil"])
def test_second_order_terms_matter_in_these_tests(host, algorithm, suite_name):
    """Guard for the test above: in its setting the first- and second-order meta-gradients
    differ clearly, so confusing them could not pass at 1e-10."""
    lr = INNER_LR[suite_name]
    learner, suite = build(host, algorithm, suite_name, inner_lr=lr)
    batch = sample(suite)
    second, _ = reference(algorithm, learner, suite, batch, 1, lr, first_order=False)
    first, _ = reference(algorithm, learner, suite, batch, 1, lr, first_order=True)
    gap = max(((second[n] - first[n]).abs().max() / second[n].abs().max()).item() for n in second)
    assert gap > 1e-4


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_chunk_meta_gradient_is_a_sum_over_tasks(host, algorithm):
    """``chunk_meta_gradient`` returns per-parameter sums over the chunk's tasks, in
    ``learner.parameters()`` order, and the loss sum."""
    steps, lr = 2, INNER_LR["sinusoid"]
    learner, suite = build(host, algorithm, "sinusoid", inner_steps=steps, inner_lr=lr, execution="vmap")
    batch = sample(suite, num_tasks=4)
    first_order = {"fomaml": True, "reptile": None}.get(algorithm, False)
    expected, expected_loss = reference(algorithm, learner, suite, batch, steps, lr, first_order)
    grads, loss_sum = learner.chunk_meta_gradient(batch)
    names = [name for name, _ in learner.named_parameters()]
    assert len(grads) == len(names)
    for name, grad in zip(names, grads):
        assert_close(grad, 4 * expected[name], name)
    if expected_loss is not None:
        assert loss_sum.item() == pytest.approx(4 * expected_loss, rel=REL)


# -- execution modes and chunking -----------------------------------------------------------------


@pytest.mark.parametrize("suite_name", SUITES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_loop_execution_equals_vmap(host, algorithm, suite_name):
    """The per-task loop and the vectorised execution give the same meta-gradients, losses and
    predictions (second order, 3 inner steps)."""
    hp = {"inner_steps": 3, "inner_lr": INNER_LR[suite_name]}
    results = {}
    for execution in ("vmap", "loop"):
        learner, suite = build(host, algorithm, suite_name, execution=execution, **hp)
        assert learner.execution == execution
        grads, loss_sum = learner.chunk_meta_gradient(sample(suite))
        results[execution] = grads, loss_sum.detach(), learner.predict(sample(suite))
    (grads_v, loss_v, pred_v), (grads_l, loss_l, pred_l) = results["vmap"], results["loop"]
    for i, (gv, gl) in enumerate(zip(grads_v, grads_l)):
        assert_close(gl, gv, f"parameter {i}")
    assert loss_l.item() == pytest.approx(loss_v.item(), rel=REL)
    assert_close(pred_l, pred_v, "predictions")


@pytest.mark.parametrize("chunk_size", [2, 1, 7])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_chunked_step_equals_unchunked(host, algorithm, chunk_size):
    """Chunks over 5 tasks (2 does not divide 5; 7 exceeds it) pool to the same mean
    meta-gradient, hence the same outer SGD step, as one chunk."""
    hp = {"inner_steps": 2, "inner_lr": INNER_LR["sinusoid"], "outer_optimizer": "sgd", "outer_lr": 1.0}
    params, losses = {}, {}
    for size in (None, chunk_size):
        learner, suite = build(host, algorithm, "sinusoid", chunk_size=size, **hp)
        losses[size] = learner.meta_train_step(sample(suite, num_tasks=5))["loss"]
        params[size] = snapshot(learner)
    assert_same_params(params[chunk_size], params[None], f"chunks of {chunk_size} vs one")
    assert losses[chunk_size] == pytest.approx(losses[None], rel=REL)


# -- evaluation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suite_name", SUITES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_predict_adapts_without_a_graph(host, algorithm, suite_name):
    """``predict`` adapts with ``eval_inner_steps`` plain steps (not ``inner_steps``) and returns
    values that carry no autograd graph; the meta-parameters get no gradient."""
    lr = INNER_LR[suite_name]
    learner, suite = build(host, algorithm, suite_name, inner_steps=1, eval_inner_steps=3, inner_lr=lr)
    batch = sample(suite, num_tasks=3)
    prediction = learner.predict(batch)
    assert not prediction.requires_grad
    assert prediction.grad_fn is None
    assert all(p.grad is None for p in learner.parameters())

    model = learner.model
    params = leaf_copy(dict(model.named_parameters()))
    lrs = leaf_copy(inner_lrs(learner)) if algorithm == "metasgd" else lr
    names = [n for n in params if n.startswith("head.")] if algorithm == "anil" else None
    expected = []
    for sx, sy, qx, _ in zip(*batch.tensors()):
        fast = adapt(
            suite.kind, model, params, sx, sy, steps=3, lrs=lrs, names=names, create_graph=False
        )
        expected.append(functional_call(model, fast, (qx,)).detach())
    assert_close(prediction, torch.stack(expected), "predictions")


def test_execution_rule_loops_only_over_per_task_convolutions_on_cpu():
    from metazoo.engine import choose_execution
    from metazoo.models import MLP, Conv4

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    conv, mlp = Conv4(hidden=4), MLP(1, 8, 1)
    assert choose_execution("auto", conv, cpu) == "loop"
    assert choose_execution("auto", conv, cpu, per_task_weights=False) == "vmap"
    assert choose_execution("auto", conv, cuda) == "vmap"
    assert choose_execution("auto", mlp, cpu) == "vmap"
    assert choose_execution("loop", mlp, cpu) == "loop"
