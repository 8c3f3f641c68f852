"""The conv4 backbone: batch-statistics normalisation, and second-order MAML meta-gradients of
the engine (vectorised and looped) against a plain per-task reference loop."""

import pytest
import torch
import torch.nn.functional as F
from metazoo.models import BatchStatNorm, Conv4
from metazoo.plugins.maml import MAML
from metazoo.tasks import TaskBatch, TaskSuite
from torch.func import functional_call


class RandomImages(TaskSuite):
    """Few-shot tasks on random 1×28×28 images (only shapes and labels matter here)."""

    name = "random-images"
    kind = "classification"

    def __init__(self, ways: int = 5, shots: int = 1, queries: int = 2) -> None:
        self.ways, self.shots, self.queries = ways, shots, queries

    def sample(self, split, num_tasks, generator):
        def part(per_class):
            x = torch.randn(num_tasks, self.ways * per_class, 1, 28, 28, generator=generator)
            y = torch.arange(self.ways).repeat(per_class).expand(num_tasks, -1)
            return x, y

        return TaskBatch(*part(self.shots), *part(self.queries))

    def make_model(self):
        return Conv4(out_features=self.ways, hidden=8)


def reference_meta_gradient(model, batch, inner_lr, steps):
    """Sum over tasks of the second-order MAML meta-gradient, one task at a time."""
    params = dict(model.named_parameters())
    total = 0.0
    for sx, sy, qx, qy in zip(*batch.tensors()):
        fast = params
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(model, fast, (sx,)), sy)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {name: p - inner_lr * g for (name, p), g in zip(fast.items(), grads)}
        total = total + F.cross_entropy(functional_call(model, fast, (qx,)), qy)
    return torch.autograd.grad(total, list(params.values()))


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("execution", ["vmap", "loop"])
def test_maml_meta_gradient_matches_per_task_loop(execution, steps):
    torch.manual_seed(0)
    suite = RandomImages()
    model = suite.make_model().double()
    batch = suite.sample("train", 3, torch.Generator().manual_seed(1)).to("cpu", torch.float64)
    learner = MAML(model, suite, inner_lr=0.4, inner_steps=steps, execution=execution)

    grads, _ = learner.chunk_meta_gradient(batch)
    expected = flat(reference_meta_gradient(model, batch, 0.4, steps))

    got = flat(grads)
    assert (got - expected).norm() / expected.norm() < 1e-10


def test_loop_and_vmap_predict_alike():
    torch.manual_seed(0)
    suite = RandomImages()
    model = suite.make_model().double()
    batch = suite.sample("test", 3, torch.Generator().manual_seed(2)).to("cpu", torch.float64)
    logits = {
        execution: MAML(model, suite, inner_lr=0.4, execution=execution).predict(batch)
        for execution in ("vmap", "loop")
    }
    assert logits["vmap"].shape == (3, 10, 5)
    torch.testing.assert_close(logits["vmap"], logits["loop"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_batch_stat_norm_uses_the_current_batch(training):
    norm = BatchStatNorm(3).double().train(training)
    x = 5 + 3 * torch.randn(6, 3, 4, 4, dtype=torch.float64)
    out = norm(x)
    per_channel = out.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(per_channel.var(1, correction=0), torch.ones(3, dtype=torch.float64),
                               rtol=1e-4, atol=1e-4)  # eps in the denominator
    assert not list(norm.buffers())  # no running statistics

    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        norm.bias.copy_(torch.tensor([0.0, -1.0, 1.0]))
    scale = norm.weight.view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), out * scale + norm.bias.view(1, 3, 1, 1))


def test_conv4_shapes_and_embedding():
    model = Conv4()  # 64 filters, 5 outputs, 28×28 input
    x = torch.randn(4, 1, 28, 28)
    assert model.body(x).shape == (4, 64)  # 28 → 14 → 7 → 3 → 1
    assert model(x).shape == (4, 5)
    assert model.head.in_features == 64
    assert Conv4(in_channels=3, hidden=32, image_size=84).head.in_features == 32 * 5 * 5
    assert Conv4(pool_blocks=2).head.in_features == 64 * 7 * 7  # Relation Networks' embedding
    assert Conv4(pool_blocks=2).body(torch.zeros(2, 1, 28, 28)).shape == (2, 64 * 7 * 7)
    with pytest.raises(ValueError, match="pool_blocks must be 0 to 4"):
        Conv4(pool_blocks=2, downsample="stride")
