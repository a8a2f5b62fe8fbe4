"""The ``auto`` backend: the fastest backend this machine has for each mode, chosen once at start.

Modes that do not touch the weights (``none``, ``concat``) go to a supervised ``llama-server``
when one is provisioned (scripts/provision-llamacpp) and the model is a GGUF; everything else, and
every mode when llama-server is missing or does not start, runs in-process on ``local``. The choice
and its reason are logged at start and shown in status: never a silent fallback. While the supervised
llama-server is down or restarting, none/concat are answered on ``local`` (slower, but answered; the
status shows llama-server's state and error, and ``serving: local``) until it is back.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from titans_lsp.backends.base import Backend, BackendError, GenerateCall
from titans_lsp.backends.llamacpp import LlamaCppBackend, find_llama_server
from titans_lsp.backends.local import LocalBackend
from titans_lsp.model.generation import GenerationResult

log = logging.getLogger(__name__)


def planned_serving(config, model: str = "default") -> str:
    """What ``auto`` will do on this machine, said before any editor connects (serve's banner): the
    llama-server it will start for none/concat, or why every mode will run locally and how to fix that."""
    from titans_lsp.model.loading import ModelLoadError, resolve_model

    if config.url:
        return f"none/concat on the llama-server at {config.url}, memory modes on local"
    try:
        if resolve_model(model).kind != "gguf":
            return "every mode on local (the model is not a GGUF file, which llama-server needs)"
    except ModelLoadError:
        pass  # loading says what is wrong with the model
    try:
        binary = find_llama_server(config.binary)
    except BackendError as exc:
        return f"every mode on local ({exc}; llama-server makes typing latency several times lower on CPUs)"
    return f"none/concat on llama-server ({binary}), memory modes on local"


class AutoBackend(Backend):
    name = "auto"
    supports_memory = True  # memory modes run on the local part

    def __init__(self, local: LocalBackend, fast: Backend | None, reason: str):
        self.local, self.fast, self.reason = local, fast, reason
        self._fast_was_usable = fast is not None
        self.loaded, self.model, self.tokenizer = local.loaded, local.model, local.tokenizer
        log.info("backend auto: none/concat on %s, memory modes on local (%s)", self.fast_name, reason)

    @classmethod
    def create(cls, config, *, model: str, device: str, dtype: str, cache_dir: str | None) -> "AutoBackend":
        local = LocalBackend.create(config, model=model, device=device, dtype=dtype, cache_dir=cache_dir)
        try:
            fast = LlamaCppBackend.create(replace(config, name="llamacpp", decode="eager"), model=model, device=device, dtype=dtype,
                                          cache_dir=cache_dir)
        except BackendError as exc:  # not provisioned, not a GGUF model, or it did not start
            return cls(local, None, f"local for every mode: {exc}")
        return cls(local, fast, f"llama-server {fast.describe().get('url')} for modes without memory")

    @property
    def fast_name(self) -> str:
        return self.fast.name if self.fast is not None else "local"

    @property
    def lookahead(self) -> int:
        return self.local.lookahead

    @lookahead.setter
    def lookahead(self, value: int) -> None:
        self.local.lookahead = value

    def backend_for(self, mode) -> Backend:
        if mode.uses_memory or self.fast is None or not self._fast_usable():
            return self.local
        return self.fast

    def _fast_usable(self) -> bool:
        """Whether llama-server can take a request now (a server at a URL is the user's: always tried)."""
        server = getattr(self.fast, "server", None)
        usable = server is None or server.usable()
        if usable != self._fast_was_usable:
            self._fast_was_usable = usable
            if usable:
                log.info("llama-server is back: none/concat on it again")
            else:
                log.warning("llama-server is %s: none/concat on local until it is back (%s)", server.state, server.error)
        return usable

    def _serving_fast_name(self) -> str:
        """What answers none/concat now, without side effects (describe must not start anything)."""
        server = getattr(self.fast, "server", None)
        if self.fast is None or (server is not None and not server.ready()):
            return "local"
        return self.fast.name

    def serving_for(self, mode) -> str:
        return "local" if mode.uses_memory else self._serving_fast_name()

    def generate(self, call: GenerateCall) -> list[GenerationResult]:
        raise BackendError("internal: the engine must call backend_for(mode).generate on the auto backend")

    def describe(self) -> dict:
        fast = self.fast.describe() if self.fast is not None else self.local.describe()
        return {**fast, "name": self.name, "model": self.local.loaded.name,
                "serving": {"none": self._serving_fast_name(), "concat": self._serving_fast_name(), "memory": "local"},
                "reason": self.reason}

    def check(self) -> str:
        checks = "; ".join(f"{b.name}: {b.check()}" for b in (self.local, self.fast) if b is not None)
        return f"{checks} (none/concat on {self.fast_name}: {self.reason})"

    def close(self) -> None:
        if self.fast is not None:
            self.fast.close()
        self.local.close()
