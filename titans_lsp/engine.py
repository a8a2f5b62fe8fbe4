"""The completion engine: one code path from (prefix, mode, workspace) to completion text.

The server, ``titans-lsp eval``, the benchmarks and training all call :class:`CompletionEngine`,
so the benchmark measures exactly what an editor gets. The engine knows nothing about LSP.

The engine owns settings, retrieval, prompt layout (fill-in-the-middle included: titans_lsp.fim),
token healing, stopping and post-processing; a backend (titans_lsp.backends: ``local`` in-process,
``llamacpp``, ``openai``) only turns the laid-out prompt ids into tokens.

What each mode reads (the cross-file block, the memory and its gates) is defined once, in
:mod:`titans_lsp.modes`; the editor settings in :mod:`titans_lsp.settings`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from titans_lsp import fim as fimlib
from titans_lsp.backends import Backend, BackendConfig, BackendError, GenerateCall, ModeUnsupported, create_backend
from titans_lsp.backends.local import LocalBackend
from titans_lsp.model.generation import Cancelled, PrefixCache, heal_prompt
from titans_lsp.layout import DocumentLayout, block_still_fits, lines_before_cursor, stable_prefix_ids
from titans_lsp.model.loading import LoadedModel
from titans_lsp.postprocess import clean_completion, make_stop
from titans_lsp.modes import Mode
from titans_lsp.retrieval.languages import Language, detect
from titans_lsp.retrieval.prompt import SnippetLike, build_prompt_ids, crossfile_block, leading_special_ids
from titans_lsp.settings import CompletionSettings

log = logging.getLogger(__name__)

RETRIEVE_K = 5  # ranked snippets per request (CrossCodeEval's top 5); the block's budget cuts the rest


__all__ = ["BackendError", "Cancelled", "Completion", "CompletionEngine", "CompletionRequest", "CompletionSettings",
           "Mode", "ModeUnsupported", "Workspace"]


@dataclass
class Workspace:
    """Per workspace-folder state the engine reads: its snippet index and its memory.

    The memory is double-buffered so priming does not throw away the completions' KV caches:
    completions read ``memory``, a published snapshot that priming never writes, and its
    ``memory_version`` is part of the cache key; priming writes ``pending``, a working copy, which
    :meth:`publish` turns into the new snapshot (one version bump per publish, not per write).
    Callers hold the engine's ``model_lock`` around these methods."""

    root: Path | None = None
    index: object | None = None  # titans_lsp.retrieval.index.WorkspaceIndex
    memory: object | None = None  # titans_lsp.model.memory.MemoryState: the published snapshot completions read
    memory_version: int = 0  # version of ``memory``; bumped on every publish, so KV from older memory is not reused
    pending: object | None = None  # priming's working copy (None: nothing unpublished)
    pending_since: float = 0.0  # time.monotonic() when ``pending`` was forked from ``memory``
    caches: dict[str, PrefixCache] = field(default_factory=dict)  # per document
    layouts: dict[str, DocumentLayout] = field(default_factory=dict)  # per document: stable prompt layout

    @property
    def latest_memory(self):
        """The newest memory: the working copy when priming has unpublished writes, else the snapshot."""
        return self.pending if self.pending is not None else self.memory

    def working_memory(self):
        """The copy priming writes into, forked from the published snapshot on first use."""
        if self.pending is None:
            self.pending = self.memory.copy()
            self.pending_since = time.monotonic()
        return self.pending

    def publish(self) -> bool:
        """Make the working copy the snapshot completions read; returns whether there was one."""
        if self.pending is None:
            return False
        self.memory, self.pending = self.pending, None
        self.memory_version += 1
        return True

    def close_document(self, doc_key: str) -> None:
        """Forget what was kept for a document (its KV cache, its prompt layout): the editor closed it."""
        self.caches.pop(doc_key, None)
        self.layouts.pop(doc_key, None)

    def set_memory(self, state) -> None:
        """Replace the memory outright (loaded from disk, or fresh); unpublished writes are dropped."""
        self.memory, self.pending = state, None
        self.memory_version += 1


@dataclass
class CompletionRequest:
    prefix: str  # file text before the cursor
    suffix: str = ""  # file text after the cursor
    path: str | None = None  # file path relative to the workspace root (for retrieval and its language)
    language_id: str | None = None  # the editor's LSP languageId; else the language comes from the path
    settings: CompletionSettings = field(default_factory=CompletionSettings)
    snippets: Sequence[SnippetLike] | None = None  # given cross-file chunks (eval); None: retrieve
    num_items: int = 1  # 1 for automatic triggers, up to 3 when invoked
    early_stop: bool = True  # stop at the end of the line/block; False: all max_new_tokens (eval)
    heal: bool = True  # token healing; False only to measure the naive pipeline (eval --naive)
    cancel: threading.Event | None = None
    doc_key: str | None = None  # document identity for KV-cache reuse across keystrokes
    automatic: bool = False  # an Automatic trigger (while typing): answer early, at the end of the line
    packing: str = "pack"  # retrieval/prompt.py crossfile_block: "pack", or "reference" (CrossCodeEval's rows)

    @property
    def language(self) -> Language:
        """The file's language (retrieval/languages.py): comment syntax and completion cut."""
        return detect(self.path, self.language_id)


@dataclass
class Completion:
    items: list[str]  # cleaned texts to insert at the cursor, best first (may contain "")
    raw: str  # the greedy continuation as generated (after token healing)
    context: str  # the cross-file block the model saw ("" without one)
    mode: Mode
    prompt_tokens: int
    prefilled: int
    reused: int
    decoded: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    prompt_ids: list[int] = field(default_factory=list)  # the prompt as laid out (before token healing)
    accepted: int = 0  # prompt-lookup guesses accepted (tokens gained without a forward pass)
    fim: str | None = None  # the fill-in-the-middle family the prompt was laid out in (None: prefix only)
    healed: bool = False  # token healing constrained the first tokens
    backend: str = ""  # the backend that produced it (``auto``: llamacpp, or local while llama-server is down)

    @property
    def text(self) -> str:
        return self.items[0] if self.items else ""


class CompletionEngine:
    """Owns one backend: the in-process model (and its memory patch, installed on first use) for
    ``local``, or a model server reached over HTTP."""

    def __init__(self, loaded: LoadedModel | None = None, memory_config: object | None = None,
                 memory_checkpoint: str | Path | None = None, publish_every_s: float = 30.0,
                 backend: Backend | None = None, residency: object | None = None):
        if backend is None:
            if loaded is None:
                raise ValueError("CompletionEngine needs a loaded model or a backend")
            backend = LocalBackend(loaded)
        self.backend = backend
        self.loaded: LoadedModel | None = getattr(backend, "loaded", None)  # the in-process model (local only)
        self.model = getattr(backend, "model", None)
        self.tokenizer = backend.tokenizer
        self.fim_tokens = fimlib.detect_fim(self.tokenizer)  # the model's FIM format, if it has one
        self.memory_config = memory_config
        self.memory_checkpoint = memory_checkpoint
        self.patch = None  # titans_lsp.model.patching.TitansPatch once installed
        self._memory_error: str | None = None  # why the memory cannot be installed (every memory request says it)
        self.model_lock = threading.Lock()  # one forward at a time: completions and priming share the model
        self._waiting = 0  # completions waiting for the model; priming yields while > 0
        self._waiting_lock = threading.Lock()
        # Long priming runs publish their working copy of the memory at most this often (seconds); each
        # publish costs every document one full re-prefill in the memory modes.
        self.publish_every_s = publish_every_s
        # titans_lsp.residency.MemoryResidency: which workspaces' memory states stay on the device (None: all)
        self.residency = residency

    @classmethod
    def load(cls, model: str = "default", device: str = "auto", dtype: str = "auto",
             cache_dir: str | None = None, backend: BackendConfig | None = None, **kwargs) -> "CompletionEngine":
        """The engine on ``backend`` (default: ``local``, the model loaded in this process)."""
        made = create_backend(backend or BackendConfig(), model=model, device=device, dtype=dtype, cache_dir=cache_dir)
        return cls(backend=made, **kwargs)

    @property
    def lookahead(self) -> int:
        """Prompt-lookup guesses per decoding step of the local backend (0: plain greedy); same output either way."""
        return getattr(self.backend, "lookahead", 0)

    @lookahead.setter
    def lookahead(self, value: int) -> None:
        if hasattr(self.backend, "lookahead"):
            self.backend.lookahead = value

    @property
    def model_name(self) -> str:
        return self.loaded.name if self.loaded is not None else str(self.backend.describe().get("model", self.backend.name))

    def close(self) -> None:
        """Stop what the backend runs (a supervised llama-server)."""
        self.backend.close()

    # ---- memory ----------------------------------------------------------------------
    def ensure_memory(self, mode: Mode | str = "memory"):
        """Install the Titans memory into the model (once); returns the patch. Raises
        :class:`ModeUnsupported` on a backend without an in-process model, and BackendError (every time)
        when the memory cannot be installed: its config or checkpoint does not fit the model."""
        if not self.backend.supports_memory:
            raise ModeUnsupported(str(mode), self.backend.name)
        if self._memory_error is not None:
            raise BackendError(self._memory_error)
        if self.patch is None:
            from titans_lsp.model.memory import MemoryConfig
            from titans_lsp.model.patching import install_memory, load_memory_config

            patch = None
            try:
                config = self.memory_config
                if config is None and self.memory_checkpoint is not None:
                    # a checkpoint's config.json wraps the MemoryConfig: {"memory_config": {...}, "model_type": ...}
                    config = load_memory_config(self.memory_checkpoint)
                patch = install_memory(self.model, config or MemoryConfig())
                if self.memory_checkpoint is not None:
                    patch.load_parameters(self.memory_checkpoint)
            except Exception as exc:  # noqa: BLE001 - whatever the cause, the memory modes cannot run here
                if patch is not None:
                    patch.uninstall()  # never memory without its trained parameters
                self._memory_error = (f"cannot install the Titans memory in {self.model_name} ({exc}): use mode none "
                                      "or concat, or a --memory-config / --memory-checkpoint made for this model")
                raise BackendError(self._memory_error) from None
            self.patch = patch
        return self.patch

    def new_memory_state(self):
        return self.ensure_memory().new_state()

    def prime(self, workspace: Workspace, texts: Iterable[str] | Iterable[list[int]], chunk_tokens: int = 512,
              should_yield: Callable[[], bool] | None = None, publish: bool = True):
        """Write ``texts`` into the workspace's working copy of the memory. Completions keep reading
        the published snapshot (and reusing their KV caches) until it is published: at the end of
        this call with ``publish=True`` (one-shot priming, the eval), otherwise once the working copy
        is ``publish_every_s`` old; a priming batch calls :meth:`publish_memory` when it is done.
        Yields the model to waiting completions: returns early (stats.stopped_early) when one is
        waiting or ``should_yield()`` says so."""
        patch = self.ensure_memory()

        def yield_now() -> bool:
            return self._waiting > 0 or bool(should_yield and should_yield())

        with self.model_lock:
            if workspace.memory is None:
                workspace.memory = patch.new_state()
            self._resident(workspace)
            working = workspace.working_memory()
            stats = patch.prime(working, texts, self.tokenizer, chunk_tokens=chunk_tokens, should_yield=yield_now)
            if publish or time.monotonic() - workspace.pending_since >= self.publish_every_s:
                workspace.publish()
        return stats

    def publish_memory(self, workspace: Workspace) -> bool:
        """Publish priming's unpublished writes (the end of a priming batch); returns whether there were any."""
        with self.model_lock:
            return workspace.publish()

    def reset_memory(self, workspace: Workspace) -> None:
        """Back to the initial memory, unpublished writes dropped. The caller holds ``model_lock``."""
        if workspace.memory is not None:
            self._resident(workspace)
            workspace.memory.reset()
            workspace.pending = None
            workspace.memory_version += 1

    # ---- completion ----------------------------------------------------------------------
    def fim_for(self, request: CompletionRequest) -> fimlib.FimTokens | None:
        """The FIM format this request is laid out in (None: prefix only). Raises BackendError when
        ``fim`` is ``on`` and the model has no FIM tokens (the message names the fix)."""
        try:
            return self.fim_tokens if fimlib.use_fim(request.settings.fim, self.fim_tokens, self.model_name) else None
        except ValueError as exc:
            raise BackendError(str(exc)) from None

    def context_for(self, request: CompletionRequest, workspace: Workspace | None,
                    fim: fimlib.FimTokens | None = None) -> str:
        """The cross-file block for context modes ("" otherwise). With a document key, the block is
        kept while the user types in the same region (titans_lsp.layout.block_still_fits)."""
        settings = request.settings
        if not settings.mode.uses_context or settings.context_budget <= 0:
            return ""
        layout = None
        if request.doc_key is not None and request.snippets is None and workspace is not None:
            layout = workspace.layouts.setdefault(request.doc_key, DocumentLayout())
            key = (settings.mode, settings.retriever, settings.context_budget, request.path, id(workspace.index),
                   fim.family if fim is not None else None)
            if block_still_fits(layout, key, request.prefix):
                return layout.block
        block = self._retrieve_block(request, workspace, fim)
        if layout is not None:
            layout.block, layout.block_key, layout.block_anchor = block, key, lines_before_cursor(request.prefix)
        return block

    def _retrieve_block(self, request: CompletionRequest, workspace: Workspace | None,
                        fim: fimlib.FimTokens | None = None) -> str:
        settings = request.settings
        snippets = request.snippets
        if snippets is None:
            index = workspace.index if workspace is not None else None
            if index is None:
                return ""
            snippets = index.retrieve(request.prefix, request.path, retriever=list(settings.retriever), k=RETRIEVE_K)
        if fim is not None and fim.repo_level:
            repo = workspace.root.name if workspace is not None and workspace.root is not None else ""
            return fimlib.repo_block(fim, snippets, self.tokenizer, settings.context_budget, repo)
        return crossfile_block(snippets, self.tokenizer, settings.context_budget, comment=request.language.comment,
                               packing=request.packing)

    def complete(self, request: CompletionRequest, workspace: Workspace | None = None) -> Completion:
        """Complete at the cursor. Raises :class:`Cancelled` if ``request.cancel`` is set mid-way."""
        return self._run(request, workspace or Workspace(), prefill_only=False)

    def prepare(self, request: CompletionRequest, workspace: Workspace) -> Completion:
        """Pre-warm: lay out the prompt ``request`` would get (cross-file block included) and prefill
        it into the document's cache, without decoding. Called when the cursor comes to rest, so the
        first keystroke's request there prefills only the typed tail. Needs ``request.doc_key``.
        Raises :class:`Cancelled` when ``request.cancel`` is set; the chunks done so far stay cached."""
        if request.doc_key is None:
            raise ValueError("prepare needs a document key (the cache to fill)")
        return self._run(request, workspace, prefill_only=True)

    def _run(self, request: CompletionRequest, workspace: Workspace, prefill_only: bool) -> Completion:
        """The one path behind complete() and prepare(): layout, the backend call, post-processing."""
        start = time.perf_counter()
        settings = request.settings
        backend = self.backend.backend_for(settings.mode)  # itself, except for `auto`
        if settings.mode.uses_memory and not backend.supports_memory:
            raise ModeUnsupported(settings.mode.value, backend.name)
        fim = self.fim_for(request)
        block = self.context_for(request, workspace, fim)
        t_context = time.perf_counter() - start
        heal = request.heal and backend.heals
        laid_out, prompt_ids, heal_text = self._layout(request, workspace, block, fim, heal)
        multiline = "never" if request.automatic and settings.multiline == "auto" else settings.multiline
        language = request.language
        stop = make_stop(request.prefix, multiline, language) if request.early_stop else None
        call = GenerateCall(prompt_ids=prompt_ids, max_new_tokens=0 if prefill_only else settings.max_new_tokens,
                            heal_text=heal_text, stop=stop, stop_ids=fim.stop_ids if fim is not None else (),
                            cancel=request.cancel, alternatives=max(0, min(request.num_items, 3) - 1),
                            doc_key=request.doc_key, prefill_only=prefill_only)

        if backend.exclusive:  # the in-process model: shared with priming, one forward at a time
            if request.doc_key is not None:
                call.cache = workspace.caches.setdefault(request.doc_key, PrefixCache())
            self._acquire_model(request.cancel)
            try:
                waited = time.perf_counter() - start - t_context
                # Under the model lock: the memory snapshot and its version are read together (publishing
                # also happens under the lock), so the cache key always names the memory the forward reads.
                call.cache_key = self._cache_key(settings.mode, workspace)
                with self._memory_context(settings.mode, workspace):
                    results = backend.generate(call)
            finally:
                self.model_lock.release()
        else:
            waited = 0.0
            results = backend.generate(call)

        items: list[str] = []  # a pre-warm has none
        for result in results if not prefill_only else ():
            cleaned = clean_completion(result.text, request.prefix, request.suffix, multiline, language)
            if cleaned not in items or not items:
                items.append(cleaned)
        first = results[0]
        return Completion(
            items=items, raw=first.text, context=block, mode=settings.mode, prompt_tokens=len(prompt_ids),
            prefilled=sum(r.prefilled for r in results), reused=first.reused,
            decoded=sum(r.decoded for r in results), seconds=time.perf_counter() - start,
            timings={"context_s": t_context, "wait_s": waited, "prefill_s": first.prefill_s, "decode_s": first.decode_s},
            prompt_ids=list(laid_out), accepted=sum(r.accepted for r in results),
            fim=fim.family if fim is not None else None, healed=bool(heal_text), backend=backend.name)

    def _acquire_model(self, cancel: threading.Event | None) -> None:
        """Take the model lock for a completion: background priming sees the waiting count and hands
        the model over after its current chunk. A request cancelled while it waits gives up at once
        (raises Cancelled), so the requests queued behind it do not wait for that chunk too."""
        with self._waiting_lock:
            self._waiting += 1
        try:
            while not self.model_lock.acquire(timeout=0.02):
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _layout(self, request: CompletionRequest, workspace: Workspace, block: str, fim: fimlib.FimTokens | None,
                heal: bool) -> tuple[list[int], list[int], str]:
        """(the prompt as laid out, the prompt sent after token healing, the healed text)."""
        if fim is None:
            laid_out = self._prompt_ids(request, workspace, block)
            prompt_ids, heal_text = heal_prompt(self.tokenizer, laid_out) if heal else (laid_out, "")
            return laid_out, prompt_ids, heal_text
        return self._fim_layout(request, workspace, block, fim, heal)

    def _prompt_ids(self, request: CompletionRequest, workspace: Workspace, block: str) -> list[int]:
        """Block + prefix ids within the window. With a document key the prefix is cut at a line
        start that stays put across keystrokes (titans_lsp.layout); without one (eval) it is
        CrossCodeEval's plain left-truncation."""
        settings = request.settings
        if request.doc_key is None:
            return build_prompt_ids(self.tokenizer, block, request.prefix, settings.max_seq, settings.max_new_tokens)
        layout = workspace.layouts.setdefault(request.doc_key, DocumentLayout())
        lead = leading_special_ids(self.tokenizer)  # BOS for models that use one, as build_prompt_ids
        block_ids = self.tokenizer(block, add_special_tokens=False).input_ids if block else []
        room = settings.max_seq - settings.max_new_tokens - len(lead) - len(block_ids)
        return lead + block_ids + stable_prefix_ids(self.tokenizer, request.prefix, room, layout)

    def _fim_layout(self, request: CompletionRequest, workspace: Workspace, block: str, fim: fimlib.FimTokens,
                    heal: bool) -> tuple[list[int], list[int], str]:
        """The fill-in-the-middle prompt (titans_lsp.fim): the suffix gets at most a quarter of the
        room, the prefix the rest (a stable cut with a document key, a left-truncation without).
        Healing takes the prefix's last token: the middle must start with its text."""
        settings = request.settings
        tok = self.tokenizer
        lead = leading_special_ids(tok)
        block_ids = tok(block, add_special_tokens=False).input_ids if block else []
        header_ids = fimlib.file_header_ids(fim, tok, request.path) if block and fim.repo_level else []
        room = settings.max_seq - settings.max_new_tokens - len(lead) - len(block_ids) - len(header_ids) - 3
        if room <= 0:  # a block that leaves no room is dropped, as build_prompt_ids does
            block_ids, header_ids = [], []
            room = settings.max_seq - settings.max_new_tokens - len(lead) - 3
        suffix_room = room // fimlib.SUFFIX_SHARE
        prefix_room = max(1, room - suffix_room)
        if request.doc_key is not None:
            layout = workspace.layouts.setdefault(request.doc_key, DocumentLayout())
            prefix_ids = stable_prefix_ids(tok, request.prefix, prefix_room, layout)
        else:
            prefix_ids = tok(request.prefix, add_special_tokens=False).input_ids if request.prefix else []
            prefix_ids = prefix_ids[-prefix_room:]
        suffix_ids = fimlib.suffix_ids(tok, request.suffix, suffix_room)
        laid_out = fimlib.layout_ids(fim, lead, block_ids, header_ids, prefix_ids, suffix_ids)
        heal_text = ""
        if heal and len(prefix_ids) > 1:
            prefix_ids, heal_text = heal_prompt(tok, prefix_ids)
        prompt_ids = fimlib.layout_ids(fim, lead, block_ids, header_ids, prefix_ids, suffix_ids)
        return laid_out, prompt_ids, heal_text

    def _cache_key(self, mode: Mode, workspace: Workspace) -> str:
        if mode.uses_memory:
            return f"{mode}:{workspace.memory_version}"
        return "plain"  # outside an activate() context the patched model equals the base model

    def _memory_context(self, mode: Mode, workspace: Workspace):
        if not mode.uses_memory:
            return contextlib.nullcontext()
        patch = self.ensure_memory(mode)
        if workspace.memory is None:
            workspace.memory = patch.new_state()
        self._resident(workspace)
        return patch.activate(workspace.memory, gates=mode.gates)

    def _resident(self, workspace: Workspace) -> None:
        """The workspace's memory on the model's device (spilling least recently used ones when budgeted)."""
        if self.residency is not None:
            self.residency.use(workspace)

