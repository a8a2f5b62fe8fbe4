"""The A/B of the modes in real editing: ``titansLsp.experiment`` draws each request's mode.

``{"modes": ["concat", "hybrid"], "unit": "request" | "file", "seed": 7}``: every completion runs in
one of the listed modes, drawn at random per request, or once per file (the same file always gets
the same arm). The events record the drawn mode and the experiment's name, so
``titans-lsp stats --experiment`` compares the arms. ``seed`` makes the draws reproducible (tests);
without it each server draws its own seed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from titans_lsp.modes import Mode

UNITS = ("request", "file")


@dataclass(frozen=True)
class Experiment:
    modes: tuple[Mode, ...]
    unit: str = "request"
    seed: int | None = None

    @property
    def name(self) -> str:
        """How events name the experiment: ``concat,hybrid/request``."""
        return f"{','.join(m.value for m in self.modes)}/{self.unit}"

    @property
    def primes(self) -> bool:
        """Some arm reads the primed memory, so the workspace must be primed."""
        return any(m.primes for m in self.modes)

    @property
    def uses_memory(self) -> bool:
        return any(m.uses_memory for m in self.modes)

    def to_editor(self) -> dict:
        out: dict[str, Any] = {"modes": [m.value for m in self.modes], "unit": self.unit}
        if self.seed is not None:
            out["seed"] = self.seed
        return out


def parse_experiment(value: Any) -> Experiment | None:
    """The editor value: an object with ``modes`` (two or more distinct mode names), ``unit``
    (default ``request``) and an optional integer ``seed``; ``{}`` or null turns the experiment off.
    Raises ValueError saying what is wrong."""
    if value is None or isinstance(value, Experiment):
        return value
    if not isinstance(value, dict):
        raise ValueError(f'expected an object {{"modes": [...], "unit": "request"|"file"}}, got {value!r}')
    if not value:
        return None
    unknown = set(value) - {"modes", "unit", "seed"}
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} (expected modes, unit, seed)")
    modes = value.get("modes")
    if not isinstance(modes, list) or not all(isinstance(m, str) for m in modes):
        raise ValueError(f"modes must be a list of mode names, got {modes!r}")
    parsed = tuple(Mode.parse(m) for m in modes)
    if len(parsed) < 2 or len(set(parsed)) != len(parsed):
        raise ValueError(f"modes must name two or more different modes, got {modes!r}")
    unit = value.get("unit", "request")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    seed = value.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return Experiment(parsed, unit, seed)


@dataclass
class Assigner:
    """Draws the arms of one experiment in one folder. A request-unit draw is made once per
    document and kept until a completion consumes it, so a pre-warm (``titans/cursor``) prepares
    the mode the next request there will run in."""

    experiment: Experiment
    rng: random.Random = field(init=False)
    _next: dict[str, Mode] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        seed = self.experiment.seed if self.experiment.seed is not None else random.SystemRandom().getrandbits(63)
        self.seed = seed
        self.rng = random.Random(seed)

    def mode_for(self, document: str, consume: bool = True) -> Mode:
        modes = self.experiment.modes
        if self.experiment.unit == "file":
            digest = hashlib.sha256(f"{self.seed}:{document}".encode()).digest()
            return modes[int.from_bytes(digest[:8], "big") % len(modes)]
        mode = self._next.get(document)
        if mode is None:
            mode = self._next[document] = self.rng.choice(modes)
        if consume:
            del self._next[document]
        return mode
