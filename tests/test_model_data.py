"""The model-data family: ProtoNet and MatchingNet against hand computations, vectorised
against looped execution, chunking, suite checks and a short training."""

import math
from collections import OrderedDict

import pytest
import torch
from metazoo import Zoo, ZooError
from metazoo.model_data import embedding
from metazoo.models import MLP, Conv4
from metazoo.plugins.hyperplanes import Hyperplanes
from metazoo.plugins.matchingnet import MatchingNet
from metazoo.plugins.protonet import ProtoNet
from metazoo.plugins.sinusoid import Sinusoid
from metazoo.tasks import TaskBatch, TaskSuite, task_metrics
from torch import nn

LEARNERS = [ProtoNet, MatchingNet]


class NoisyClusters(TaskSuite):
    """3-way tasks whose classes are Gaussian clusters in the first 2 input dimensions, hidden
    among 8 dimensions of larger noise: an embedding must learn to drop the noise."""

    name = "noisy-clusters"
    kind = "classification"
    ways, shots, queries, signal, noise = 3, 2, 5, 2, 8

    def sample(self, split, num_tasks, generator):
        centres = 2 * torch.randn(num_tasks, self.ways, self.signal, generator=generator)

        def part(per_class):
            y = torch.arange(self.ways).repeat(per_class).expand(num_tasks, -1)  # [T, n]
            signal = centres.gather(1, y.unsqueeze(-1).expand(-1, -1, self.signal))
            signal = signal + 0.3 * torch.randn(signal.shape, generator=generator)
            noise = 3 * torch.randn(num_tasks, y.shape[1], self.noise, generator=generator)
            return torch.cat([signal, noise], -1), y  # [T, n, 10], [T, n]

        return TaskBatch(*part(self.shots), *part(self.queries))

    def make_model(self):
        return MLP(self.signal + self.noise, 16, self.ways)


class RandomImages(TaskSuite):
    """5-way 1-shot tasks on random 1×28×28 images, for a conv4 backbone."""

    name = "random-images"
    kind = "classification"

    def sample(self, split, num_tasks, generator):
        def part(per_class):
            x = torch.randn(num_tasks, 5 * per_class, 1, 28, 28, generator=generator)
            return x, torch.arange(5).repeat(per_class).expand(num_tasks, -1)

        return TaskBatch(*part(1), *part(2))

    def make_model(self):
        return Conv4(hidden=8)


def identity_model(dim: int) -> nn.Module:
    """A backbone whose embedding is the identity, so that logits follow from raw inputs."""
    body = nn.Linear(dim, dim)
    with torch.no_grad():
        body.weight.copy_(torch.eye(dim))
        body.bias.zero_()
    return nn.Sequential(OrderedDict(body=body, head=nn.Linear(dim, 2))).double()


def two_tasks() -> TaskBatch:
    """Two 2-way tasks in the plane: 3 support points [labels 0, 1, 1], 2 query points."""
    support_x = torch.tensor([[[0.0, 0.0], [0.0, 2.0], [0.0, 4.0]],
                              [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], dtype=torch.float64)
    query_x = torch.tensor([[[1.0, 1.0], [0.0, 3.0]],
                            [[1.0, 0.0], [-1.0, 2.0]]], dtype=torch.float64)
    support_y = torch.tensor([[0, 1, 1], [0, 1, 1]])
    return TaskBatch(support_x, support_y, query_x, torch.tensor([[0, 1], [0, 1]]))


def test_protonet_logits_by_hand():
    logits = ProtoNet(identity_model(2), NoisyClusters()).predict(two_tasks())
    # Task 0: prototypes (0, 0) and (0, 3). Task 1: prototypes (1, 0) and (0.5, 1).
    expected = -torch.tensor([[[1 + 1, 1 + 4], [9, 0]],
                              [[0, 0.25 + 1], [4 + 4, 2.25 + 1]]], dtype=torch.float64)
    torch.testing.assert_close(logits, expected)


def test_protonet_logits_by_hand_with_mlp_embedding():
    torch.manual_seed(0)
    suite = Hyperplanes()
    model = suite.make_model().double()
    batch = suite.sample("test", 3, torch.Generator().manual_seed(0)).to("cpu", torch.float64)
    logits = ProtoNet(model, suite).predict(batch)
    with torch.no_grad():
        for t in range(batch.num_tasks):
            support = torch.relu(model.fc0(batch.support_x[t]))  # the layers before the head
            query = torch.relu(model.fc0(batch.query_x[t]))
            for k in range(2):
                prototype = support[batch.support_y[t] == k].mean(0)
                distance = ((query - prototype) ** 2).sum(1)
                torch.testing.assert_close(logits[t, :, k], -distance)


def test_matchingnet_log_probabilities_by_hand():
    logits = MatchingNet(identity_model(2), NoisyClusters()).predict(two_tasks())
    # Task 1, query (1, 0): cosines to the support (1, 0), (0, 1), (1, 1) are 1, 0, 1/√2.
    weights = [math.exp(1), math.exp(0), math.exp(1 / math.sqrt(2))]
    p0 = weights[0] / sum(weights)  # attention on the only support point of class 0
    torch.testing.assert_close(logits[1, 0], torch.tensor([p0, 1 - p0], dtype=torch.float64).log())
    # Task 0, query (1, 1): the support point (0, 0) has no direction; its cosine is 0.
    c = 1 / math.sqrt(2)
    weights = [math.exp(0), math.exp(c), math.exp(c)]
    p0 = weights[0] / sum(weights)
    torch.testing.assert_close(logits[0, 0], torch.tensor([p0, 1 - p0], dtype=torch.float64).log())
    torch.testing.assert_close(logits.exp().sum(-1), torch.ones(2, 2, dtype=torch.float64))


@pytest.mark.parametrize("cls", LEARNERS)
def test_vmap_equals_loop_and_tasks_keep_their_own_statistics(cls):
    torch.manual_seed(0)
    suite = RandomImages()
    model = suite.make_model().double()
    batch = suite.sample("train", 3, torch.Generator().manual_seed(0)).to("cpu", torch.float64)
    results = {}
    for execution in ("vmap", "loop"):
        learner = cls(model, suite, execution=execution)
        grads, loss = learner.chunk_meta_gradient(batch)
        names = [name for name, _ in learner.named_parameters()]
        assert [n for n, g in zip(names, grads) if g is None] == ["model.head.weight", "model.head.bias"]
        grads = torch.cat([g.flatten() for g in grads if g is not None])
        results[execution] = (learner.predict(batch), grads, loss)
    for got, expected in zip(results["vmap"], results["loop"]):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # Per-task batch statistics: a task's logits do not depend on the other tasks of the batch.
    alone = cls(model, suite, execution="vmap").predict(batch[1])
    torch.testing.assert_close(alone[0], results["vmap"][0][1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", LEARNERS)
def test_chunked_step_equals_unchunked(cls):
    suite = NoisyClusters()
    batch = suite.sample("train", 5, torch.Generator().manual_seed(0)).to("cpu", torch.float64)
    params = {}
    for chunk_size in (None, 2):
        torch.manual_seed(0)
        learner = cls(suite.make_model().double(), suite, outer_optimizer="sgd", outer_lr=0.1,
                      chunk_size=chunk_size)
        learner.meta_train_step(batch)
        params[chunk_size] = torch.cat([p.detach().flatten() for p in learner.parameters()])
    torch.testing.assert_close(params[2], params[None], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", LEARNERS)
def test_regression_suite_is_rejected(cls):
    suite = Sinusoid()
    with pytest.raises(ZooError, match="needs a classification suite, but sinusoid is a regression"):
        cls(suite.make_model(), suite)


def test_backbone_without_embedding_is_rejected():
    with pytest.raises(ZooError, match="neither a submodule 'body'"):
        embedding(nn.Linear(3, 2))
    assert isinstance(embedding(Conv4()), nn.Sequential)


def test_registered_as_model_data():
    algorithms = Zoo().algorithms
    for name, cls in (("protonet", ProtoNet), ("matchingnet", MatchingNet)):
        entry = algorithms.get(name)
        assert (entry.factory, entry.family) == (cls, "model-data")
        assert entry.info["paper"]


@pytest.mark.parametrize("cls", LEARNERS)
def test_short_training_learns_the_embedding(cls):
    torch.manual_seed(0)
    suite = NoisyClusters()
    learner = cls(suite.make_model(), suite, outer_lr=1e-2)
    test = suite.sample("test", 200, torch.Generator().manual_seed(1))

    def accuracy():
        return task_metrics(suite.kind, learner.predict(test), test.query_y).mean().item()

    before = accuracy()  # chance is 1/3: the random embedding is dominated by the noise
    generator = torch.Generator().manual_seed(0)
    losses = [learner.meta_train_step(suite.sample("train", 16, generator))["loss"]
              for _ in range(80)]
    assert before < 0.55
    assert accuracy() > 0.85
    assert sum(losses[-10:]) < sum(losses[:10])
