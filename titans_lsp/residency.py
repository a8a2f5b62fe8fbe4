"""Many workspaces on one GPU: the recently used workspaces' memory states stay on the device, the rest
are spilled to host memory and, past a host budget, to disk.

A memory state at the 9B shape is tens to hundreds of MB (gpu_bench measures it), next to an 18 GB
model on an 80 GB card: a server with many workspace folders open cannot keep all of them on the GPU,
and does not need to, since a completion reads only its own workspace's memory. The engine calls
:meth:`MemoryResidency.use` under its model lock before a workspace's memory is read or written; the
state comes back to the device (from host memory, or loaded from its spill file) and the least recently
used ones beyond the budget move out. A spilled state holds the same values, so the workspace's
memory version and its KV caches stay valid.
"""

from __future__ import annotations

import logging
import shutil
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SLOTS = ("memory", "pending")  # the Workspace attributes that hold memory states


@dataclass
class SpilledState:
    """A memory state saved to disk by :class:`MemoryResidency` (the workspace holds this until its next use)."""

    path: Path
    layers: list[int] = field(default_factory=list)

    def save(self, path) -> None:
        """What persisting a workspace does with its memory: the spill file is already that file."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(path) + ".tmp")
        shutil.copyfile(self.path, tmp)
        tmp.replace(path)


def state_bytes(state) -> int:
    """Bytes of a memory state's tensors (weights, momentum, initial weights)."""
    if state is None or isinstance(state, SpilledState):
        return 0
    return sum(t.numel() * t.element_size() for table in (state.weights, state.momentum, state.initial)
               for ws in table.values() for t in ws)


class MemoryResidency:
    """LRU placement of workspaces' memory states: ``device_budget`` bytes on the model's device, then
    ``host_budget`` bytes in host memory, then files in ``spill_dir`` (no disk tier without one: the host
    keeps the rest). ``None`` budgets are unlimited. Callers hold the engine's model lock."""

    def __init__(self, device: str | torch.device, device_budget: int | None = None, host_budget: int | None = None,
                 spill_dir: str | Path | None = None):
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.device_budget = device_budget
        self.host_budget = host_budget
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._order: OrderedDict[int, weakref.ref] = OrderedDict()  # least recently used first
        self._tier: dict[int, str] = {}
        self.loads = {"host": 0, "disk": 0}  # states brought back to the device, by where they came from
        self.spills = {"host": 0, "disk": 0}

    def tier(self, workspace) -> str | None:
        """'device', 'host' or 'disk' (None: never used through this object)."""
        return self._tier.get(id(workspace))

    def use(self, workspace) -> None:
        """Bring ``workspace``'s states to the device, mark it most recently used, spill what no longer fits."""
        key = id(workspace)
        where = self._tier.get(key)
        for slot in SLOTS:
            state = getattr(workspace, slot)
            if isinstance(state, SpilledState):
                from titans_lsp.model.memory import MemoryState

                setattr(workspace, slot, MemoryState.load(state.path, device=self.device))
                state.path.unlink(missing_ok=True)
            elif state is not None and _device_of(state) != self.device:
                setattr(workspace, slot, state.to(self.device))
        if where in self.loads:
            self.loads[where] += 1
        if key not in self._order:
            self._order[key] = weakref.ref(workspace, lambda _, key=key: self._drop(key))
        self._order.move_to_end(key)
        self._tier[key] = "device"
        self._rebalance()

    def forget(self, workspace) -> None:
        self._drop(id(workspace))

    def _drop(self, key: int) -> None:
        self._order.pop(key, None)
        if self._tier.pop(key, None) == "disk" and self.spill_dir is not None:
            for slot in SLOTS:  # a workspace gone while spilled: its files go too
                (self.spill_dir / f"{key:x}-{slot}.safetensors").unlink(missing_ok=True)

    def _rebalance(self) -> None:
        """Walk from the most recently used: the first ones that fit the device budget stay, then host, then disk."""
        device_used = host_used = 0
        for key in reversed(list(self._order)):
            workspace = self._order[key]()
            if workspace is None:
                self._drop(key)
                continue
            size = sum(state_bytes(getattr(workspace, slot)) for slot in SLOTS)
            tier = self._tier[key]
            if tier == "disk":
                if any(isinstance(getattr(workspace, slot), SpilledState) for slot in SLOTS):
                    continue
                # its memory was replaced meanwhile (loaded, reset): account for where it is now
                tier = self._tier[key] = "device" if _device_of(workspace.memory) == self.device else "host"
            if tier == "device" and (self.device_budget is None or device_used + size <= self.device_budget
                                     or key == next(reversed(self._order))):
                device_used += size  # the workspace in use stays even when it alone exceeds the budget
                continue
            if self.host_budget is None or self.spill_dir is None or host_used + size <= self.host_budget:
                if tier == "device":
                    self._to_host(workspace)
                    self._tier[key] = "host"
                host_used += size
                continue
            self._to_disk(key, workspace)

    def _to_host(self, workspace) -> None:
        for slot in SLOTS:
            state = getattr(workspace, slot)
            if state is not None and not isinstance(state, SpilledState):
                setattr(workspace, slot, state.to("cpu"))
        self.spills["host"] += 1

    def _to_disk(self, key: int, workspace) -> None:
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        for slot in SLOTS:
            state = getattr(workspace, slot)
            if state is not None and not isinstance(state, SpilledState):
                path = self.spill_dir / f"{key:x}-{slot}.safetensors"
                state.save(path)  # atomic (temp file + rename)
                setattr(workspace, slot, SpilledState(path, list(state.layers)))
        self._tier[key] = "disk"
        self.spills["disk"] += 1

    def summary(self) -> dict:
        tiers = list(self._tier.values())
        return {"device": tiers.count("device"), "host": tiers.count("host"), "disk": tiers.count("disk"),
                "loads": dict(self.loads), "spills": dict(self.spills)}


def _device_of(state) -> torch.device:
    for table in (state.weights, state.momentum):
        for ws in table.values():
            for t in ws:
                return t.device
    return torch.device("cpu")
