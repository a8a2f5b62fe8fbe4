"""Debounced file watching with watchdog: bursts of events (an editor's save, a git checkout) become
one call with the set of touched paths once the folder has been quiet for ``delay`` seconds."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)

IGNORED_PARTS = {".git", ".hg", ".svn", "__pycache__", ".venv", "node_modules", ".mypy_cache", ".pytest_cache"}


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: "DebouncedWatcher", key: str):
        self.watcher, self.key = watcher, key

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                self.watcher.touch(self.key, Path(path.decode() if isinstance(path, bytes) else path))


class DebouncedWatcher:
    """Watches folders recursively; calls ``on_change(key, paths)`` on a watchdog thread after
    ``delay`` seconds without new events for that folder."""

    def __init__(self, on_change: Callable[[str, set[Path]], None], delay: float = 0.4):
        self.on_change = on_change
        self.delay = delay
        self.observer = Observer()
        self.observer.daemon = True
        self.watches: dict[str, object] = {}
        self.pending: dict[str, set[Path]] = {}
        self.timers: dict[str, threading.Timer] = {}
        self.lock = threading.Lock()
        self.started = False

    def watch(self, key: str, root: Path) -> None:
        with self.lock:
            if key in self.watches:
                return
            try:
                self.watches[key] = self.observer.schedule(_Handler(self, key), str(root), recursive=True)
            except OSError as exc:
                log.warning("cannot watch %s (%s); changes on disk will not be picked up", root, exc)
                return
            if not self.started:
                self.observer.start()
                self.started = True

    def unwatch(self, key: str) -> None:
        with self.lock:
            watch = self.watches.pop(key, None)
            timer = self.timers.pop(key, None)
            self.pending.pop(key, None)
        if watch is not None:
            self.observer.unschedule(watch)
        if timer is not None:
            timer.cancel()

    def touch(self, key: str, path: Path) -> None:
        if IGNORED_PARTS.intersection(path.parts):
            return
        with self.lock:
            self.pending.setdefault(key, set()).add(path)
            timer = self.timers.get(key)
            if timer is not None:
                timer.cancel()
            timer = threading.Timer(self.delay, self._flush, args=(key,))
            timer.daemon = True
            self.timers[key] = timer
            timer.start()

    def _flush(self, key: str) -> None:
        with self.lock:
            paths = self.pending.pop(key, set())
            self.timers.pop(key, None)
        if paths:
            try:
                self.on_change(key, paths)
            except Exception:  # noqa: BLE001 - a watcher callback must never kill the thread
                log.exception("file change handler failed")

    def stop(self) -> None:
        with self.lock:
            for timer in self.timers.values():
                timer.cancel()
            self.timers.clear()
        if self.started:
            self.observer.stop()
