"""Install Titans memory into a Hugging Face causal LM, in place, without changing its classes.

Each memory layer gets a forward hook on its ``self_attn`` module: the memory's read is added to the
attention output, i.e. to the residual stream right after self-attention (h <- h + gate * y), for the
``additive`` and ``mag`` integrations. For ``mal`` (memory as a layer) a forward *pre*-hook adds the read
to the attention's input instead (attention sees x + gate * y). For ``mac`` the hook only records write
inputs, and the read happens inside attention: memory tokens prepended to the keys and values
(model/mac.py); persistent memory tokens (``persistent_tokens``) enter attention the same way.
The hook does nothing unless a state is active (``with patch.activate(state): ...``), so outside
that context the patched model computes exactly what the unpatched model computes, and the
``none`` / ``concat`` modes can share one loaded model with ``memory`` / ``ablation``.

Writes never happen inside the model's forward: during :meth:`TitansPatch.prime` the hooks only
record each memory layer's attention input; the updates are applied after the forward returns.
A forward that runs twice (gradient checkpointing) just records the same input again, so an
update is never applied twice, and no memory update ever sits inside a compiled region.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from titans_lsp.model import mac, ntp
from titans_lsp.model.memory import MemoryConfig, MemoryLayer, MemoryState, _atomic_save_safetensors

PARAMS_FILE = "memory.safetensors"
CONFIG_FILE = "config.json"
# Fields that change tensor shapes or wiring: a checkpoint only loads into a patch that agrees on them.
_SHAPE_FIELDS = ("memory_dim", "depth", "integration", "retrieve", "layers", "num_memory_tokens", "ntp_rank",
                 "persistent_tokens")


class _StopForward(Exception):
    """Raised by the last memory layer while priming: later layers and the LM head are not needed."""


@dataclass
class PrimeStats:
    """How far one :meth:`TitansPatch.prime` call got."""

    chunks: int = 0
    tokens: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    texts_completed: int = 0  # texts fully written
    offset_in_text: int = 0  # tokens of the next text already written (when stopped early)
    max_update_norm: float = 0.0  # largest raw (pre-clip) update norm seen
    update_seconds: float = 0.0  # of ``seconds``, the time spent applying memory updates


@dataclass
class _Active:
    state: MemoryState
    shut: bool
    write: bool = False
    create_graph: bool = False  # keep recorded inputs attached (second-order training)
    stop_at: int | None = None
    pending: dict[int, torch.Tensor] = field(default_factory=dict)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder-layer list of a HF causal LM (``model.model.layers`` for Llama / Qwen families)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", model)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"cannot find decoder layers in {type(model).__name__}; pass a decoder-only HF causal LM")
    return layers


def default_memory_layers(model: nn.Module) -> list[int]:
    """Qwen3.5 (hybrid attention): every full-attention layer. Others: every 4th layer (3, 7, 11, ...)."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    n = len(decoder_layers(model))
    layer_types = getattr(config, "layer_types", None)
    if layer_types and "linear_attention" in layer_types:
        return [i for i, t in enumerate(layer_types[:n]) if t == "full_attention"]
    return list(range(3, n, 4)) or [n - 1]


def _hidden_size(model: nn.Module) -> int:
    config = model.config
    config = getattr(config, "text_config", None) or config
    return int(config.hidden_size)


class TitansPatch:
    """Handle to the memory installed in one model: activate states, prime, save, train, uninstall."""

    def __init__(self, model: nn.Module, config: MemoryConfig):
        self.model = model
        self.config = config
        layers = decoder_layers(model)
        self.is_ntp = config.update_rule == "ntp"
        if config.layers is not None:
            self.layers = list(config.layers)
        else:
            self.layers = ntp.default_ntp_layers(len(layers)) if self.is_ntp else default_memory_layers(model)
        for i in self.layers:
            if not 0 <= i < len(layers):
                raise ValueError(f"memory layer {i} out of range: the model has {len(layers)} layers")
            if not self.is_ntp and getattr(layers[i], "self_attn", None) is None:
                raise ValueError(f"layer {i} has no self-attention (a linear-attention layer?); memory goes on attention layers")
        self.config.layers = list(self.layers)
        param = next(model.parameters())
        self._active: _Active | None = None
        self._mac_modules = []
        if self.is_ntp:  # the memory is a low-rank delta on these layers' down-projections (model/ntp.py)
            projs = {i: ntp.down_projection(layers[i]) for i in self.layers}
            self.memory = nn.ModuleDict({str(i): ntp.NtpLayer(projs[i], config.ntp_rank, config.seed, i)
                                         for i in self.layers}).to(param.device)
            self.memory.requires_grad_(False)
            self._handles = [projs[i].register_forward_hook(self._make_ntp_hook(i)) for i in self.layers]
            return
        hidden = _hidden_size(model)
        self.memory = nn.ModuleDict({str(i): MemoryLayer(hidden, config, i) for i in self.layers}).to(param.device)
        self.memory.requires_grad_(False)
        if config.integration == "mal":
            self._handles = [layers[i].self_attn.register_forward_pre_hook(self._make_mal_hook(i), with_kwargs=True)
                             for i in self.layers]
        else:
            self._handles = [layers[i].self_attn.register_forward_hook(self._make_hook(i), with_kwargs=True)
                             for i in self.layers]
        if config.integration == "mac" or config.persistent_tokens:
            for i in self.layers:
                mac.attach(layers[i].self_attn, self._make_mac_provider(i, layers[i].self_attn))
                self._mac_modules.append(layers[i].self_attn)

    # -- the hook ---------------------------------------------------------------------------
    def _make_hook(self, layer_idx: int):
        mem = self.memory[str(layer_idx)]

        def hook(module, args, kwargs, output):
            ctx = self._active
            if ctx is None:
                return None
            return _apply_memory(mem, ctx, layer_idx, args, kwargs, output)

        return hook

    def _make_ntp_hook(self, layer_idx: int):
        mem = self.memory[str(layer_idx)]

        @torch.compiler.disable
        def hook(module, args, output):
            ctx = self._active
            if ctx is None or ctx.shut or (ctx.state.updates == 0 and not ctx.write):
                return None  # unpatched, the ablation, or an empty memory: the base model exactly
            return output + mem.delta(args[0], ctx.state.weights[layer_idx][0]).to(output.dtype)

        return hook

    def _make_mal_hook(self, layer_idx: int):
        mem = self.memory[str(layer_idx)]

        @torch.compiler.disable
        def pre_hook(module, args, kwargs):
            ctx = self._active
            if ctx is None:
                return None
            in_kwargs = "hidden_states" in kwargs
            hidden = kwargs["hidden_states"] if in_kwargs else args[0]
            if ctx.write:  # the memory stores the layer's own attention input, as the other integrations do
                ctx.pending[layer_idx] = hidden if ctx.create_graph else hidden.detach()
                if ctx.stop_at == layer_idx:
                    raise _StopForward
            if ctx.shut:  # the ablation: the layer's own input, bit for bit
                return None
            hidden = hidden + mem.read(hidden, ctx.state.weights[layer_idx]).to(hidden.dtype)
            if in_kwargs:
                return args, {**kwargs, "hidden_states": hidden}
            return (hidden,) + tuple(args[1:]), kwargs

        return pre_hook

    def _make_mac_provider(self, layer_idx: int, attention: nn.Module):
        """Keys, values and logit biases of the tokens prepended to this layer's attention: the persistent
        tokens (if any), then the memory tokens ("mac") once something was written."""
        mem = self.memory[str(layer_idx)]

        @torch.compiler.disable
        def provider(dtype: torch.dtype):
            ctx = self._active
            if ctx is None or ctx.shut:  # not active, or the ablation: the layer's own attention exactly
                return None
            tokens, biases = [], []
            if mem.persistent is not None:
                tokens.append(mem.persistent)
                biases.append(mem.persistent_bias())
            # nothing written yet: the memory reads zero (skipping also keeps the fused kernel)
            if mem.memory_queries is not None and (ctx.state.updates > 0 or self.config.train_init_weights):
                read = mem.memory_tokens(ctx.state.weights[layer_idx])
                tokens.append(read)
                biases.append(mac.presence_bias(read, mem.gate_value()))
            if not tokens:
                return None
            keys, values = mac.memory_kv(attention, torch.cat(tokens).to(attention.k_proj.weight.dtype))
            return keys.to(dtype), values.to(dtype), torch.cat(biases)

        return provider

    @property
    def active(self) -> "_Active | None":
        """The activation in force (state, gates), or None: what a static decoder copies into its buffers."""
        return self._active

    # -- states -----------------------------------------------------------------------------
    def new_state(self) -> MemoryState:
        """A fresh fp32 state (initial weights, zero momentum) on the model's device."""
        if self.is_ntp:
            device = next(self.model.parameters()).device
            return MemoryState.fresh({i: [w.to(device) for w in self.memory[str(i)].initial_weights()]
                                      for i in self.layers})
        return MemoryState.fresh({i: list(self.memory[str(i)].initial_weights) for i in self.layers})

    def expected_shapes(self, layer: int) -> list[tuple[int, ...]]:
        """The shapes of one layer's weights in a state this patch reads."""
        if self.is_ntp:
            mem = self.memory[str(layer)]
            return [(mem.hidden_size, mem.rank)]
        d = self.config.memory_dim
        return [(d, d)] * self.config.depth

    def check_state(self, state: MemoryState) -> None:
        """Raise ValueError unless ``state`` has this patch's layers and shapes (a state saved under
        another memory config or update rule does not load)."""
        if state.layers != sorted(self.layers):
            raise ValueError(f"memory state has layers {state.layers}, this patch has {sorted(self.layers)}")
        for i in self.layers:
            for table in (state.weights, state.momentum, state.initial):
                if [tuple(w.shape) for w in table[i]] != self.expected_shapes(i):
                    raise ValueError(f"memory state shape does not match this patch at layer {i} "
                                     f"(update_rule {self.config.update_rule}: expected {self.expected_shapes(i)})")

    _check_state = check_state

    @contextlib.contextmanager
    def activate(self, state: MemoryState, gates: str = "open", write: bool = False) -> Iterator[_Active]:
        """Within this context every forward (and ``generate``) reads ``state``; ``gates='shut'`` is the
        ablation (sigmoid(-100)). ``write=True`` only records inputs; :meth:`prime` applies them."""
        if gates not in ("open", "shut"):
            raise ValueError(f"gates must be 'open' or 'shut', got {gates!r}")
        self._check_state(state)
        previous = self._active
        ctx = _Active(state=state, shut=(gates == "shut"), write=write)
        self._active = ctx
        try:
            yield ctx
        finally:
            self._active = previous

    # -- priming ----------------------------------------------------------------------------
    def write(self, state: MemoryState, input_ids: torch.Tensor, gates: str = "open",
              stats: "PrimeStats | None" = None, create_graph: bool = False) -> float:
        """Run one chunk (1, T) through the model up to the last memory layer and write it into ``state``.
        Returns the largest raw update norm. ``create_graph``: the new state stays differentiable with
        respect to the trainable memory parameters (through the forward) and the old state."""
        if self.is_ntp:
            if create_graph:
                raise ValueError("the ntp rule has no parameters to train through its writes")
            return self._write_ntp(state, input_ids, stats)
        base = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model
        with torch.set_grad_enabled(create_graph), self.activate(state, gates=gates, write=True) as ctx:
            ctx.stop_at = max(self.layers)
            ctx.create_graph = create_graph
            try:
                base(input_ids=input_ids, use_cache=False)
            except _StopForward:
                pass
        norm = 0.0
        start = time.perf_counter()
        for i in self.layers:
            norm = max(norm, self.memory[str(i)].update(state, ctx.pending[i], create_graph=create_graph))
        if stats is not None:
            stats.update_seconds += time.perf_counter() - start
        state.tokens_written += int(input_ids.numel())
        state.updates += 1
        return norm

    def _write_ntp(self, state: MemoryState, input_ids: torch.Tensor, stats: "PrimeStats | None") -> float:
        """``ntp_steps`` SGD steps on the chunk's next-token loss with respect to every layer's B (the
        delta is applied during these forwards whatever the gates: gates decide reading, not writing)."""
        cfg = self.config
        if input_ids.shape[1] < 2:
            return 0.0  # no next token to predict
        norm = 0.0
        start = time.perf_counter()
        adam = ntp.ChunkAdam() if cfg.ntp_optimizer == "adam" else None
        with torch.inference_mode(False), torch.enable_grad():
            ids = input_ids.clone()
            for _ in range(cfg.ntp_steps):
                old = [state.weights[i][0] for i in self.layers]
                leaves = [b.detach().clone().requires_grad_(True) for b in old]
                for i, leaf in zip(self.layers, leaves):
                    state.weights[i] = [leaf]
                try:
                    with self.activate(state, gates="open", write=True):
                        logits = self.model(input_ids=ids, use_cache=False).logits
                    grads = torch.autograd.grad(ntp.next_token_loss(logits, ids), leaves)
                finally:
                    for i, b in zip(self.layers, old):
                        state.weights[i] = [b]
                grads = [g.detach() for g in grads]
                if adam is not None:
                    grads = adam.direction(grads)
                new, step_norm = ntp.ntp_step([b.detach() for b in old], grads, cfg.ntp_lr,
                                              cfg.ntp_decay, cfg.max_update_norm, cfg.ntp_normalize)
                for i, b in zip(self.layers, new):
                    state.weights[i] = [b]
                    state.last_update_norm[i] = step_norm
                norm = max(norm, step_norm)
        if stats is not None:
            stats.update_seconds += time.perf_counter() - start
        state.tokens_written += int(input_ids.numel())
        state.updates += 1
        return norm

    def prime(self, state: MemoryState, texts: Sequence[str | Sequence[int]], tokenizer=None, chunk_tokens: int = 512,
              should_yield: Callable[[], bool] | None = None, gates: str = "open",
              create_graph: bool = False) -> PrimeStats:
        """Write texts (strings, or token-id lists) into ``state``, ``chunk_tokens`` tokens per forward.
        ``should_yield()`` is polled before each chunk; when it returns True we stop and say how far we got.
        ``create_graph=True`` makes the writes differentiable (second-order training; call
        ``state.detach_()`` after the backward)."""
        if chunk_tokens < 1:
            raise ValueError("chunk_tokens must be positive")
        stats = PrimeStats()
        start = time.perf_counter()
        device = next(self.model.parameters()).device
        for text in texts:
            if isinstance(text, str):
                if tokenizer is None:
                    raise ValueError("prime() got text but no tokenizer")
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                ids = list(text)
            for offset in range(0, len(ids), chunk_tokens):
                if should_yield is not None and should_yield():
                    stats.stopped_early = True
                    stats.offset_in_text = offset
                    stats.seconds = time.perf_counter() - start
                    return stats
                chunk = torch.tensor([ids[offset:offset + chunk_tokens]], dtype=torch.long, device=device)
                stats.max_update_norm = max(stats.max_update_norm,
                                            self.write(state, chunk, gates=gates, stats=stats, create_graph=create_graph))
                stats.chunks += 1
                stats.tokens += chunk.shape[1]
            stats.texts_completed += 1
        stats.seconds = time.perf_counter() - start
        return stats

    # -- parameters -------------------------------------------------------------------------
    def gate_values(self) -> dict[int, float]:
        if self.is_ntp:  # no learned gate: the delta is read in full, or not at all (the ablation)
            return {i: 1.0 for i in self.layers}
        return {i: float(self.memory[str(i)].gate_value().detach()) for i in self.layers}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Retrieve projections, gates, output projections (+ mag mix, mac queries, persistent tokens and
        their logit); optionally initial weights and the titans rule's maps (config flags). Marks them
        requires_grad. None for the ntp rule, whose only parameters are the memory it trains at test time."""
        params: list[nn.Parameter] = []
        if self.is_ntp:
            return params
        for i in self.layers:
            mem = self.memory[str(i)]
            group = [mem.gate, mem.out_proj]
            if mem.retrieve_proj is not None:
                group.append(mem.retrieve_proj)
            if mem.mix is not None:
                group += list(mem.mix.parameters())
            if mem.memory_queries is not None:
                group.append(mem.memory_queries)
            if mem.persistent is not None:
                group += [mem.persistent, mem.persistent_logit]
            if self.config.train_init_weights:
                group += list(mem.initial_weights)
            if self.config.train_titans_maps:
                group += list(mem.rule_maps.parameters())
            params += group
        for p in params:
            p.requires_grad_(True)
        return params

    def save_parameters(self, directory: str | os.PathLike, extra: dict | None = None) -> None:
        """Memory parameters alone (safetensors) + config.json (memory config, model identity, ``extra``)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_save_safetensors(dict(self.memory.state_dict()), directory / PARAMS_FILE, {"format": "pt"})
        model_config = getattr(self.model.config, "text_config", None) or self.model.config
        info = {"memory_config": self.config.to_dict(), "model_type": getattr(model_config, "model_type", None),
                "hidden_size": _hidden_size(self.model), "num_layers": len(decoder_layers(self.model))}
        if extra:
            info.update(extra)
        fd, tmp = tempfile.mkstemp(prefix=CONFIG_FILE + ".", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)
        os.replace(tmp, directory / CONFIG_FILE)

    def load_parameters(self, directory: str | os.PathLike) -> dict:
        """Load parameters saved by :meth:`save_parameters`; refuses checkpoints of another shape or model."""
        from safetensors.torch import load_file

        directory = Path(directory)
        info = read_checkpoint_info(directory)
        saved = MemoryConfig.from_dict(info["memory_config"])
        mismatched = [f for f in _SHAPE_FIELDS if getattr(saved, f) != getattr(self.config, f)]
        if mismatched or info.get("hidden_size") != _hidden_size(self.model):
            raise ValueError(f"memory checkpoint {directory} does not fit this patch (differs in "
                             f"{mismatched or ['hidden_size']}); install with load_memory_config({str(directory)!r})")
        tensors = load_file(str(directory / PARAMS_FILE), device=str(next(self.model.parameters()).device))
        self.memory.load_state_dict(tensors, strict=True)
        return info

    def uninstall(self) -> None:
        """Remove the hooks; the model is its unpatched self again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for attention in self._mac_modules:
            mac.detach(attention)
        self._mac_modules = []
        if getattr(self.model, "_titans_patch", None) is self:
            del self.model._titans_patch


@torch.compiler.disable
def _apply_memory(mem: MemoryLayer, ctx: _Active, layer_idx: int, args, kwargs, output):
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    if ctx.write:
        ctx.pending[layer_idx] = hidden if ctx.create_graph else hidden.detach()
        if ctx.stop_at == layer_idx:
            raise _StopForward
    if mem.memory_queries is not None:  # "mac": the read happened inside attention
        return None
    attn_out = output[0] if isinstance(output, tuple) else output
    y = mem.read(hidden, ctx.state.weights[layer_idx], shut=ctx.shut).to(attn_out.dtype)
    if isinstance(output, tuple):
        return (attn_out + y,) + tuple(output[1:])
    return attn_out + y


def read_checkpoint_info(directory: str | os.PathLike) -> dict:
    directory = Path(directory)
    if not (directory / PARAMS_FILE).is_file() or not (directory / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{directory} is not a memory checkpoint (needs {PARAMS_FILE} and {CONFIG_FILE})")
    return json.loads((directory / CONFIG_FILE).read_text())


def load_memory_config(directory: str | os.PathLike) -> MemoryConfig:
    """The MemoryConfig a checkpoint was trained with (to install a matching patch)."""
    return MemoryConfig.from_dict(read_checkpoint_info(directory)["memory_config"])


def install_memory(model: nn.Module, config: MemoryConfig | None = None,
                   checkpoint: str | os.PathLike | None = None) -> TitansPatch:
    """Patch ``model``'s decoder layers in place. With ``checkpoint``, the config comes from it and its
    parameters are loaded. Installing again with an equal config returns the same patch."""
    if checkpoint is not None:
        config = load_memory_config(checkpoint)
    config = config or MemoryConfig()
    existing = getattr(model, "_titans_patch", None)
    if existing is not None:
        wanted = MemoryConfig.from_dict(config.to_dict())
        if wanted.layers is None:
            wanted.layers = default_memory_layers(model)
        if wanted != existing.config:
            raise ValueError("memory is already installed in this model with another config; uninstall() first")
        return existing
    patch = TitansPatch(model, MemoryConfig.from_dict(config.to_dict()))
    model._titans_patch = patch
    if checkpoint is not None:
        patch.load_parameters(checkpoint)
    return patch
