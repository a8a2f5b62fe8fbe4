"""The GPU latency script's --tiny path (CPU): same code as the 9B run, tiny Qwen3.5 config."""

from __future__ import annotations

import json

from titans_lsp.evals import gpu_bench
from titans_lsp.model import patching


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
    assert set(results["modes"]) == {"none", "memory", "ablation"}
    assert results["memory"]["additive"]["priming_tokens_per_s"] > 0
    assert "train" not in results["memory"]["additive"]  # training is behind --train-steps


def test_tiny_training_step_with_checkpointing_and_skipped_integration(tmp_path, monkeypatch):
    """--train-steps times model/training.py's step under gradient checkpointing; an integration whose install
    raises NotImplementedError is skipped with a note while the others are measured. bf16 weights as on a GPU
    (the memory itself stays fp32)."""
    real_install = patching.install_memory

    def install(model, config=None, checkpoint=None):
        if config is not None and config.integration == "mag":
            raise NotImplementedError("mag is not here")
        return real_install(model, config, checkpoint)

    monkeypatch.setattr(patching, "install_memory", install)
    out = tmp_path / "gpu.json"
    assert gpu_bench.main(["--tiny", "--device", "cpu", "--dtype", "bf16", "--modes", "memory", "--integrations", "additive,mag",
                           "--prompt-tokens", "24", "--new-tokens", "2", "--repeats", "1", "--priming-tokens", "0",
                           "--train-steps", "2", "--train-seq-lens", "32,48", "--checkpointing", "both",
                           "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert set(results["modes"]) == {"memory"}
    assert any("'mag' skipped" in note for note in results["notes"])
    train = results["memory"]["additive"]["train"]
    assert train["gradient_checkpointing"] is True
    assert train["trainable_parameters"] == results["memory"]["additive"]["parameters"] > 0
    assert set(train["seq_lens"]) == {"32", "48"}
    for entry in train["seq_lens"].values():
        assert len(entry["all_step_seconds"]) == 3 and entry["seconds_per_step"] > 0
        assert abs(entry["hours_for_10000_steps"] - entry["seconds_per_step"] * 10_000 / 3600) <= 0.01  # both rounded
    assert train["parameter_change_norm"] > 0  # gradients reached the memory through checkpointed layers
    plain = results["memory"]["additive"]["train_no_checkpointing"]
    assert plain["gradient_checkpointing"] is False and set(plain["seq_lens"]) == {"32", "48"}
