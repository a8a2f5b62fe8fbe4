"""The local event store: what happened to each completion shown, in one SQLite file per user.

Nothing here is sent anywhere. The file is ``<cache>/telemetry/events.sqlite3`` (the cache of
:mod:`titans_lsp.paths`), opened with the stdlib ``sqlite3`` in WAL mode so ``titans-lsp stats``
can read while a server writes. One row per event; the events of one shown item share its ``item``
id: ``shown`` when the server returns it, then ``accepted`` (the client ran the item's command) or
``dismissed`` (a newer request for the document came first). An item's outcome is ``accepted`` if
it has an accepted event (an accept that arrives after a dismissal wins), else ``dismissed``.

The schema is versioned in the ``schema`` table and migrated forward by :data:`MIGRATIONS` in one
transaction; a file written by a newer titans-lsp is refused, never rewritten.

:class:`EventRecorder` keeps the write off the request path: ``record`` only puts events on a queue;
one writer thread batches them into the file.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from titans_lsp.paths import cache_root

log = logging.getLogger(__name__)

KINDS = ("shown", "accepted", "dismissed")
TRIGGERS = ("automatic", "invoked", "completion")


def default_path(cache_dir: str | None = None) -> Path:
    """Where the events of this user live (under the titans-lsp cache)."""
    return cache_root(cache_dir) / "telemetry" / "events.sqlite3"


@dataclass(frozen=True)
class Event:
    """One row of ``events``. ``text`` is the completion text only when the user opted in
    (``titansLsp.telemetry.storeText``); otherwise None."""

    time: float  # unix seconds
    item: str  # the shown item's id
    kind: str  # shown | accepted | dismissed
    workspace: str | None = None  # the workspace folder's path (or URI outside a folder)
    file: str | None = None  # a short hash of the document URI: groups events by file, names no path
    extension: str | None = None  # ".py"
    language: str | None = None  # the registry language (retrieval/languages.py)
    mode: str | None = None
    experiment: str | None = None  # "concat,hybrid/request" when the mode was drawn by titansLsp.experiment
    backend: str | None = None
    model: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    chars_shown: int | None = None
    chars_accepted: int | None = None
    trigger: str | None = None  # automatic | invoked | completion
    text: str | None = None


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Event))


# ---- schema ------------------------------------------------------------------------------------
def _v0_to_v1(db: sqlite3.Connection) -> None:
    """The first layout: the events table and its indexes."""
    db.execute("""CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        item TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('shown', 'accepted', 'dismissed')),
        workspace TEXT, file TEXT, extension TEXT, language TEXT, mode TEXT, experiment TEXT,
        backend TEXT, model TEXT, latency_ms REAL, prompt_tokens INTEGER, completion_tokens INTEGER,
        chars_shown INTEGER, chars_accepted INTEGER, trigger TEXT, text TEXT)""")
    db.execute("CREATE INDEX events_time ON events (time)")
    db.execute("CREATE INDEX events_item ON events (item)")


# MIGRATIONS[n] takes a file at version n to n + 1. Version 0 is a file without the schema table
# (new, or created by something that is not titans-lsp and holds no events).
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v0_to_v1,)
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(RuntimeError):
    """The file's schema is newer than this titans-lsp knows, or not an event store."""


def schema_version(db: sqlite3.Connection) -> int:
    has_table = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema'").fetchone()
    if not has_table:
        return 0
    row = db.execute("SELECT version FROM schema").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite3.Connection) -> int:
    """Bring the file to :data:`SCHEMA_VERSION` in one transaction; returns the version it had."""
    db.execute("BEGIN IMMEDIATE")  # one writer migrates; another waits, then sees the new version
    try:
        found = schema_version(db)
        if found > SCHEMA_VERSION:
            raise SchemaError(f"the event store is at schema version {found}; this titans-lsp knows up to "
                              f"{SCHEMA_VERSION} (upgrade titans-lsp, or point it at another file)")
        for step in MIGRATIONS[found:]:
            step(db)
        if found < SCHEMA_VERSION:
            db.execute("CREATE TABLE IF NOT EXISTS schema (version INTEGER NOT NULL)")
            db.execute("DELETE FROM schema")
            db.execute("INSERT INTO schema (version) VALUES (?)", (SCHEMA_VERSION,))
        db.execute("COMMIT")
        return found
    except BaseException:
        db.execute("ROLLBACK")
        raise


def connect(path: Path, create: bool = True) -> sqlite3.Connection:
    """An open, migrated store (WAL). ``create=False`` (a reader): a missing file raises
    FileNotFoundError, and a database without our schema table is refused before anything is
    written to it (it is another program's file, not ours to migrate)."""
    if not create and not path.exists():
        raise FileNotFoundError(f"no event store at {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=True)
    except sqlite3.Error as exc:  # a directory, an unreadable file
        raise SchemaError(f"{path} is not a titans-lsp event store: {exc}") from None
    try:
        if not create and schema_version(db) == 0:
            raise SchemaError(f"{path} is not a titans-lsp event store (no schema table); point --db at "
                              "<cache>/telemetry/events.sqlite3")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        migrate(db)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise SchemaError(f"{path} is not a titans-lsp event store: {exc}") from None
    except BaseException:
        db.close()
        raise
    return db


def insert(db: sqlite3.Connection, events: Sequence[Event]) -> None:
    placeholders = ", ".join("?" for _ in COLUMNS)
    db.execute("BEGIN")
    try:
        db.executemany(f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                       [astuple(e) for e in events])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def read_events(path: Path, since: float | None = None) -> list[Event]:
    """Every event (at or after ``since``, unix seconds), oldest first."""
    db = connect(path, create=False)
    try:
        query = f"SELECT {', '.join(COLUMNS)} FROM events"
        rows = db.execute(query + (" WHERE time >= ? ORDER BY id" if since is not None else " ORDER BY id"),
                          (since,) if since is not None else ()).fetchall()
    finally:
        db.close()
    return [Event(*row) for row in rows]


def outcome_counts(db: sqlite3.Connection, since: float) -> dict[tuple[str | None, str | None], list[int]]:
    """(workspace, mode) -> [items decided, items accepted] among items with an outcome since ``since``."""
    rows = db.execute("""
        SELECT workspace, mode, COUNT(DISTINCT item),
               COUNT(DISTINCT CASE WHEN kind = 'accepted' THEN item END)
        FROM events WHERE time >= ? AND kind IN ('accepted', 'dismissed') GROUP BY workspace, mode""", (since,))
    return {(w, m): [int(n), int(a)] for w, m, n, a in rows}


def start_of_today(now: float | None = None) -> float:
    """Local midnight (unix seconds) of the day ``now`` falls in."""
    t = time.localtime(now if now is not None else time.time())
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


# ---- the writer --------------------------------------------------------------------------------
class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


class EventRecorder:
    """Queues events and writes them on one thread of its own, so recording costs a request only a
    ``queue.put``. The file is created on the first event (telemetry off: no file at all). Today's
    outcome counts are kept in memory (seeded from the file) for the status bar."""

    def __init__(self, path: Path):
        self.path = path
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self._day = start_of_today()
        self._today: dict[tuple[str | None, str | None], list[int]] = {}
        self._decided: set[str] = set()  # items whose outcome today was counted
        self._accepted: set[str] = set()
        self.written = 0
        self.error: str | None = None  # the last write failure (events are dropped, the server goes on)

    def record(self, events: Sequence[Event]) -> None:
        for event in events:
            self._queue.put(event)
        self._count(events)  # here, not after the write: the status sent right after an accept shows it
        self._ensure_thread()

    def start(self) -> None:
        """Open the file now (a folder with telemetry on): today's counts of earlier sessions load."""
        self._ensure_thread()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything recorded so far is written (or failed); False on timeout."""
        if self._thread is None:
            return True
        marker = _Flush()
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def today(self, workspace: str | None, mode: str) -> tuple[int, int]:
        """(items decided, items accepted) today for a workspace and mode (this session's events and,
        once the writer thread opened the file, earlier sessions')."""
        with self._counts_lock:
            self._roll_day()
            decided, accepted = self._today.get((workspace, mode), (0, 0))
        return decided, accepted

    # ---- the writer thread ----
    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="titans-events", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        db = None
        try:
            db = connect(self.path)
            earlier = outcome_counts(db, self._day)  # before this session's first write: no double count
            with self._counts_lock:
                for key, (decided, accepted) in earlier.items():
                    counts = self._today.setdefault(key, [0, 0])
                    counts[0] += decided
                    counts[1] += accepted
        except Exception as exc:  # noqa: BLE001 - a broken store must not take the server down
            self.error = f"cannot open {self.path}: {exc}"
            log.warning("event store: %s; events are not recorded", self.error)
        stop = False
        while not stop:
            batch, markers = [], []
            item = self._queue.get()
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, _Flush):
                    markers.append(item)
                else:
                    batch.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch and db is not None:
                try:
                    insert(db, batch)
                    self.written += len(batch)
                except sqlite3.Error as exc:
                    self.error = f"cannot write {self.path}: {exc}"
                    log.warning("event store: %s; %d events dropped", self.error, len(batch))
            for marker in markers:
                marker.done.set()
        if db is not None:
            db.close()

    def _roll_day(self) -> None:
        day = start_of_today()
        if day != self._day:
            self._day, self._today = day, {}
            self._decided.clear()
            self._accepted.clear()

    def _count(self, batch: Sequence[Event]) -> None:
        with self._counts_lock:
            self._roll_day()
            for event in batch:
                if event.kind == "shown" or event.time < self._day:
                    continue
                counts = self._today.setdefault((event.workspace, event.mode), [0, 0])
                if event.item not in self._decided:
                    self._decided.add(event.item)
                    counts[0] += 1
                if event.kind == "accepted" and event.item not in self._accepted:
                    self._accepted.add(event.item)
                    counts[1] += 1
