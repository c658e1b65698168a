"""AdamW with weight decay only on matrices: no decay on norms, biases and embeddings.

`adamw_every_parameter` is the other choice a Trainer can be given (its `optimizer_factory`):
torch's AdamW on every parameter in one group, what a training loop of one's own would write.
"""

from __future__ import annotations

import torch
from torch import nn

from smt.config import TrainingConfig


def split_decay_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decay, no_decay): weights of Linear/conv layers decay; biases, norm weights, embeddings,
    SSM A_log/D and every other 1-D or embedding tensor do not. Shared (tied) tensors once."""
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for _, parameter in model.named_parameters():
        if not parameter.requires_grad or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        if parameter.dim() < 2 or id(parameter) in embedding_weights:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return decay, no_decay


def build_optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.AdamW:
    """AdamW with the two parameter groups; fused kernels on CUDA, foreach elsewhere."""
    decay, no_decay = split_decay_parameters(model)
    groups = [
        {"params": decay, "weight_decay": float(config.weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    on_cuda = all(p.is_cuda for p in decay + no_decay)
    kind = {"fused": True} if on_cuda else {"foreach": True}
    return torch.optim.AdamW(groups, lr=float(config.lr), betas=(float(config.beta1), float(config.beta2)),
                             **kind)


def adamw_every_parameter(model: nn.Module, config: TrainingConfig) -> torch.optim.AdamW:
    """torch.optim.AdamW over `model.parameters()` in one group: training.weight_decay on every
    parameter (gains, biases and embeddings too), torch's own kernel choice. With beta2 0.999,
    weight_decay 0.01 and min_lr_ratio 0 it is torch's defaults with a cosine schedule to zero."""
    return torch.optim.AdamW(model.parameters(), lr=float(config.lr), betas=(float(config.beta1),
                             float(config.beta2)), weight_decay=float(config.weight_decay))
