"""The GPU latency script's --tiny path (CPU): same code as the 9B run, tiny Qwen3.5 config."""

from __future__ import annotations

import json

from titans_lsp.evals import gpu_bench


def test_tiny_gpu_bench_runs_and_reuses_the_deltanet_prefix(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu_bench.main(["--tiny", "--device", "cpu", "--prompt-tokens", "40", "--new-tokens", "2", "--repeats", "1",
                           "--priming-tokens", "64", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    none = results["modes"]["none"]
    assert none["cold"]["prefilled"] == 40 and none["cold"]["reused"] == 0
    # One keystroke later the DeltaNet states come back from the line-start snapshot.
    assert none["warm"]["reused"] >= 30 and none["warm"]["prefilled"] <= 11
    assert none["cold"]["ttft_ms"] > 0
