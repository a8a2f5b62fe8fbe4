"""Memory as context (``integration="mac"``): memory tokens prepended to a layer's attention.

The study's V1 and the Titans paper's MAC variant. Each memory layer owns ``num_memory_tokens``
learned queries p_j. On every forward the current memory state is read at those queries,
t_j = out_proj(M(normalize(W_q p_j))), and the tokens t_j enter the layer's attention as extra
keys and values (through the layer's own k_proj / k_norm / v_proj, without rotary position: they
have no place in the text). Every query of the sequence can attend to them, in one joint softmax
with the sequence's own keys.

Wiring: each memory-carrying attention module gets its own shallow copy of the model config whose
``_attn_implementation`` names :data:`ATTENTION_NAME`, registered in transformers'
``AttentionInterface``. That function asks the patch for the memory keys and values; with no
active state (or gates shut: the ablation) it calls the module's original attention unchanged,
so ``none`` / ``concat`` / ``ablation`` compute exactly what the unpatched model computes.
The model-level config (and with it the mask construction) is untouched.

The memory tokens are recomputed from the state on every forward and never enter the KV cache,
so a cached decode sees exactly what an uncached forward sees, and writes to the memory between
calls take effect at once.

Persistent memory tokens (``persistent_tokens`` > 0, Titans' persistent memory) use the same routing
with any integration: learned hidden-space tokens, the same for every input and every workspace,
prepended before the memory tokens, with the logit bias log(gate) + persistent_logit (the latter
starts at -20, so untrained tokens draw no measurable attention).

Attention mass: memory column j gets the additive logit bias log(gate) + log(presence_j), with
presence_j = |t_j|^2 / (|t_j|^2 + 1). The gate is the layer's learned gate (same as ``additive``);
the presence term makes an empty memory (t_j = 0 exactly, since the memory's output matrix starts
at zero) draw no attention at all, so a fresh memory leaves the model's output unchanged, as the
other integrations do.
"""

from __future__ import annotations

import copy
import sys
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_NAME = "titans_mac"
_ORIGINAL = "_titans_mac_original"  # module attribute: (original config, original implementation name)
_PROVIDER = "_titans_mac_kv"  # module attribute: callable(dtype) -> (keys, values, bias) | None

MemoryKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # keys, values: (kv_heads, N, head_dim); bias: (N,)


def _original_attention(module: nn.Module) -> Callable:
    """The attention function the module would use without the patch (sdpa, eager, flash...)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    _, name = getattr(module, _ORIGINAL)
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if name in (None, "eager") or name not in ALL_ATTENTION_FUNCTIONS:
        if eager is None:
            raise RuntimeError(f"{type(module).__name__}: no eager attention function to fall back to")
        return eager
    return ALL_ATTENTION_FUNCTIONS[name]


def _memory_mask(attention_mask: torch.Tensor | None, bias: torch.Tensor, batch: int, q_len: int, kv_len: int,
                 dtype: torch.dtype) -> torch.Tensor:
    """A float mask (batch, 1, q_len, N + kv_len): the memory columns get ``bias``, the sequence columns
    keep the model's mask (or the causal mask it implied when it passed none)."""
    neg = torch.finfo(dtype).min
    device = bias.device
    if attention_mask is None:
        # No mask: the model relies on sdpa's own rule. One query attends every key (a decode step after
        # the cache); several use is_causal, which is top-left aligned (query i sees keys 0..i): the rule
        # for a static cache's prefill too, whose slots after the prompt are still empty.
        rows = torch.arange(q_len, device=device)[:, None] + (kv_len if q_len == 1 else 0)
        allowed = torch.arange(kv_len, device=device)[None, :] <= rows
        seq = torch.where(allowed, 0.0, neg).to(dtype)[None, None].expand(batch, 1, q_len, kv_len)
    elif attention_mask.dtype == torch.bool:
        seq = torch.where(attention_mask[..., :kv_len], 0.0, neg).to(dtype)
    else:
        seq = attention_mask[..., :kv_len].to(dtype)
    memory = bias.to(dtype)[None, None, None, :].expand(seq.shape[0], seq.shape[1], q_len, bias.shape[0])
    return torch.cat([memory, seq], dim=-1)


def mac_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, **kwargs):
    """Registered attention function: the original attention over [memory tokens; sequence]."""
    original = _original_attention(module)
    provider = getattr(module, _PROVIDER, None)
    memory = provider(query.dtype) if provider is not None else None
    if memory is None:
        return original(module, query, key, value, attention_mask, **kwargs)
    mem_keys, mem_values, bias = memory
    batch, q_len, kv_len = query.shape[0], query.shape[-2], key.shape[-2]
    key = torch.cat([mem_keys[None].expand(batch, -1, -1, -1), key], dim=-2)
    value = torch.cat([mem_values[None].expand(batch, -1, -1, -1), value], dim=-2)
    mask = _memory_mask(attention_mask, bias, batch, q_len, kv_len, query.dtype)
    kwargs.pop("is_causal", None)  # the explicit mask says it all
    return original(module, query, key, value, mask, **kwargs)


def register_attention() -> None:
    """Make :data:`ATTENTION_NAME` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if ATTENTION_NAME not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(ATTENTION_NAME, mac_attention)


def attach(attention: nn.Module, provider: Callable[[torch.dtype], MemoryKV | None]) -> None:
    """Route ``attention`` through :func:`mac_attention` with ``provider`` supplying the memory keys/values."""
    register_attention()
    original_config = attention.config
    config = copy.copy(original_config)
    config._attn_implementation_internal = ATTENTION_NAME  # this module only; the model's config is unchanged
    setattr(attention, _ORIGINAL, (original_config, original_config._attn_implementation))
    setattr(attention, _PROVIDER, provider)
    attention.config = config


def detach(attention: nn.Module) -> None:
    """Undo :func:`attach`."""
    if hasattr(attention, _ORIGINAL):
        attention.config = getattr(attention, _ORIGINAL)[0]
        delattr(attention, _ORIGINAL)
    if hasattr(attention, _PROVIDER):
        delattr(attention, _PROVIDER)


def memory_kv(attention: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of memory tokens (N, hidden) through the layer's own projections, no rotary."""
    head_dim = attention.head_dim
    n = tokens.shape[0]
    keys = attention.k_proj(tokens).view(n, -1, head_dim)
    k_norm = getattr(attention, "k_norm", None)
    if k_norm is not None:
        keys = k_norm(keys)
    values = attention.v_proj(tokens).view(n, -1, head_dim)
    return keys.transpose(0, 1), values.transpose(0, 1)


def presence_bias(tokens: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """log(gate) + log(|t|^2 / (|t|^2 + 1)) per memory token: an empty memory gets no attention."""
    power = tokens.float().pow(2).sum(-1)
    presence = power / (power + 1.0)
    return torch.log(gate.float().clamp_min(1e-30)) + torch.log(presence.clamp_min(1e-30))


def init_queries(num_tokens: int, memory_dim: int, generator: torch.Generator) -> torch.Tensor:
    """Learned read queries for the memory tokens (random directions; the read normalizes them)."""
    return F.normalize(torch.randn(num_tokens, memory_dim, generator=generator), dim=-1)
