"""The breadth algorithms (BOIL, Proto-MAML, R2D2, Relation Networks), each against a plain
per-task reference written from its paper's equations, vectorised and looped, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from metazoo.errors import ZooError
from metazoo.models import Conv4
from reference import adapt, leaf_copy, loss
from test_conv4 import RandomImages

pytestmark = pytest.mark.usefixtures("one_thread")

REL = 1e-9


def conv_learner(host, algorithm, **hp):
    torch.manual_seed(0)
    suite = RandomImages(ways=3, shots=2, queries=2)
    model = Conv4(out_features=3, hidden=8).double()
    return host.algorithms.get(algorithm).factory(model, suite, **hp), suite


def batch_of(suite, tasks=3, seed=0):
    return suite.sample("train", tasks, torch.Generator().manual_seed(seed)).to("cpu", torch.float64)


def outer_step(learner, batch) -> dict[str, torch.Tensor]:
    """What one outer SGD step at rate 1 subtracted from each meta-parameter."""
    before = {n: p.detach().clone() for n, p in learner.named_parameters()}
    learner.meta_train_step(batch)
    return {n: before[n] - p.detach() for n, p in learner.named_parameters()}


def assert_gradients(moved, expected, prefix="model."):
    """Every meta-parameter moved by its reference gradient, relative to the largest entry of all
    (a convolution's bias before batch norm has a gradient of rounding size only)."""
    scale = max(g.abs().max().item() for g in expected.values())
    assert scale > 0, "the reference gradient vanishes: a useless test"
    for name, grad in expected.items():
        error = (moved[prefix + name] - grad).abs().max().item()
        assert error <= REL * scale, f"{name}: max error {error:.3e} vs scale {scale:.3e}"


def adapt_from(model, start, x, y, *, steps, lr, first_order):
    """``steps`` gradient steps on every parameter from ``start``, the gradient in each taken
    with the others held fixed (partial derivatives, by torch.func.grad: ``start`` may be a
    function of the meta-parameters, as Proto-MAML's head is)."""
    fast = dict(start)
    for _ in range(steps):
        grads = torch.func.grad(lambda p: loss("classification", model, p, x, y))(fast)
        fast = {n: p - lr * (grads[n].detach() if first_order else grads[n]) for n, p in fast.items()}
    return fast


def mean_meta_gradient(model, batch, task_init, *, steps, lr, names=None, first_order):
    """Mean over tasks of ∇θ L_query(adapt(task_init(θ, support))), one task at a time."""
    theta = leaf_copy(dict(model.named_parameters()))
    sums = {n: torch.zeros_like(p) for n, p in theta.items()}
    tasks = batch.num_tasks
    for sx, sy, qx, qy in zip(*batch.tensors()):
        start = task_init(theta, sx, sy)
        if start is theta:  # the meta-parameters themselves: MAML's reference inner loop
            fast = adapt("classification", model, start, sx, sy, steps=steps, lrs=lr, names=names,
                         create_graph=not first_order)
        else:
            fast = adapt_from(model, start, sx, sy, steps=steps, lr=lr, first_order=first_order)
        grads = torch.autograd.grad(loss("classification", model, fast, qx, qy), list(theta.values()),
                                    allow_unused=True)
        for n, g in zip(theta, grads):
            if g is not None:
                sums[n] += g / tasks
    return sums


# -- BOIL ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_boil_adapts_the_body_only_and_meta_learns_both(host, execution):
    learner, suite = conv_learner(host, "boil", inner_lr=0.3, inner_steps=2, execution=execution,
                                  outer_optimizer="sgd", outer_lr=1.0)
    batch = batch_of(suite)
    body = [n for n, _ in learner.model.named_parameters() if not n.startswith("head.")]
    expected = mean_meta_gradient(learner.model, batch, lambda theta, x, y: theta, steps=2, lr=0.3,
                                  names=body, first_order=False)
    assert_gradients(outer_step(learner, batch), expected)


# -- Proto-MAML ----------------------------------------------------------------------------------


def prototype_head(model, ways):
    def init(theta, x, y):
        body = {n.removeprefix("body."): p for n, p in theta.items() if n.startswith("body.")}
        z = torch.func.functional_call(model.body, body, (x,))
        prototypes = torch.stack([z[y == k].mean(0) for k in range(ways)])  # Snell et al. Eq. 1
        return {**theta, "head.weight": 2 * prototypes, "head.bias": -(prototypes**2).sum(1)}

    return init


@pytest.mark.parametrize("first_order", [True, False])
@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_protomaml_starts_each_task_at_its_prototypes(host, execution, first_order):
    learner, suite = conv_learner(host, "protomaml", inner_lr=0.3, inner_steps=2, execution=execution,
                                  first_order=first_order, outer_optimizer="sgd", outer_lr=1.0)
    batch = batch_of(suite)
    expected = mean_meta_gradient(learner.model, batch, prototype_head(learner.model, 3), steps=2, lr=0.3,
                                  first_order=first_order)
    moved = outer_step(learner, batch)
    assert all(moved[f"model.head.{n}"].abs().max() == 0 for n in ("weight", "bias"))  # replaced by prototypes
    assert_gradients(moved, {n: g for n, g in expected.items() if not n.startswith("head.")})


def test_protomaml_before_any_step_is_a_prototypical_network(host):
    """With a vanishing step its predictions are those of squared-distance prototypes (support
    and queries embedded separately, as its inner loop and predictions see them)."""
    learner, suite = conv_learner(host, "protomaml", eval_inner_steps=1, inner_lr=1e-30)
    batch = batch_of(suite)
    body = learner.model.body
    expected = []
    for sx, sy, qx, _ in zip(*batch.tensors()):
        z, zq = body(sx), body(qx)
        prototypes = torch.stack([z[sy == k].mean(0) for k in range(3)])
        expected.append(-torch.cdist(zq, prototypes) ** 2)
    torch.testing.assert_close(learner.predict(batch).softmax(-1), torch.stack(expected).softmax(-1))


def test_protomaml_refuses_a_regression_suite(host):
    suite = host.suites.get("sinusoid").factory()
    with pytest.raises(ZooError, match="protomaml sets its head from class prototypes and needs a classification"):
        host.algorithms.get("protomaml").factory(suite.make_model(), suite)


# -- R2D2 and Relation Networks ----------------------------------------------------------------------


def mlp_learner(host, algorithm, **hp):
    torch.manual_seed(0)
    suite = host.suites.get("hyperplanes").factory()
    model = suite.make_model().double()
    learner = host.algorithms.get(algorithm).factory(model, suite, **hp).double()
    batch = suite.sample("train", 3, torch.Generator().manual_seed(0)).to("cpu", torch.float64)
    return learner, batch


def embed(model, x):
    return torch.relu(model.fc0(x))  # the hyperplanes MLP's layers before its head


def r2d2_logits(learner, sx, sy, qx, ways=2):
    """The ridge head in its primal form, W = (XᵀX + λI)⁻¹XᵀY (the learner solves the dual)."""
    x, xq = embed(learner.model, sx), embed(learner.model, qx)
    y = F.one_hot(sy, ways).double()
    w = torch.linalg.solve(x.T @ x + learner.log_lambda.exp() * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
    return learner.scale * (xq @ w) + learner.bias


def relation_scores(learner, sx, sy, qx, ways=2):
    x, xq = embed(learner.model, sx), embed(learner.model, qx)
    classes = torch.stack([x[sy == k].sum(0) for k in range(ways)])  # sums over shots
    return torch.stack([torch.stack([learner.relation(torch.cat([q, c])).squeeze() for c in classes])
                        for q in xq])


@pytest.mark.parametrize("execution", ["vmap", "loop"])
@pytest.mark.parametrize(("algorithm", "by_hand", "task_loss"), [
    ("r2d2", r2d2_logits, lambda scores, qy: F.cross_entropy(scores, qy)),
    ("relationnet", relation_scores, lambda scores, qy: ((scores - F.one_hot(qy, 2).double()) ** 2).mean()),
])
def test_a_model_data_learner_equals_its_papers_equations_task_by_task(host, execution, algorithm, by_hand,
                                                                      task_loss):
    learner, batch = mlp_learner(host, algorithm, execution=execution, outer_optimizer="sgd", outer_lr=1.0)
    tensors = list(zip(*batch.tensors()))
    expected_scores = torch.stack([by_hand(learner, sx, sy, qx) for sx, sy, qx, _ in tensors]).detach()
    torch.testing.assert_close(learner.predict(batch), expected_scores, rtol=1e-9, atol=1e-12)
    params = list(learner.parameters())
    mean_loss = sum(task_loss(by_hand(learner, sx, sy, qx), qy) for sx, sy, qx, qy in tensors) / len(tensors)
    grads = {n: g for (n, _), g in zip(learner.named_parameters(),
                                       torch.autograd.grad(mean_loss, params, allow_unused=True)) if g is not None}
    moved = outer_step(learner, batch)
    assert_gradients(moved, grads, prefix="")
    assert all(moved[n].abs().max() == 0 for n in moved if n not in grads)  # the unused head stays
    assert {"log_lambda", "scale", "bias"} <= set(grads) if algorithm == "r2d2" else any(
        n.startswith("relation.") for n in grads)  # the learner's own meta-parameters are learnt too


def test_relationnet_sizes_its_relation_module_without_touching_running_statistics():
    suite = RandomImages(ways=3, shots=2, queries=2)
    model = Conv4(out_features=3, hidden=8, norm="running")
    from metazoo.plugins.relationnet import RelationNet

    learner = RelationNet(model, suite)
    assert learner.relation[0].in_channels == 2 * 8  # the concatenated 1×1 feature maps
    assert torch.equal(model.body.block0.norm.running_mean, torch.zeros(8)) and learner.model.training


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_relationnet_compares_feature_maps_as_the_paper_by_hand(host, execution):
    """Sung et al. §3.4 on the conv4-relation embedding (7×7 maps of a 28×28 image): every
    (query, class-sum) pair concatenated by channel and scored by g, one task at a time."""
    torch.manual_seed(0)
    suite = RandomImages(ways=3, shots=2, queries=2)
    model = Conv4(out_features=3, hidden=8, pool_blocks=2).double()
    learner = host.algorithms.get("relationnet").factory(model, suite, outer_optimizer="sgd", outer_lr=1.0,
                                                         execution=execution).double()
    assert [type(m).__name__ for m in learner.relation][:4] == ["Conv2d", "BatchStatNorm", "ReLU", "MaxPool2d"]
    assert learner.relation[9].in_features == 8  # 7 -> 3 -> 1 after the two pooled blocks
    batch = batch_of(suite, tasks=2)

    def by_hand(sx, sy, qx):
        maps = model.body[:-1](torch.cat([sx, qx]))  # the episode's maps [S + Q, 8, 7, 7]
        support, query = maps[: len(sx)], maps[len(sx):]
        assert support.shape[1:] == (8, 7, 7)
        classes = [support[sy == k].sum(0) for k in range(3)]
        pairs = torch.stack([torch.cat([q, c]) for q in query for c in classes])  # [Q · N, 16, 7, 7]
        return learner.relation(pairs).view(len(query), 3)

    tensors = list(zip(*batch.tensors()))
    torch.testing.assert_close(learner.predict(batch), torch.stack([by_hand(sx, sy, qx) for sx, sy, qx, _ in tensors]),
                               rtol=1e-9, atol=1e-12)
    learner.train()
    mean_loss = sum(((by_hand(sx, sy, qx) - F.one_hot(qy, 3).double()) ** 2).mean()
                    for sx, sy, qx, qy in tensors) / len(tensors)
    names = [n for n, _ in learner.named_parameters()]
    grads = dict(zip(names, torch.autograd.grad(mean_loss, list(learner.parameters()), allow_unused=True)))
    moved = outer_step(learner, batch)
    assert_gradients(moved, {n: g for n, g in grads.items() if g is not None}, prefix="")
    assert any(n.startswith("relation.0") for n, g in grads.items() if g is not None)


# -- iMAML ----------------------------------------------------------------------------------------


class LinearTasks:
    """Linear regression tasks y = w·x + 0.1·noise in R³ (a quadratic inner problem)."""

    name, kind = "linear-tasks", "regression"

    def sample(self, split, num_tasks, generator):
        from metazoo.tasks import TaskBatch

        w = torch.randn(num_tasks, 3, 1, generator=generator, dtype=torch.float64)

        def part(n):
            x = torch.randn(num_tasks, n, 3, generator=generator, dtype=torch.float64)
            return x, x @ w + 0.1 * torch.randn(num_tasks, n, 1, generator=generator, dtype=torch.float64)

        return TaskBatch(*part(6), *part(5))

    def make_model(self):
        from collections import OrderedDict

        return torch.nn.Sequential(OrderedDict(head=torch.nn.Linear(3, 1))).double()


def exact_implicit_gradient(theta_w, theta_b, batch, lam):
    """Mean over tasks of dL_query(φ*(θ))/dθ, with φ*(θ) = argmin L_support(φ) + (λ/2)‖φ − θ‖² in
    closed form: (H + λI)φ* = λθ + (2/n)Aᵀy for L_support = (1/n)‖Aφ − y‖², A = [X, 1]."""
    theta = torch.cat([theta_w.flatten(), theta_b]).requires_grad_(True)
    total = 0.0
    for sx, sy, qx, qy in zip(*batch.tensors()):
        a = torch.cat([sx, torch.ones(sx.shape[0], 1, dtype=sx.dtype)], 1)
        n = a.shape[0]
        phi = torch.linalg.solve(2 / n * a.T @ a + lam * torch.eye(4, dtype=a.dtype), lam * theta + 2 / n * a.T @ sy[:, 0])
        aq = torch.cat([qx, torch.ones(qx.shape[0], 1, dtype=qx.dtype)], 1)
        total = total + ((aq @ phi - qy[:, 0]) ** 2).mean()
    (grad,) = torch.autograd.grad(total / batch.num_tasks, theta)
    return {"head.weight": grad[:3].view(1, 3), "head.bias": grad[3:]}


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_imaml_gives_the_exact_implicit_meta_gradient_on_a_quadratic_problem(host, execution):
    suite = LinearTasks()
    torch.manual_seed(0)
    learner = host.algorithms.get("imaml").factory(suite.make_model(), suite, lam=2.0, inner_steps=400,
                                                   inner_lr=0.05, cg_steps=4, execution=execution,
                                                   outer_optimizer="sgd", outer_lr=1.0)
    batch = suite.sample("train", 3, torch.Generator().manual_seed(1))
    head = learner.model.head
    expected = exact_implicit_gradient(head.weight.detach(), head.bias.detach(), batch, lam=2.0)
    assert_gradients(outer_step(learner, batch), expected)


def test_imamls_meta_gradient_is_not_maml_first_order(host):
    """Guard for the test above: the implicit correction (I + H/λ)⁻¹ matters in its setting."""
    suite = LinearTasks()
    torch.manual_seed(0)
    learner = host.algorithms.get("imaml").factory(suite.make_model(), suite, lam=2.0, inner_steps=400,
                                                   inner_lr=0.05, cg_steps=4, outer_optimizer="sgd", outer_lr=1.0)
    batch = suite.sample("train", 3, torch.Generator().manual_seed(1))
    head = learner.model.head
    exact = exact_implicit_gradient(head.weight.detach(), head.bias.detach(), batch, lam=2.0)
    one_cg = host.algorithms.get("imaml").factory(learner.model, suite, lam=2.0, inner_steps=400, inner_lr=0.05,
                                                  cg_steps=1, outer_optimizer="sgd", outer_lr=1.0)
    moved = outer_step(one_cg, batch)
    assert (moved["model.head.weight"] - exact["head.weight"]).abs().max() > 1e-3


# -- Matching Networks' full-context embeddings ----------------------------------------------------


def torch_cell(ours):
    """torch's LSTMCell (gates i, f, g, o) with our cell's weights."""
    size = ours.input.in_features
    cell = torch.nn.LSTMCell(size, size).double()
    with torch.no_grad():
        cell.weight_ih.copy_(ours.input.weight), cell.bias_ih.copy_(ours.input.bias)
        cell.weight_hh.copy_(ours.hidden.weight), cell.bias_hh.zero_()
    return cell


def fce_by_hand(learner, support, query, steps):
    """Vinyals et al. 2016, Appendix A, with torch's LSTM cells, one example at a time."""
    forward, backward, attend = (torch_cell(c) for c in (learner.support_forward, learner.support_backward,
                                                         learner.query_cell))

    def run(cell, rows):
        h = c = torch.zeros(1, rows.shape[1], dtype=rows.dtype)
        out = []
        for x in rows:
            h, c = cell(x[None], (h, c))
            out.append(h[0])
        return torch.stack(out)

    g = run(forward, support) + run(backward, support.flip(0)).flip(0) + support
    fs = []
    for q in query:
        h, c, r = q[None], torch.zeros(1, q.shape[0], dtype=q.dtype), torch.zeros(1, q.shape[0], dtype=q.dtype)
        for _ in range(steps):
            h, c = attend(q[None], (h + r, c))
            h = h + q[None]
            r = torch.softmax(h @ g.T, dim=-1) @ g
        fs.append(h[0])
    return g, torch.stack(fs)


@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_matching_networks_full_context_embeddings_follow_the_appendix(host, execution):
    learner, batch = mlp_learner(host, "matchingnet", fce=True, fce_steps=3, execution=execution)
    expected = []
    for sx, sy, qx, _ in zip(*batch.tensors()):
        g, f = fce_by_hand(learner, embed(learner.model, sx), embed(learner.model, qx), steps=3)
        attention = (F.normalize(f, dim=-1) @ F.normalize(g, dim=-1).T).softmax(-1)
        expected.append((attention @ F.one_hot(sy, 2).double()).log())
    torch.testing.assert_close(learner.predict(batch), torch.stack(expected).detach(), rtol=1e-9, atol=1e-12)
    plain, _ = mlp_learner(host, "matchingnet")
    assert not torch.allclose(plain.predict(batch), learner.predict(batch))  # the context changes the scores
