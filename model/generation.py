"""Greedy decoding for completions: cancellable between steps, KV-cache reuse across
keystrokes, token healing, and early stop at the end of the line.

Why a loop of our own instead of ``model.generate``: the server must stop decoding within
one step when a request is cancelled, keep each document's cache between requests, and
constrain the first tokens so a prompt that ends mid-word or after a space does not derail
the model (token healing). The loop is plain: prefill the new tail of the prompt, then one
token per forward pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch


class Cancelled(Exception):
    """Raised between decoding steps when the request's cancel event is set."""


@dataclass
class GenerationResult:
    token_ids: list[int]
    text: str  # decoded continuation, with the healed prefix already removed
    prefilled: int  # prompt tokens run through the model in this call
    reused: int  # prompt tokens whose KV came from the document's cache
    decoded: int  # forward passes in the decoding loop
    stop_reason: str  # "eos" | "stop" | "max_tokens"
    prefill_s: float = 0.0
    decode_s: float = 0.0
    alternatives: list[int] = field(default_factory=list)  # runner-up first tokens, best first


@dataclass
class PrefixCache:
    """One document's KV cache and the token ids it holds, reused for the longest shared
    prefix with the next prompt. ``key`` ties it to what the cached values depend on
    (mode, memory state version): a different key means no reuse."""

    key: str = ""
    ids: list[int] = field(default_factory=list)
    past: object | None = None  # transformers Cache

    def clear(self) -> None:
        self.key, self.ids, self.past = "", [], None


def model_supports_cropping(model) -> bool:
    """Caches of pure-attention models can be cut back to any prefix; recurrent (DeltaNet)
    layers cannot, so for them we reuse only when the new prompt extends the cached one."""
    layer_types = getattr(model.config, "layer_types", None) or []
    return not any("linear" in t for t in layer_types)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class TokenTexts:
    """Decoded text of every vocabulary entry, computed once per tokenizer (for healing)."""

    _by_tokenizer: dict[int, list[str]] = {}
    _lock = threading.Lock()

    @classmethod
    def of(cls, tokenizer) -> list[str]:
        key = id(tokenizer)
        with cls._lock:
            if key not in cls._by_tokenizer:
                cls._by_tokenizer[key] = [tokenizer.decode([i]) for i in range(len(tokenizer))]
            return cls._by_tokenizer[key]


def heal_prompt(tokenizer, prompt_ids: list[int], max_back: int = 1) -> tuple[list[int], str]:
    """Token healing: drop the prompt's last token(s) and return the text they covered.

    A prompt that ends in ``"return "`` tokenizes to ``[..., " return", " "]``: a lone space
    token the model almost never saw before a word, so it derails. Dropping it and then
    allowing only tokens that start with (or are a prefix of) the dropped text lets the model
    choose the natural token (``" json"``)."""
    if len(prompt_ids) <= 1 or max_back <= 0:
        return list(prompt_ids), ""
    back = min(max_back, len(prompt_ids) - 1)
    healed = tokenizer.decode(prompt_ids[-back:])
    if not healed or healed.endswith("\n"):  # a finished line break is a natural boundary
        return list(prompt_ids), ""
    return list(prompt_ids[:-back]), healed


def _healing_mask(token_texts: list[str], remaining: str, vocab_size: int, device) -> torch.Tensor:
    """Boolean mask of tokens compatible with the healed text still to be produced."""
    allowed = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    ids = [i for i, s in enumerate(token_texts[:vocab_size]) if s and (s.startswith(remaining) or remaining.startswith(s))]
    if ids:
        allowed[torch.tensor(ids, device=device)] = True
    return allowed


@torch.no_grad()
def greedy_generate(
    model,
    tokenizer,
    prompt_ids: list[int],
    max_new_tokens: int,
    *,
    heal_text: str = "",
    stop: Callable[[str], bool] | None = None,
    cancel: threading.Event | None = None,
    cache: PrefixCache | None = None,
    cache_key: str = "",
    first_token: int | None = None,
    alternatives: int = 0,
) -> GenerationResult:
    """Greedy continuation of ``prompt_ids``.

    ``heal_text``: text removed from the prompt by :func:`heal_prompt`; the first tokens are
    constrained to reproduce it and it is stripped from the returned text.
    ``stop(text)``: called after each token with the continuation so far; True ends decoding.
    ``cancel``: checked before every forward pass; raises :class:`Cancelled`.
    ``cache``: the document's :class:`PrefixCache`, reused and updated in place.
    ``first_token``: force the first generated token (to branch alternatives).
    ``alternatives``: also return this many runner-up first tokens (for several items).
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    if not prompt_ids:
        raise ValueError("empty prompt")
    eos_ids = set(_as_list(getattr(model.generation_config, "eos_token_id", None)) + _as_list(tokenizer.eos_token_id))
    vocab_size = model.get_output_embeddings().weight.shape[0]
    token_texts = TokenTexts.of(tokenizer) if heal_text else []

    # Reuse the longest shared prefix of the cached tokens (at least one new token must be fed).
    reused, past = 0, None
    if cache is not None and cache.past is not None and cache.key == cache_key:
        shared = min(_common_prefix(cache.ids, prompt_ids), len(prompt_ids) - 1)
        if shared == len(cache.ids) or (shared > 0 and model_supports_cropping(model)):
            past = cache.past
            if shared < len(cache.ids):
                past.crop(shared - len(cache.ids))
            reused = shared
    if past is None:
        past = DynamicCache(config=model.config)
        reused = 0
    if cache is not None:
        cache.clear()  # whatever happens below, the old entry is consumed

    def check_cancel() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled()

    check_cancel()
    start = time.perf_counter()
    new_ids = torch.tensor([prompt_ids[reused:]], device=device)
    logits = model(input_ids=new_ids, cache=past, use_cache=True).logits[0, -1]
    prefill_s = time.perf_counter() - start
    fed = list(prompt_ids)

    generated: list[int] = []
    remaining_heal = heal_text
    text = ""
    stop_reason = "max_tokens"
    decode_start = time.perf_counter()
    decoded = 0
    runner_ups: list[int] = []
    for step in range(max_new_tokens):
        if step == 0 and first_token is not None:
            token = int(first_token)
        else:
            scores = logits.float()
            if remaining_heal:
                scores = scores.masked_fill(~_healing_mask(token_texts, remaining_heal, vocab_size, scores.device), float("-inf"))
            token = int(torch.argmax(scores))
            if step == 0 and alternatives > 0:
                top = torch.topk(scores, alternatives + 1)
                runner_ups = [int(t) for t, v in zip(top.indices, top.values) if int(t) != token and v > float("-inf")]
                runner_ups = [t for t in runner_ups if t not in eos_ids][:alternatives]
        if token in eos_ids:
            stop_reason = "eos"
            break
        generated.append(token)
        if remaining_heal:
            piece = token_texts[token] if token_texts else tokenizer.decode([token])
            remaining_heal = remaining_heal[len(piece):] if remaining_heal.startswith(piece) else ""
        full = tokenizer.decode(generated)
        text = full[len(heal_text):] if full.startswith(heal_text) else full
        if not remaining_heal and stop is not None and stop(text):
            stop_reason = "stop"
            break
        if step == max_new_tokens - 1:
            break
        check_cancel()
        logits = model(input_ids=torch.tensor([[token]], device=device), cache=past, use_cache=True).logits[0, -1]
        fed.append(token)
        decoded += 1

    if cache is not None:
        cache.key, cache.ids, cache.past = cache_key, fed, past
    return GenerationResult(token_ids=generated, text=text, prefilled=len(prompt_ids) - reused, reused=reused,
                            decoded=decoded, stop_reason=stop_reason, prefill_s=prefill_s,
                            decode_s=time.perf_counter() - decode_start, alternatives=runner_ups)


def _as_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]
