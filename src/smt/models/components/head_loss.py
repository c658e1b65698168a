"""The LM head and its next-token cross-entropy fused, a chunk of tokens at a time.

Training through `lm_head(hidden)` then `F.cross_entropy` holds (tokens, vocab) float32 tensors
several times over: the logits, the log-probabilities and their two gradients, 1 GiB each at
32K tokens and an 8K vocabulary. `linear_cross_entropy` never forms them: each chunk of tokens
gets its logits, its loss and, when gradients are wanted, its share of both gradients at once
(the gradient of a summed cross-entropy is softmax - one-hot, known in the forward), so backward
only scales the two kept gradients, the size of the hidden states and of the head. Same FLOPs as
the unfused head, no recompute. `linear_cross_entropy_reference` is the unfused oracle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100
CHUNK_LOGIT_BYTES = 1 << 25  # one chunk's float32 logits: 32 MiB


def linear_cross_entropy_reference(hidden: Tensor, weight: Tensor, targets: Tensor,
                                   ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Summed next-token NLL of F.linear(hidden, weight) over the targets that are not ignore_index
    (float32), through autograd."""
    logits = F.linear(hidden, weight)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=ignore_index, reduction="sum")


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int = IGNORE_INDEX,
                         chunk_tokens: int | None = None) -> Tensor:
    """`linear_cross_entropy_reference` in chunks of tokens (the fast path): hidden (..., d), weight
    (vocab, d), targets (...) of token ids. Under autocast the head's matmuls run in the autocast
    dtype, as F.linear's would; the softmax and the loss are float32."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    elif weight.dtype != hidden.dtype:
        weight = weight.to(hidden.dtype)
    rows = chunk_tokens or max(1, CHUNK_LOGIT_BYTES // (4 * weight.shape[0]))
    with torch.autocast(device_type, enabled=False):
        return _LinearCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1),
                                         ignore_index, rows)


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of hidden (N, d) @ weight.T against targets (N,), one chunk of rows at a
    time; the gradients are formed in the forward (when either input needs one) and scaled in backward."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int, rows: int) -> Tensor:
        wants_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if wants_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if wants_grad else None
        for r0 in range(0, hidden.shape[0], rows):
            h, t = hidden[r0:r0 + rows], targets[r0:r0 + rows]
            log_probs = torch.log_softmax((h @ weight.t()).float(), dim=-1)
            valid = t != ignore_index
            picked_index = t.masked_fill(~valid, 0).unsqueeze(1)
            total -= (log_probs.gather(1, picked_index).squeeze(1) * valid).sum()
            if wants_grad:
                probs = log_probs.exp_()  # softmax - one-hot, in place of the log-probabilities
                probs.scatter_add_(1, picked_index, -valid.float().unsqueeze(1))
                grad_logits = probs.mul_(valid.unsqueeze(1)).to(h.dtype)
                torch.mm(grad_logits, weight, out=grad_hidden[r0:r0 + rows])
                if h.dtype == torch.float32:
                    grad_weight.addmm_(grad_logits.t(), h)
                else:  # a bf16 product, accumulated in float32 over the chunks
                    grad_weight.add_((grad_logits.t() @ h).float())
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total: Tensor) -> tuple[Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        return (grad_hidden * grad_total.to(grad_hidden.dtype), (grad_weight * grad_total).to(ctx.weight_dtype),
                None, None, None)
