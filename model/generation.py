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
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from titans_lsp.model.static_decode import StaticDecoder


MAX_MISSED_DRAFTS = 2  # prompt lookup stops guessing for the request after this many wrong drafts in a row


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
    drafted: int = 0  # prompt-lookup guesses verified
    accepted: int = 0  # guesses that matched greedy decoding (tokens gained without a forward pass)


@dataclass
class PrefixCache:
    """One document's KV cache and the token ids it holds, reused for the longest shared
    prefix with the next prompt. ``key`` ties it to what the cached values depend on
    (mode, memory state version): a different key means no reuse."""

    key: str = ""
    ids: list[int] = field(default_factory=list)
    past: object | None = None  # transformers Cache
    # Recurrent (DeltaNet) layers cannot be cut back, so their states are copied at a few prompt
    # positions (the start of the cursor's line, the prompt's end): (position, states) pairs.
    snapshots: list[tuple[int, list]] = field(default_factory=list)

    def clear(self) -> None:
        self.key, self.ids, self.past, self.snapshots = "", [], None, []


def model_supports_cropping(model) -> bool:
    """Caches of pure-attention models can be cut back to any prefix; recurrent (DeltaNet)
    layers cannot, so for them we reuse only when the new prompt extends the cached one."""
    layer_types = getattr(model.config, "layer_types", None) or []
    return not any("linear" in t for t in layer_types)


def _linear_layers(past) -> list:
    """The cache layers that hold recurrent (conv + DeltaNet) state instead of KV."""
    return [layer for layer in getattr(past, "layers", []) if hasattr(layer, "recurrent_states")]


def snapshot_recurrent(past) -> list:
    """Copies of every recurrent layer's conv/recurrent states (small: no sequence dimension)."""
    states = []
    for layer in _linear_layers(past):
        states.append(({i: (t.clone() if t is not None else None) for i, t in layer.conv_states.items()},
                       {i: (t.clone() if t is not None else None) for i, t in layer.recurrent_states.items()},
                       dict(layer.has_previous_state)))
    return states


def restore_to(past, position: int, states: list) -> None:
    """Put ``past`` back to ``position`` tokens: attention layers are cropped, recurrent layers
    get the states snapshotted at that position."""
    for layer, (conv, recurrent, has_previous) in zip(_linear_layers(past), states):
        for i, t in conv.items():
            if t is not None:
                layer.conv_states[i].copy_(t)
        for i, t in recurrent.items():
            if t is not None:
                layer.recurrent_states[i].copy_(t)
        layer.has_previous_state.update(has_previous)
        # transformers 5.25 added a token count to linear-attention layers (cumulative_length_linear), and
        # Cache.get_seq_length() reads layer 0's: on Qwen3.5 (layer 0 is DeltaNet) the model takes the next
        # token's position and attention mask from it. It goes back with the states, in place (its address is
        # static for CUDA graphs). 5.24 has no such count: the attention layers' lengths, cropped below, are it.
        count = getattr(layer, "cumulative_length_linear", None)
        if count is not None:
            count.fill_(position)
    for layer in getattr(past, "layers", []):
        if not hasattr(layer, "recurrent_states") and layer.get_seq_length() > position:
            layer.crop(position - layer.get_seq_length())  # a negative count: tokens to remove


def _line_start_position(tokenizer, ids: Sequence[int], lowest: int) -> int | None:
    """Index just after the last token of ``ids`` that contains a newline (above ``lowest``):
    the start of the cursor's line, a position the next keystrokes on this line share."""
    for i in range(len(ids) - 1, lowest, -1):
        piece = tokenizer.decode([ids[i - 1]])
        if "\n" in piece:
            # A token like "\n    " also holds the new line's indentation, which typing can change.
            position = i if piece.endswith("\n") else i - 1
            return position if position > lowest else None
    return None


def lookup_draft(ids: Sequence[int], max_tokens: int, ngram_sizes: Sequence[int] = (3, 2)) -> list[int]:
    """Prompt-lookup guess: the tokens that followed the latest earlier occurrence of the last
    n tokens of ``ids`` (longest n first); [] when there is none. Code repeats itself a lot."""
    if max_tokens <= 0:
        return []
    length = len(ids)
    for n in ngram_sizes:
        if length <= n:
            continue
        tail = list(ids[-n:])
        for start in range(length - n - 1, -1, -1):
            if ids[start] == tail[0] and list(ids[start:start + n]) == tail:
                return list(ids[start + n:start + n + max_tokens])
    return []


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids ``a`` and ``b`` share."""
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
    lookahead: int = 8,
    prefill_chunk: int = 512,
    prefill_only: bool = False,
    stop_ids: Sequence[int] = (),
    decoder: "StaticDecoder | None" = None,
) -> GenerationResult:
    """Greedy continuation of ``prompt_ids``.

    ``heal_text``: text removed from the prompt by :func:`heal_prompt`; the first tokens are
    constrained to reproduce it and it is stripped from the returned text.
    ``stop(text)``: called after each token with the continuation so far; True ends decoding.
    ``cancel``: checked before every forward pass; raises :class:`Cancelled`.
    ``cache``: the document's :class:`PrefixCache`, reused and updated in place.
    ``first_token``: force the first generated token (to branch alternatives).
    ``alternatives``: also return this many runner-up first tokens (for several items).
    ``lookahead``: most prompt-lookup guesses verified per forward pass (0: plain greedy). The
    output is the same either way: a guess is kept only where it equals the greedy token. Drafting
    stops for the request after ``MAX_MISSED_DRAFTS`` wrong drafts in a row.
    Used only where the cache can be cut back (not DeltaNet layers).
    ``prefill_chunk``: prompt tokens per prefill forward; cancellation is checked between chunks
    (what a cancelled request finished stays cached). Measured on the default model, 2 CPU
    threads, 1,500-token prompts: 512 costs 3 % over one forward, 256 costs 11 %.
    ``prefill_only``: fill ``cache`` with the prompt and return without decoding (pre-warming a
    document before its first request; the result has no tokens).
    ``stop_ids``: more tokens that end generation like EOS (a FIM format's end-of-middle markers).
    ``decoder``: a :class:`~titans_lsp.model.static_decode.StaticDecoder` of this model: the prompt goes
    into its static cache and each token is one (graph-captured, on a GPU) step; same tokens as without
    it. Prompt lookup is off on that path (a step takes exactly one token). A prompt that would not fit
    its window (prompt + ``max_new_tokens``) runs the dynamic-cache loop instead.
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    if not prompt_ids:
        raise ValueError("empty prompt")
    eos_ids = set(_as_list(getattr(model.generation_config, "eos_token_id", None)) + _as_list(tokenizer.eos_token_id)) | set(stop_ids)
    vocab_size = model.get_output_embeddings().weight.shape[0]
    token_texts = TokenTexts.of(tokenizer) if heal_text else []

    # Reuse the longest shared prefix of the cached tokens (at least one new token must be fed).
    croppable = model_supports_cropping(model)
    static = decoder is not None and decoder.fits(len(prompt_ids) + max(max_new_tokens, 1))
    reused, past = 0, None
    if cache is not None and cache.past is not None and cache.key == cache_key and _reusable(cache, decoder, static):
        shared = min(common_prefix_length(cache.ids, prompt_ids), len(prompt_ids) - 1)
        if croppable:
            if shared > 0:
                past, reused = cache.past, shared
                if shared < len(cache.ids):
                    past.crop(shared - len(cache.ids))
        elif shared == len(cache.ids):
            past, reused = cache.past, shared  # the new prompt extends everything cached
        else:
            usable = [(pos, states) for pos, states in cache.snapshots if 0 < pos <= shared]
            if usable:
                reused, states = max(usable, key=lambda item: item[0])
                past = cache.past
                restore_to(past, reused, states)
    snapshots = [(pos, st) for pos, st in (cache.snapshots if cache is not None and past is not None else []) if pos <= reused]
    if past is None:
        if static:
            decoder.claim(cache if cache is not None else decoder)
            past = decoder.cache
        else:
            past = DynamicCache(config=model.config)
        reused = 0
    if cache is not None:
        cache.clear()  # whatever happens below, the old entry is consumed

    fed = list(prompt_ids[:reused])  # the token ids ``past`` holds, kept in step with it

    def keep() -> None:
        """Leave what was computed in the document's cache for the next request."""
        if cache is not None:
            cache.key, cache.ids, cache.past, cache.snapshots = cache_key, list(fed), past, snapshots

    def check_cancel() -> None:
        if cancel is not None and cancel.is_set():
            keep()  # the next keystroke's prompt shares most of it
            raise Cancelled()

    def prefill(end: int):
        """Feed prompt_ids[len(fed):end] in chunks, checking for cancellation between chunks so a
        cancelled request stops soon and leaves what it computed for the next keystroke."""
        nonlocal fed
        out = None
        while len(fed) < end:
            check_cancel()
            piece = prompt_ids[len(fed):min(end, len(fed) + prefill_chunk)]
            # Only the last position's logits are needed: the LM head over every prompt token would
            # cost about a fifth of a small model's prefill.
            out = model(input_ids=torch.tensor([piece], device=device), cache=past, use_cache=True,
                        logits_to_keep=1).logits[0, -1]
            fed = fed + list(piece)
        return out

    check_cancel()
    start = time.perf_counter()
    checkpoint = None if croppable or cache is None else _line_start_position(tokenizer, prompt_ids, reused)
    if checkpoint is not None and checkpoint < len(prompt_ids):
        # Prefill up to the cursor's line, keep the recurrent states there, then the rest.
        prefill(checkpoint)
        snapshots.append((checkpoint, snapshot_recurrent(past)))
    logits = prefill(len(prompt_ids))
    if not croppable and cache is not None:
        snapshots.append((len(prompt_ids), snapshot_recurrent(past)))
        snapshots = snapshots[-3:]
    prefill_s = time.perf_counter() - start
    fed = list(prompt_ids)
    if prefill_only:
        keep()
        return GenerationResult(token_ids=[], text="", prefilled=len(prompt_ids) - reused, reused=reused, decoded=0,
                                stop_reason="prefill_only", prefill_s=prefill_s)
    check_cancel()

    generated: list[int] = []
    remaining_heal = heal_text
    text = ""
    stop_reason = "max_tokens"
    decode_start = time.perf_counter()
    decoded = drafted = accepted = 0
    runner_ups: list[int] = []

    def take(token: int) -> bool:
        """Append one chosen token; True when decoding is over (eos, stop, or max tokens)."""
        nonlocal remaining_heal, text, stop_reason
        if token in eos_ids:
            stop_reason = "eos"
            return True
        generated.append(token)
        if remaining_heal:
            piece = token_texts[token] if token_texts else tokenizer.decode([token])
            remaining_heal = remaining_heal[len(piece):] if remaining_heal.startswith(piece) else ""
        full = tokenizer.decode(generated)
        text = full[len(heal_text):] if full.startswith(heal_text) else full
        if not remaining_heal and stop is not None and stop(text):
            stop_reason = "stop"
            return True
        return len(generated) >= max_new_tokens

    use_lookup = lookahead > 0 and croppable and not static
    missed_drafts = 0  # drafts in a row whose first guess was wrong
    done = False
    step = 0
    while not done:
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
        step += 1
        if take(token):
            break
        check_cancel()
        # Prompt lookup: guess the next tokens by copying what followed the latest earlier
        # occurrence of the last few tokens, and verify the guesses in the same forward pass.
        draft = []
        if use_lookup and not remaining_heal and missed_drafts < MAX_MISSED_DRAFTS:
            draft = lookup_draft(fed + [token], min(lookahead, max_new_tokens - len(generated)))
        if static:
            out = decoder.step(token)[None]
        else:
            out = model(input_ids=torch.tensor([[token] + draft], device=device), cache=past, use_cache=True).logits[0]
        fed.append(token)
        decoded += 1
        drafted += len(draft)
        logits = out[0]
        if draft:
            # A forward over several tokens costs about twice a one-token step on a CPU: after
            # MAX_MISSED_DRAFTS drafts whose first guess was wrong, this text is not being copied.
            first_wrong = int(torch.argmax(out[0].float())) != draft[0]
            missed_drafts = missed_drafts + 1 if first_wrong else 0
        for j, guess in enumerate(draft):
            if int(torch.argmax(out[j].float())) != guess:
                break
            # The guess is what greedy decoding would have chosen: take it without another pass.
            accepted += 1
            step += 1
            done = take(guess)
            if done:
                break
            fed.append(guess)
            logits = out[j + 1]
        extra = past.get_seq_length() - len(fed) if draft else 0
        if extra > 0:
            past.crop(-extra)  # drop the rejected (or unneeded) guesses

    keep()
    return GenerationResult(token_ids=generated, text=text, prefilled=len(prompt_ids) - reused, reused=reused,
                            decoded=decoded, stop_reason=stop_reason, prefill_s=prefill_s,
                            decode_s=time.perf_counter() - decode_start, alternatives=runner_ups,
                            drafted=drafted, accepted=accepted)


def _reusable(cache: PrefixCache, decoder, static: bool) -> bool:
    """Whether ``cache.past`` can serve this call: on the static path only the decoder's own buffers while
    they still hold this document; on the dynamic path any cache but a decoder's buffers."""
    from transformers import StaticCache

    if static:
        return cache.past is decoder.cache and decoder.holds(cache)
    return not isinstance(cache.past, StaticCache)


def _as_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]
