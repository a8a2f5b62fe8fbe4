"""A small stand-in with the memory patch's public API (titans_lsp.model.patching.TitansPatch), for testing
the training loop on its own. It is a real (linear, delta-rule) associative memory added to the output of
chosen decoder layers: the store path uses a frozen key projection and a value projection, the read path a
learned retrieve projection, an output projection that starts at zero and a scalar gate per layer."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class PrimeStats:
    tokens: int = 0
    max_update_norm: float = 0.0


class DoubleState:
    def __init__(self, layers: list[int], dim: int):
        self.layers, self.dim = layers, dim
        self.reset()

    def reset(self) -> None:
        self.W = {l: torch.zeros(self.dim, self.dim) for l in self.layers}


class LayerMemory(nn.Module):
    def __init__(self, hidden: int, dim: int):
        super().__init__()
        self.key = nn.Linear(hidden, dim, bias=False)
        nn.init.orthogonal_(self.key.weight)
        self.key.weight.requires_grad_(False)
        self.value = nn.Linear(hidden, dim, bias=False)
        self.retrieve = nn.Linear(hidden, dim, bias=False)
        self.retrieve.weight.data.copy_(self.key.weight.data)
        self.output = nn.Linear(dim, hidden, bias=False)
        nn.init.zeros_(self.output.weight)
        self.gate = nn.Parameter(torch.zeros(()))


class DoublePatch:
    def __init__(self, model, layers: list[int], dim: int = 32, lr: float = 0.5):
        self.model, self.layers, self.dim, self.lr = model, layers, dim, lr
        hidden = model.config.hidden_size
        self.memories = nn.ModuleDict({str(l): LayerMemory(hidden, dim) for l in layers})
        self._state: DoubleState | None = None
        self._gates = "open"
        self._writes: dict[int, torch.Tensor] | None = None
        for l in layers:
            model.model.layers[l].register_forward_hook(self._hook(l))

    def _hook(self, layer: int):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            mem = self.memories[str(layer)]
            if self._writes is not None:
                k = nn.functional.normalize(mem.key(hidden.detach().float()), dim=-1)[0]
                v = mem.value(hidden.detach().float())[0]
                W = self._state.W[layer]
                self._writes[layer] = self.lr * (v - k @ W.T).T @ k / k.shape[0]
                return output
            if self._state is None:
                return output
            q = nn.functional.normalize(mem.retrieve(hidden.float()), dim=-1)
            gate = torch.sigmoid(mem.gate) if self._gates == "open" else torch.sigmoid(torch.tensor(-100.0))
            y = mem.output(q @ self._state.W[layer].T) * gate
            hidden = hidden + y.to(hidden.dtype)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return hook

    def new_state(self) -> DoubleState:
        return DoubleState(self.layers, self.dim)

    @contextlib.contextmanager
    def activate(self, state, gates: str = "open"):
        self._state, self._gates = state, gates
        try:
            yield
        finally:
            self._state = None

    def prime(self, state, texts, tokenizer, chunk_tokens: int = 512, should_yield=None) -> PrimeStats:
        stats = PrimeStats()
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] if isinstance(text, str) else list(text)
            for start in range(0, len(ids), chunk_tokens):
                chunk = torch.tensor([ids[start:start + chunk_tokens]])
                self._state, self._writes = state, {}
                try:
                    with torch.no_grad():
                        self.model(input_ids=chunk)
                finally:
                    writes, self._writes, self._state = self._writes, None, None
                for l, delta in writes.items():
                    state.W[l] = state.W[l] + delta
                    stats.max_update_norm = max(stats.max_update_norm, float(delta.norm()))
                stats.tokens += chunk.shape[1]
        return stats

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.memories.parameters() if p.requires_grad]

    def gate_values(self) -> dict[int, float]:
        return {l: float(torch.sigmoid(self.memories[str(l)].gate.detach())) for l in self.layers}

    def modules(self):
        return list(self.memories.values())

    def save_parameters(self, directory) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.memories.state_dict().items()}, directory / "memory.safetensors")
        (directory / "config.json").write_text(json.dumps({"layers": self.layers, "dim": self.dim}))

    def load_parameters(self, directory) -> None:
        from safetensors.torch import load_file

        self.memories.load_state_dict(load_file(Path(directory) / "memory.safetensors"))


def install_double(model, layers: list[int] | None = None) -> DoublePatch:
    n = model.config.num_hidden_layers
    return DoublePatch(model, layers or [n // 2, n - 1])
