"""The ``local`` backend: the model in this process through transformers (model/generation.py).

Greedy decoding with per-document KV reuse, prompt-lookup drafts and token healing; the only
backend that can run the memory modes, because the engine patches Titans memory into this model's
layers. Output is token-identical to calling ``greedy_generate`` directly.
"""

from __future__ import annotations

from titans_lsp.backends.base import Backend, GenerateCall
from titans_lsp.model.generation import GenerationResult, greedy_generate
from titans_lsp.model.loading import LoadedModel, load_model


class LocalBackend(Backend):
    name = "local"
    supports_memory = True
    exclusive = True  # completions and priming share the model: the engine's lock serializes them

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.lookahead = 8  # prompt-lookup guesses per decoding step (0: plain greedy); same output either way

    @classmethod
    def create(cls, config, *, model: str, device: str, dtype: str, cache_dir: str | None) -> "LocalBackend":
        return cls(load_model(model, device=device, dtype=dtype, cache_dir=cache_dir))

    def generate(self, call: GenerateCall) -> list[GenerationResult]:
        common = dict(cancel=call.cancel, cache=call.cache, cache_key=call.cache_key, stop_ids=call.stop_ids)
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
                "dtype": str(self.loaded.dtype).replace("torch.", ""), "state": "ready"}
