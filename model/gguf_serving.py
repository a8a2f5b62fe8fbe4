"""The GGUF file llama-server runs for a model spec.

The embedded default ships as Q4_1. On the x86 CPUs we measured, llama.cpp computes Q4_1 matrix
products through its generic quantized dot-product path, while Q8_0 goes through its faster
matrix-matrix kernels: a 2,000-token prompt was 1.5x faster as Q8_0 at the same decode speed
(evals/results/2026-12-02-backends/tune-gguf.json). So the default is re-encoded once to Q8_0 in the
cache (145 MB, seconds) and llama-server runs that. The re-encoding starts from the Q4_1 values, so it
holds the same weights up to Q8_0's rounding (<= 1/254 of each 32-value block's largest magnitude).
A GGUF file the user names is served as it is: its encoding is their choice.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from titans_lsp.model.loading import ModelLoadError, converted_gguf_dir, default_model_path, resolve_model

log = logging.getLogger(__name__)

SERVING_ENCODING = "Q8_0"
STALE_TMP_S = 600.0  # a temp file this old was left by a killed writer (a re-encoding takes seconds)


def serving_gguf(spec: str, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The GGUF path llama-server should load for ``spec`` (None: the spec is not a GGUF file)."""
    source = resolve_model(spec)
    if source.kind != "gguf":
        return None
    path = Path(source.location)
    if not _is_embedded_default(path):
        return str(path)
    return str(reencode(path, SERVING_ENCODING, cache_dir))


def _is_embedded_default(path: Path) -> bool:
    """Whether ``path`` is the default model's file (False when that wheel is not even installed)."""
    try:
        return path.resolve() == default_model_path().resolve()
    except ModelLoadError:
        return False


def reencoded_path(gguf_path: Path, encoding: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the re-encoding of ``gguf_path`` lives: next to its HF conversion, keyed the same way."""
    directory = converted_gguf_dir(gguf_path, cache_dir)
    return directory.parent / f"{directory.name}.{encoding}.gguf"


def reencode(gguf_path: Path, encoding: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Write ``gguf_path`` with every matrix in ``encoding`` (1-D tensors stay F32), once; atomic
    (a temp file renamed into place), so a kill mid-write leaves no half file under the real name."""
    import gguf

    target = reencoded_path(gguf_path, encoding, cache_dir)
    if target.is_file():
        return target
    qtype = gguf.GGMLQuantizationType[encoding]
    try:
        reader = gguf.GGUFReader(gguf_path)
    except Exception as exc:  # noqa: BLE001 - any parse failure means an unusable file
        raise ModelLoadError(f"cannot read GGUF file {gguf_path} ({type(exc).__name__}: {exc})") from None
    log.info("re-encoding %s as %s for llama-server into %s (first use only)", gguf_path.name, encoding, target)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temp_files(target)
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        os.close(fd)
        _write_reencoded(reader, tmp, qtype)
        os.replace(tmp, target)
    except OSError as exc:  # a full disk, a read-only cache: say where, and what else works
        raise ModelLoadError(f"cannot write the {encoding} copy of {gguf_path.name} into {target.parent} ({exc}); "
                             "free space there, or pass --model FILE.gguf to serve a file as it is") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _remove_stale_temp_files(target: Path) -> None:
    """Temp files of this target older than STALE_TMP_S: a writer killed mid-write (145 MB each).
    Younger ones may belong to another server writing right now, so they stay."""
    for leftover in target.parent.glob(target.name + ".*.tmp"):
        try:
            if time.time() - leftover.stat().st_mtime > STALE_TMP_S:
                leftover.unlink()
        except OSError:
            pass


def _write_reencoded(reader, path: str, qtype) -> None:
    """Every field of ``reader`` (but the file type) and every tensor, the matrices in ``qtype``."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, arch=reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        # the writer adds the architecture and GGUF.* itself; the file type would be stale
        if field.name in ("general.architecture", "general.file_type") or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        writer.add_key_value(field.name, field.contents(), kind,
                             sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if values.ndim == 1:
            writer.add_tensor(tensor.name, values, raw_dtype=gguf.GGMLQuantizationType.F32)
        else:
            writer.add_tensor(tensor.name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
