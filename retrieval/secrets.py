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
most once per file (see :func:`_scan_session`).
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

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
    lines = text.split("\n")
    kinds: set[str] = set()
    count = 0
    with _scan_session():
        for i, line in enumerate(lines):
            if len(line) > 2000 or not CANDIDATE.search(line):
                continue  # (a minified line is never scanned whole: too slow; it is not a config line anyway)
            found = line_secrets(line)
            if found:
                kinds.update(found)
                indent = line[:len(line) - len(line.lstrip())]
                lines[i] = indent + REDACTED
                count += 1
    if not count:
        return Redacted(text, 0, ())
    return Redacted("\n".join(lines), count, tuple(sorted(kinds)))


def line_secrets(line: str) -> set[str]:
    """The kinds of secret in one line (empty: none)."""
    kinds = set(_scan(line.strip()))
    match = UNQUOTED.search(line)
    value = match.group(1) if match else ""
    if value and _entropy(value) >= 3.5 and re.search(r"\d", value) and re.search(r"[A-Za-z]", value):
        kinds.add("High Entropy Assignment")
    return kinds


@lru_cache(maxsize=4096)
def _scan(line: str) -> tuple[str, ...]:
    from detect_secrets.core.scan import scan_line

    with _scan_session():
        _enter_settings()
        return tuple(sorted({secret.type for secret in scan_line(line)}))


# detect-secrets' settings are process-global: one session at a time (the watcher and priming threads
# both read files). A session's settings are entered at its first scan (a file whose candidate lines
# are all cached never pays for them) and restored when it ends.
_LOCK = threading.RLock()
_session: list[ExitStack] = []  # the open session's exit stack (empty: none open)
_entered: list[bool] = [False]  # whether that session has entered the settings


@contextmanager
def _scan_session() -> Iterator[None]:
    """Scans inside share one entry into detect-secrets' settings (nested sessions join the outer one)."""
    with _LOCK:
        if _session:
            yield
            return
        with ExitStack() as stack:
            _session.append(stack)
            try:
                yield
            finally:
                _session.pop()
                _entered[0] = False


def _enter_settings() -> None:
    """Configure detect-secrets with :data:`PLUGINS` and :data:`FILTERS` for the rest of the session."""
    if _entered[0]:
        return
    from detect_secrets.settings import transient_settings

    _session[-1].enter_context(transient_settings({"plugins_used": [{"name": name} for name in PLUGINS],
                                                   "filters_used": [{"path": path} for path in FILTERS]}))
    _entered[0] = True


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
