"""R2D2: ridge regression differentiable discriminator (Bertinetto, Henriques, Torr & Vedaldi,
ICLR 2019, §3.1–3.2).

The head of each task is fitted in closed form by ridge regression of one-hot targets Y ∈ R^{S×N}
on the support embeddings X ∈ R^{S×D}: W = Xᵀ(XXᵀ + λI)⁻¹Y, the Woodbury form, which inverts an
S×S matrix rather than a D×D one (Eq. 3–4). A query's logits are α·(x̂ W) + β with a learnt scale
α and bias β (§3.2), and λ is meta-learnt too, as in the paper (kept positive here as e^{log λ}).
The embedding is the suite's backbone (the paper's own network is a wider four-layer CNN whose
last two layers' features are concatenated). Initial values λ = 1, α = 1, β = 0 are ours.
"""

import metazoo
import torch
from metazoo.model_data import ModelDataLearner, one_hot
from torch import Tensor, nn

PAPER = ("Bertinetto, Henriques, Torr & Vedaldi. Meta-learning with differentiable closed-form "
         "solvers. ICLR 2019")


class R2D2(ModelDataLearner):
    """Classify queries by a ridge-regression head fitted to each task's support set."""

    def __init__(self, model, suite, **hyperparameters):
        super().__init__(model, suite, **hyperparameters)
        self.log_lambda = nn.Parameter(torch.zeros(()))  # λ = 1
        self.scale = nn.Parameter(torch.ones(()))  # α
        self.bias = nn.Parameter(torch.zeros(()))  # β

    def score(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        targets = one_hot(support_y, n_way, support.dtype)  # [S, N]
        gram = support @ support.T  # [S, S]
        ridge = gram + self.log_lambda.exp() * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        weights = support.T @ torch.linalg.solve(ridge, targets)  # [D, N] = Xᵀ(XXᵀ + λI)⁻¹Y
        return self.scale * (query @ weights) + self.bias


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("r2d2", R2D2, family="model-data", paper=PAPER,
                 summary="embedding; a closed-form ridge-regression head per task")
