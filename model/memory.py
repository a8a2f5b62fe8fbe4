"""Titans long-term neural memory: config, per-workspace state, the memory MLP and its update rules.

The memory M is a small MLP (``depth`` weight matrices of ``memory_dim`` x ``memory_dim``, SiLU
between them). Its weights ARE the memory, so they live in a :class:`MemoryState` that the caller
owns (one per workspace), never in module parameters: one loaded model can serve many workspaces.

Where the read enters the layer (``integration``): added to the attention output (``additive``, ``mag``:
gated by a learned mix), added to the attention input (``mal``, Titans' memory as a layer: attention sees
x + gate * M(x)), or as memory tokens inside attention (``mac``, model/mac.py). ``persistent_tokens``
prepends learned, input-independent tokens to the memory layers' attention (Titans' persistent memory),
with any integration.

Store path (per memory layer): k = normalize(W_k h) with W_k frozen (orthogonal init), v = normalize(W_v h);
associative loss l_t = 0.5 * ||M(k_t) - v_t||^2 per token. Two update rules:

- ``sgd`` (the study): after each forward pass W <- W - lr * sum_t grad l_t(W), first order.
- ``titans`` (the paper): S_t = eta_t S_{t-1} - theta_t g_t, W_t = (1 - alpha_t) W_{t-1} + S_t with
  per-token theta / eta / alpha from small linear maps of the hidden state. Gradients inside one
  ``chunk_size`` block are taken at the block's starting weights (the paper's parallel form), which
  makes the block's end state a linear combination of W_0, S_0 and the per-token gradients with
  scalar coefficients; we compute those coefficients in closed form and get each weighted gradient
  sum from one shared forward and backward (no per-token gradients materialised).

Miras options (config fields, defaults = the rules above): the attentional-bias ``objective`` replaces
0.5||e||^2 by an elementwise Huber loss or (1/p) sum |e|^p (:class:`Objective`); the ``retention`` gate
of the sgd rule adds Titans' weight decay or an l2 pull toward the previous state (:func:`sgd_update`).

A third rule, ``ntp``, is not an associative memory at all: a low-rank delta on the model's own MLP
down-projections trained on the next-token loss while priming (model/ntp.py); its state is held in
the same :class:`MemoryState` and it is installed by the same patch.

Every update is clipped to ``max_update_norm`` (global Frobenius norm of the change), so no input can
blow the memory up. Everything here runs in fp32 whatever the model's dtype.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from titans_lsp.model.mac import init_queries

UPDATE_RULES = ("sgd", "titans", "ntp")
OBJECTIVES = ("l2", "huber", "lp")  # Miras' attentional bias: the loss the memory minimises per token
RETENTIONS = ("none", "decay", "l2_prev")  # Miras' retention gate ("sgd" rule)
INTEGRATIONS = ("additive", "mac", "mag", "mal")
# Persistent tokens' extra attention logit at init: e^-20 of a sequence token's mass, so the untrained
# tokens leave the model's output unchanged (within 1e-5) while AdamW, which rescales gradients, still moves it.
PERSISTENT_LOGIT_INIT = -20.0
RETRIEVE_MODES = ("separate", "tied")
NTP_OPTIMIZERS = ("sgd", "adam")  # how the ntp rule steps on each chunk's gradient


@dataclass
class MemoryConfig:
    """Hyper-parameters of the memory and how it is wired into a model (JSON round-trips)."""

    memory_dim: int = 512
    depth: int = 2
    update_rule: str = "sgd"  # "sgd" | "titans" | "ntp" (next-token test-time training, model/ntp.py)
    lr: float = 0.5  # per-token step size (theta for "titans" at init)
    chunk_size: int = 64  # "titans": tokens per parallel gradient block
    max_update_norm: float = 4.0  # clip on the Frobenius norm of one update (all matrices together)
    integration: str = "additive"  # "additive" | "mac" | "mag" | "mal" (memory as a layer before attention)
    retrieve: str = "separate"  # "separate": learned W_retrieve reads; "tied": read with the frozen key projection
    layers: list[int] | None = None  # None: the model's default (see patching.default_memory_layers)
    gate_init: float = -3.0  # gate logit at init: sigmoid(-3) ~ 0.047
    gate_floor: float = 0.0  # open gate value = floor + (1 - floor) * sigmoid(g)
    num_memory_tokens: int = 16  # "mac" only
    persistent_tokens: int = 0  # learned, input-independent tokens prepended to each memory layer's attention (0: off)
    momentum_init: float = 0.5  # "titans": eta at init
    decay_init: float = 1e-4  # "titans": alpha (forgetting) at init
    train_init_weights: bool = False  # trainable_parameters() includes the memory's initial weights
    train_titans_maps: bool = False  # trainable_parameters() includes the theta/eta/alpha maps
    seed: int = 0  # frozen projections and initial weights are drawn from this seed
    # Miras options of the associative rules ("sgd", "titans"); the defaults are the study's rule.
    objective: str = "l2"  # "l2": 0.5||e||^2 | "huber": Huber(e, huber_delta) | "lp": (1/p) sum |e|^p
    objective_p: float = 2.0  # "lp": p (> 1); p = 2 is "l2"
    huber_delta: float = 1.0  # "huber": where the loss turns linear
    retention: str = "none"  # "sgd" only: "decay" W <- (1 - s) W - step (Titans' forgetting) |
    #                          "l2_prev": argmin_W loss(W) + s/2 ||W - W_prev||^2 by retention_steps inner steps
    retention_strength: float = 0.0  # s above
    retention_steps: int = 1  # "l2_prev": inner gradient steps per update (1 step is plain "sgd")
    # "ntp": B_i (hidden x ntp_rank) on the down-projections of ``layers`` (default: the upper quarter)
    ntp_rank: int = 16
    ntp_steps: int = 1  # SGD steps on each chunk's next-token loss
    ntp_lr: float = 10.0  # tuned on the recall test's seed 1 (value NLL; lr 100 diverges)
    ntp_decay: float = 0.0  # retention toward zero per step: B <- (1 - ntp_decay) B - ntp_lr * grad
    ntp_normalize: bool = False  # step along grad / ||grad|| per layer (step size ntp_lr whatever the loss scale)
    ntp_optimizer: str = "sgd"  # "sgd" | "adam": per-parameter normalised steps, moments restarted every chunk

    def __post_init__(self) -> None:
        self._check_types()
        if self.update_rule not in UPDATE_RULES:
            raise ValueError(f"update_rule must be one of {UPDATE_RULES}, got {self.update_rule!r}")
        if self.integration not in INTEGRATIONS:
            raise ValueError(f"integration must be one of {INTEGRATIONS}, got {self.integration!r}")
        if self.retrieve not in RETRIEVE_MODES:
            raise ValueError(f"retrieve must be one of {RETRIEVE_MODES}, got {self.retrieve!r}")
        if self.depth < 1 or self.memory_dim < 1 or self.chunk_size < 1 or self.num_memory_tokens < 1:
            raise ValueError("depth, memory_dim, chunk_size and num_memory_tokens must be positive")
        if not 0.0 <= self.gate_floor < 1.0:
            raise ValueError(f"gate_floor must be in [0, 1), got {self.gate_floor}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.objective_p <= 1.0 or self.huber_delta <= 0:
            raise ValueError("objective_p must be > 1 and huber_delta > 0")
        if self.retention not in RETENTIONS:
            raise ValueError(f"retention must be one of {RETENTIONS}, got {self.retention!r}")
        if self.retention != "none" and self.update_rule != "sgd":
            raise ValueError("retention applies to the sgd rule (titans has its own decay gate, ntp its ntp_decay)")
        if not 0.0 <= self.retention_strength < 1.0 or self.retention_steps < 1:
            raise ValueError("retention_strength must be in [0, 1) and retention_steps >= 1")
        if self.ntp_rank < 1 or self.ntp_steps < 1 or self.ntp_lr <= 0 or not 0.0 <= self.ntp_decay < 1.0:
            raise ValueError("ntp_rank, ntp_steps and ntp_lr must be positive and ntp_decay in [0, 1)")
        if self.ntp_optimizer not in NTP_OPTIMIZERS:
            raise ValueError(f"ntp_optimizer must be one of {NTP_OPTIMIZERS}, got {self.ntp_optimizer!r}")
        if self.ntp_optimizer == "adam" and self.ntp_normalize:
            raise ValueError("ntp_normalize applies to the sgd ntp_optimizer (adam normalises per parameter)")
        if self.update_rule == "ntp" and self.integration != "additive":
            raise ValueError("the ntp rule changes the model's own weights: integration must stay 'additive'")
        if self.persistent_tokens < 0:  # its type: _check_types
            raise ValueError(f"persistent_tokens must be a count >= 0 (0: off), got {self.persistent_tokens!r}")
        if self.persistent_tokens and self.update_rule == "ntp":
            raise ValueError("persistent_tokens belong to the Titans memory layers; the ntp rule has none")
        if self.layers is not None:
            self.layers = [int(i) for i in self.layers]

    def _check_types(self) -> None:
        """Each field's JSON type, first: a string lr or chunk_size otherwise passes (or fails with a
        comparison error) and breaks far from --memory-config, and a string of layers reads as digits."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "layers":
                if value is not None and not (isinstance(value, (list, tuple))
                                              and all(isinstance(i, int) and not isinstance(i, bool) for i in value)):
                    raise ValueError(f"layers must be a list of layer indices or null, got {value!r}")
            elif f.type == "bool" and not isinstance(value, bool):
                raise ValueError(f"{f.name} must be true or false, got {value!r}")
            elif f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{f.name} must be an integer, got {value!r}")
            elif f.type == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            elif f.type == "str" and not isinstance(value, str):
                raise ValueError(f"{f.name} must be a string, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MemoryConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown MemoryConfig fields: {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "MemoryConfig":
        return cls.from_dict(json.loads(text))


# ---------------------------------------------------------------------------------------------
# The memory MLP as a pure function of its weights (so torch.func can differentiate it).


def init_memory_weights(memory_dim: int, depth: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Initial weights: orthogonal hidden matrices, and a zero output matrix so a fresh memory reads 0."""
    weights = []
    for _ in range(depth - 1):
        w = torch.empty(memory_dim, memory_dim)
        nn.init.orthogonal_(w, generator=generator)
        weights.append(w)
    weights.append(torch.zeros(memory_dim, memory_dim))
    return weights


def memory_forward(weights: list[torch.Tensor] | tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
    """M(x): x @ W_1^T -> SiLU -> ... -> @ W_L^T. ``x`` is (..., memory_dim)."""
    for i, w in enumerate(weights):
        if i > 0:
            x = F.silu(x)
        x = x @ w.transpose(-1, -2)
    return x


@dataclass(frozen=True)
class Objective:
    """Miras' attentional bias: the per-token loss l(e) of the memory's error e = M(k) - v."""

    name: str = "l2"  # "l2": 0.5||e||^2 | "huber": elementwise Huber | "lp": (1/p) sum |e|^p
    p: float = 2.0
    delta: float = 1.0

    @classmethod
    def of(cls, config: "MemoryConfig") -> "Objective":
        return cls(config.objective, config.objective_p, config.huber_delta)

    def error_grad(self, err: torch.Tensor) -> torch.Tensor:
        """dl/de: what flows back into the memory's weights."""
        if self.name == "huber":
            return err.clamp(-self.delta, self.delta)
        if self.name == "lp":
            return torch.sign(err) * err.abs().pow(self.p - 1)
        return err


L2 = Objective()


def weighted_grads(weights: list[torch.Tensor], keys: torch.Tensor, values: torch.Tensor,
                   coeffs: torch.Tensor, create_graph: bool = False,
                   objective: Objective = L2) -> list[list[torch.Tensor]]:
    """For each row c of ``coeffs`` (R, T): the gradient of sum_t c_t * l(M(k_t) - v_t) w.r.t. the
    weights (l: the objective, 0.5||e||^2 by default), from one shared forward. Works under no_grad
    and inference_mode (it leaves both locally); plain autograd, because torch.func costs ~5x more
    per call on these small matrices.

    ``create_graph=True`` (second-order training) keeps the result differentiable with respect to the
    weights, keys, values and coefficients, so a later loss can backpropagate through the write."""
    if create_graph:
        with torch.enable_grad():
            ws = [w if w.requires_grad else w.detach().requires_grad_(True) for w in weights]
            out = memory_forward(ws, keys)
            err = objective.error_grad(out - values)
            return [list(torch.autograd.grad(out, ws, grad_outputs=row[:, None] * err, create_graph=True))
                    for row in coeffs]
    with torch.inference_mode(False), torch.enable_grad():
        ws = [w.detach().clone().requires_grad_(True) for w in weights]
        out = memory_forward(ws, keys.clone())
        err = objective.error_grad(out - values.clone()).detach()
        rows = coeffs.clone()
        return [list(torch.autograd.grad(out, ws, grad_outputs=row[:, None] * err, retain_graph=r < len(rows) - 1))
                for r, row in enumerate(rows)]


def recall_error(weights: list[torch.Tensor], keys: torch.Tensor, values: torch.Tensor) -> float:
    """Mean relative recall error ||M(k) - v||^2 / ||v||^2 (1.0 for an empty memory)."""
    with torch.no_grad():
        err = (memory_forward(weights, keys) - values).pow(2).sum(-1)
        return float((err / values.pow(2).sum(-1).clamp_min(1e-12)).mean())


def _clip(old: list[torch.Tensor], new: list[torch.Tensor], max_norm: float) -> tuple[list[torch.Tensor], float]:
    """Scale the change new - old so its global norm is at most max_norm; returns (clipped, raw norm).
    The scale is a tensor, so a differentiable write stays differentiable through the clip."""
    deltas = [n - o for n, o in zip(new, old)]
    norm_t = torch.sqrt(sum(d.pow(2).sum() for d in deltas))
    norm = float(norm_t.detach())
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm_t + 1e-12)
        return [o + d * scale for o, d in zip(old, deltas)], norm
    return new, norm


def sgd_update(weights: list[torch.Tensor], keys: torch.Tensor, values: torch.Tensor, lr: float,
               max_update_norm: float, create_graph: bool = False, objective: Objective = L2,
               retention: str = "none", strength: float = 0.0, steps: int = 1) -> tuple[list[torch.Tensor], float]:
    """One update W <- W - lr * sum_t grad l_t, clipped. Returns (new weights, raw update norm).

    Miras' retention gates: ``decay`` W <- (1 - strength) W - step (Titans' forgetting, a global
    ℓ2 retention); ``l2_prev`` approximates argmin_W sum_t l_t(W) + strength/2 ||W - W_prev||^2 by
    ``steps`` gradient steps from W_prev (one step is plain sgd: the proximal term's gradient is
    zero there)."""
    coeffs = torch.full((1, keys.shape[0]), lr, dtype=keys.dtype, device=keys.device)
    if retention == "l2_prev":
        current = weights
        for _ in range(steps):
            grads = weighted_grads(current, keys, values, coeffs, create_graph, objective)[0]
            current = [w - g - lr * strength * (w - w0) for w, g, w0 in zip(current, grads, weights)]
        return _clip(weights, current, max_update_norm)
    grads = weighted_grads(weights, keys, values, coeffs, create_graph, objective)[0]
    keep = 1.0 - strength if retention == "decay" else 1.0
    new = [w - g if keep == 1.0 else keep * w - g for w, g in zip(weights, grads)]
    return _clip(weights, new, max_update_norm)


def titans_coefficients(theta: torch.Tensor, eta: torch.Tensor, alpha: torch.Tensor):
    """Closed-form coefficients for one block of C tokens whose gradients g_i are taken at W_0.

    Returns (w_decay, s_to_w, b, s_decay, a) such that
      W_C = w_decay * W_0 + s_to_w * S_0 - sum_i b_i g_i
      S_C = s_decay * S_0 - sum_i a_i g_i
    for S_t = eta_t S_{t-1} - theta_t g_t and W_t = (1 - alpha_t) W_{t-1} + S_t.
    """
    log_eta = torch.log(eta.clamp_min(1e-12)).cumsum(0)  # E_t
    log_keep = torch.log((1 - alpha).clamp_min(1e-12)).cumsum(0)  # F_t
    c = theta.shape[0]
    causal = torch.ones(c, c, dtype=torch.bool, device=theta.device).tril()  # t >= i
    exponent = torch.where(causal, log_eta[:, None] - log_eta[None, :], torch.full_like(log_eta[:, None].expand(c, c), -math.inf))
    contrib = torch.exp(exponent) * theta[None, :]  # A[t, i]: weight of g_i in -S_t
    carry = torch.exp(log_eta)  # p_t: weight of S_0 in S_t
    tail = torch.exp(log_keep[-1] - log_keep)  # D_t = prod_{s > t} (1 - alpha_s)
    b = tail @ contrib
    s_to_w = (tail * carry).sum()
    return torch.exp(log_keep[-1]), s_to_w, b, carry[-1], contrib[-1]


def titans_update(weights: list[torch.Tensor], momentum: list[torch.Tensor], keys: torch.Tensor, values: torch.Tensor,
                  theta: torch.Tensor, eta: torch.Tensor, alpha: torch.Tensor, chunk_size: int,
                  max_update_norm: float, create_graph: bool = False,
                  objective: Objective = L2) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """Surprise-with-momentum and forgetting over the tokens in order, ``chunk_size`` tokens per parallel block."""
    max_norm = 0.0
    for start in range(0, keys.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        w_decay, s_to_w, b, s_decay, a = titans_coefficients(theta[sl], eta[sl], alpha[sl])
        grad_w, grad_s = weighted_grads(weights, keys[sl], values[sl], torch.stack([b, a]), create_graph, objective)
        new_w = [w_decay * w + s_to_w * s - g for w, s, g in zip(weights, momentum, grad_w)]
        new_s = [s_decay * s - g for s, g in zip(momentum, grad_s)]
        new_w, norm = _clip(weights, new_w, max_update_norm)
        new_s, _ = _clip([torch.zeros_like(s) for s in momentum], new_s, max_update_norm)
        weights, momentum = new_w, new_s
        max_norm = max(max_norm, norm)
    return weights, momentum, max_norm


# ---------------------------------------------------------------------------------------------
# Per-workspace state.


def _atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except SafetensorError as exc:  # a full disk, as the OSError every other write raises (callers catch that)
        raise OSError(f"cannot write {path}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@dataclass
class MemoryState:
    """One workspace's memory: MLP weights and momentum per memory layer (fp32), plus the initial
    weights so :meth:`reset` needs no model. Pass it to ``TitansPatch.activate``."""

    weights: dict[int, list[torch.Tensor]]
    momentum: dict[int, list[torch.Tensor]]
    initial: dict[int, list[torch.Tensor]]
    tokens_written: int = 0
    updates: int = 0
    last_update_norm: dict[int, float] = field(default_factory=dict)

    @classmethod
    def fresh(cls, initial: dict[int, list[torch.Tensor]]) -> "MemoryState":
        init = {i: [w.detach().float().clone() for w in ws] for i, ws in initial.items()}
        return cls(weights={i: [w.clone() for w in ws] for i, ws in init.items()},
                   momentum={i: [torch.zeros_like(w) for w in ws] for i, ws in init.items()},
                   initial=init)

    @property
    def layers(self) -> list[int]:
        return sorted(self.weights)

    def copy(self) -> "MemoryState":
        clone = lambda d: {i: [w.clone() for w in ws] for i, ws in d.items()}  # noqa: E731
        return MemoryState(clone(self.weights), clone(self.momentum), clone(self.initial),
                           self.tokens_written, self.updates, dict(self.last_update_norm))

    def reset(self) -> None:
        """Back to the initial weights, zero momentum (in place, so holders of this object see it)."""
        self.weights = {i: [w.clone() for w in ws] for i, ws in self.initial.items()}
        self.momentum = {i: [torch.zeros_like(w) for w in ws] for i, ws in self.initial.items()}
        self.tokens_written = 0
        self.updates = 0
        self.last_update_norm = {}

    def detach_(self) -> None:
        """Cut the autograd graph a differentiable (second-order) write left in the weights."""
        self.weights = {i: [w.detach() for w in ws] for i, ws in self.weights.items()}
        self.momentum = {i: [m.detach() for m in ms] for i, ms in self.momentum.items()}

    def to(self, device) -> "MemoryState":
        move = lambda d: {i: [w.to(device) for w in ws] for i, ws in d.items()}  # noqa: E731
        return MemoryState(move(self.weights), move(self.momentum), move(self.initial),
                           self.tokens_written, self.updates, dict(self.last_update_norm))

    def check_like(self, reference: "MemoryState") -> None:
        """Raise ValueError unless this state fits ``reference`` (a fresh state of the live model):
        the same layers, tensors per layer, shapes and dtypes, and every value finite. A persisted
        state is checked so before it is served: NaN weights give garbage completions, a wrong
        shape fails every memory-mode request."""
        for name in ("weights", "momentum", "initial"):
            mine, theirs = getattr(self, name), getattr(reference, name)
            if sorted(mine) != sorted(theirs):
                raise ValueError(f"{name}: memory layers {sorted(mine)}, the model has {sorted(theirs)}")
            for layer, tensors in theirs.items():
                if len(mine[layer]) != len(tensors):
                    raise ValueError(f"{name}[{layer}]: {len(mine[layer])} tensors, the model has {len(tensors)}")
                for j, (got, want) in enumerate(zip(mine[layer], tensors)):
                    if got.shape != want.shape or got.dtype != want.dtype:
                        raise ValueError(f"{name}[{layer}][{j}]: {tuple(got.shape)} {got.dtype}, the model has "
                                         f"{tuple(want.shape)} {want.dtype}")
                    if not bool(torch.isfinite(got).all()):
                        raise ValueError(f"{name}[{layer}][{j}] holds NaN or infinite values")
        if self.tokens_written < 0 or self.updates < 0:
            raise ValueError("negative counters")

    def save(self, path: str | os.PathLike) -> None:
        """Write one safetensors file atomically (temp file + os.replace)."""
        tensors = {}
        for name, table in (("w", self.weights), ("m", self.momentum), ("init", self.initial)):
            for layer, ws in table.items():
                for j, w in enumerate(ws):
                    tensors[f"{name}.{layer}.{j}"] = w
        meta = {"titans_lsp_memory_state": "1", "tokens_written": str(self.tokens_written), "updates": str(self.updates),
                "layers": json.dumps(self.layers), "depth": str(len(next(iter(self.weights.values()))) if self.weights else 0)}
        _atomic_save_safetensors(tensors, Path(path), meta)

    @classmethod
    def load(cls, path: str | os.PathLike, device=None) -> "MemoryState":
        from safetensors import safe_open

        tables: dict[str, dict[int, dict[int, torch.Tensor]]] = {"w": {}, "m": {}, "init": {}}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("titans_lsp_memory_state") != "1":
                raise ValueError(f"{path} is not a titans-lsp memory state")
            for key in f.keys():
                name, layer, j = key.split(".")
                tables[name].setdefault(int(layer), {})[int(j)] = f.get_tensor(key)
        as_lists = lambda t: {i: [ws[j].to(device) if device else ws[j] for j in sorted(ws)] for i, ws in t.items()}  # noqa: E731
        return cls(as_lists(tables["w"]), as_lists(tables["m"]), as_lists(tables["init"]),
                   int(meta.get("tokens_written", 0)), int(meta.get("updates", 0)))


# ---------------------------------------------------------------------------------------------
# The per-layer module: projections, gate, read path, write inputs (all fp32).


def _orthogonal(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    w = torch.empty(rows, cols)
    nn.init.orthogonal_(w, generator=generator)
    return w


class MemoryLayer(nn.Module):
    """Trainable and frozen parameters of the memory attached to one decoder layer.

    Read: y = out_proj(M(normalize(W_q h))) with W_q = W_retrieve ("separate", initialised equal to
    W_k) or W_k itself ("tied"). The contribution added after self-attention is gate * y
    ("additive") or gate * sigmoid(mix(q)) * y ("mag"); "mal" adds gate * y to the attention's input
    instead. "mac" reads at learned queries (:meth:`memory_tokens`) and the tokens join the attention
    (see model/mac.py), as do the persistent tokens (:attr:`persistent`, :meth:`persistent_bias`).
    """

    def __init__(self, hidden_size: int, config: MemoryConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        d = config.memory_dim
        g = torch.Generator().manual_seed(config.seed * 1_000_003 + layer_idx)
        self.register_buffer("key_proj", _orthogonal(d, hidden_size, g))
        self.register_buffer("value_proj", _orthogonal(d, hidden_size, g))
        self.retrieve_proj = nn.Parameter(self.key_proj.clone()) if config.retrieve == "separate" else None
        # Maps memory_dim back to hidden: W_v^T (scaled to hidden-state size) so a recalled value
        # lands in the direction it was stored from; the gate keeps the untrained effect small.
        self.out_proj = nn.Parameter(self.value_proj.t().clone() * math.sqrt(hidden_size))
        self.gate = nn.Parameter(torch.tensor(float(config.gate_init)))
        self.mix = nn.Linear(d, hidden_size) if config.integration == "mag" else None
        if self.mix is not None:
            nn.init.zeros_(self.mix.weight)
            nn.init.zeros_(self.mix.bias)
        # theta / eta / alpha logits from the hidden state ("titans" rule); constant at init.
        self.rule_maps = nn.Linear(hidden_size, 3)
        nn.init.zeros_(self.rule_maps.weight)
        with torch.no_grad():
            self.rule_maps.bias.copy_(torch.tensor([0.0, _logit(config.momentum_init), _logit(config.decay_init)]))
        # "mac": learned read queries (hidden space) for the memory tokens prepended to attention.
        self.memory_queries = (nn.Parameter(init_queries(config.num_memory_tokens, hidden_size, g))
                               if config.integration == "mac" else None)
        self.initial_weights = nn.ParameterList(
            [nn.Parameter(w, requires_grad=False) for w in init_memory_weights(d, config.depth, g)])
        # Persistent memory: tokens in hidden space (drawn last, so the other variants' draws are unchanged),
        # sized like the normalized hidden states attention sees, and one extra logit for their columns.
        n = config.persistent_tokens
        self.persistent = nn.Parameter(torch.randn(n, hidden_size, generator=g)) if n else None
        self.persistent_logit = nn.Parameter(torch.tensor(PERSISTENT_LOGIT_INIT)) if n else None

    def gate_value(self, shut: bool = False) -> torch.Tensor:
        if shut:
            # new_full: a fill on the device, no host-to-device copy (which a CUDA graph capture forbids)
            return torch.sigmoid(self.gate.new_full((), -100.0))
        floor = self.config.gate_floor
        return floor + (1 - floor) * torch.sigmoid(self.gate)

    def _recall(self, hidden: torch.Tensor, weights: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalized read query, out_proj(M(query))) for hidden-space inputs, in fp32."""
        proj = self.retrieve_proj if self.retrieve_proj is not None else self.key_proj
        q = F.normalize(hidden.float() @ proj.t(), dim=-1)
        return q, memory_forward(weights, q) @ self.out_proj.t()

    def read(self, hidden: torch.Tensor, weights: list[torch.Tensor], shut: bool = False) -> torch.Tensor:
        """The memory's contribution to the residual stream, in fp32 (caller casts back)."""
        q, y = self._recall(hidden, weights)
        if self.mix is not None:
            y = torch.sigmoid(self.mix(q)) * y
        return self.gate_value(shut) * y

    def memory_tokens(self, weights: list[torch.Tensor]) -> torch.Tensor:
        """"mac": the memory read at the learned queries, (num_memory_tokens, hidden) in fp32."""
        if self.memory_queries is None:
            raise ValueError("memory_tokens() needs integration='mac'")
        return self._recall(self.memory_queries, weights)[1]

    def persistent_bias(self) -> torch.Tensor:
        """The persistent tokens' attention logit bias, log(gate) + persistent_logit, one per token."""
        if self.persistent is None:
            raise ValueError("persistent_bias() needs persistent_tokens > 0")
        bias = torch.log(self.gate_value().float()) + self.persistent_logit
        return bias.expand(self.persistent.shape[0])

    def write_inputs(self, hidden: torch.Tensor):
        """Keys, values and the titans rule's per-token theta, eta, alpha for a flat (tokens, hidden) input
        (differentiable when ``hidden`` carries a graph and grad mode is on: second-order training)."""
        x = hidden.float().reshape(-1, hidden.shape[-1])
        keys = F.normalize(x @ self.key_proj.t(), dim=-1)
        values = F.normalize(x @ self.value_proj.t(), dim=-1)
        z = self.rule_maps(x)
        theta = self.config.lr * 2 * torch.sigmoid(z[:, 0])
        eta = torch.sigmoid(z[:, 1])
        alpha = torch.sigmoid(z[:, 2])
        return keys, values, theta, eta, alpha

    def update(self, state: MemoryState, hidden: torch.Tensor, create_graph: bool = False) -> float:
        """Write ``hidden`` (tokens in order) into ``state`` for this layer; returns the raw update norm.
        ``create_graph``: keep the new state differentiable w.r.t. ``hidden``, the old state and the
        rule maps (second-order training); otherwise the write is a constant."""
        with torch.set_grad_enabled(create_graph):
            keys, values, theta, eta, alpha = self.write_inputs(hidden if create_graph else hidden.detach())
            i = self.layer_idx
            if self.config.update_rule == "sgd":
                state.weights[i], norm = sgd_update(state.weights[i], keys, values, self.config.lr,
                                                    self.config.max_update_norm, create_graph, Objective.of(self.config),
                                                    self.config.retention, self.config.retention_strength,
                                                    self.config.retention_steps)
            else:
                state.weights[i], state.momentum[i], norm = titans_update(
                    state.weights[i], state.momentum[i], keys, values, theta, eta, alpha,
                    self.config.chunk_size, self.config.max_update_norm, create_graph, Objective.of(self.config))
        state.last_update_norm[i] = norm
        return norm


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))
