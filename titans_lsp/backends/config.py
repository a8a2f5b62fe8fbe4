"""Which backend to use and how to reach it: from CLI flags or an editor's initializationOptions.

The API key is never stored here: only the NAME of the environment variable that holds it, so no
status, log or error message can show it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

BACKEND_NAMES = ("local", "llamacpp", "openai", "auto")  # the registry in titans_lsp.backends maps each to its class
# local backend: how tokens after the prompt are decoded (titans_lsp/backends/local.py)
DECODE_CHOICES = ("eager", "graph", "compile")
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
# What `serve` runs without --backend (and what `doctor` checks): `auto`, i.e. llama-server for none/concat
# when it is provisioned, local otherwise and for the memory modes. Measured through the server on 2-core
# CPUs (evals/results/2026-12-02-backends, 2026-12-03-backends-default): warm p50/p95 2-4x lower and decode
# 4-5x faster than local fp32, same EM/ES within the bootstrap interval; a cold request is slower (README). `eval` and `bench` stay `local`:
# the study's tables are local rows, and bench names its backends.
SERVE_DEFAULT_BACKEND = "auto"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# initializationOptions key -> BackendConfig field (editors: {"backend": "llamacpp", "backendUrl": ...})
OPTION_KEYS = {"backend": "name", "backendUrl": "url", "backendModel": "model", "backendApiKeyEnv": "api_key_env",
               "backendThreads": "threads"}


@dataclass(frozen=True)
class BackendConfig:
    """A backend choice, validated on construction (ValueError with one line that names the fix)."""

    name: str = "local"
    url: str | None = None  # llamacpp: a running llama-server (else one is started); openai: the server (required)
    model: str | None = None  # openai: the served model name (default: the server's first model)
    api_key_env: str = DEFAULT_KEY_ENV  # environment variable holding the API key (openai)
    threads: int | None = None  # llamacpp child server: CPU threads (default: all cores)
    parallel: int = 1  # llamacpp child server: requests decoded together (slots)
    timeout_s: float = 60.0  # longest wait for the next streamed token or a connection
    retries: int = 2  # retries (with backoff) of a request that failed before its first token
    binary: str | None = None  # llama-server executable (default: scripts/provision-llamacpp's build, or PATH)
    decode: str = "eager"  # local: "eager" loop, "graph" (static cache + CUDA graph) or "compile" (DECODE_CHOICES)

    def __post_init__(self) -> None:
        if self.name not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {self.name!r}: choose one of {', '.join(BACKEND_NAMES)}")
        if self.url is not None:
            if not isinstance(self.url, str) or not re.match(r"^https?://[^\s/]+", self.url):
                raise ValueError(f"backend URL must start with http:// or https://, got {self.url!r}")
            object.__setattr__(self, "url", self.url.rstrip("/"))
        if self.name == "openai" and not self.url:
            raise ValueError("the openai backend needs --backend-url (e.g. http://127.0.0.1:8000/v1 for vLLM)")
        if not isinstance(self.api_key_env, str) or not _ENV_NAME.match(self.api_key_env):
            raise ValueError(f"--backend-api-key-env must name an environment variable, got {self.api_key_env!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or isinstance(self.threads, bool)
                                         or not 1 <= self.threads <= 512):
            raise ValueError(f"backend threads must be an integer 1..512, got {self.threads!r}")
        if not isinstance(self.parallel, int) or not 1 <= self.parallel <= 64:
            raise ValueError(f"backend parallel slots must be 1..64, got {self.parallel!r}")
        if self.decode not in DECODE_CHOICES:
            raise ValueError(f"--decode must be one of {', '.join(DECODE_CHOICES)}, got {self.decode!r}")
        if self.decode != "eager" and self.remote:
            raise ValueError(f"--decode {self.decode} is the local backend's decode path (the {self.name} backend decodes "
                             "on its server)")
        if not self.timeout_s > 0 or self.retries < 0:
            raise ValueError("backend timeout must be > 0 and retries >= 0")

    @property
    def remote(self) -> bool:
        """No in-process model: memory modes cannot run (``auto`` keeps one for them)."""
        return self.name not in ("local", "auto")

    def api_key(self) -> str | None:
        """The key from the environment (read when a request is made, never kept in a field)."""
        value = os.environ.get(self.api_key_env, "").strip()
        return value or None

    def with_options(self, options: Any) -> "BackendConfig":
        """These settings overridden by an editor's initializationOptions (keys in OPTION_KEYS);
        raises ValueError naming the bad key."""
        if not isinstance(options, Mapping):
            return self
        changes: dict[str, Any] = {}
        for key, field_name in OPTION_KEYS.items():
            value = options.get(key)
            if value is None or value == "":
                continue
            if field_name == "threads":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"initializationOptions.{key} must be an integer, got {value!r}")
                if value == 0:  # the editors' "0: all cores" (titansLsp.backendThreads): the default
                    continue
            elif not isinstance(value, str):
                raise ValueError(f"initializationOptions.{key} must be a string, got {type(value).__name__}")
            changes[field_name] = value
        if changes.get("name") not in (None, self.name) and "url" not in changes:
            changes["url"] = None  # a URL given for another backend does not carry over
        try:
            return replace(self, **changes)
        except ValueError as exc:
            raise ValueError(f"initializationOptions: {exc}") from None

    def describe(self) -> dict:
        """For status and logs: never the key itself."""
        return {"name": self.name, "url": self.url, "model": self.model, "apiKeyEnv": self.api_key_env if self.remote else None}
