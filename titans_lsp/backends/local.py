"""The ``local`` backend: the model in this process through transformers (model/generation.py).

Greedy decoding with per-document KV reuse, prompt-lookup drafts and token healing; the only
backend that can run the memory modes, because the engine patches Titans memory into this model's
layers. Output is token-identical to calling ``greedy_generate`` directly.

``decode="graph"`` (``--decode graph``) decodes through model/static_decode.py's StaticDecoder: a static
cache and the decode step captured as a CUDA graph (on a CPU the same static path without graphs);
``"compile"`` through torch.compile's CUDA graphs. Same tokens as the ``eager`` loop.
"""

from __future__ import annotations

from titans_lsp.backends.base import Backend, GenerateCall
from titans_lsp.model.generation import GenerationResult, greedy_generate
from titans_lsp.model.loading import LoadedModel, load_model

DEFAULT_WINDOW = 2048  # static cache tokens (CrossCodeEval's window); grows when a call needs more


class LocalBackend(Backend):
    name = "local"
    supports_memory = True
    exclusive = True  # completions and priming share the model: the engine's lock serializes them

    def __init__(self, loaded: LoadedModel, decode: str = "eager", window: int = DEFAULT_WINDOW):
        from titans_lsp.backends.config import DECODE_CHOICES

        if decode not in DECODE_CHOICES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_CHOICES)}, got {decode!r}")
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.lookahead = 8  # prompt-lookup guesses per decoding step (0: plain greedy); same output either way
        self.decode = decode
        self.window = window  # static cache tokens (a multiple of it when a call needs more)
        self._decoder = None  # titans_lsp.model.static_decode.StaticDecoder (decode graph/compile)

    @classmethod
    def create(cls, config, *, model: str, device: str, dtype: str, cache_dir: str | None) -> "LocalBackend":
        return cls(load_model(model, device=device, dtype=dtype, cache_dir=cache_dir), decode=config.decode)

    def decoder_for(self, tokens: int):
        """The static decoder (None for ``eager``), sized to ``window`` or, when a call needs more, to the next
        multiple of it (a new decoder: its graphs are captured again). Callers hold the engine's lock."""
        if self.decode == "eager":
            return None
        if self._decoder is None or self._decoder.max_len < tokens:
            from titans_lsp.model.static_decode import StaticDecoder

            window = max(self.window, -(-tokens // self.window) * self.window)
            self._decoder = None  # free the old buffers first
            self._decoder = StaticDecoder(self.model, window, graphs="compile" if self.decode == "compile" else "auto")
        return self._decoder

    def generate(self, call: GenerateCall) -> list[GenerationResult]:
        decoder = self.decoder_for(len(call.prompt_ids) + max(call.max_new_tokens, 1))
        common = dict(cancel=call.cancel, cache=call.cache, cache_key=call.cache_key, stop_ids=call.stop_ids,
                      decoder=decoder)
        if call.prefill_only:
            return [greedy_generate(self.model, self.tokenizer, call.prompt_ids, 0, prefill_only=True, **common)]
        first = greedy_generate(self.model, self.tokenizer, call.prompt_ids, call.max_new_tokens, heal_text=call.heal_text,
                                stop=call.stop, alternatives=max(0, min(call.alternatives, 2)),
                                lookahead=self.lookahead, **common)
        results = [first]
        for token in first.alternatives:
            results.append(greedy_generate(self.model, self.tokenizer, call.prompt_ids, call.max_new_tokens,
                                           heal_text=call.heal_text, stop=call.stop, first_token=token,
                                           lookahead=self.lookahead, **common))
        return results

    def describe(self) -> dict:
        return {"name": self.name, "model": self.loaded.name, "device": str(self.loaded.device),
                "dtype": str(self.loaded.dtype).replace("torch.", ""), "decode": self.decode, "state": "ready"}
