"""`titans-lsp bench` in-process: the replay drives the shared engine, pre-warms each file's typing
position when asked, and its summary separates the first request per file (tiny model)."""

from __future__ import annotations

import pytest

from titans_lsp.bench import FileTrace, Keystroke, replay, start_of, summarize
from titans_lsp.engine import CompletionEngine, CompletionRequest, CompletionSettings, Workspace
from titans_lsp.model.loading import load_model


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    return CompletionEngine(load_model(str(tiny_llama_dir), device="cpu"))


def _trace() -> FileTrace:
    text = "".join(f"def handler_{i}(request):\n    return request.value + {i}\n\n" for i in range(30))
    typed = "def main():\n    return handler_1("
    # 0.5 s between keys: the tiny model answers each request before the next key
    keys = [Keystroke(at=0.5 * i, prefix=text + typed[:n], suffix="") for i, n in enumerate(range(len(typed) - 3, len(typed) + 1))]
    return FileTrace("app.py", keys)


@pytest.mark.parametrize("prewarm", [False, True])
def test_replay_prewarms_the_first_request_of_a_file(engine, prewarm):
    trace = _trace()
    assert start_of(trace)[0] + trace.keys[0].prefix[-1] == trace.keys[0].prefix
    workspace = Workspace()
    settings = CompletionSettings(mode="none", max_new_tokens=8)

    def request(path, prefix, suffix, cancel):
        return CompletionRequest(prefix=prefix, suffix=suffix, path=path, settings=settings, cancel=cancel, doc_key=path,
                                 automatic=True)

    records = replay([trace], lambda *a: engine.complete(request(*a), workspace), debounce=0.05,
                     prewarm=(lambda *a: engine.prepare(request(*a), workspace)) if prewarm else None, think=0.5)
    answered = [r for r in records if r.latency_ms is not None]
    assert len(answered) >= 3 and records[0].first_in_file and records[0].latency_ms is not None
    first = records[0]
    if prewarm:
        assert first.reused > 200 and first.prefilled <= 3
    else:
        assert first.reused == 0 and first.prefilled > 200
    summary = summarize(records)
    assert summary["first_in_file_ms"] == [round(first.latency_ms, 1)]
    assert summary["later_requests"]["p50_ms"] is not None and 0 <= summary["overhead_share_p50"] < 1


def test_request_records_serialize_to_json(engine):
    import json

    from titans_lsp.bench import RequestRecord, asdict_records

    records = [RequestRecord(sent=10.0, finished=10.25, path="a.py", engine_ms=240.0, timings_ms={"prefill_s": 200.0}),
               RequestRecord(sent=11.0, cancelled=True, future=object())]
    rows = json.loads(json.dumps(asdict_records(records)))
    assert rows[0]["sent_ms"] == 0.0 and rows[0]["latency_ms"] == 250.0 and rows[0]["timings_ms"] == {"prefill_s": 200.0}
    assert rows[1]["sent_ms"] == 1000.0 and rows[1]["latency_ms"] is None and rows[1]["cancelled"]
    assert "future" not in rows[1] and "prefix" not in rows[0]
