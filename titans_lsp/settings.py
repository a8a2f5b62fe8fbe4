"""Completion settings and their editor names: the one owner of every ``titansLsp.*`` setting.

Each editor setting is one :class:`Setting` row in :data:`EDITOR_SETTINGS`: its camelCase key, the
field of :class:`CompletionSettings` it sets and the parser that converts an editor value to the
field's type or raises ``ValueError`` with a message. ``from_editor``, ``merge_editor`` and
``to_editor`` all read that table, so adding a setting means adding a field and a row here (and,
for VS Code's settings UI, its entry in editors/vscode/package.json, which a test keeps in sync).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from titans_lsp.experiment import Experiment, parse_experiment
from titans_lsp.fim import FIM_CHOICES
from titans_lsp.modes import Mode
from titans_lsp.retrieval.index import RETRIEVERS

SECTION = "titansLsp"  # the editors' settings section
MULTILINE = ("auto", "never", "always")
MAX_NEW_TOKENS = 512


class SettingsError(ValueError):
    """One or more invalid settings; ``errors`` holds one message per key."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


# ---- parsers: editor value -> field value (ValueError on anything else) ------------------------------------
def parse_int(value: Any, low: int, high: int) -> int:
    """An integer in [low, high]. Accepts ints, integral floats (JSON has one number type) and
    decimal strings ("16"); rejects booleans, fractions and anything else."""
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        value = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text.lstrip("+-").isdigit():
            raise ValueError(f"expected an integer, got {value!r}")
        value = int(text)
    elif not isinstance(value, int):
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"must be {low}..{high}, got {value}")
    return value


def parse_choice(value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
    return value


def parse_mode(value: Any) -> Mode:
    if isinstance(value, Mode):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a mode name, got {type(value).__name__}")
    return Mode.parse(value)


def parse_retriever(value: Any) -> tuple[str, ...]:
    """One retriever name, a comma-separated string or a list of names (the block follows the list's
    order, the ranked retrievers fused by rank: retrieval/index.py ``WorkspaceIndex.retrieve``)."""
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value]
    else:
        raise ValueError(f"expected a retriever name or a list of names, got {value!r}")
    bad = [n for n in names if n not in RETRIEVERS]
    if bad or not names:
        raise ValueError(f"{bad or value!r} is not one of {', '.join(RETRIEVERS)} (or a list of them)")
    return tuple(dict.fromkeys(names))  # in order, without repeats


def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class TelemetrySettings:
    """``titansLsp.telemetry``: the local event store (titans_lsp/telemetry.py); nothing is sent anywhere."""

    enabled: bool = True
    store_text: bool = False  # keep the completion text of each event (off: no code in the store)

    def to_editor(self) -> dict[str, bool]:
        return {"enabled": self.enabled, "storeText": self.store_text}


def parse_telemetry(value: Any) -> TelemetrySettings:
    """``{"enabled": bool, "storeText": bool}`` (either may be absent: its default)."""
    if isinstance(value, TelemetrySettings):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f'expected an object {{"enabled": bool, "storeText": bool}}, got {value!r}')
    unknown = set(value) - {"enabled", "storeText"}
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} (expected enabled, storeText)")
    enabled, store_text = value.get("enabled"), value.get("storeText")
    return TelemetrySettings(enabled=True if enabled is None else parse_bool(enabled),
                             store_text=False if store_text is None else parse_bool(store_text))


def max_context_budget(max_seq: int) -> int:
    """The largest cross-file block for a window of ``max_seq`` tokens: half of it, so the file's own
    prefix keeps room (a larger block is dropped whole when the prompt is laid out)."""
    return max_seq // 2


@dataclass(frozen=True)
class CompletionSettings:
    """What a workspace's editor settings (``titansLsp.*``) control; validated on construction."""

    mode: Mode = Mode.CONCAT
    retriever: tuple[str, ...] = ("bm25",)
    max_new_tokens: int = 48
    context_budget: int = 512  # tokens for the cross-file block (CrossCodeEval: 512)
    max_seq: int = 2048  # window for block + prefix + generation (CrossCodeEval: 2048); not an editor setting
    multiline: str = "auto"
    fim: str = "auto"  # fill-in-the-middle: auto (when the model has FIM tokens) | on | off
    telemetry: TelemetrySettings = TelemetrySettings()
    experiment: Experiment | None = None  # the A/B: each request's mode drawn among experiment.modes

    def __post_init__(self) -> None:
        errors = []
        for setting in EDITOR_SETTINGS:
            try:
                object.__setattr__(self, setting.field, setting.parse(getattr(self, setting.field), self))
            except ValueError as exc:
                errors.append(f"{SECTION}.{setting.key}: {exc}")
        if errors:
            raise SettingsError(errors)

    @property
    def primes(self) -> bool:
        """The workspace's memory must be primed: the mode reads it, or an experiment arm does."""
        return self.mode.primes or (self.experiment is not None and self.experiment.primes)

    @property
    def uses_memory(self) -> bool:
        """Some completion runs through the memory-patched model (the mode or an experiment arm)."""
        return self.mode.uses_memory or (self.experiment is not None and self.experiment.uses_memory)

    @classmethod
    def from_editor(cls, values: Mapping[str, Any], base: "CompletionSettings | None" = None) -> "CompletionSettings":
        """Settings from the editor's ``titansLsp`` section (camelCase keys) over ``base``; unknown
        keys are ignored, ``None`` leaves a key at its base value. Raises :class:`SettingsError`."""
        base = base or cls()
        changes, errors = {}, []
        for setting in EDITOR_SETTINGS:
            if values.get(setting.key) is None:
                continue
            try:
                changes[setting.field] = setting.parse(values[setting.key], base)
            except ValueError as exc:
                errors.append(f"{SECTION}.{setting.key}: {exc}")
        if errors:
            raise SettingsError(errors)
        return replace(base, **changes)

    def merge_editor(self, values: Any) -> tuple["CompletionSettings", list[str], list[str]]:
        """The editor's whole section applied to these (current) settings: keys absent from
        ``values`` go back to their defaults, an invalid value keeps the current one. Returns
        (new settings, changed field names, one error message per rejected key)."""
        if values is not None and not isinstance(values, Mapping):
            return self, [], [f"settings section {SECTION} must be an object, got {type(values).__name__}"]
        values = values or {}
        result, errors = CompletionSettings(max_seq=self.max_seq), []
        for setting in EDITOR_SETTINGS:
            if values.get(setting.key) is None:
                continue
            try:
                value = setting.parse(values[setting.key], result)
            except ValueError as exc:
                value = getattr(self, setting.field)
                errors.append(f"{SECTION}.{setting.key}: {exc}; keeping {setting.to_editor(value)!r}")
            result = replace(result, **{setting.field: value})
        changed = [f.name for f in fields(CompletionSettings) if getattr(result, f.name) != getattr(self, f.name)]
        return result, changed, errors

    def to_editor(self) -> dict[str, Any]:
        """The settings under their editor keys, JSON-ready (status, logs)."""
        return {s.key: s.to_editor(getattr(self, s.field)) for s in EDITOR_SETTINGS}


@dataclass(frozen=True)
class Setting:
    """One editor setting: ``titansLsp.<key>`` sets ``CompletionSettings.<field>``."""

    key: str
    field: str
    parse: Callable[[Any, CompletionSettings], Any]  # (editor value, settings so far) -> field value
    doc: str
    to_editor: Callable[[Any], Any] = lambda value: value


EDITOR_SETTINGS: tuple[Setting, ...] = (
    Setting("mode", "mode", lambda v, s: parse_mode(v),
            "none | concat | memory | ablation | hybrid", to_editor=str),
    Setting("retriever", "retriever", lambda v, s: parse_retriever(v),
            "bm25 | dense | hybrid | imports | usages, or a list (block in list order, bm25/dense fused by rank)", to_editor=list),
    Setting("maxNewTokens", "max_new_tokens", lambda v, s: parse_int(v, 1, MAX_NEW_TOKENS),
            f"tokens generated at most (1-{MAX_NEW_TOKENS})"),
    Setting("contextBudget", "context_budget", lambda v, s: parse_int(v, 0, max_context_budget(s.max_seq)),
            "tokens of cross-file context (0 turns the block off)"),
    Setting("multiline", "multiline", lambda v, s: parse_choice(v, MULTILINE),
            "auto (a block after ':') | never | always"),
    Setting("fim", "fim", lambda v, s: parse_choice(v, FIM_CHOICES),
            "fill-in-the-middle (the text after the cursor): auto (when the model has FIM tokens) | on | off"),
    Setting("telemetry", "telemetry", lambda v, s: parse_telemetry(v),
            "{enabled, storeText}: record shown/accepted/dismissed completions in a local SQLite file",
            to_editor=lambda t: t.to_editor()),
    Setting("experiment", "experiment", lambda v, s: parse_experiment(v),
            '{"modes": [...], "unit": "request"|"file", "seed": n}: draw each request\'s mode among modes',
            to_editor=lambda e: None if e is None else e.to_editor()),
)
