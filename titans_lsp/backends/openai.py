"""The ``openai`` backend: any OpenAI-compatible ``/v1/completions`` server (vLLM, SGLang, llama.cpp,
Ollama, TGI), streamed over httpx.

The prompt is sent as text: the engine's laid-out ids decoded with the local tokenizer of
``--model`` (FIM markers included, so servers that reject ``suffix`` - vLLM - still fill in the
middle), so that tokenizer must match the served model's. The API key comes from an environment
variable named by ``--backend-api-key-env`` and is read per request, never logged or shown.
The generic protocol has no way to constrain the first tokens, so prompts are not token-healed
here (``heals = False``: the engine sends the prompt whole).
"""

from __future__ import annotations

import logging

import httpx

from titans_lsp.backends.base import Backend, BackendError, GenerateCall
from titans_lsp.backends.config import BackendConfig
from titans_lsp.backends.stream import Collector, StreamTarget, sse_events, unreadable
from titans_lsp.model.generation import GenerationResult

log = logging.getLogger(__name__)


def api_base(url: str) -> str:
    """``http://host:port`` or ``http://host:port/v1`` -> the ``/v1`` base."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class OpenAIBackend(Backend):
    name = "openai"
    heals = False

    def __init__(self, config: BackendConfig, tokenizer):
        if not config.url:
            raise BackendError("the openai backend needs --backend-url")
        self.config = config
        self.tokenizer = tokenizer
        self.base = api_base(config.url)
        self.served_model: str | None = config.model
        self.client = httpx.Client(timeout=httpx.Timeout(config.timeout_s, connect=5.0))
        self.last_error: str | None = None

    @classmethod
    def create(cls, config: BackendConfig, *, model: str, device: str, dtype: str, cache_dir: str | None) -> "OpenAIBackend":
        from titans_lsp.model.loading import load_tokenizer

        return cls(config, load_tokenizer(model, cache_dir))

    def _headers(self) -> dict[str, str]:
        key = self.config.api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _target(self) -> StreamTarget:
        return StreamTarget(f"OpenAI-compatible server at {self.base}", self.base, self._headers(),
                            fix="start it, or fix --backend-url")

    def model_name(self) -> str:
        """The served model: --backend-model, else the first one the server lists at /v1/models."""
        if self.served_model:
            return self.served_model
        try:
            response = self.client.get(self.base + "/models", headers=self._headers())
            response.raise_for_status()
            models = response.json().get("data") or []
            self.served_model = str(models[0]["id"])
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise BackendError(f"cannot list the models of {self.base} ({type(exc).__name__}); "
                               "pass --backend-model NAME or check --backend-url") from None
        return self.served_model

    def prompt_text(self, ids: list[int]) -> str:
        """The laid-out ids as text; a leading BOS is left to the server (it adds its own)."""
        bos = self.tokenizer.bos_token_id
        if bos is not None and ids and ids[0] == bos:
            ids = ids[1:]
        return self.tokenizer.decode(ids)

    def generate(self, call: GenerateCall) -> list[GenerationResult]:
        collector = Collector(self.tokenizer, call, set())
        if call.prefill_only:  # no portable way to prefill only; servers cache prefixes of real requests
            result = collector.result()
            result.stop_reason = "prefill_only"
            return [result]
        body = {"model": self.model_name(), "prompt": self.prompt_text(call.prompt_ids), "max_tokens": call.max_new_tokens,
                "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True}}
        usage: dict = {}
        target = self._target()
        try:
            for event in sse_events(self.client, target, "/completions", body, call.cancel, self.config.retries):
                usage = event.get("usage") or usage
                choices = event.get("choices") or []
                if not isinstance(usage, dict) or not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
                    raise BackendError(unreadable(target, event))
                if not choices:
                    continue
                if collector.add_text(choices[0].get("text") or ""):
                    break
                if choices[0].get("finish_reason") == "stop":
                    collector.stop_reason = "eos"
        except BackendError as exc:
            self.last_error = str(exc)
            raise
        self.last_error = None
        return [collector.result(prefilled=int(usage.get("prompt_tokens") or 0))]

    def describe(self) -> dict:
        return {"name": self.name, "url": self.base, "model": self.served_model, "apiKeyEnv": self.config.api_key_env,
                "state": "error" if self.last_error else "remote", "error": self.last_error}

    def check(self) -> str:
        return f"{self.base} model {self.model_name()}: " + super().check()

    def close(self) -> None:
        self.client.close()
