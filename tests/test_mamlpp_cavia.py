"""MAML++ and CAVIA, each against a plain per-task reference written from its paper (a Python
loop over tasks, torch.autograd, float64), vectorised and looped; their schedules, their errors,
the conformance kit and the compiled step."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from metazoo.errors import ZooError
from metazoo.models import MLP, BatchStatNorm, Conv4
from metazoo.plugins.cavia import CAVIA
from metazoo.plugins.hyperplanes import Hyperplanes
from metazoo.plugins.mamlpp import MAMLPP
from metazoo.plugins.sinusoid import Sinusoid
from metazoo.testing import assert_learner_conforms
from test_conv4 import RandomImages
from torch import nn
from torch.func import functional_call

pytestmark = pytest.mark.usefixtures("one_thread")

REL = 1e-9
BN = [f"body.block{i}.norm.{p}" for i in range(4) for p in ("weight", "bias")]


def images():
    return RandomImages(ways=3, shots=2, queries=2)


def batch_of(suite, tasks=3, seed=0):
    return suite.sample("train", tasks, torch.Generator().manual_seed(seed)).to("cpu", torch.float64)


def build(cls, suite, model, **hp):
    torch.manual_seed(0)
    return cls(model, suite, **{"outer_optimizer": "sgd", "outer_lr": 1.0, **hp}).double()


def outer_step(learner, batch):
    """What one outer SGD step at rate 1 subtracted from each meta-parameter (its mean gradient)."""
    before = {n: p.detach().clone() for n, p in learner.named_parameters()}
    stats = learner.meta_train_step(batch)
    return {n: before[n] - p.detach() for n, p in learner.named_parameters()}, stats


def assert_gradients(moved, expected):
    """Every meta-parameter moved by its reference gradient, relative to the largest entry."""
    assert set(moved) == set(expected)
    scale = max(g.abs().max().item() for g in expected.values())
    assert scale > 0, "the reference gradient vanishes: a useless test"
    for name, grad in expected.items():
        error = (moved[name] - grad).abs().max().item()
        assert error <= REL * scale, f"{name}: max error {error:.3e} vs scale {scale:.3e}"


def distance(a, b):
    return max((a[n] - b[n]).abs().max().item() for n in a)


def task_loss(kind, out, y):
    return F.cross_entropy(out, y) if kind == "classification" else ((out - y) ** 2).mean()


# -- MAML++ ------------------------------------------------------------------------------------------


def msl_weights(outer_step, steps, span):
    """Antoniou et al. 2019, §4 (MSL), as the reference code anneals it: uniform 1/N at first,
    earlier steps decaying linearly to a floor of 0.03/N and the last growing to take the rest,
    over ``span`` outer steps; afterwards the last step alone."""
    if span == 0 or outer_step >= span:
        return [0.0] * (steps - 1) + [1.0]
    t = outer_step / span
    early = [max((1 - t) / steps, 0.03 / steps)] * (steps - 1)
    return early + [min((1 + (steps - 1) * t) / steps, 1 - (steps - 1) * 0.03 / steps)]


@pytest.mark.parametrize(("step", "expected"), [
    (0, [0.2] * 5),
    (5, [0.1] * 4 + [0.6]),  # halfway: t = 0.5
    (9, [0.02] * 4 + [0.92]),
    (10, [0.0] * 4 + [1.0]),  # annealed: the last step alone
    (25, [0.0] * 4 + [1.0]),
])
def test_mamlpp_multi_step_loss_weights_at_chosen_steps(step, expected):
    suite = Sinusoid()
    learner = MAMLPP(suite.make_model(), suite, inner_steps=5, msl_anneal_steps=10)
    learner.outer_step.fill_(step)
    torch.testing.assert_close(learner.loss_weights(), torch.tensor(expected, dtype=torch.float64))
    assert learner.multi_step() == (step < 10)


def test_mamlpp_weights_reach_their_floor_and_always_sum_to_one():
    suite = Sinusoid()
    learner = MAMLPP(suite.make_model(), suite, inner_steps=5, msl_anneal_steps=100)
    for step in range(0, 120, 7):
        learner.outer_step.fill_(step)
        weights = learner.loss_weights()
        assert weights.sum().item() == pytest.approx(1.0)
        torch.testing.assert_close(weights, torch.tensor(msl_weights(step, 5, 100), dtype=torch.float64))
    learner.outer_step.fill_(99)  # t = 0.99: the earlier steps are held at 0.03/N
    torch.testing.assert_close(learner.loss_weights(), torch.tensor([0.006] * 4 + [0.976], dtype=torch.float64))


def test_mamlpp_schedules_follow_its_step_counter_through_training_and_state_dict():
    suite = Sinusoid()
    torch.manual_seed(0)
    learner = MAMLPP(suite.make_model(), suite, meta_batch=2, inner_steps=3, msl_anneal_steps=4,
                     first_order_steps=2)
    batch = suite.sample("train", 2, torch.Generator().manual_seed(0))
    seen = []
    for _ in range(5):
        seen.append((int(learner.outer_step), learner.second_order(), learner.multi_step()))
        learner.meta_train_step(batch)
    assert seen == [(0, False, True), (1, False, True), (2, True, True), (3, True, True), (4, True, False)]
    learner.outer_step.fill_(3)
    twin = MAMLPP(suite.make_model(), suite, meta_batch=2, inner_steps=3, msl_anneal_steps=4, first_order_steps=2)
    twin.load_state_dict(learner.state_dict())  # a checkpoint resumes the schedules
    assert int(twin.outer_step) == 3 and twin.second_order()
    torch.testing.assert_close(twin.loss_weights(), learner.loss_weights())
    assert not MAMLPP(suite.make_model(), suite, first_order=True, first_order_steps=0).second_order()


def bn_of(learner, name, step):
    """Step ``step``'s copy of a batch-norm parameter (step 0: the model's own)."""
    return dict(learner.model.named_parameters())[name] if step == 0 else \
        learner.bn_steps[name.replace(".", "__")][step - 1]


def mamlpp_reference(learner, batch, *, steps, weights, second_order):
    """Mean over tasks of Σ_i v_i L_query(θ_i) (Antoniou et al. 2019, §4), one task at a time:
    θ_i = θ_{i−1} − α_{p,i} ∇L_support(θ_{i−1}) for every parameter but batch norm's (LSLR), each
    step i, and the queries after it, on the batch-norm weights of step i (BNWB).
    Returns its gradient in every meta-parameter of ``learner`` (by its name there) and the mean
    query loss after the last step."""
    model, kind = learner.model, learner.kind
    named = dict(learner.named_parameters())
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in named.items()}
    theta = {n.removeprefix("model."): leaves[n] for n in leaves if n.startswith("model.")}
    norms = [n for n in theta if n in BN]
    has_bn_steps = any(n.startswith("bn_steps.") for n in leaves)

    def norm_at(i):
        if i == 0 or not has_bn_steps:
            return {n: theta[n] for n in norms}
        return {n: leaves["bn_steps." + n.replace(".", "__")][i - 1] for n in norms}

    total, final_sum = 0.0, 0.0
    for sx, sy, qx, qy in zip(*batch.tensors()):
        fast = {n: p for n, p in theta.items() if n not in norms}
        objective = 0.0
        for i in range(steps):
            support = task_loss(kind, functional_call(model, {**norm_at(i), **fast}, (sx,)), sy)
            grads = torch.autograd.grad(support, list(fast.values()), create_graph=second_order, retain_graph=True)
            fast = {n: p - leaves["inner_lrs." + n.replace(".", "__")][i] * (g if second_order else g.detach())
                    for (n, p), g in zip(fast.items(), grads)}
            query = task_loss(kind, functional_call(model, {**norm_at(i), **fast}, (qx,)), qy)
            objective = objective + weights[i] * query
        total = total + objective / batch.num_tasks
        final_sum += query.item() / batch.num_tasks
    grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(leaves.items(), grads)}, final_sum


@pytest.mark.parametrize("execution", ["vmap", "loop"])
@pytest.mark.parametrize(("backbone", "at_step"), [
    ("conv4", 3),  # first order (DA), multi-step loss
    ("conv4", 6),  # second order, multi-step loss
    ("conv4", 12),  # second order, the last step's loss alone
    ("mlp", 6),  # no batch norm: every parameter adapted, no BNWB
])
def test_mamlpp_meta_gradient_equals_a_plain_reference(execution, backbone, at_step):
    steps, span, switch = 3, 10, 5
    suite = images() if backbone == "conv4" else Hyperplanes(shots=2, queries=2)
    model = Conv4(out_features=3, hidden=4) if backbone == "conv4" else suite.make_model()
    learner = build(MAMLPP, suite, model, inner_steps=steps, inner_lr=0.3, msl_anneal_steps=span,
                    first_order_steps=switch, execution=execution, lr_schedule="constant")
    batch = batch_of(suite)
    learner.outer_step.fill_(at_step)
    with torch.no_grad():  # the learnt rates and per-step weights differ from their initial values
        for p in [*learner.inner_lrs.values(), *getattr(learner, "bn_steps", {}).values()]:
            p.add_(0.05 * torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(p.numel())))
    weights = msl_weights(at_step, steps, span)
    expected, final = mamlpp_reference(learner, batch, steps=steps, weights=weights, second_order=at_step >= switch)
    wrong_order, _ = mamlpp_reference(learner, batch, steps=steps, weights=weights, second_order=at_step < switch)
    moved, stats = outer_step(learner, batch)
    assert_gradients(moved, expected)
    assert stats["loss"] == pytest.approx(final, rel=1e-10)  # reported: the query loss after the last step
    assert distance(moved, wrong_order) > 1e-6  # the derivative order matters here
    if at_step < span:
        last_only, _ = mamlpp_reference(learner, batch, steps=steps, weights=msl_weights(span, steps, span),
                                        second_order=at_step >= switch)
        assert distance(expected, last_only) > 1e-4  # so does the multi-step loss
    assert int(learner.outer_step) == at_step + 1
    assert (backbone == "conv4") == hasattr(learner, "bn_steps")
    assert sorted(learner.adapted_names()) == sorted(n for n, _ in model.named_parameters() if n not in BN)


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_mamlpp_predicts_with_its_per_step_rates_and_batch_norm(execution):
    """Evaluation adapts ``eval_inner_steps`` (here one more than trained: the last step's rates and
    batch-norm weights again) and predicts the queries with the last step's batch norm."""
    suite = images()
    learner = build(MAMLPP, suite, Conv4(out_features=3, hidden=4), inner_steps=2, eval_inner_steps=3,
                    inner_lr=0.3, execution=execution)
    with torch.no_grad():
        for p in [*learner.inner_lrs.values(), *learner.bn_steps.values()]:
            p.mul_(1 + 0.2 * torch.rand(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(1)))
    batch = batch_of(suite)
    model, expected = learner.model, []
    for sx, sy, qx, _ in zip(*batch.tensors()):
        fast = {n: p.detach() for n, p in model.named_parameters() if n not in BN}
        for step in range(3):
            i = min(step, 1)
            norm = {n: bn_of(learner, n, i).detach() for n in BN}
            leaves = {n: p.requires_grad_(True) for n, p in fast.items()}
            with torch.enable_grad():
                grads = torch.autograd.grad(F.cross_entropy(functional_call(model, {**norm, **leaves}, (sx,)), sy),
                                            list(leaves.values()))
            fast = {n: (p - learner.inner_lrs[n.replace(".", "__")][i] * g).detach()
                    for (n, p), g in zip(leaves.items(), grads)}
        expected.append(functional_call(model, {**norm, **fast}, (qx,)))
    torch.testing.assert_close(learner.predict(batch), torch.stack(expected), rtol=1e-9, atol=1e-12)


def test_mamlpp_learns_batch_norm_weights_per_step_and_only_where_there_are_some():
    suite = images()
    learner = build(MAMLPP, suite, Conv4(out_features=3, hidden=4), inner_steps=3, first_order_steps=0)
    moved, _ = outer_step(learner, batch_of(suite))
    for name in BN:
        key = "bn_steps." + name.replace(".", "__")
        assert learner.bn_steps[name.replace(".", "__")].shape == (2, 4)  # steps 2 and 3
        per_step = [moved["model." + name], moved[key][0], moved[key][1]]
        assert all(g.abs().max() > 0 for g in per_step), name
        assert not torch.allclose(per_step[0], per_step[1]) and not torch.allclose(per_step[1], per_step[2]), name
    shared = build(MAMLPP, suite, Conv4(out_features=3, hidden=4), inner_steps=3, per_step_bn=False)
    assert not hasattr(shared, "bn_steps") and "body.block0.norm.weight" not in shared.adapted_names()
    fixed = build(MAMLPP, suite, Conv4(out_features=3, hidden=4), learn_inner_lrs=False)
    assert not hasattr(fixed, "inner_lrs")
    plain = build(MAMLPP, Sinusoid(), Sinusoid().make_model())
    assert not hasattr(plain, "bn_steps") and len(plain.adapted_names()) == 6


def test_mamlpp_defaults_are_its_papers():
    suite = images()
    config = MAMLPP(suite.make_model(), suite).config
    assert (config.inner_steps, config.inner_lr, config.msl_anneal_steps, config.first_order_steps) == \
        (5, 0.1, 10 * 500, 50 * 500)
    assert (config.lr_schedule, config.lr_anneal_steps, config.outer_lr) == ("cosine", 100 * 500, 1e-3)
    assert MAMLPP(Sinusoid().make_model(), Sinusoid()).config.inner_lr == 0.01  # regression: MAML's α
    rates = MAMLPP(Sinusoid().make_model(), Sinusoid(), inner_lr=0.2).inner_lrs["head__bias"]
    torch.testing.assert_close(rates, torch.full((5,), 0.2))
    with pytest.raises(ZooError, match="algorithm mamlpp: msl_anneal_steps must be >= 0"):
        MAMLPP(suite.make_model(), suite, msl_anneal_steps=-1)
    with pytest.raises(ZooError, match="mamlpp adapts every parameter but the batch-norm weights"):
        MAMLPP(nn.Sequential(BatchStatNorm(1)), Sinusoid())


# -- CAVIA -------------------------------------------------------------------------------------------


def mlp_forward(learner, theta, phi, x):
    """The sine network of Zintgraf et al. 2019 by hand: φ concatenated to each input."""
    w = torch.cat([theta["model.backbone.fc0.weight"], theta["model.context_weight.weight"]], dim=1)
    h = torch.relu(torch.cat([x, phi.expand(x.shape[0], -1)], dim=1) @ w.T + theta["model.backbone.fc0.bias"])
    h = torch.relu(h @ theta["model.backbone.fc1.weight"].T + theta["model.backbone.fc1.bias"])
    return h @ theta["model.backbone.head.weight"].T + theta["model.backbone.head.bias"]


def conv_forward(learner, theta, phi, x):
    """conv4 by hand with FiLM after the third convolution's batch norm (Zintgraf et al. 2019,
    mini-ImageNet)."""
    h = x
    for i in range(4):
        prefix = f"model.backbone.body.block{i}."
        h = F.conv2d(h, theta[prefix + "conv.weight"], theta[prefix + "conv.bias"], padding=1)
        mean, var = h.mean((0, 2, 3), keepdim=True), h.var((0, 2, 3), correction=0, keepdim=True)
        h = (h - mean) / torch.sqrt(var + 1e-5) * theta[prefix + "norm.weight"].view(1, -1, 1, 1) \
            + theta[prefix + "norm.bias"].view(1, -1, 1, 1)
        if i == 2:
            gamma, beta = (theta["model.film.weight"] @ phi + theta["model.film.bias"]).chunk(2)
            h = gamma.view(1, -1, 1, 1) * h + beta.view(1, -1, 1, 1)
        h = F.max_pool2d(torch.relu(h), 2)
    return h.flatten(1) @ theta["model.backbone.head.weight"].T + theta["model.backbone.head.bias"]


def cavia_reference(learner, batch, forward, *, steps, lr, first_order):
    """Mean over tasks of ∇_θ L_query(f_{φ_K, θ}), φ_0 = 0, φ_k = φ_{k−1} − α∇_φ L_support
    (Zintgraf et al. 2019), one task at a time; and the mean query loss."""
    theta = {n: p.detach().clone().requires_grad_(True) for n, p in learner.named_parameters()}
    total = 0.0
    for sx, sy, qx, qy in zip(*batch.tensors()):
        phi = torch.zeros(learner.config.context_size, dtype=torch.float64, requires_grad=True)
        for _ in range(steps):
            support = task_loss(learner.kind, forward(learner, theta, phi, sx), sy)
            (grad,) = torch.autograd.grad(support, phi, create_graph=not first_order)
            phi = phi - lr * grad
        total = total + task_loss(learner.kind, forward(learner, theta, phi, qx), qy) / batch.num_tasks
    grads = torch.autograd.grad(total, list(theta.values()))
    return dict(zip(theta, grads)), total.item()


@pytest.mark.parametrize("execution", ["vmap", "loop"])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("backbone", ["mlp", "conv4"])
def test_cavia_meta_gradient_equals_a_plain_reference(execution, first_order, backbone):
    if backbone == "mlp":
        suite, model, forward = Sinusoid(), Sinusoid().make_model(), mlp_forward
    else:
        suite, model, forward = images(), Conv4(out_features=3, hidden=4), conv_forward
    learner = build(CAVIA, suite, model, inner_steps=2, inner_lr=0.7, context_size=3, execution=execution,
                    first_order=first_order)
    with torch.no_grad():  # FiLM away from the identity, so that its weights matter
        for p in learner.model.parameters():
            p.add_(0.1 * torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(2)))
    batch = batch_of(suite)
    expected, loss = cavia_reference(learner, batch, forward, steps=2, lr=0.7, first_order=first_order)
    other, _ = cavia_reference(learner, batch, forward, steps=2, lr=0.7, first_order=not first_order)
    moved, stats = outer_step(learner, batch)
    assert_gradients(moved, expected)
    assert stats["loss"] == pytest.approx(loss, rel=1e-10)
    assert distance(moved, other) > 1e-6  # second-order terms matter here


def test_cavia_adapts_only_a_context_that_starts_at_zero():
    suite = images()
    learner = build(CAVIA, suite, Conv4(out_features=3, hidden=4), context_size=7)
    assert "context" not in dict(learner.named_parameters()) and "model.context" not in learner.state_dict()
    batch = batch_of(suite)
    start = learner.task_initialisation(batch.support_x[0], batch.support_y[0])
    assert torch.equal(start["context"], torch.zeros(7, dtype=torch.float64))
    adapted = learner.adapt(batch.support_x[0], batch.support_y[0], 2, create_graph=False)
    theta = dict(learner.model.named_parameters())
    assert all(adapted[n] is theta[n] for n in theta)  # the weights are shared, not adapted
    assert adapted["context"].abs().max() > 0
    learner.meta_train_step(batch)
    assert torch.equal(learner.model.context, torch.zeros(7, dtype=torch.float64))  # every task starts at 0
    # before adaptation the FiLM'd network is the backbone itself (γ = 1, β = 0 at φ = 0)
    fresh = build(CAVIA, suite, Conv4(out_features=3, hidden=4))
    torch.testing.assert_close(fresh.model(batch.query_x[0]), fresh.model.backbone(batch.query_x[0]))


@pytest.mark.parametrize(("suite", "expected"), [
    (Sinusoid(), (5, 1, 1.0)),  # sine-curve regression
    (RandomImages(), (100, 2, 1.0)),  # mini-ImageNet classification
])
def test_cavia_defaults_are_its_papers_by_kind(suite, expected):
    config = CAVIA(suite.make_model(), suite).config
    assert (config.context_size, config.inner_steps, config.inner_lr) == expected
    chosen = CAVIA(suite.make_model(), suite, context_size=9, inner_steps=3).config
    assert (chosen.context_size, chosen.inner_steps) == (9, 3)


def test_cavia_conditions_the_built_in_backbones_where_the_paper_does(host):
    for name, suite, where in (("mlp", Sinusoid(), ("fc0",)), ("conv4", images(), ("body", "block2", "norm")),
                               ("conv4-strided", images(), ("body", "block2", "norm")),
                               ("conv4-running-bn", images(), ("body", "block2", "norm"))):
        learner = CAVIA(host.backbones.get(name).factory(suite), suite)
        assert learner.model.path == where, name
    first = CAVIA(Conv4(out_features=3, hidden=4), images(), film_layer=1)
    assert first.model.path == ("body", "block0", "norm")
    bare = CAVIA(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 3)), images(), film_layer=1)
    assert bare.model.path == ("0",)  # no batch norm: FiLM right after the convolution


class NotSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 1)

    def forward(self, x):
        return self.fc(x)


@pytest.mark.parametrize(("model", "hp", "message"), [
    (NotSequential(), {}, "cavia cannot condition a NotSequential on its context: it takes an nn.Sequential"),
    (nn.Sequential(OrderedDict(scale=nn.Identity(), head=nn.Linear(1, 1))), {},
     "first layer is nn.Linear"),
    (Conv4(out_features=3, hidden=4), {"film_layer": 5}, "film_layer = 5, but the backbone has only 4 convolution"),
    (MLP(1, 4, 1), {"context_size": 0}, "context_size must be > 0"),
])
def test_cavia_refuses_what_it_cannot_wrap_with_a_clear_error(model, hp, message):
    with pytest.raises(ZooError) as caught:
        CAVIA(model, Sinusoid(), **hp)
    assert message in str(caught.value) and "\n" not in str(caught.value)


# -- both: the conformance kit, the registry, the compiled step --------------------------------------


@pytest.mark.parametrize(("factory", "suite", "hp"), [
    (MAMLPP, Hyperplanes(), {"inner_lr": 0.5, "outer_lr": 0.01, "first_order_steps": 3, "msl_anneal_steps": 20}),
    (MAMLPP, images(), {"inner_steps": 2, "outer_lr": 0.01, "first_order_steps": 0}),
    (CAVIA, Sinusoid(), {"outer_lr": 0.01}),
    (CAVIA, Hyperplanes(), {"outer_lr": 0.01}),
    (CAVIA, images(), {"outer_lr": 0.01}),
], ids=["mamlpp-mlp", "mamlpp-conv4", "cavia-sinusoid", "cavia-hyperplanes", "cavia-conv4"])
def test_each_passes_the_conformance_kit(factory, suite, hp):
    assert_learner_conforms(factory, suite, hp)


def test_both_are_registered_as_model_algorithms(host):
    for name, cls in (("mamlpp", MAMLPP), ("cavia", CAVIA)):
        entry = host.algorithms.get(name)
        assert entry.factory is cls and entry.family == "model-algorithm", name
        assert cls.name() == name  # errors name the algorithm as the registry does


def compiled_pair(cls, hp):
    suite = Sinusoid()
    learners = []
    for compile_step in (False, True):
        torch.manual_seed(0)
        learners.append(cls(suite.make_model(), suite, meta_batch=3, compile=compile_step, **hp).double())
    generator = torch.Generator().manual_seed(1)
    return learners, [suite.sample("train", 3, generator).to("cpu", torch.float64) for _ in range(2)]


def assert_same_parameters(eager, compiled):
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=name)


def test_mamlpp_compiled_step_equals_the_eager_step_as_its_weights_move():
    """The compiled step reads the step counter as a tensor: the multi-step weights move from one
    step to the next without a recompilation, as in the eager step."""
    (eager, compiled), batches = compiled_pair(MAMLPP, {"inner_steps": 2, "msl_anneal_steps": 10,
                                                        "first_order_steps": 0})
    for learner in (eager, compiled):
        learner.outer_step.fill_(4)
    weights = []
    for i, batch in enumerate(batches):
        weights.append(compiled.loss_weights())
        with torch._dynamo.config.patch(error_on_recompile=i > 0):
            reference, stats = eager.meta_train_step(batch), compiled.meta_train_step(batch)
        assert ("compile_s" in stats) == (i == 0), "the compiled step did not run"
        assert stats["loss"] == pytest.approx(reference["loss"], rel=1e-10)
        assert_same_parameters(eager, compiled)
    assert not torch.equal(weights[0], weights[1]) and int(compiled.outer_step) == 6


def test_cavia_compiled_step_equals_the_eager_step():
    (eager, compiled), batches = compiled_pair(CAVIA, {})
    reference, stats = eager.meta_train_step(batches[0]), compiled.meta_train_step(batches[0])
    assert "compile_s" in stats, "the compiled step did not run"
    assert stats["loss"] == pytest.approx(reference["loss"], rel=1e-10)
    assert_same_parameters(eager, compiled)


@pytest.mark.parametrize("cls", [MAMLPP, CAVIA])
def test_with_running_statistics_each_runs_task_by_task(cls):
    """Batch norm with running statistics (conv4-running-bn) updates them in place: the per-task
    loop by plain autograd takes it, and they move."""
    suite = images()
    model = Conv4(out_features=3, hidden=4, norm="running")
    learner = cls(model, suite, meta_batch=2, inner_steps=2)
    assert learner.execution == "loop"
    batch = suite.sample("train", 2, torch.Generator().manual_seed(0))
    assert learner.meta_train_step(batch)["loss"] > 0
    assert model.body.block3.norm.running_mean.abs().max() > 0
    assert learner.predict(batch).shape == (2, 6, 3)
    with pytest.raises(ZooError, match="running"):
        cls(Conv4(out_features=3, hidden=4, norm="running"), suite, execution="vmap")
