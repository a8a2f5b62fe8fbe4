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


def test_tiny_graph_comparison_correctness_and_capacity(tmp_path):
    """--graphs both times the eager loop and the static path in one run (on a CPU the static path runs its
    step without graphs); --check-prompts compares their tokens per mode and after a publish; the capacity
    of an 80 GB card is computed from the measured state size."""
    out = tmp_path / "gpu.json"
    assert gpu_bench.main(["--tiny", "--device", "cpu", "--prompt-tokens", "40", "--new-tokens", "3", "--repeats", "1",
                           "--priming-tokens", "0", "--graphs", "both", "--check-prompts", "3", "--check-tokens", "24",
                           "--check-new-tokens", "4", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["decode_variants"] == ["eager", "static"]
    static = results["graph_modes"]["static"]
    assert set(static) == set(results["modes"]) == {"none", "memory", "ablation"}
    assert static["none"]["warm"]["reused"] >= 30 and static["none"]["cold"]["prefilled"] == 40
    assert static["memory"]["captures_while_timed"] == 0  # no graphs on a CPU; on a GPU: one capture per mode
    check = results["correctness"]["static"]
    for mode in ("none", "ablation", "memory", "hybrid"):
        assert check[mode] == {"prompts": 3, "identical": 3, "mismatches": []}, mode
    assert check["after_publish"]["identical"] == check["after_publish"]["prompts"] >= 2
    assert check["captures_after_publish"] == 0 and check["memory_copies"] >= 2
    cap = results["memory"]["additive"]["capacity"]["80GB_card"]
    assert cap["computed"] is True and cap["state_bytes"] == results["memory"]["additive"]["state_bytes"] > 0
    assert cap["workspaces_on_device"] == (cap["card_bytes"] - cap["model_and_inference_bytes"] - cap["headroom_bytes"]) // cap["state_bytes"]


def test_tiny_ddp_training_throughput_under_torchrun(tmp_path):
    """--ddp under torchrun (2 gloo processes): model/training.py's train() data-parallel, rank 0 reports."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "titans_lsp.evals.gpu_bench", "--tiny", "--device", "cpu", "--ddp", "--train-steps", "2", "--train-seq-lens",
           "32", "--out", str(out)]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.read_text())
    train = results["train"]
    assert results["processes"] == train["processes"] == 2
    entry = train["seq_lens"]["32"]
    assert len(entry["all_step_seconds"]) == 3 and entry["tokens_per_second"] > 0
    assert train["parameter_change_norm"] > 0


def test_a_cache_left_unfilled_names_the_transformers_pin_and_version(monkeypatch):
    """The check blamed "transformers < 5.24" for any mismatch; 5.25's uncounted restore (fixed) hit it too."""
    import pytest
    import torch

    from titans_lsp.model.generation import GenerationResult, PrefixCache

    class Past:
        def get_seq_length(self) -> int:
            return 5

    def generate_without_filling(model, tokenizer, prompt, new_tokens, cache=None, **kwargs):
        cache.ids, cache.past = list(prompt), Past()  # 5 cached against 8 ids
        return GenerationResult(token_ids=[1], text="", prefilled=len(prompt), reused=0, decoded=1, stop_reason="max_tokens")

    monkeypatch.setattr(gpu_bench, "greedy_generate", generate_without_filling)
    with pytest.raises(RuntimeError) as raised:
        gpu_bench.time_generation(torch.nn.Identity(), list(range(8)), 1, "cpu", cache=PrefixCache())
    message = str(raised.value)
    assert "(5 of 8 tokens)" in message and "titans-lsp needs transformers" in message, message
    import transformers

    assert f"with transformers {transformers.__version__}" in message
