"""The GGUF file llama-server runs: the embedded default re-encoded once as Q8_0 (same weights up to
Q8_0 rounding), a file the user names served as it is, a broken file refused with a clear error."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from titans_lsp.model.gguf_serving import (  # noqa: E402
    SERVING_ENCODING, STALE_TMP_S, reencode, reencoded_path, serving_gguf,
)
from titans_lsp.model.loading import ModelLoadError, default_model_path  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The default re-encoded into a fresh cache that held two temp files of this target beforehand:
    one a killed writer left long ago, one a live writer is writing now."""
    cache = tmp_path_factory.mktemp("cache")
    target = reencoded_path(default_model_path(), SERVING_ENCODING, cache)
    target.parent.mkdir(parents=True)
    killed, live = target.parent / f"{target.name}.abc.tmp", target.parent / f"{target.name}.def.tmp"
    killed.write_bytes(b"half a file")
    live.write_bytes(b"being written")
    old = os.stat(killed).st_mtime - STALE_TMP_S - 60
    os.utime(killed, (old, old))
    return SimpleNamespace(cache=cache, target=target, killed=killed, live=live, path=serving_gguf("default", cache))


@pytest.fixture(scope="module")
def readers(served):
    """GGUF readers of the source and of its re-encoding (each takes seconds to parse)."""
    return gguf.GGUFReader(default_model_path()), gguf.GGUFReader(served.path)


def test_default_is_reencoded_once_into_the_cache(served):
    cache, path = served.cache, served.path
    assert path.startswith(str(cache)) and path.endswith(f".{SERVING_ENCODING}.gguf")
    mtime = os.stat(path).st_mtime_ns
    assert serving_gguf("default", cache) == path
    assert os.stat(path).st_mtime_ns == mtime  # reused, not rewritten


def test_reencoding_keeps_every_tensor_and_field(readers):
    source, target = readers
    assert [t.name for t in target.tensors] == [t.name for t in source.tensors]
    for old, new in zip(source.tensors, target.tensors):
        assert list(new.shape) == list(old.shape), old.name
        want = gguf.GGMLQuantizationType.F32 if len(old.shape) == 1 else gguf.GGMLQuantizationType.Q8_0
        assert new.tensor_type == want, old.name
    kept = {name for name in source.fields if not name.startswith("GGUF.") and name != "general.file_type"}
    assert kept <= set(target.fields)
    for name in ("tokenizer.ggml.tokens", "llama.context_length", "llama.block_count"):
        assert target.fields[name].contents() == source.fields[name].contents()


def test_reencoded_weights_equal_the_source_up_to_q8_rounding(readers):
    source = {t.name: t for t in readers[0].tensors}
    for tensor in readers[1].tensors[:40]:
        old = source[tensor.name]
        a = gguf.quants.dequantize(old.data, old.tensor_type).astype(np.float32)
        b = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if len(old.shape) == 1:
            assert np.array_equal(a, b)
            continue
        blocks_a, blocks_b = a.reshape(-1, 32), b.reshape(-1, 32)
        bound = np.abs(blocks_a).max(axis=1, keepdims=True) / 127 * 0.6 + 1e-6  # half a step + the fp16 scale's rounding
        assert (np.abs(blocks_a - blocks_b) <= bound).all(), tensor.name


def test_a_named_gguf_file_is_served_as_it_is(tmp_path):
    mine = tmp_path / "my-model.Q4_K_M.gguf"
    mine.write_bytes(b"GGUF")  # never parsed: the user's encoding is their choice
    assert serving_gguf(str(mine), tmp_path / "cache") == str(mine.resolve())
    assert not (tmp_path / "cache").exists()


def test_a_broken_gguf_is_refused_with_a_clear_error(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelLoadError, match="cannot read GGUF file"):
        reencode(broken, SERVING_ENCODING, tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # nothing half-written is left


def test_a_failed_write_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", disk_full)
    cache = tmp_path / "cache"
    with pytest.raises(ModelLoadError, match="cannot write the Q8_0 copy .*No space left.*--model FILE.gguf"):
        serving_gguf("default", cache)
    assert not [p for p in cache.rglob("*") if p.is_file()]  # no temp file, no half copy under the real name


def test_leftovers_of_a_killed_writer_are_removed_but_not_a_live_writers(served):
    assert served.path == str(served.target)
    assert not served.killed.exists() and served.live.exists()


def test_a_named_gguf_is_served_even_without_the_default_model_installed(tmp_path, monkeypatch):
    import titans_lsp.model.gguf_serving as serving

    def not_installed():
        raise ModelLoadError("the embedded default model is not installed")

    monkeypatch.setattr(serving, "default_model_path", not_installed)
    mine = tmp_path / "mine.gguf"
    mine.write_bytes(b"GGUF")
    assert serving_gguf(str(mine), tmp_path / "cache") == str(mine.resolve())
