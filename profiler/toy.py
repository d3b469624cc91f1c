"""The LoRA paper's small experiment, in seconds on a CPU: a tiny MLP learns a regression task
from a random teacher, once with every weight trainable (full fine-tuning) and once with the
backbone frozen and a rank-``r`` LoRA on its last hidden layer (Hu et al., arXiv:2106.09685,
Eq. 3: ``h = W0·x + B·A·x``, ``B`` zero-initialized). Returns both training-loss curves."""

from __future__ import annotations

import torch
from torch import nn

WIDTH = 64
INPUTS = 16
SAMPLES = 512
LEARNING_RATE = 1e-2


class LoraLinear(nn.Module):
    """``W0·x + (alpha / r)·B·A·x`` with ``W0`` frozen."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(r, base.in_features) / base.in_features**0.5)
        self.B = nn.Parameter(torch.zeros(base.out_features, r))
        self.scale = alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * (x @ self.A.T @ self.B.T)


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(INPUTS, WIDTH), nn.Tanh(), nn.Linear(WIDTH, WIDTH), nn.Tanh(), nn.Linear(WIDTH, 1))


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=LEARNING_RATE)
    losses = []
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(round(loss.item(), 6))
    return losses


def lora_toy_curves(r: int = 4, steps: int = 200, seed: int = 0) -> dict:
    """Loss curves of full fine-tuning and frozen backbone + LoRA (same start, same data)."""
    torch.manual_seed(seed)
    teacher = _mlp()
    x = torch.randn(SAMPLES, INPUTS)
    with torch.no_grad():
        y = teacher(x) + 0.01 * torch.randn(SAMPLES, 1)
    start = _mlp()
    full = _mlp()
    full.load_state_dict(start.state_dict())
    lora = _mlp()
    lora.load_state_dict(start.state_dict())
    lora.requires_grad_(False)
    hidden = lora[2]
    assert isinstance(hidden, nn.Linear)  # _mlp's last hidden layer
    lora[2] = LoraLinear(hidden, r, alpha=2.0 * r)
    return {
        "full": _train(full, x, y, steps),
        "lora": _train(lora, x, y, steps),
        "trainable": {"full": sum(p.numel() for p in full.parameters()),
                      "lora": sum(p.numel() for p in lora.parameters() if p.requires_grad)},
        "r": r, "steps": steps,
    }
