"""Next-token test-time training (the ``ntp`` update rule): memory as a low-rank delta on the model's own weights.

The Titans memory (memory.py) is a separate MLP whose read is grafted onto the residual stream; the
study found it no better than its ablation. This arm follows test-time-training work that updates
part of the pretrained model itself with its own objective (In-Place TTT updates MLP
down-projections per chunk): for each memory layer i the MLP's down-projection W_i (hidden x inter)
computes W_i x + B_i (A_i x), where

- A_i (rank x inter) is a frozen projection with orthonormal rows drawn from the config's seed (a
  buffer of the patch, the same for every workspace), and
- B_i (hidden x rank) IS the memory: it lives in the workspace's :class:`MemoryState` (one matrix per
  layer), starts at zero, so an empty memory computes the base model bit for bit.

Priming a chunk takes ``ntp_steps`` SGD steps on the chunk's mean next-token loss with respect to
every B_i: B <- (1 - ntp_decay) B - ntp_lr * grad (retention toward zero; ``ntp_normalize`` uses
grad / ||grad|| per layer; ``ntp_optimizer="adam"`` steps along Adam's per-parameter direction, its
moments restarted every chunk so nothing but B is stored), the change clipped to ``max_update_norm``
(global Frobenius norm over the layers). Reading is the delta added in the hook;
shut gates (the ablation) leave it out, so the ablation is the base model exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def default_ntp_layers(num_layers: int) -> list[int]:
    """The upper quarter of the decoder (at least one layer): where In-Place TTT puts its fast weights,
    and where a backward pass from the loss is shortest."""
    count = max(1, num_layers // 4)
    return list(range(num_layers - count, num_layers))


def down_projection(layer: nn.Module) -> nn.Linear:
    """The MLP down-projection of a decoder layer (``mlp.down_proj`` in Llama / Qwen families)."""
    mlp = getattr(layer, "mlp", None)
    proj = getattr(mlp, "down_proj", None)
    if not isinstance(proj, nn.Linear):
        raise ValueError(f"{type(layer).__name__} has no mlp.down_proj linear layer; the ntp rule needs one "
                         "(a mixture-of-experts MLP is not supported)")
    return proj


class NtpLayer(nn.Module):
    """The frozen projection A of one layer's low-rank delta, and how the delta is read."""

    def __init__(self, down_proj: nn.Linear, rank: int, seed: int, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.hidden_size = int(down_proj.out_features)
        self.rank = rank
        g = torch.Generator().manual_seed(seed * 1_000_003 + layer_idx)
        proj = torch.empty(rank, int(down_proj.in_features))
        nn.init.orthogonal_(proj, generator=g)
        self.register_buffer("proj", proj)

    def initial_weights(self) -> list[torch.Tensor]:
        """B = 0: the empty memory adds nothing."""
        return [torch.zeros(self.hidden_size, self.rank)]

    def delta(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """B (A x) for the down-projection's input ``x`` (..., inter), in fp32."""
        return (x.float() @ self.proj.t()) @ b.t()


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting token t+1 from the prefix up to t, in fp32."""
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1))


def ntp_step(old: list[torch.Tensor], grads: list[torch.Tensor], lr: float, decay: float,
             max_norm: float, normalize: bool = False) -> tuple[list[torch.Tensor], float]:
    """One retained, clipped SGD step on the B matrices of all layers together (``normalize``: each
    layer's gradient scaled to unit norm first). Returns (new B's, raw norm of the change)."""
    from titans_lsp.model.memory import _clip

    if normalize:
        grads = [g / (g.norm() + 1e-12) for g in grads]
    new = [(1.0 - decay) * b - lr * g for b, g in zip(old, grads)]
    return _clip(old, new, max_norm)


class ChunkAdam:
    """Adam's direction m_hat / (sqrt(v_hat) + eps) for the B matrices over one chunk's steps. The moments
    live only for the chunk (a workspace's state stays B alone), so with one step per chunk this is a
    sign step; with several it is Adam within the chunk."""

    def __init__(self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.betas, self.eps = betas, eps
        self.steps = 0
        self.m: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []

    def direction(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        b1, b2 = self.betas
        if not self.m:
            self.m = [torch.zeros_like(g) for g in grads]
            self.v = [torch.zeros_like(g) for g in grads]
        self.steps += 1
        out = []
        for m, v, g in zip(self.m, self.v, grads):
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            m_hat = m / (1 - b1 ** self.steps)
            v_hat = v / (1 - b2 ** self.steps)
            out.append(m_hat / (v_hat.sqrt() + self.eps))
        return out
