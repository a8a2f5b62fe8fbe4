"""Many workspaces on one device: the LRU keeps recent memory states on the device within a byte budget and
spills the rest to host memory, then disk. On CPU the device and host tiers share memory, so the test
checks the placement, the disk round trip and that completions do not change."""

from __future__ import annotations

import pytest
import torch

from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
from titans_lsp.model.loading import load_model
from titans_lsp.model.memory import MemoryConfig
from titans_lsp.modes import Mode
from titans_lsp.residency import MemoryResidency, SpilledState, state_bytes

TEXTS = ["class Server:\n    def __init__(self, host, port):\n        self.host = host\n",
         "def load_config(path):\n    with open(path) as f:\n        return json.load(f)\n",
         "for i in range(10):\n    print(i, value, result)\n",
         "x = [1, 2, 3]\ny = {'a': 1, 'b': 2}\nreturn None\n",
         "import os\nimport sys\nfrom pathlib import Path\n"]


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    return CompletionEngine(load_model(str(tiny_llama_dir), device="cpu"), memory_config=MemoryConfig(memory_dim=32, gate_init=2.0))


def complete(engine, workspace) -> str:
    settings = CompletionSettings(mode=Mode.MEMORY, max_new_tokens=6, max_seq=256, context_budget=64)
    return engine.complete(CompletionRequest(prefix="class Server:\n    def start(self", settings=settings, early_stop=False),
                           workspace).raw


def test_recent_workspaces_stay_on_the_device_and_the_rest_spill(engine, tmp_path):
    size = state_bytes(engine.new_memory_state())
    residency = MemoryResidency("cpu", device_budget=int(2.5 * size), host_budget=int(1.5 * size), spill_dir=tmp_path)
    engine.residency = residency
    try:
        workspaces = [Workspace() for _ in TEXTS]
        answers, saved = [], []
        for ws, text in zip(workspaces, TEXTS):
            engine.prime(ws, [text] * 2)
            answers.append(complete(engine, ws))
            saved.append(ws.memory.copy())
        versions = [ws.memory_version for ws in workspaces]
        assert len(set(answers)) > 1  # the memories differ, so a mixed-up state would show
        # used in order 0..4: the last two on the device, the one before in host memory, the oldest two on disk
        assert [residency.tier(ws) for ws in workspaces] == ["disk", "disk", "host", "device", "device"]
        assert all(isinstance(ws.memory, SpilledState) for ws in workspaces[:2])
        assert len(list(tmp_path.glob("*.safetensors"))) == 2
        assert residency.spills["disk"] == 2

        # the oldest comes back from disk with the same values, the same answer and its KV caches still valid
        assert complete(engine, workspaces[0]) == answers[0]
        assert residency.tier(workspaces[0]) == "device" and residency.loads["disk"] == 1
        for layer, ws in saved[0].weights.items():
            for a, b in zip(workspaces[0].memory.weights[layer], ws):
                assert torch.equal(a, b)
        assert workspaces[0].memory_version == versions[0]
        assert [residency.tier(ws) for ws in workspaces] == ["device", "disk", "disk", "host", "device"]
        assert sum(residency.tier(ws) == "device" for ws in workspaces) * size <= residency.device_budget

        # persisting a spilled workspace writes its state as it is (the server's save_memory path)
        spilled = workspaces[1]
        spilled.latest_memory.save(tmp_path / "persisted.safetensors")
        from titans_lsp.model.memory import MemoryState

        again = MemoryState.load(tmp_path / "persisted.safetensors")
        assert torch.equal(again.weights[again.layers[0]][0], saved[1].weights[again.layers[0]][0])
        # every answer is unchanged after the shuffling, and priming a spilled workspace works
        assert [complete(engine, ws) for ws in workspaces] == answers
        engine.prime(workspaces[2], [TEXTS[0]])
        assert residency.tier(workspaces[2]) == "device"
    finally:
        engine.residency = None


def test_a_workspace_dropped_while_spilled_leaves_no_file(engine, tmp_path):
    size = state_bytes(engine.new_memory_state())
    residency = MemoryResidency("cpu", device_budget=size, host_budget=0, spill_dir=tmp_path)
    engine.residency = residency
    try:
        first, second = Workspace(), Workspace()
        engine.prime(first, TEXTS[:1])
        engine.prime(second, TEXTS[1:2])
        assert residency.tier(first) == "disk" and len(list(tmp_path.glob("*.safetensors"))) == 1
        del first
        import gc

        gc.collect()
        assert not list(tmp_path.glob("*.safetensors"))
        assert residency.summary()["device"] == 1
    finally:
        engine.residency = None


def test_without_a_spill_directory_the_host_keeps_the_rest(engine):
    size = state_bytes(engine.new_memory_state())
    residency = MemoryResidency("cpu", device_budget=size, host_budget=0)
    engine.residency = residency
    try:
        workspaces = [Workspace() for _ in range(3)]
        for ws in workspaces:
            engine.prime(ws, TEXTS[:1])
        assert [residency.tier(ws) for ws in workspaces] == ["host", "host", "device"]
    finally:
        engine.residency = None


def test_serve_flags_set_the_budgets(engine, tmp_path, capsys):
    from titans_lsp.cli import main
    from titans_lsp.server import TitansServer

    assert main(["serve", "--memory-device-mb", "-1"]) == 1
    assert "--memory-device-mb must be" in capsys.readouterr().err
    assert TitansServer(cache_dir=str(tmp_path))._residency(engine) is None  # no flag: every state stays put
    residency = TitansServer(cache_dir=str(tmp_path), memory_budget_mb=(1.5, 8))._residency(engine)
    assert residency.device_budget == int(1.5 * 1024 * 1024) and residency.host_budget == 8 * 1024 * 1024
    assert residency.spill_dir == tmp_path / "memory-spill" and residency.device == torch.device("cpu")
    assert TitansServer(cache_dir=str(tmp_path), memory_budget_mb=(2, None))._residency(engine).spill_dir is None
