"""Backends: what turns a laid-out prompt into tokens (see base.py). One registry, below.

| name       | runs                                                       | memory modes |
| ---------- | ---------------------------------------------------------- | ------------ |
| `local`    | the model in this process (transformers, fp32 on CPU)      | yes          |
| `llamacpp` | llama.cpp's `llama-server`, started by us or at a URL      | no           |
| `openai`   | any OpenAI-compatible `/v1/completions` server (vLLM, ...) | no           |
| `auto`     | `llamacpp` for none/concat when llama-server is provisioned, else and for memory modes `local` | yes |
"""

from __future__ import annotations

from titans_lsp.backends.auto import AutoBackend
from titans_lsp.backends.base import Backend, BackendError, GenerateCall, ModeUnsupported
from titans_lsp.backends.config import BACKEND_NAMES, BackendConfig
from titans_lsp.backends.llamacpp import LlamaCppBackend
from titans_lsp.backends.local import LocalBackend
from titans_lsp.backends.openai import OpenAIBackend

BACKENDS: dict[str, type[Backend]] = {
    "local": LocalBackend,
    "llamacpp": LlamaCppBackend,
    "openai": OpenAIBackend,
    "auto": AutoBackend,
}
assert tuple(BACKENDS) == BACKEND_NAMES  # config.py validates names against the same list

__all__ = ["BACKENDS", "Backend", "BackendConfig", "BackendError", "GenerateCall", "ModeUnsupported", "create_backend"]


def create_backend(config: BackendConfig, *, model: str = "default", device: str = "auto", dtype: str = "auto",
                   cache_dir: str | None = None) -> Backend:
    """The backend ``config`` names, for the model spec ``model`` (the weights for ``local`` and the
    GGUF file a supervised ``llamacpp`` server loads; the tokenizer everywhere)."""
    return BACKENDS[config.name].create(config, model=model, device=device, dtype=dtype, cache_dir=cache_dir)
