"""Decoding over a static KV cache, with the one-token step captured as a CUDA graph on a GPU.

Why: at the 9B shape each eager decode step launches hundreds of small kernels from Python (about 50 ms
per token measured on an H100, 8-12x what the card's memory bandwidth allows). A static cache keeps
every tensor the step touches at a fixed address: the KV cache sized to the window, the DeltaNet
conv/recurrent states, the step's input token, and the Titans memory weights the step reads. So the
step can be captured once per (model, memory mode, batch) and replayed for every token.

What stays as it was: :func:`~titans_lsp.model.generation.greedy_generate` drives the loop (prefill,
token healing, stop checks, cancellation, prefix reuse across keystrokes); pass it ``decoder=`` to decode
through this class. Prefix reuse truncates or extends the static cache in place (attention layers move
their length back, DeltaNet layers copy a snapshot into their buffers), it is never rebuilt. The memory
read happens inside the graph: the decoder keeps its own static copy of the memory weights, and a
newly published memory is copied into it before the next step (no re-capture, no object swap).

Graph back ends (``graphs``): ``"cuda-graph"`` (``torch.cuda.CUDAGraph``, captured by hand),
``"compile"`` (``torch.compile(mode="reduce-overhead")``: its CUDA graphs are partitioned at the memory
hook, which is excluded from compilation; on a CPU it compiles without graphs), ``"off"`` (the same step run eagerly over the same static
buffers: what CPUs run, and what the CPU tests compare with the dynamic-cache loop), ``"auto"``
(``cuda-graph`` on CUDA, else ``off``).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from typing import Callable

import torch

from titans_lsp.model.generation import restore_to, snapshot_recurrent

log = logging.getLogger(__name__)

GRAPH_BACKENDS = ("auto", "cuda-graph", "compile", "off")
WARMUP_STEPS = 2  # eager steps on a side stream before a capture (cuBLAS workspaces, lazy inits)


class StaticDecoder:
    """One model's static cache (batch 1, ``max_len`` tokens) and its captured decode steps.

    The buffers hold one document at a time: :meth:`claim` makes a document (its ``PrefixCache``) the
    owner, and :meth:`holds` tells whether the buffers still hold that document's tokens. Callers
    serialize use (the engine's model lock)."""

    def __init__(self, model, max_len: int, graphs: str = "auto"):
        from transformers import StaticCache

        if graphs not in GRAPH_BACKENDS:
            raise ValueError(f"graphs must be one of {GRAPH_BACKENDS}, got {graphs!r}")
        if max_len < 2:
            raise ValueError("max_len must be at least 2 tokens")
        self.model = model
        self.max_len = int(max_len)
        self.device = next(model.parameters()).device
        if graphs == "auto":
            graphs = "cuda-graph" if self.device.type == "cuda" else "off"
        if graphs == "cuda-graph" and self.device.type != "cuda":
            raise ValueError(f"graphs='cuda-graph' needs a CUDA device; the model is on {self.device}")
        self.graphs = graphs
        self.cache = StaticCache(config=model.config, max_cache_len=self.max_len)
        self._input = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self._owner: weakref.ref | None = None
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = None  # one memory pool shared by this decoder's graphs (they never run at once)
        self._compiled: Callable[[], torch.Tensor] | None = None
        self._memory = None  # the static MemoryState the graphs read (the decoder's own buffers)
        self._memory_source: list[weakref.ref] = []  # the tensors last copied into it
        self.captures = 0  # graphs captured (a publish must not add one)
        self.memory_copies = 0  # memory states copied into the static buffers

    # ---- ownership of the buffers ----------------------------------------------------------------
    def fits(self, tokens: int) -> bool:
        return tokens <= self.max_len

    def holds(self, owner: object) -> bool:
        """Whether the buffers still hold what ``owner`` (a document's PrefixCache) last put there."""
        return self._owner is not None and self._owner() is owner

    def claim(self, owner: object) -> None:
        """Empty the buffers for ``owner``: lengths back to 0, recurrent states zeroed (addresses kept)."""
        self.cache.reset()
        self._owner = weakref.ref(owner)

    # ---- the step ----------------------------------------------------------------------------------
    def step(self, token: int) -> torch.Tensor:
        """Feed one token after what the cache holds; returns the next-token logits (vocab,). The tensor
        is the graph's static output: read it before the next step."""
        key, activation = self._bind_memory()
        self._input.fill_(int(token))
        if self.graphs == "off":
            with activation():
                return self._forward()
        if self.graphs == "compile":
            if self._compiled is None:
                self._compiled = torch.compile(self._forward, mode="reduce-overhead", dynamic=False)
            with activation():
                return self._compiled().clone()
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture(activation)
        entry[0].replay()
        return entry[1]

    def _forward(self) -> torch.Tensor:
        return self.model(input_ids=self._input, cache=self.cache, use_cache=True).logits[0, -1]

    def _capture(self, activation: Callable[[], contextlib.AbstractContextManager]):
        """Capture the step. The warm-up runs real steps, so the cache is put back where it was afterwards
        (attention lengths cropped, recurrent states restored from a snapshot); the capture itself runs nothing."""
        position = int(self.cache.get_seq_length())
        states = snapshot_recurrent(self.cache)
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), activation():
            for _ in range(WARMUP_STEPS):
                self._forward()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        restore_to(self.cache, position, states)
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA work of other threads (a dense retriever, say) does not invalidate the capture
        with activation(), torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            logits = self._forward()
        if self._pool is None:
            self._pool = graph.pool()
        self.captures += 1
        log.info("captured a decode step (%d so far, %s)", self.captures, self.graphs)
        return graph, logits

    # ---- the memory the step reads -----------------------------------------------------------------
    def _bind_memory(self) -> tuple[tuple, Callable[[], contextlib.AbstractContextManager]]:
        """The graph key of the active memory mode, and a context that activates the decoder's static copy of
        the active memory state (copied in when the active state is not the one last copied)."""
        patch = getattr(self.model, "_titans_patch", None)
        active = patch.active if patch is not None else None
        if active is None:
            return ("plain", 1), contextlib.nullcontext
        if active.write:
            raise RuntimeError("StaticDecoder.step inside a memory write (priming) context")
        state = active.state
        tensors = [t for table in (state.weights, state.momentum) for layer in sorted(table) for t in table[layer]]
        if self._memory is None or not self._same_shapes(tensors):
            self._memory = state.copy()  # fresh buffers: graphs captured on the old ones are stale
            self._graphs.clear()
            self._memory_source = [weakref.ref(t) for t in tensors]
            self.memory_copies += 1
        elif any(ref() is not t for ref, t in zip(self._memory_source, tensors)):
            mine = [t for table in (self._memory.weights, self._memory.momentum)
                    for layer in sorted(table) for t in table[layer]]
            for dst, src in zip(mine, tensors):
                dst.copy_(src)
            self._memory_source = [weakref.ref(t) for t in tensors]
            self.memory_copies += 1
        self._memory.updates = state.updates
        self._memory.tokens_written = state.tokens_written
        gates = "shut" if active.shut else "open"
        key: tuple = (gates, 1)
        if patch.config.integration == "mac" or patch.is_ntp:
            key += (state.updates == 0,)  # mac and ntp skip the read of a memory never written to
        static = self._memory
        return key, lambda: patch.activate(static, gates=gates)

    def _same_shapes(self, tensors: list[torch.Tensor]) -> bool:
        mine = [t for table in (self._memory.weights, self._memory.momentum) for layer in sorted(table) for t in table[layer]]
        return len(mine) == len(tensors) and all(
            a.shape == b.shape and a.dtype == b.dtype and a.device == b.device for a, b in zip(mine, tensors))
