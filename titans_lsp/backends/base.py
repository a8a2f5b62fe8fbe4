"""What every backend is: laid-out prompt ids in, greedy tokens out, streamed, cancellable.

The engine (titans_lsp/engine.py) owns everything around the model call: modes, retrieval, prompt
layout (fill-in-the-middle included), token healing's healed text, the stop rule and
post-processing. A backend only runs one :class:`GenerateCall` and knows nothing of modes or
retrieval; the in-process ``local`` backend is the only one that can run memory modes, because they
change the model's weights at test time.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from titans_lsp.model.generation import GenerationResult, PrefixCache

__all__ = ["Backend", "BackendError", "GenerateCall", "GenerationResult", "ModeUnsupported"]


class BackendError(RuntimeError):
    """The backend could not answer (down, unreachable, an error reply). The message is shown to
    the user as is: one line that says what failed and what to do."""


class ModeUnsupported(BackendError):
    """A memory mode was asked of a backend that cannot change the model's weights."""

    def __init__(self, mode: str, backend: str):
        super().__init__(f"mode {mode!r} needs the in-process model (it changes the model's weights at test time), "
                         f"which the {backend!r} backend does not have: use --backend local "
                         f"(editors: initializationOptions.backend = \"local\"), or mode none or concat")
        self.mode, self.backend = mode, backend


@dataclass
class GenerateCall:
    """One greedy generation. ``prompt_ids`` are laid out by the engine (BOS, cross-file block or
    repository files, FIM markers); ``heal_text`` is the text token healing took off the prompt's end,
    which the first tokens must reproduce (it is not part of the returned text)."""

    prompt_ids: list[int]
    max_new_tokens: int
    heal_text: str = ""
    stop: Callable[[str], bool] | None = None  # called with the text so far; True ends generation
    stop_ids: tuple[int, ...] = ()  # extra end tokens (a FIM format's end-of-middle markers)
    cancel: threading.Event | None = None  # set: stop at the next token and raise Cancelled
    alternatives: int = 0  # also return up to this many items that start with a runner-up first token
    cache: PrefixCache | None = None  # the document's in-process KV cache (local backend)
    cache_key: str = ""  # what the cached values depend on (memory version); local backend
    doc_key: str | None = None  # document identity (a remote backend may pin it to a server slot)
    prefill_only: bool = False  # pre-warm: fill the caches with the prompt, no tokens


class Backend(abc.ABC):
    """A way to turn prompt ids into tokens. Subclasses are registered in titans_lsp.backends."""

    name: ClassVar[str]
    supports_memory: ClassVar[bool] = False  # can run memory / ablation / hybrid (in-process weights)
    exclusive: ClassVar[bool] = False  # one call at a time on a model shared with priming (engine lock)
    heals: ClassVar[bool] = True  # constrains the first tokens to the healed text (else: unhealed prompts)

    tokenizer: Any  # a transformers tokenizer for the served model (prompt layout, budgets, decoding)

    @classmethod
    @abc.abstractmethod
    def create(cls, config: Any, *, model: str, device: str, dtype: str, cache_dir: str | None) -> "Backend":
        """The backend for a BackendConfig and a model spec (titans_lsp.backends.create_backend)."""

    @abc.abstractmethod
    def generate(self, call: GenerateCall) -> list[GenerationResult]:
        """The greedy continuation first, then up to ``call.alternatives`` items from runner-up first
        tokens. Raises titans_lsp.model.generation.Cancelled when ``call.cancel`` is set (the stream is
        closed: the server stops generating) and :class:`BackendError` when the backend fails."""

    def backend_for(self, mode: Any) -> "Backend":
        """The backend that runs ``mode`` (a titans_lsp.modes.Mode): itself, except for ``auto``."""
        return self

    def serving_for(self, mode: Any) -> str:
        """The name of the backend that would run ``mode`` now, for the status: like ``backend_for``, but
        never starts anything (``auto``'s backend_for may restart a llama-server that is down)."""
        return self.backend_for(mode).name

    def describe(self) -> dict:
        """What the status shows: name, model, URL, state. Never a secret."""
        return {"name": self.name}

    def check(self) -> str:
        """End to end for ``titans-lsp doctor``: reachable, model loaded, one token generated."""
        ids = self.tokenizer("def main():\n    return", add_special_tokens=False).input_ids
        result = self.generate(GenerateCall(prompt_ids=ids, max_new_tokens=1))[0]
        if not result.token_ids and result.stop_reason != "eos":
            raise BackendError(f"{self.name}: generated no token")
        return f"generated {len(result.token_ids)} token(s): {result.text!r}"

    def close(self) -> None:
        """Release what the backend holds (a child server process, HTTP connections)."""
