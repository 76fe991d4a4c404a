"""The tabular example's network: a small MLP, your own model code (``model.class: nets.py:MLP``).

modelcycle passes ``input_shape`` (``(W,)``: the encoded width of one record — numerical columns
standardised, categorical ones one-hot) and ``num_classes``, plus the ``model.options``.
"""

import torch
from torch import nn


class MLP(nn.Module):
    """Linear → ReLU → Dropout → Linear → ReLU → Linear; returns logits."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 64, dropout: float = 0.2) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_shape[0], hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
