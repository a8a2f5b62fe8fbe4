"""The completion engine: one code path from (prefix, mode, workspace) to completion text.

The server, ``titans-lsp eval``, the benchmarks and training all call :class:`CompletionEngine`,
so the benchmark measures exactly what an editor gets. The engine knows nothing about LSP.

Per mode (see README):
  none      prompt = file prefix
  concat    prompt = cross-file block (retrieved, or given by the caller) + file prefix
  memory    prompt = file prefix, through the memory-patched model, gates open
  ablation  the same, gates shut (the control)
  hybrid    memory + concat
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from titans_lsp import MODES
from titans_lsp.model.generation import Cancelled, GenerationResult, PrefixCache, greedy_generate, heal_prompt
from titans_lsp.model.loading import LoadedModel, load_model
from titans_lsp.postprocess import clean_completion, make_stop
from titans_lsp.retrieval.prompt import SnippetLike, build_prompt_ids, crossfile_block

log = logging.getLogger(__name__)

MEMORY_MODES = ("memory", "ablation", "hybrid")
CONTEXT_MODES = ("concat", "hybrid")
RETRIEVERS = ("bm25", "dense", "hybrid", "imports")
MULTILINE = ("auto", "never", "always")

__all__ = ["Cancelled", "Completion", "CompletionEngine", "CompletionRequest", "CompletionSettings", "Workspace"]


@dataclass(frozen=True)
class CompletionSettings:
    """What a workspace's editor settings (``titansLsp.*``) control."""

    mode: str = "concat"
    retriever: tuple[str, ...] = ("bm25",)
    max_new_tokens: int = 48
    context_budget: int = 512  # tokens for the cross-file block (CrossCodeEval: 512)
    max_seq: int = 2048  # window for block + prefix + generation (CrossCodeEval: 2048)
    multiline: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"invalid mode {self.mode!r}: choose one of {', '.join(MODES)}")
        retrievers = (self.retriever,) if isinstance(self.retriever, str) else tuple(self.retriever)
        bad = [r for r in retrievers if r not in RETRIEVERS]
        if bad or not retrievers:
            raise ValueError(f"invalid retriever {bad or retrievers!r}: choose from {', '.join(RETRIEVERS)}")
        object.__setattr__(self, "retriever", retrievers)
        if not 1 <= int(self.max_new_tokens) <= 512:
            raise ValueError(f"invalid maxNewTokens {self.max_new_tokens!r}: must be 1..512")
        if not 0 <= int(self.context_budget) <= self.max_seq // 2:
            raise ValueError(f"invalid contextBudget {self.context_budget!r}: must be 0..{self.max_seq // 2}")
        if self.multiline not in MULTILINE:
            raise ValueError(f"invalid multiline {self.multiline!r}: choose one of {', '.join(MULTILINE)}")

    @classmethod
    def from_editor(cls, values: dict, base: "CompletionSettings | None" = None) -> "CompletionSettings":
        """Settings from the editor's ``titansLsp`` section (camelCase keys); unknown keys are ignored."""
        base = base or cls()
        mapping = {"mode": "mode", "retriever": "retriever", "maxNewTokens": "max_new_tokens",
                   "contextBudget": "context_budget", "multiline": "multiline"}
        changes = {field_name: values[key] for key, field_name in mapping.items() if values.get(key) is not None}
        return replace(base, **changes)


@dataclass
class Workspace:
    """Per workspace-folder state the engine reads: its snippet index and its memory."""

    root: Path | None = None
    index: object | None = None  # titans_lsp.retrieval.index.WorkspaceIndex
    memory: object | None = None  # titans_lsp.model.memory.MemoryState
    memory_version: int = 0  # bumped after every write, so cached KV from older memory is not reused
    caches: dict[str, PrefixCache] = field(default_factory=dict)  # per document


@dataclass
class CompletionRequest:
    prefix: str  # file text before the cursor
    suffix: str = ""  # file text after the cursor
    path: str | None = None  # file path relative to the workspace root (for retrieval)
    settings: CompletionSettings = field(default_factory=CompletionSettings)
    snippets: Sequence[SnippetLike] | None = None  # given cross-file chunks (eval); None: retrieve
    num_items: int = 1  # 1 for automatic triggers, up to 3 when invoked
    early_stop: bool = True  # stop at the end of the line/block; False: all max_new_tokens (eval)
    cancel: threading.Event | None = None
    doc_key: str | None = None  # document identity for KV-cache reuse across keystrokes


@dataclass
class Completion:
    items: list[str]  # cleaned texts to insert at the cursor, best first (may contain "")
    raw: str  # the greedy continuation as generated (after token healing)
    context: str  # the cross-file block the model saw ("" without one)
    mode: str
    prompt_tokens: int
    prefilled: int
    reused: int
    decoded: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.items[0] if self.items else ""


class CompletionEngine:
    """Owns one loaded model (and its memory patch, installed on first use)."""

    def __init__(self, loaded: LoadedModel, memory_config: object | None = None,
                 memory_checkpoint: str | Path | None = None):
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.memory_config = memory_config
        self.memory_checkpoint = memory_checkpoint
        self.patch = None  # titans_lsp.model.patching.TitansPatch once installed
        self.model_lock = threading.Lock()  # one forward at a time: completions and priming share the model
        self._waiting = 0  # completions waiting for the model; priming yields while > 0
        self._waiting_lock = threading.Lock()

    @classmethod
    def load(cls, model: str = "default", device: str = "auto", dtype: str = "auto",
             cache_dir: str | None = None, **kwargs) -> "CompletionEngine":
        return cls(load_model(model, device=device, dtype=dtype, cache_dir=cache_dir), **kwargs)

    # ---- memory ----------------------------------------------------------------------
    def ensure_memory(self):
        """Install the Titans memory into the model (once); returns the patch."""
        if self.patch is None:
            from titans_lsp.model.memory import MemoryConfig
            from titans_lsp.model.patching import install_memory

            config = self.memory_config
            if config is None and self.memory_checkpoint is not None:
                config = MemoryConfig.from_dict(_read_json(Path(self.memory_checkpoint) / "config.json"))
            self.patch = install_memory(self.model, config or MemoryConfig())
            if self.memory_checkpoint is not None:
                self.patch.load_parameters(self.memory_checkpoint)
        return self.patch

    def new_memory_state(self):
        return self.ensure_memory().new_state()

    def prime(self, workspace: Workspace, texts: Iterable[str] | Iterable[list[int]], chunk_tokens: int = 512,
              should_yield: Callable[[], bool] | None = None):
        """Write ``texts`` into the workspace's memory. Yields the model to waiting completions:
        returns early (stats.stopped_early) when one is waiting or ``should_yield()`` says so."""
        patch = self.ensure_memory()
        if workspace.memory is None:
            workspace.memory = patch.new_state()

        def yield_now() -> bool:
            return self._waiting > 0 or bool(should_yield and should_yield())

        with self.model_lock:
            stats = patch.prime(workspace.memory, texts, self.tokenizer, chunk_tokens=chunk_tokens, should_yield=yield_now)
            workspace.memory_version += 1
        return stats

    def reset_memory(self, workspace: Workspace) -> None:
        if workspace.memory is not None:
            workspace.memory.reset()
            workspace.memory_version += 1

    # ---- completion ----------------------------------------------------------------------
    def context_for(self, request: CompletionRequest, workspace: Workspace | None) -> str:
        """The cross-file block for context modes ("" otherwise)."""
        settings = request.settings
        if settings.mode not in CONTEXT_MODES or settings.context_budget <= 0:
            return ""
        snippets = request.snippets
        if snippets is None:
            index = workspace.index if workspace is not None else None
            if index is None:
                return ""
            retriever = list(settings.retriever) if len(settings.retriever) > 1 else settings.retriever[0]
            snippets = index.retrieve(request.prefix, request.path, retriever=retriever, k=5)
        return crossfile_block(snippets, self.tokenizer, settings.context_budget)

    def complete(self, request: CompletionRequest, workspace: Workspace | None = None) -> Completion:
        """Complete at the cursor. Raises :class:`Cancelled` if ``request.cancel`` is set mid-way."""
        start = time.perf_counter()
        settings = request.settings
        workspace = workspace or Workspace()
        block = self.context_for(request, workspace)
        t_context = time.perf_counter() - start
        prompt_ids = build_prompt_ids(self.tokenizer, block, request.prefix, settings.max_seq, settings.max_new_tokens)
        prompt_ids, heal_text = heal_prompt(self.tokenizer, prompt_ids)
        stop = make_stop(request.prefix, settings.multiline) if request.early_stop else None

        cache = None
        if request.doc_key is not None:
            cache = workspace.caches.setdefault(request.doc_key, PrefixCache())
        cache_key = self._cache_key(settings.mode, workspace)

        with self._waiting_lock:
            self._waiting += 1  # background priming sees this and hands the model over
        try:
            self.model_lock.acquire()
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        try:
            waited = time.perf_counter() - start - t_context
            with self._memory_context(settings.mode, workspace):
                results = self._generate_items(prompt_ids, heal_text, settings.max_new_tokens, stop, request, cache, cache_key)
        finally:
            self.model_lock.release()

        items: list[str] = []
        for result in results:
            cleaned = clean_completion(result.text, request.prefix, request.suffix, settings.multiline)
            if cleaned not in items or not items:
                items.append(cleaned)
        first = results[0]
        return Completion(
            items=items, raw=first.text, context=block, mode=settings.mode, prompt_tokens=len(prompt_ids),
            prefilled=sum(r.prefilled for r in results), reused=first.reused,
            decoded=sum(r.decoded for r in results), seconds=time.perf_counter() - start,
            timings={"context_s": t_context, "wait_s": waited, "prefill_s": first.prefill_s, "decode_s": first.decode_s})

    def _generate_items(self, prompt_ids, heal_text, max_new_tokens, stop, request, cache, cache_key) -> list[GenerationResult]:
        first = greedy_generate(self.model, self.tokenizer, prompt_ids, max_new_tokens, heal_text=heal_text, stop=stop,
                                cancel=request.cancel, cache=cache, cache_key=cache_key,
                                alternatives=max(0, min(request.num_items, 3) - 1))
        results = [first]
        for token in first.alternatives:
            results.append(greedy_generate(self.model, self.tokenizer, prompt_ids, max_new_tokens, heal_text=heal_text,
                                           stop=stop, cancel=request.cancel, cache=cache, cache_key=cache_key,
                                           first_token=token))
        return results

    def _cache_key(self, mode: str, workspace: Workspace) -> str:
        if mode in MEMORY_MODES:
            return f"{mode}:{workspace.memory_version}"
        return "plain"  # outside an activate() context the patched model equals the base model

    def _memory_context(self, mode: str, workspace: Workspace):
        if mode not in MEMORY_MODES:
            return _NullContext()
        patch = self.ensure_memory()
        if workspace.memory is None:
            workspace.memory = patch.new_state()
        return patch.activate(workspace.memory, gates="shut" if mode == "ablation" else "open")


class _NullContext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text())

