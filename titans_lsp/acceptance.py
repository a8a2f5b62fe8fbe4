"""What became of the completions the server returned: shown, then accepted or dismissed.

The server calls :meth:`AcceptanceTracker.shown` with the items it returns (each gets an id that
goes back to the client in the item's command), :meth:`AcceptanceTracker.accepted` when the client
runs that command, and :meth:`AcceptanceTracker.superseded` when a newer request for the document
arrives: the document's earlier items that were not accepted are then ``dismissed``, unless the
item is still pending: the user has been typing along it (the new prefix is the old one plus a
proper prefix of the item's text), so the editor still shows the rest of it and may accept it.
Closing a document dismisses its items too. Events go to :class:`titans_lsp.telemetry.EventRecorder`, which
writes them off the request path. Nothing here knows about LSP.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from titans_lsp.telemetry import Event, EventRecorder

RECENT_ITEMS = 512  # items an accept may still name (an accept right after a dismissal still counts)


@dataclass
class _Item:
    uri: str
    shown: Event
    prefix: str | None  # the document text before the cursor when shown (kept while the item is open)
    text: str
    accepted: bool = False
    dismissed: bool = False

    def typed_along(self, prefix: str) -> bool:
        """The user typed part of the item since it was shown (it is still on screen)."""
        if self.prefix is None or not prefix.startswith(self.prefix):
            return False
        typed = prefix[len(self.prefix):]
        return 0 < len(typed) < len(self.text) and self.text.startswith(typed)


def file_key(uri: str) -> str:
    """A short stable hash of the document URI: groups a file's events without storing its path."""
    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def extension_of(uri: str) -> str:
    return PurePosixPath(uri).suffix.lower()


class AcceptanceTracker:
    def __init__(self, recorder: EventRecorder):
        self.recorder = recorder
        self._session = os.urandom(4).hex()  # item ids stay unique across server restarts
        self._counter = itertools.count(1)
        self._items: OrderedDict[str, _Item] = OrderedDict()  # item id -> item, newest last
        self._open: dict[str, list[str]] = {}  # document URI -> ids of its items still on screen
        self._lock = threading.Lock()

    def shown(self, uri: str, texts: list[str], context: Event, prefix: str | None = None) -> list[str]:
        """Record ``texts`` as shown for ``uri`` at a cursor with ``prefix`` before it; ``context``
        carries the fields every event of these items shares (workspace, mode, latency, ...; its
        ``text`` is kept only when not None). Returns one id per text."""
        now = time.time()
        ids, events = [], []
        with self._lock:
            for text in texts:
                item = f"{self._session}-{next(self._counter)}"
                event = replace(context, time=now, item=item, kind="shown", file=file_key(uri),
                                extension=context.extension or extension_of(uri), chars_shown=len(text),
                                chars_accepted=None, text=text if context.text is not None else None)
                self._items[item] = _Item(uri, event, prefix, text)
                self._open.setdefault(uri, []).append(item)
                ids.append(item)
                events.append(event)
            while len(self._items) > RECENT_ITEMS:
                self._items.popitem(last=False)
        self.recorder.record(events)
        return ids

    def superseded(self, uri: str, prefix: str | None = None) -> int:
        """A newer request for ``uri`` (its cursor has ``prefix`` before it): the earlier items that
        were neither accepted nor are still pending are dismissed. Returns how many."""
        with self._lock:
            events = self._dismiss(uri, prefix)
        if events:
            self.recorder.record(events)
        return len(events)

    def closed(self, uri: str) -> int:
        """The document was closed: its open items are dismissed."""
        return self.superseded(uri, None)

    def accepted(self, item_id: str, chars: int | None = None) -> bool:
        """The client ran the item's command: record ``accepted`` (``chars``: how much of it, default
        all). False for an unknown item (another server session, or too old) or one already accepted."""
        with self._lock:
            item = self._items.get(item_id)
            if item is None or item.accepted:
                return False
            item.accepted, item.prefix = True, None
            shown = item.shown
            size = shown.chars_shown or 0
            events = [replace(shown, time=time.time(), kind="accepted",
                              chars_accepted=size if chars is None else max(0, min(chars, size)))]
            open_items = self._open.get(item.uri, [])
            if item_id in open_items:
                open_items.remove(item_id)
        self.recorder.record(events)
        return True

    def document_of(self, item_id: str) -> str | None:
        """The URI of the document an item was shown in (None once it is too old)."""
        item = self._items.get(item_id)
        return item.uri if item is not None else None

    def _dismiss(self, uri: str, prefix: str | None) -> list[Event]:
        events, still = [], []
        now = time.time()
        for item_id in self._open.pop(uri, []):
            item = self._items.get(item_id)
            if item is None or item.accepted or item.dismissed:
                continue
            if prefix is not None and item.typed_along(prefix):
                still.append(item_id)
                continue
            item.dismissed, item.prefix = True, None
            events.append(replace(item.shown, time=now, kind="dismissed", chars_accepted=0))
        if still:
            self._open[uri] = still
        return events
