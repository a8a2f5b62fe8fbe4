"""The local event store, the shown/accepted/dismissed tracker and the acceptance statistics (no model)."""

from __future__ import annotations

import json
import random
import sqlite3
import time

import pytest

from titans_lsp import telemetry
from titans_lsp.acceptance import AcceptanceTracker
from titans_lsp.cli import main
from titans_lsp.commands.stats import parse_since
from titans_lsp.stats import acceptance_report, compare_arms, editing_hours, items_of, wilson
from titans_lsp.telemetry import Event, EventRecorder, SchemaError


def context(**fields) -> Event:
    base = dict(time=0.0, item="", kind="shown", workspace="/ws", language="python", mode="concat",
                backend="local", model="tiny", latency_ms=42.0, prompt_tokens=100, completion_tokens=5,
                trigger="automatic")
    base.update(fields)
    return Event(**base)


def test_a_v0_file_is_migrated_and_a_newer_one_refused(tmp_path):
    path = tmp_path / "events.sqlite3"
    # v0: a file without the schema table (here one another tool left with a table of its own).
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE notes (x TEXT)")
    raw.execute("INSERT INTO notes VALUES ('kept')")
    raw.commit()
    raw.close()
    db = telemetry.connect(path)
    assert telemetry.schema_version(db) == telemetry.SCHEMA_VERSION == 1
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT x FROM notes").fetchone() == ("kept",)
    telemetry.insert(db, [context(time=1.0, item="a")])
    db.close()
    assert telemetry.migrate(sqlite3.connect(path, isolation_level=None)) == 1  # already current: nothing to do
    assert [e.item for e in telemetry.read_events(path)] == ["a"]

    newer = sqlite3.connect(path, isolation_level=None)
    newer.execute("UPDATE schema SET version = 99")
    newer.close()
    with pytest.raises(SchemaError, match="version 99"):
        telemetry.connect(path)


def test_a_migration_step_that_fails_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "events.sqlite3"

    def broken(db):
        db.execute("CREATE TABLE events (id INTEGER)")
        raise RuntimeError("boom")

    monkeypatch.setattr(telemetry, "MIGRATIONS", (broken,))
    with pytest.raises(RuntimeError, match="boom"):
        telemetry.connect(path)
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == []


def test_not_an_event_store_is_a_clear_error(tmp_path):
    path = tmp_path / "events.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SchemaError, match="not a titans-lsp event store"):
        telemetry.connect(path)


def test_tracker_dismisses_on_a_newer_request_and_records_accepts(tmp_path):
    path = tmp_path / "events.sqlite3"
    recorder = EventRecorder(path)
    tracker = AcceptanceTracker(recorder)
    uri = "file:///ws/app.py"
    [first] = tracker.shown(uri, ["foo()"], context())
    assert tracker.superseded(uri) == 1  # the next request for the document: `first` was not accepted
    [second] = tracker.shown(uri, ["bar(x)"], context(mode="hybrid"))
    assert tracker.accepted(second) is True
    assert tracker.accepted(second) is False  # once
    assert tracker.superseded(uri) == 0  # accepted items are not dismissed
    assert tracker.accepted("nope") is False
    assert recorder.flush()
    events = telemetry.read_events(path)
    assert [(e.item, e.kind) for e in events] == [(first, "shown"), (first, "dismissed"), (second, "shown"),
                                                 (second, "accepted")]
    assert events[3].chars_accepted == len("bar(x)") and events[1].chars_accepted == 0
    assert all(e.text is None for e in events), "no code text without storeText"
    assert {e.file for e in events} == {events[0].file} and "app.py" not in events[0].file
    assert events[0].extension == ".py"
    assert recorder.today("/ws", "concat") == (1, 0) and recorder.today("/ws", "hybrid") == (1, 1)
    recorder.close()
    # A new recorder (server restart) seeds today's counts from the file.
    again = EventRecorder(path)
    again.record([])
    assert again.flush() and again.today("/ws", "hybrid") == (1, 1)
    again.close()


def test_an_item_the_user_types_along_is_still_pending_not_dismissed(tmp_path):
    recorder = EventRecorder(tmp_path / "events.sqlite3")
    tracker = AcceptanceTracker(recorder)
    uri = "file:///ws/app.py"
    [item] = tracker.shown(uri, ["print(area)"], context(), prefix="x = 1\n")
    assert tracker.superseded(uri, "x = 1\nprint(") == 0  # typed 6 of its characters: still on screen
    assert tracker.superseded(uri, "x = 1\nprint(ar") == 0
    assert tracker.accepted(item) is True  # and then accepted: no dismissal in between
    [other] = tracker.shown(uri, ["total"], context(), prefix="y = ")
    assert tracker.superseded(uri, "y = tx") == 1  # typed something else: dismissed
    [third] = tracker.shown(uri, ["abc"], context(), prefix="z = ")
    assert tracker.superseded(uri, "z = abc") == 1  # typed it all without accepting: dismissed
    assert tracker.closed(uri) == 0
    assert recorder.flush()
    kinds = [(e.item, e.kind) for e in telemetry.read_events(recorder.path)]
    assert kinds == [(item, "shown"), (item, "accepted"), (other, "shown"), (other, "dismissed"), (third, "shown"),
                     (third, "dismissed")]
    recorder.close()


def test_text_is_stored_only_when_asked_and_nothing_is_written_without_events(tmp_path):
    path = tmp_path / "events.sqlite3"
    recorder = EventRecorder(path)
    assert recorder.flush() and not path.exists()  # no event, no file
    tracker = AcceptanceTracker(recorder)
    tracker.shown("file:///ws/a.ts", ["x + 1"], context(text=""))
    assert recorder.flush()
    [event] = telemetry.read_events(path)
    assert event.text == "x + 1" and event.extension == ".ts"
    recorder.close()


def test_recording_is_cheap_on_the_request_path(tmp_path):
    """The tracker's calls only queue events: each must cost well under a millisecond."""
    recorder = EventRecorder(tmp_path / "events.sqlite3")
    tracker = AcceptanceTracker(recorder)
    costs = []
    for n in range(300):
        uri = f"file:///ws/f{n % 7}.py"
        started = time.perf_counter()
        tracker.superseded(uri, "x = ")
        [item] = tracker.shown(uri, ["x" * 20], context(), prefix="y = ")
        if n % 3 == 0:
            tracker.accepted(item)
        costs.append((time.perf_counter() - started) * 1000)
    costs.sort()
    assert costs[len(costs) // 2] < 1.0, costs[len(costs) // 2]
    assert recorder.flush(timeout=30)
    kinds = [e.kind for e in telemetry.read_events(recorder.path)]
    assert recorder.written == len(kinds) and kinds.count("shown") == 300 and kinds.count("accepted") == 100
    assert 200 - 7 <= kinds.count("dismissed") <= 200  # the last item of each of the 7 files is still on screen
    recorder.close()


def test_wilson_interval_matches_the_formula():
    low, high = wilson(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)  # the textbook example (p = 0.8, n = 10)
    assert wilson(0, 0) == (None, None)
    low, high = wilson(0, 20)
    assert low == 0.0 and 0.15 < high < 0.17


def test_editing_hours_leave_pauses_out():
    assert editing_hours([0, 60, 120, 10_000, 10_060]) == pytest.approx(180 / 3600)


def test_items_accept_wins_over_an_earlier_dismissal_and_since_filters():
    events = [context(time=1, item="a"), context(time=2, item="a", kind="dismissed"),
              context(time=3, item="a", kind="accepted", chars_accepted=5), context(time=4, item="b"),
              context(time=5, item="c", kind="accepted")]  # c's shown event is not in range: ignored
    items = items_of(events)
    assert [(i.shown.item, i.accepted, i.decided) for i in items] == [("a", True, True), ("b", False, False)]
    report = acceptance_report(events)
    assert report["overall"]["decided"] == 1 and report["overall"]["rate"] == 1.0
    now = 1_000_000.0
    assert parse_since("7d", now) == now - 7 * 86400 and parse_since("30m", now) == now - 1800
    with pytest.raises(ValueError, match="duration"):
        parse_since("last week", now)


def _experiment_events(rng: random.Random, rates: dict[str, float], files: int, per_file: int,
                       unit: str = "request") -> list[Event]:
    events, t = [], 0.0
    modes = list(rates)
    for f in range(files):
        for k in range(per_file):
            mode = modes[(f if unit == "file" else rng.randrange(len(modes))) % len(modes)]
            item = f"{f}-{k}"
            t += 10
            shown = context(time=t, item=item, mode=mode, file=f"file{f}", experiment=f"{','.join(modes)}/{unit}")
            accepted = rng.random() < rates[mode]
            events += [shown, context(time=t + 1, item=item, mode=mode, file=f"file{f}",
                                      kind="accepted" if accepted else "dismissed", chars_accepted=10 * accepted)]
    return events


@pytest.mark.parametrize("unit", ["request", "file"])
def test_experiment_detects_a_real_difference_and_says_when_there_are_too_few(unit):
    rng = random.Random(1)
    events = _experiment_events(rng, {"concat": 0.2, "hybrid": 0.5}, files=40, per_file=40, unit=unit)
    [comparison] = compare_arms(items_of(events), ["concat", "hybrid"], unit)
    assert comparison.too_few is None and comparison.ci95[0] > 0, comparison
    assert comparison.conclusion == "hybrid is accepted more often than concat"
    few = items_of(_experiment_events(rng, {"concat": 0.2, "hybrid": 0.5}, files=3, per_file=6, unit=unit))
    [comparison] = compare_arms(few, ["concat", "hybrid"], unit)
    assert comparison.conclusion.startswith("too few events for a conclusion"), comparison


@pytest.mark.parametrize("unit", ["request", "file"])
def test_experiment_interval_covers_the_true_difference_about_95_percent_of_the_time(unit):
    covered = 0
    for seed in range(120):
        events = _experiment_events(random.Random(seed), {"concat": 0.2, "hybrid": 0.5}, files=20, per_file=20, unit=unit)
        [comparison] = compare_arms(items_of(events), ["concat", "hybrid"], unit)
        covered += comparison.ci95[0] < 0.3 < comparison.ci95[1]
    assert 0.90 <= covered / 120 <= 0.99, covered


def test_experiment_with_no_difference_is_not_called_one():
    rng = random.Random(2)
    items = items_of(_experiment_events(rng, {"concat": 0.3, "memory": 0.3}, files=30, per_file=30))
    [comparison] = compare_arms(items, ["concat", "memory"], "request")
    assert comparison.ci95[0] < 0 < comparison.ci95[1]
    assert comparison.conclusion.startswith("no difference")


def test_stats_command_prints_a_table_json_and_a_plot(tmp_path, capsys):
    path = tmp_path / "events.sqlite3"
    rng = random.Random(3)
    now = time.time()
    events = [Event(**{**e.__dict__, "time": now - 3600 + e.time}) for e in
              _experiment_events(rng, {"concat": 0.25, "hybrid": 0.45}, files=10, per_file=20)]
    db = telemetry.connect(path)
    telemetry.insert(db, events)
    db.close()
    assert main(["stats", "--db", str(path), "--since", "7d", "--experiment", "--plot", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out
    assert "concat" in out and "hybrid" in out and "95% CI" in out and "experiment concat,hybrid/request" in out
    assert (tmp_path / "a.png").stat().st_size > 1000
    assert main(["stats", "--db", str(path), "--json", "--by", "language"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["groups"]) == ["python"] and report["overall"]["shown"] == 200
    assert report["overall"]["decided"] == 200 and 0 < report["overall"]["rate"] < 1
    assert main(["stats", "--db", str(tmp_path / "missing.sqlite3")]) == 1
    assert "no event store" in capsys.readouterr().err
    assert main(["stats", "--db", str(path), "--since", "yesterday-ish"]) == 1
