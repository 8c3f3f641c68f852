"""The five built-in model-algorithm meta-learners, each built through the plugin registry:
what is particular to each (Reptile's step, Meta-SGD's learnt learning rates, ANIL's head-only
inner loop), that each one learns on sinusoid regression and on hyperplanes classification,
and that bad hyperparameters get a clear error.
"""

from __future__ import annotations

import metazoo
import pytest
import torch
from metazoo.errors import ZooError
from metazoo.models import MLP
from metazoo.tasks import task_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd", "anil")


def build(host, algorithm, suite, seed=0, model=None, dtype=torch.float64, **hp):
    """A learner on ``model`` (default: the suite's backbone), built through the registry."""
    entry = host.algorithms.get(algorithm)
    assert entry.family == "model-algorithm"
    torch.manual_seed(seed)
    model = (suite.make_model() if model is None else model).to(dtype)
    return entry.factory(model, suite, **hp)


def make_suite(host, name, **protocol):
    return host.suites.get(name).factory(**protocol)


def sample(suite, num_tasks=5, seed=0, split="train", dtype=torch.float64) -> metazoo.TaskBatch:
    return suite.sample(split, num_tasks, torch.Generator().manual_seed(seed)).to("cpu", dtype)


def snapshot(module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def sgd_by_hand(model, params, x, y, steps, lr):
    """``steps`` plain gradient-descent steps on the mean squared error, with no graph."""
    phi = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
    for _ in range(steps):
        out = torch.func.functional_call(model, phi, (x,))
        grads = torch.autograd.grad(((out - y) ** 2).mean(), list(phi.values()))
        phi = {name: (p - lr * g).detach().requires_grad_(True) for (name, p), g in zip(phi.items(), grads)}
    return {name: p.detach() for name, p in phi.items()}


# -- Reptile ----------------------------------------------------------------------------------


def test_reptile_step_equals_its_formula(host):
    """θ_new = θ + ε · mean_i(φ̃_i − θ), φ̃_i after k SGD steps on task i's support
    (Nichol et al. 2018, Algorithm 2), with k = 3 and ε = 0.5."""
    k, epsilon, inner_lr = 3, 0.5, 0.02
    suite = make_suite(host, "sinusoid")
    learner = build(host, "reptile", suite, inner_steps=k, inner_lr=inner_lr, outer_optimizer="sgd", outer_lr=epsilon)
    batch = sample(suite, num_tasks=5)
    theta = {name: p.detach().clone() for name, p in learner.model.named_parameters()}
    phis = [sgd_by_hand(learner.model, theta, sx, sy, k, inner_lr) for sx, sy, _, _ in zip(*batch.tensors())]
    learner.meta_train_step(batch)
    for name, p in learner.model.named_parameters():
        mean_delta = torch.stack([phi[name] - theta[name] for phi in phis]).mean(0)
        expected = theta[name] + epsilon * mean_delta
        assert mean_delta.abs().max() > 1e-6, f"{name}: the tasks moved nothing; a useless test"
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-12, msg=name)


def adam_by_hand(model, params, x, y, steps, lr, batch, second=None, steps_done=0):
    """The paper's code's inner loop with torch's Adam (β₁ = 0) on consecutive slices of ``batch``
    support examples, cycling; fresh, or from the second moments ``second`` after ``steps_done``
    steps. Returns the adapted parameters and Adam's second moments after the loop."""
    phi = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
    adam = torch.optim.Adam(phi.values(), lr=lr, betas=(0.0, 0.999), eps=1e-8)
    if second is not None:
        for name, p in phi.items():
            adam.state[p] = {"step": torch.tensor(float(steps_done)), "exp_avg": torch.zeros_like(p),
                             "exp_avg_sq": second[name].clone()}
    order = torch.arange(x.shape[0]).repeat(steps * batch // x.shape[0] + 1)
    for step in range(steps):
        rows = order[step * batch : (step + 1) * batch]
        out = torch.func.functional_call(model, phi, (x[rows],))
        adam.zero_grad()
        ((out - y[rows]) ** 2).mean().backward()
        adam.step()
    return ({name: p.detach() for name, p in phi.items()},
            {name: adam.state[p]["exp_avg_sq"].detach() for name, p in phi.items()})


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_reptile_with_the_papers_inner_adam_on_minibatches_equals_a_plain_loop(host, execution):
    """Inner Adam (β₁ = 0), fresh on every task, on slices of 3 of the 10 support points, 5 steps
    (so the slices wrap around), then the Reptile step; and at test time the eval batch and step
    count."""
    k, epsilon, inner_lr = 5, 0.5, 0.01
    suite = make_suite(host, "sinusoid")
    learner = build(host, "reptile", suite, inner_steps=k, inner_lr=inner_lr, outer_lr=epsilon,
                    inner_optimizer="adam", inner_adam_state="fresh", inner_batch=3, eval_inner_batch=4,
                    eval_inner_steps=2, execution=execution)
    learner.meta_train_step(sample(suite, num_tasks=4, seed=2))  # a fresh state: no step carries over
    batch = sample(suite, num_tasks=4)
    theta = snapshot(learner.model)
    phis = [adam_by_hand(learner.model, theta, sx, sy, k, inner_lr, 3)[0] for sx, sy, _, _ in zip(*batch.tensors())]
    learner.meta_train_step(batch)
    for name, p in learner.model.named_parameters():
        mean_delta = torch.stack([phi[name] - theta[name] for phi in phis]).mean(0)
        assert mean_delta.abs().max() > 1e-4, name
        torch.testing.assert_close(p.detach(), theta[name] + epsilon * mean_delta, rtol=1e-10, atol=1e-12, msg=name)
    theta = snapshot(learner.model)
    test = sample(suite, num_tasks=3, seed=1, split="test")
    expected = torch.stack([
        torch.func.functional_call(learner.model, adam_by_hand(learner.model, theta, sx, sy, 2, inner_lr, 4)[0], (qx,))
        for sx, sy, qx, _ in zip(*test.tensors())])
    torch.testing.assert_close(learner.predict(test), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_reptile_carries_its_inner_adam_state_from_task_to_task_as_the_papers_code(host, execution):
    """The paper's code restores only the weights between tasks, so Adam's second moments and step
    count run on. Every task of a meta-batch starts from the carried state; after the step it is
    β₂^{nk} v + (Σ_{i<n} β₂^{ik}) · mean_i (v_i − β₂^k v) at step count t + nk; evaluation starts
    from it and leaves it as it was."""
    k, n, epsilon, inner_lr = 3, 4, 0.5, 0.01
    suite = make_suite(host, "sinusoid")
    learner = build(host, "reptile", suite, inner_steps=k, inner_lr=inner_lr, outer_lr=epsilon,
                    inner_optimizer="adam", inner_batch=3, eval_inner_steps=2, execution=execution)
    assert learner.config.inner_adam_state == "carried"  # the paper's, by default
    second = {name: torch.zeros_like(p) for name, p in learner.model.named_parameters()}
    done, decay = 0, 0.999**k
    for seed in (0, 1):  # the second meta-batch starts from a carried state
        batch = sample(suite, num_tasks=n, seed=seed)
        theta = snapshot(learner.model)
        runs = [adam_by_hand(learner.model, theta, sx, sy, k, inner_lr, 3, second, done)
                for sx, sy, _, _ in zip(*batch.tensors())]
        learner.meta_train_step(batch)
        for name, p in learner.model.named_parameters():
            mean_delta = torch.stack([phi[name] - theta[name] for phi, _ in runs]).mean(0)
            torch.testing.assert_close(p.detach(), theta[name] + epsilon * mean_delta, rtol=1e-10, atol=1e-12)
        second = {name: decay**n * v + sum(decay**i for i in range(n))
                  * torch.stack([after[name] - decay * v for _, after in runs]).mean(0)
                  for name, v in second.items()}
        done += n * k
        for name, v in learner.adam_state.second_moments().items():
            assert v.abs().max() > 0, name
            torch.testing.assert_close(v, second[name], rtol=1e-10, atol=1e-14, msg=name)
        assert int(learner.adam_state.steps) == done
    theta = snapshot(learner.model)
    carried = {name: v.clone() for name, v in learner.adam_state.second_moments().items()}
    test = sample(suite, num_tasks=3, seed=1, split="test")
    size = test.support_x.shape[1]
    expected = torch.stack([
        torch.func.functional_call(
            learner.model, adam_by_hand(learner.model, theta, sx, sy, 2, inner_lr, size, second, done)[0], (qx,))
        for sx, sy, qx, _ in zip(*test.tensors())])
    torch.testing.assert_close(learner.predict(test), expected, rtol=1e-10, atol=1e-12)
    for name, v in learner.adam_state.second_moments().items():  # evaluation left the state alone
        torch.testing.assert_close(v, carried[name], rtol=0, atol=0)
    assert int(learner.adam_state.steps) == done
    resumed = build(host, "reptile", suite, inner_optimizer="adam")  # the state is checkpointed with the learner
    resumed.load_state_dict(learner.state_dict())
    assert int(resumed.adam_state.steps) == done
    torch.testing.assert_close(resumed.adam_state.second_moments(), carried, rtol=0, atol=0)


def test_reptile_refuses_to_compile_a_carried_adam_state(host):
    with pytest.raises(ZooError, match="inner_adam_state"):
        build(host, "reptile", make_suite(host, "sinusoid"), inner_optimizer="adam", compile=True)
    build(host, "reptile", make_suite(host, "sinusoid"), inner_optimizer="adam", inner_adam_state="fresh",
          compile=True)


def test_reptile_defaults_are_its_papers(host):
    """Reptile's outer step is plain SGD at rate ε (not Adam) and never second order."""
    learner = build(host, "reptile", make_suite(host, "sinusoid"))
    assert learner.config.outer_optimizer == "sgd"
    assert learner.config.first_order
    assert isinstance(learner.optimizer, torch.optim.SGD)


# -- Meta-SGD ---------------------------------------------------------------------------------


def test_metasgd_inner_lrs_receive_gradients_and_change(host):
    suite = make_suite(host, "sinusoid")
    learner = build(host, "metasgd", suite, outer_optimizer="sgd", outer_lr=0.1)
    lrs = dict(learner.inner_lrs.named_parameters())
    assert lrs.keys() == {name.replace(".", "__") for name, _ in learner.model.named_parameters()}
    for name, p in learner.model.named_parameters():  # one rate per parameter entry
        assert lrs[name.replace(".", "__")].shape == p.shape
    before = snapshot(learner.inner_lrs)
    learner.meta_train_step(sample(suite, num_tasks=10))
    for name, alpha in learner.inner_lrs.named_parameters():
        change = alpha.detach() - before[name]
        assert change.abs().max() > 0, f"α {name} did not change"
        if change.numel() > 1:
            assert torch.unique(change).numel() > 1, f"α {name} changed by one scalar, not per entry"


def test_metasgd_uses_its_learnt_rates_not_inner_lr(host):
    """The inner step is −α ∘ ∇L with the learnt α; the ``inner_lr`` hyperparameter plays no part."""
    suite = make_suite(host, "sinusoid")
    batch = sample(suite, num_tasks=1)
    sx, sy = batch.support_x[0], batch.support_y[0]
    results = []
    for inner_lr in (0.01, 0.5):
        learner = build(host, "metasgd", suite, inner_lr=inner_lr)
        theta = snapshot(learner.model)
        adapted = learner.adapt(sx, sy, 1, create_graph=False)
        results.append({n: (adapted[n] - theta[n]).detach() for n in theta})
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=0, atol=0)


# -- ANIL -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suite_name", ["sinusoid", "hyperplanes"])
def test_anil_inner_loop_leaves_the_body_untouched(host, suite_name):
    suite = make_suite(host, suite_name)
    learner = build(host, "anil", suite, inner_steps=3, inner_lr=0.1)
    batch = sample(suite, num_tasks=1)
    theta = dict(learner.model.named_parameters())
    for create_graph in (False, True):
        adapted = learner.adapt(batch.support_x[0], batch.support_y[0], 3, create_graph)
        assert adapted.keys() == theta.keys()
        for name, p in theta.items():
            if name.startswith("head."):
                assert not torch.equal(adapted[name], p), f"head parameter {name} was not adapted"
            else:
                assert torch.equal(adapted[name], p), f"body parameter {name} was adapted"


def test_anil_outer_step_updates_the_body_through_the_head(host):
    """The body is meta-learnt by the outer loop alone; its second-order meta-gradient (through
    the head's inner steps) differs from the first-order one."""
    suite = make_suite(host, "sinusoid")
    batch = sample(suite, num_tasks=5)
    body_grads = {}
    for first_order in (True, False):  # the second-order learner is stepped below
        learner = build(host, "anil", suite, inner_lr=0.05, first_order=first_order)
        names = [name for name, _ in learner.named_parameters()]
        grads, _ = learner.chunk_meta_gradient(batch)
        body_grads[first_order] = {n: g for n, g in zip(names, grads) if ".head." not in n}
    for name, g in body_grads[False].items():
        assert g is not None and g.abs().max() > 0, f"{name} receives no meta-gradient"
        assert not torch.allclose(g, body_grads[True][name], rtol=1e-6, atol=0), name

    before = snapshot(learner.model)
    learner.meta_train_step(batch)
    for name, p in learner.model.named_parameters():
        assert not torch.equal(p.detach(), before[name]), f"{name} not updated by the outer step"


# -- learning ---------------------------------------------------------------------------------

STEPS = 300
TEST_TASKS = 100
EVAL_SEED = 1234  # one fixed list of test tasks for before and after training

# Hyperparameters that learn within STEPS meta-batches of 25 tasks: on seeds 0-5 the trained
# sinusoid MSE was at most 0.31 × the untrained one and hyperplanes accuracy at least 0.75.
SINUSOID_HP = {
    "maml": {"outer_lr": 0.01, "inner_lr": 0.03},
    "fomaml": {"outer_lr": 0.01, "inner_lr": 0.03},
    "metasgd": {"outer_lr": 0.01},
    "anil": {"outer_lr": 0.01, "inner_lr": 0.02, "inner_steps": 3},
    "reptile": {"outer_lr": 0.01, "inner_lr": 0.02, "inner_steps": 3, "outer_optimizer": "adam"},
}
HYPERPLANES_HP = {
    "maml": {"outer_lr": 0.01, "inner_lr": 0.5},
    "fomaml": {"outer_lr": 0.01, "inner_lr": 0.5, "inner_steps": 3},
    "metasgd": {"outer_lr": 0.01},
    "anil": {"outer_lr": 0.01, "inner_lr": 0.5},
    "reptile": {"outer_lr": 0.01, "inner_lr": 0.5, "inner_steps": 3, "outer_optimizer": "adam"},
}


def train_and_evaluate(learner, suite, seed, steps=STEPS) -> tuple[float, float]:
    """Mean test metric on the fixed test tasks before and after ``steps`` outer steps."""
    test = suite.sample("test", TEST_TASKS, torch.Generator().manual_seed(EVAL_SEED))

    def metric() -> float:
        return task_metrics(suite.kind, learner.predict(test), test.query_y).mean().item()

    before = metric()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        stats = learner.meta_train_step(suite.sample("train", learner.config.meta_batch, generator))
        assert stats["loss"] == stats["loss"], "meta-training diverged (NaN loss)"
    return before, metric()


def sinusoid_run(host, algorithm, seed):
    suite = make_suite(host, "sinusoid", shots=10)  # the MAML paper's 10-shot setting
    learner = build(host, algorithm, suite, seed, dtype=torch.float32, **SINUSOID_HP[algorithm])
    return train_and_evaluate(learner, suite, seed)


def hyperplanes_run(host, algorithm, seed):
    # 10 shots per class: with 5 in R^10 even the best linear fit of the support reaches only
    # ~0.72 test accuracy, too close to a 0.7 bar.
    suite = make_suite(host, "hyperplanes", shots=10)
    # ANIL adapts only the head, on the 5 ReLU features of the default body: a 5-dimensional
    # representation cannot express a random hyperplane of R^10 (≈0.7 accuracy at best), so
    # ANIL gets a 40-unit body here.
    model = MLP(10, 40, 2) if algorithm == "anil" else None
    learner = build(host, algorithm, suite, seed, model=model, dtype=torch.float32, **HYPERPLANES_HP[algorithm])
    return train_and_evaluate(learner, suite, seed)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_learns_sinusoid(host, algorithm):
    untrained, trained = sinusoid_run(host, algorithm, seed=0)
    assert trained < 0.5 * untrained, f"test MSE {untrained:.3f} -> {trained:.3f}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_learns_hyperplanes(host, algorithm):
    untrained, trained = hyperplanes_run(host, algorithm, seed=0)
    assert trained > 0.7, f"test accuracy {untrained:.3f} -> {trained:.3f} (chance 0.5)"
    assert trained > untrained + 0.05, f"test accuracy {untrained:.3f} -> {trained:.3f}"


# -- bad hyperparameters ------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    ("hp", "expected"),
    [
        ({"inner_stepz": 3}, ["'inner_stepz'", "accepted", "inner_steps", "inner_lr"]),
        ({"inner_steps": "3"}, ["inner_steps", "int", "'3'"]),
        ({"inner_steps": 2.0}, ["inner_steps", "int"]),
        ({"inner_steps": True}, ["inner_steps", "int"]),
        ({"inner_steps": 0}, ["inner_steps", "> 0", "0"]),
        ({"inner_steps": -2}, ["inner_steps", "> 0", "-2"]),
        ({"inner_lr": "fast"}, ["inner_lr", "float", "'fast'"]),
        ({"inner_lr": 0.0}, ["inner_lr", "> 0"]),
        ({"first_order": "yes"}, ["first_order", "bool"]),
        ({"chunk_size": 0}, ["chunk_size", "> 0"]),
        ({"execution": "gpu"}, ["execution", "'auto'", "'vmap'", "'loop'", "'gpu'"]),
        ({"outer_optimizer": "rmsprop"}, ["outer_optimizer", "'adam'", "'sgd'"]),
    ],
    ids=lambda p: ",".join(f"{k}={v!r}" for k, v in p.items()) if isinstance(p, dict) else None,
)
def test_bad_hyperparameter_is_a_clear_error(host, algorithm, hp, expected):
    with pytest.raises(metazoo.ZooError) as excinfo:
        build(host, algorithm, make_suite(host, "sinusoid"), **hp)
    message = str(excinfo.value)
    assert algorithm in message
    assert "\n" not in message
    for part in expected:
        assert part in message, f"{part!r} missing from {message!r}"


def test_anil_without_a_head_is_a_clear_error(host):
    suite = make_suite(host, "sinusoid")
    with pytest.raises(metazoo.ZooError, match="head=NAME"):
        build(host, "anil", suite, model=torch.nn.Sequential(torch.nn.Linear(1, 1)))
    with pytest.raises(metazoo.ZooError, match="'body'"):
        build(host, "anil", suite, head="body")
