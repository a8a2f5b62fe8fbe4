"""Priming a workspace folder's Titans memory: the one owner of the loop.

Which files (indexed, not yet in memory at their current version), in what order (definitions
first: :func:`titans_lsp.retrieval.workspace.priming_order`), yielding the model to the typist and
resuming a file where it stopped, publishing the working copy so completions see it, and saving
the memory with the list of primed files. The server's background jobs (open, mode change, file
changes, ``primeWorkspace``) and ``titans-lsp prime`` all run :class:`Primer`; the eval's one-shot
priming of a sample's snippets uses the engine's write primitive (:meth:`CompletionEngine.prime`)
directly, as this loop does per chunk.

Nothing here knows about LSP: progress goes to a ``progress(done, total)`` callback and the caller
decides when to yield (``should_yield``), how to wait for the model (``wait``) and when to stop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from titans_lsp.engine import CompletionEngine
from titans_lsp.folder import FolderState

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class PrimeResult:
    """What one priming run did (the ``primeWorkspace`` command returns it)."""

    primed: int = 0  # files written into memory
    skipped: int = 0  # files already in memory at their current version
    stopped: bool = False  # should_stop() ended the run early
    tokens: int = 0  # tokens written
    seconds: float = 0.0


@dataclass
class YieldPolicy:
    """How priming shares the model with completions. ``should_yield()`` is polled between chunks;
    when it says yes, priming hands the model over and calls ``wait()`` (which returns once the user
    is idle again) before resuming at the first unwritten token. ``wait=None`` gives up on the file
    instead (it stays unprimed and is picked up by the next run)."""

    should_yield: Callable[[], bool] | None = None
    wait: Callable[[], None] | None = None


class Primer:
    """Primes one folder's memory through one engine."""

    def __init__(self, folder: FolderState, engine: CompletionEngine, policy: YieldPolicy | None = None,
                 save_every_s: float = 10.0):
        self.folder = folder
        self.engine = engine
        self.policy = policy or YieldPolicy()
        self.save_every_s = save_every_s  # a kill loses at most this much priming (plus the file in progress)

    def files_to_prime(self, force: bool = False) -> list[str]:
        """Indexed files whose current version is not in memory yet, definitions first."""
        from titans_lsp.retrieval.workspace import priming_order

        folder = self.folder
        if folder.index is None or folder.root is None:
            return []
        todo = []
        for rel in folder.index.files():
            try:
                mtime = (folder.root / rel).stat().st_mtime_ns
            except OSError:
                continue
            if force or folder.primed.get(rel) != mtime:
                todo.append(rel)
        return priming_order(todo)

    def run(self, files: Iterable[str] | None = None, force: bool = False, progress: Progress | None = None,
            should_stop: Callable[[], bool] | None = None) -> PrimeResult:
        """Prime ``files`` (relative paths; default: every file not in memory at its current
        version, or all of them after a reset with ``force``). Publishes and saves at the end,
        also when stopped or failing, so nothing written is lost."""
        folder, engine = self.folder, self.engine
        started = time.perf_counter()
        folder.ensure_memory(engine)
        if force:
            with engine.model_lock:
                engine.reset_memory(folder.workspace)
            folder.primed = {}
        todo = self.files_to_prime() if files is None else list(files)
        indexed = len(folder.index.files()) if folder.index is not None else 0
        result = PrimeResult(skipped=indexed - len(todo) if files is None else 0)
        folder.priming = (0, len(todo))
        if progress is not None:
            progress(0, len(todo))
        last_save = time.monotonic()
        try:
            for done, rel in enumerate(todo, 1):
                if should_stop is not None and should_stop():
                    result.stopped = True
                    break
                self._wait_while_user_active()
                written = self._prime_file(rel, should_stop)
                if written is not None:
                    result.primed += 1
                    result.tokens += written
                folder.priming = (done, len(todo))
                if progress is not None:
                    progress(done, len(todo))
                if time.monotonic() - last_save >= self.save_every_s:
                    self._wait_while_user_active()
                    folder.save_memory(engine)
                    last_save = time.monotonic()
        finally:
            engine.publish_memory(folder.workspace)  # the batch is done: completions read it from now on
            folder.save_memory(engine)
            folder.priming = None
            result.seconds = time.perf_counter() - started
        return result

    def _wait_while_user_active(self) -> None:
        """Reading a file (the secret scan, tokenizing) and saving the memory run outside the model
        lock but hold Python's GIL and a core: they wait for the typist like the chunks do (only a
        policy that can wait). On the 2-core bench this did not close memory's gap to ablation
        (evals/results/2026-12-02-backends, section 4), so the gap has another cause."""
        policy = self.policy
        if policy.wait is not None and policy.should_yield is not None and policy.should_yield():
            policy.wait()

    def _prime_file(self, rel: str, should_stop: Callable[[], bool] | None) -> int | None:
        """Write one file into the working copy; returns its token count, or None when it was not
        (fully) written: unreadable, deleted, or given up on to let the user type / stop."""
        folder, engine = self.folder, self.engine
        path = folder.root / rel
        try:
            mtime = path.stat().st_mtime_ns
        except OSError as exc:
            log.warning("%s: cannot read %s for priming (%s); skipped", folder.name, rel, exc)
            return None
        loaded = folder.index.rules.load(path)  # the index's rules: no secrets, redacted lines, no escapes
        if loaded is None:
            log.info("%s: %s is excluded by the workspace rules; not primed", folder.name, rel)
            return None
        text = loaded.text
        ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
        offset = 0
        while offset < len(ids):
            stats = engine.prime(folder.workspace, [ids[offset:]], should_yield=self.policy.should_yield, publish=False)
            if not stats.stopped_early:
                break
            offset += stats.offset_in_text
            if should_stop is not None and should_stop():
                return None  # the tokens written stay in memory; the file is primed again next run
            if self.policy.wait is not None:
                self.policy.wait()
            elif self.policy.should_yield is not None:
                return None  # asked to yield with no way to wait: leave the file to the next run
            # else a completion borrowed the model for a moment; go on where we stopped
        folder.primed[rel] = mtime
        folder.prime_writes += 1
        folder.last_primed = rel
        return len(ids)
