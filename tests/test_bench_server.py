"""`titans-lsp bench --server`: the per-request token figures come from the server's titans/status
notifications, matched to their request by document version (tiny model, short trace)."""

from __future__ import annotations

import asyncio

import pytest

from server_client import FIXTURE_FILES, write_fixture
from titans_lsp.bench import FileTrace, Keystroke, summarize
from titans_lsp.benchserver import replay_server

pytest.importorskip("titans_lsp.retrieval.index", reason="the workspace index (branch retrieval) is not merged yet")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("prewarm", [False, True])
def test_server_replay_reports_token_figures_per_request(tmp_path, tiny_llama_dir, prewarm):
    root = write_fixture(tmp_path / "repo")
    text, tail = FIXTURE_FILES["app.py"], "    print(area_of_circle("
    # 1 s between keys: the tiny model answers each request (~0.1 s) before the next key, even on a loaded machine
    typed = range(len(tail) - 4, len(tail) + 1)
    keys = [Keystroke(at=1.0 * i, prefix=text + tail[:n], suffix="") for i, n in enumerate(typed)]
    serve = ["--model", str(tiny_llama_dir), "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    records, rss = asyncio.run(replay_server([FileTrace("app.py", keys)], root, "none", serve, debounce=0.1,
                                             prewarm=prewarm, think=3.0))
    answered = [r for r in records if r.latency_ms is not None]
    assert len(answered) >= 2 and rss and rss > 0
    for record in answered:
        assert record.decoded > 0 and record.prefilled + record.reused > 0
        assert 0 < record.engine_ms <= record.latency_ms
    first = records[0]
    assert first.first_in_file and not any(r.first_in_file for r in records[1:])
    if prewarm:  # titans/cursor at the typing position 3 s before the first key: only the key is prefilled
        assert first.latency_ms is None or (first.reused > 0 and first.prefilled <= 3)
    else:  # the document's first request: no cache
        assert first.latency_ms is None or (first.reused == 0 and first.prefilled > 0)
    assert all(r.reused > 0 for r in answered[1:])  # later keystrokes reuse its cache
    summary = summarize(records)
    assert summary["decoded_per_request"] > 0 and summary["reused_per_request"] > 0
    assert summary["overhead_p50_ms"] >= 0 and len(summary["first_in_file_ms"]) == int(first.latency_ms is not None)


@pytest.mark.timeout(240)
def test_server_replay_fills_the_event_store_and_accepts_what_the_truth_starts_with(tmp_path, tiny_llama_dir):
    from titans_lsp import telemetry
    from titans_lsp.stats import items_of

    root = write_fixture(tmp_path / "repo")
    text, tail = FIXTURE_FILES["app.py"], "    print(area_of_circle("
    typed = range(len(tail) - 4, len(tail) + 1)
    keys = [Keystroke(at=1.0 * i, prefix=text + tail[:n], suffix=tail[n:] + "1.0))\n") for i, n in enumerate(typed)]
    serve = ["--model", str(tiny_llama_dir), "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    db, figures = tmp_path / "events.sqlite3", {}
    records, _ = asyncio.run(replay_server([FileTrace("app.py", keys)], root, "none", serve, debounce=0.1,
                                           prewarm=False, events_db=str(db), figures=figures))
    answered = [r for r in records if r.latency_ms is not None]
    items = items_of(telemetry.read_events(db))
    assert figures["shown"] >= 1
    # Every suggestion the replayed user saw is in the store (and the warm-up request's, if it had
    # one); each was accepted (exactly those the user took) or dismissed (by the next request or on close).
    assert len(items) - figures["shown"] in (0, 1)
    assert sum(i.accepted for i in items) == figures["accepted"]
    assert all(i.decided for i in items) and not any(i.accepted and i.dismissed for i in items)
    cost = figures["telemetry"]["costMs"]  # what recording cost the server per request, measured in this run
    assert cost["dismiss"]["calls"] >= len(answered) and cost["shown"]["calls"] >= 1
    assert cost["perRequestP50"] < 1.0, cost
    # Without an events file the bench's server records nothing (the user's store stays the user's).
    asyncio.run(replay_server([FileTrace("app.py", keys[:2])], root, "none", serve, debounce=0.1, prewarm=False))
    assert not telemetry.default_path(str(tmp_path / "cache")).exists()
