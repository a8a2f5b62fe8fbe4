"""Finding the llama-server that scripts/provision-llamacpp builds (scripts/test runs it, so CI has it)."""

from __future__ import annotations

import os

import pytest


def llama_server_or_skip() -> str:
    """The provisioned llama-server; skipped (failed under CI) when it was never built."""
    from titans_lsp.backends import BackendError
    from titans_lsp.backends.llamacpp import find_llama_server

    try:
        return find_llama_server()
    except BackendError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provision llama-server (scripts/test runs scripts/provision-llamacpp): {exc}")
        pytest.skip(f"no llama-server: {exc}")
