"""Secrets by content: which lines of a file hold a credential, so they are redacted before the
text is indexed, primed into memory or retrieved into another file's prompt.

Detection is Yelp's detect-secrets (its key-format plugins: AWS, GitHub, GitLab, Slack, Stripe,
OpenAI, PyPI, npm, JWT, private keys, basic-auth URLs, ... and its keyword plugin for
``password = "..."``-style assignments), without its generic high-entropy plugins, which flag
ordinary code. One rule is added here: a long high-entropy value assigned to a secret-like name
without quotes (``aws_secret_access_key=...`` in .cfg/.toml/.env-style files), which the keyword
plugin only sees in quoted form.

detect-secrets costs ~0.25 ms a line, too much for every line of a workspace, so a line reaches it
only when a cheap regular expression (:data:`CANDIDATE`) says it could hold one of the formats
above; tests/test_hardening_secrets.py checks that every plugin's example passes that gate.
Entering detect-secrets' settings costs about twice a line's scan, so :func:`redact` enters them at
most once per file (see :func:`_detect`). detect-secrets' settings are process-global, so its scans
are serialized by a lock (:data:`_LOCK`); the rest of :func:`redact` runs outside it.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Callable

PLUGINS = (
    "AWSKeyDetector", "ArtifactoryDetector", "AzureStorageKeyDetector", "BasicAuthDetector", "DiscordBotTokenDetector",
    "GitHubTokenDetector", "GitLabTokenDetector", "JwtTokenDetector", "KeywordDetector", "MailchimpDetector",
    "NpmDetector", "OpenAIDetector", "PrivateKeyDetector", "PypiTokenDetector", "SendGridDetector", "SlackDetector",
    "SquareOAuthDetector", "StripeDetector", "TelegramBotTokenDetector", "TwilioKeyDetector",
)
FILTERS = (
    "detect_secrets.filters.heuristic.is_indirect_reference",  # password = os.environ["X"]
    "detect_secrets.filters.heuristic.is_templated_secret",  # password = "{{ password }}"
    "detect_secrets.filters.heuristic.is_likely_id_string",
)
SECRET_NAMES = r"pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credential|auth"
CANDIDATE = re.compile(
    rf"(?i:{SECRET_NAMES})"  # keyword plugin, and the unquoted rule below
    r"|AKIA|ASIA|ABIA|ACCA|AKC|AP[0-9A-F]|AccountKey|://[^\s/:@]+:[^\s/@]+@|[MNO][A-Za-z\d]{23}\.|gh[pousr]_|gl[a-z]+-"
    r"|eyJ|-us\d|_authToken|sk-|PRIVATE KEY|PuTTY|pypi-|SG\.|xox|hooks\.slack|sq0|[rs]k_(?:live|test)_|\d{8,10}:"
    r"|AC[a-z0-9]{32}|SK[a-z0-9]{32}")
UNQUOTED = re.compile(rf"(?i)(?:{SECRET_NAMES})[\w.-]*\s*[:=]\s*([A-Za-z0-9+/=_~.-]{{16,}})\s*$")
REDACTED = "<line redacted by titans-lsp: possible secret>"


@dataclass(frozen=True)
class Redacted:
    """A text with its secret lines replaced by :data:`REDACTED` (indentation and line count kept)."""

    text: str
    lines: int  # how many lines were redacted
    kinds: tuple[str, ...]  # what was found (detect-secrets' type names), for the log


def redact(text: str) -> Redacted:
    """``text`` with every line that holds a secret replaced by :data:`REDACTED`.

    Only the scan of the candidate lines that are not cached yet holds :data:`_LOCK` (see :func:`_detect`);
    splitting, the candidate gate, cache look-ups and the unquoted rule run unlocked, so a thread
    redacting another file waits only while detect-secrets itself runs."""
    lines = text.split("\n")
    # (a minified line is never scanned whole: too slow; it is not a config line anyway)
    candidates = [i for i, line in enumerate(lines) if len(line) <= 2000 and CANDIDATE.search(line)]
    if not candidates:
        return Redacted(text, 0, ())
    kinds: set[str] = set()
    count = 0
    for i, scanned in zip(candidates, _scan([lines[i].strip() for i in candidates])):
        found = set(scanned) | _unquoted(lines[i])
        if found:
            kinds.update(found)
            indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
            lines[i] = indent + REDACTED
            count += 1
    if not count:
        return Redacted(text, 0, ())
    return Redacted("\n".join(lines), count, tuple(sorted(kinds)))


def line_secrets(line: str) -> set[str]:
    """The kinds of secret in one line (empty: none)."""
    return set(_scan([line.strip()])[0]) | _unquoted(line)


def _unquoted(line: str) -> set[str]:
    """The added rule: a long high-entropy unquoted value assigned to a secret-like name."""
    match = UNQUOTED.search(line)
    value = match.group(1) if match else ""
    if value and _entropy(value) >= 3.5 and re.search(r"\d", value) and re.search(r"[A-Za-z]", value):
        return {"High Entropy Assignment"}
    return set()


class _Scanner:
    """detect-secrets' findings per stripped line, with a bounded LRU cache of lines already scanned.

    The cache has its own lock, held for one dict operation, so a file whose candidate lines are all
    cached never waits for another thread's scan."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._cache: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def __call__(self, lines: list[str]) -> list[tuple[str, ...]]:
        found = [self._get(line) for line in lines]
        missing = [line for line, kinds in zip(lines, found) if kinds is None]
        if not missing:
            return found  # type: ignore[return-value]
        scanned = _detect(list(dict.fromkeys(missing)), self._get)
        for line, kinds in scanned.items():
            self._put(line, kinds)
        return [kinds if kinds is not None else scanned[line] for line, kinds in zip(lines, found)]

    def _get(self, line: str) -> tuple[str, ...] | None:
        with self._cache_lock:
            kinds = self._cache.get(line)
            if kinds is not None:
                self._cache.move_to_end(line)
            return kinds

    def _put(self, line: str, kinds: tuple[str, ...]) -> None:
        with self._cache_lock:
            self._cache[line] = kinds
            self._cache.move_to_end(line)
            while len(self._cache) > self.maxsize:
                self._cache.popitem(last=False)

    def cache_clear(self) -> None:
        with self._cache_lock:
            self._cache.clear()


_scan = _Scanner(maxsize=4096)

# detect-secrets keeps its settings in one process-wide object (``get_settings()``, with the plugin
# and filter lists cached from it): ``transient_settings`` swaps that object's contents and restores
# them on exit, and ``scan_line`` itself rewrites it (it disables a filter and clears the filter cache)
# and reads the plugins and filters while it runs. Two threads scanning at once would run with each
# other's settings, or restore them under each other. So the entry into our settings and every
# ``scan_line`` until they are restored hold this lock (the watcher, priming and request threads all
# read files); nothing else in this module does.
_LOCK = threading.Lock()


def _detect(lines: list[str], cached: Callable[[str], tuple[str, ...] | None]) -> dict[str, tuple[str, ...]]:
    """Scan ``lines`` with detect-secrets under :data:`_LOCK`, entering its settings once for all of them.

    Entering the settings costs about twice a line's scan, so one file's uncached candidate lines
    share one entry; lines another thread scanned while this one waited for the lock are taken from
    ``cached`` (and if every line was, the settings are not entered)."""
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import transient_settings

    with _LOCK:
        found: dict[str, tuple[str, ...]] = {}
        todo = []
        for line in lines:
            kinds = cached(line)
            if kinds is None:
                todo.append(line)
            else:
                found[line] = kinds
        if todo:
            with transient_settings({"plugins_used": [{"name": name} for name in PLUGINS],
                                     "filters_used": [{"path": path} for path in FILTERS]}):
                for line in todo:
                    found[line] = tuple(sorted({secret.type for secret in scan_line(line)}))
        return found


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
