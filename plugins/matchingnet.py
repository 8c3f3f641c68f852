"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, NeurIPS 2016,
Eq. 1–2 and Appendix A), with optional full-context embeddings.

A query x̂ is labelled by attention over the support set, ŷ = Σ_i a(x̂, x_i) y_i with one-hot
y_i (Eq. 1), where a is the softmax over the support set of the cosine similarity between the
embeddings, a(x̂, x_i) = exp(c(f(x̂), g(x_i))) / Σ_j exp(c(f(x̂), g(x_j))) (Eq. 2). Without
full-context embeddings (``fce = false``, the default) f = g = the backbone's embedding; the
paper reports they help little on Omniglot and uses them for miniImageNet. The logits returned
are log ŷ (clamped away from 0), so the cross-entropy training loss is the negative
log-likelihood of the predicted distribution and the softmax of the logits is ŷ itself. The
cosine is not scaled by a temperature, as in the paper.

With ``fce = true`` (Appendix A): g(x_i, S) = h⃗_i + h⃖_i + g'(x_i), a bidirectional LSTM over the
support embeddings g'(x_i) in the support set's order (A.2); and f(x̂, S) = attLSTM(f'(x̂), g(S),
K) (A.1): for k = 1..K, ĥ_k, c_k = LSTM(f'(x̂), h_{k−1} + r_{k−1}, c_{k−1}), h_k = ĥ_k + f'(x̂),
r_k = Σ_i softmax_i(h_kᵀ g(x_i)) g(x_i), starting from h_0 = f'(x̂), r_0 = 0, and f(x̂, S) = h_K.
The paper feeds the LSTM the concatenation [h_{k−1}, r_{k−1}]; its sum keeps the state the
embedding's size here (our reading). K is ``fce_steps``. The LSTM cells are written with linear
layers so that they run under ``torch.vmap``.
"""

from dataclasses import dataclass

import metazoo
import torch
import torch.nn.functional as F
from metazoo.config import positive
from metazoo.model_data import ModelDataConfig, ModelDataLearner, one_hot
from torch import Tensor, nn

PAPER = "Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra. Matching Networks for One Shot Learning. NeurIPS 2016"


@dataclass(frozen=True)
class MatchingNetConfig(ModelDataConfig):
    fce: bool = False  # full-context embeddings (Appendix A)
    fce_steps: int = 5  # K, the attLSTM's processing steps

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "fce_steps")


class LSTMCell(nn.Module):
    """One LSTM step (Hochreiter & Schmidhuber 1997) from linear layers: ``(x, h, c) -> (h', c')``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.input, self.hidden = nn.Linear(size, 4 * size), nn.Linear(size, 4 * size, bias=False)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        i, f, g, o = (self.input(x) + self.hidden(h)).chunk(4, dim=-1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c


class MatchingNet(ModelDataLearner):
    """Cosine attention over the support set's labels."""

    Config = MatchingNetConfig

    def __init__(self, model, suite, **hyperparameters):
        super().__init__(model, suite, **hyperparameters)
        if self.config.fce:
            size = self.embedding_size(suite)
            self.support_forward, self.support_backward = LSTMCell(size), LSTMCell(size)
            self.query_cell = LSTMCell(size)

    def score(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        if self.config.fce:
            support = self.contextual_support(support)
            query = self.contextual_query(query, support)
        cosine = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).T  # [Q, S]
        attention = cosine.softmax(dim=-1)  # Eq. 2
        probs = attention @ one_hot(support_y, n_way, support.dtype)  # [Q, N], Eq. 1
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()

    def contextual_support(self, support: Tensor) -> Tensor:
        """g(x_i, S) = h⃗_i + h⃖_i + g'(x_i): ``[S, D] -> [S, D]`` (Appendix A.2)."""
        def run(cell, rows):
            h = c = torch.zeros_like(rows[0])
            states = []
            for x in rows:
                h, c = cell(x, h, c)
                states.append(h)
            return states

        rows = list(support)
        ahead = run(self.support_forward, rows)
        behind = run(self.support_backward, rows[::-1])[::-1]
        return torch.stack(ahead) + torch.stack(behind) + support

    def contextual_query(self, query: Tensor, support: Tensor) -> Tensor:
        """f(x̂, S) = attLSTM(f'(x̂), g(S), K): ``[Q, D] -> [Q, D]`` (Appendix A.1)."""
        h, c, r = query, torch.zeros_like(query), torch.zeros_like(query)
        for _ in range(self.config.fce_steps):
            h, c = self.query_cell(query, h + r, c)
            h = h + query
            r = (h @ support.T).softmax(dim=-1) @ support  # [Q, D]: attention read-out of g(S)
        return h


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("matchingnet", MatchingNet, family="model-data", paper=PAPER,
                 summary="label queries by cosine attention over the support set (optional FCE)")
