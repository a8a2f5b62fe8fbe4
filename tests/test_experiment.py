"""titansLsp.experiment: strict parsing, seeded draws, and what it means for priming."""

from __future__ import annotations

from collections import Counter

import pytest

from titans_lsp.experiment import Assigner, Experiment, parse_experiment
from titans_lsp.modes import Mode
from titans_lsp.settings import SECTION, CompletionSettings, SettingsError


def test_valid_experiment_and_off():
    exp = parse_experiment({"modes": ["concat", "hybrid"], "unit": "file", "seed": 7})
    assert exp == Experiment((Mode.CONCAT, Mode.HYBRID), "file", 7) and exp.name == "concat,hybrid/file"
    assert parse_experiment({"modes": ["none", "concat"]}).unit == "request"
    assert parse_experiment({}) is None and parse_experiment(None) is None


@pytest.mark.parametrize("value, message", [
    ("concat,hybrid", "expected an object"), ({"modes": "concat"}, "list of mode names"),
    ({"modes": ["concat"]}, "two or more"), ({"modes": ["concat", "concat"]}, "two or more"),
    ({"modes": ["concat", "telepathy"]}, "invalid mode 'telepathy'"), ({"modes": ["none", "concat"], "unit": "user"}, "unit"),
    ({"modes": ["none", "concat"], "seed": -1}, "seed"), ({"modes": ["none", "concat"], "seed": True}, "seed"),
    ({"modes": ["none", "concat"], "arms": 2}, "unknown key"),
])
def test_bad_experiments_are_rejected_with_the_reason(value, message):
    with pytest.raises(ValueError, match=message):
        parse_experiment(value)
    with pytest.raises(SettingsError) as info:
        CompletionSettings.from_editor({"experiment": value})
    assert info.value.errors[0].startswith(f"{SECTION}.experiment:")


def test_request_unit_draws_are_seeded_and_balanced():
    exp = parse_experiment({"modes": ["concat", "hybrid"], "seed": 11})
    a, b = Assigner(exp), Assigner(exp)
    draws_a = [a.mode_for(f"file:///f{n % 5}.py") for n in range(400)]
    draws_b = [b.mode_for(f"file:///f{n % 5}.py") for n in range(400)]
    assert draws_a == draws_b  # the same seed, the same arms
    counts = Counter(draws_a)
    assert set(counts) == {Mode.CONCAT, Mode.HYBRID} and 150 < counts[Mode.CONCAT] < 250
    c = Assigner(parse_experiment({"modes": ["concat", "hybrid"], "seed": 12}))
    assert [c.mode_for(f"file:///f{n % 5}.py") for n in range(400)] != draws_a  # another seed, another sequence


def test_a_prewarm_peeks_at_the_next_draw_without_spending_it():
    assigner = Assigner(parse_experiment({"modes": ["none", "concat", "hybrid"], "seed": 3}))
    peeked = [assigner.mode_for("doc", consume=False) for _ in range(3)]
    assert len(set(peeked)) == 1
    assert assigner.mode_for("doc") == peeked[0]


def test_file_unit_keeps_one_arm_per_file():
    exp = parse_experiment({"modes": ["concat", "memory"], "unit": "file", "seed": 5})
    assigner = Assigner(exp)
    arms = {f"file:///f{n}.py": assigner.mode_for(f"file:///f{n}.py") for n in range(60)}
    assert all(assigner.mode_for(uri) == arm for uri, arm in arms.items() for _ in range(3))
    assert set(arms.values()) == {Mode.CONCAT, Mode.MEMORY}
    assert Assigner(exp).mode_for("file:///f1.py") == arms["file:///f1.py"]  # stable across restarts


def test_priming_runs_when_any_arm_needs_it():
    assert not CompletionSettings().primes
    settings = CompletionSettings.from_editor({"mode": "concat", "experiment": {"modes": ["concat", "hybrid"]}})
    assert settings.primes and settings.uses_memory and not settings.mode.primes
    ablation = CompletionSettings.from_editor({"experiment": {"modes": ["concat", "ablation"]}})
    assert not ablation.primes and ablation.uses_memory  # the control's memory is never read
