"""The completion modes: the one place that says what each mode reads, writes and needs.

Every caller (engine, server, eval, bench, GPU bench) asks a :class:`Mode` what it does instead of
testing membership in a hand-written tuple, so adding a mode touches this file only.

| mode     | cross-file block | memory read | gates | primed in the background |
| -------- | ---------------- | ----------- | ----- | ------------------------ |
| none     | no               | no          | -     | no                       |
| concat   | yes              | no          | -     | no                       |
| memory   | no               | yes         | open  | yes                      |
| ablation | no               | yes         | shut  | no (the control: its memory is never read) |
| hybrid   | yes              | yes         | open  | yes                      |
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class ModeSpec:
    """What one mode does."""

    uses_context: bool  # the prompt starts with the cross-file block (retrieval/)
    uses_memory: bool  # runs through the memory-patched model (needs the in-process backend)
    gates: str | None  # "open" / "shut" when ``uses_memory``, else None
    primes: bool  # the workspace's memory is primed while files change (the memory is read)
    summary: str  # one line for help texts and the README


class Mode(str, enum.Enum):
    """A completion mode. ``Mode("concat")`` parses editor/CLI input (ValueError when unknown)."""

    NONE = "none"
    CONCAT = "concat"
    MEMORY = "memory"
    ABLATION = "ablation"
    HYBRID = "hybrid"

    @property
    def spec(self) -> ModeSpec:
        return _SPECS[self]

    @property
    def uses_context(self) -> bool:
        return self.spec.uses_context

    @property
    def uses_memory(self) -> bool:
        return self.spec.uses_memory

    @property
    def reads_snippets(self) -> bool:
        """Whether cross-file snippets reach the model: in the block, or primed into the memory (the eval)."""
        return self.spec.uses_context or self.spec.uses_memory

    @property
    def primes(self) -> bool:
        return self.spec.primes

    @property
    def gates(self) -> str | None:
        return self.spec.gates

    @classmethod
    def parse(cls, value: object) -> "Mode":
        """A mode from user input, with an error that lists the choices."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"invalid mode {value!r}: choose one of {', '.join(MODE_NAMES)}") from None

    def __str__(self) -> str:
        return self.value


_SPECS: dict[Mode, ModeSpec] = {
    Mode.NONE: ModeSpec(False, False, None, False, "the current file's text around the cursor"),
    Mode.CONCAT: ModeSpec(True, False, None, False, "retrieved cross-file snippets, then the file"),
    Mode.MEMORY: ModeSpec(False, True, "open", True, "the file, through the model with primed Titans memory"),
    Mode.ABLATION: ModeSpec(False, True, "shut", False, "the memory-patched model with its gates shut (control)"),
    Mode.HYBRID: ModeSpec(True, True, "open", True, "memory and the cross-file snippets together"),
}

MODE_NAMES: tuple[str, ...] = tuple(m.value for m in Mode)


def parse_modes(text: str) -> list[Mode]:
    """Comma-separated modes (CLI flags); raises ValueError naming the bad ones."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    bad = [n for n in names if n not in MODE_NAMES]
    if bad:
        raise ValueError(f"unknown mode(s) {', '.join(bad)}: choose from {', '.join(MODE_NAMES)}")
    return [Mode(n) for n in names]
