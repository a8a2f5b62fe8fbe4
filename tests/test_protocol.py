"""titans-lsp's own messages: one wire format, strict parsing, for the server, the bench and tests."""

from __future__ import annotations

from collections import namedtuple

import pytest

from titans_lsp.protocol import (BackendStatus, CompletionReport, CursorParams, FolderArgs, PrepareReport, ProtocolError, StatusParams,
                                 to_plain)


def report(**changes) -> CompletionReport:
    values = dict(folder="file:///r", uri="file:///r/app.py", version=7, mode="concat", prompt_tokens=120,
                  context_chars=300, reused=100, prefilled=20, decoded=9, accepted=3, latency_ms=50.0, engine_ms=41.5,
                  items=1, timings={"prefill_s": 10.0})
    return CompletionReport(**(values | changes))


def test_status_goes_out_in_camel_case_and_comes_back_typed():
    status = StatusParams(folder="file:///r", mode="concat", indexing={"done": 1, "total": 2}, priming=None,
                          last_latency_ms=50.0, last_completion=report())
    wire = status.to_wire()
    assert wire["lastLatencyMs"] == 50.0 and wire["lastCompletion"]["promptTokens"] == 120
    assert "lastPrepare" not in wire  # absent, not null
    assert CompletionReport.from_wire(wire) == report()
    # pygls hands an unknown notification's params over as namedtuples
    last = wire["lastCompletion"]
    Params = namedtuple("Params", ["folder", "mode", "lastCompletion"])
    Last = namedtuple("Last", list(last))
    assert CompletionReport.from_wire(Params("file:///r", "concat", Last(**last))) == report()


def test_status_carries_the_backend_state_when_known():
    base = dict(folder="file:///r", mode="none", indexing=None, priming=None, last_latency_ms=None)
    assert "backend" not in StatusParams(**base).to_wire()  # absent, not null
    info = {"name": "llamacpp", "model": "m.gguf", "url": "http://127.0.0.1:9", "state": "restarting",
            "error": "llama-server stopped (exit code -9); restarting", "pid": 7, "restarts": 1}
    wire = StatusParams(**base, backend=BackendStatus.from_describe(info, last_error=None)).to_wire()
    assert wire["backend"] == {"name": "llamacpp", "state": "restarting", "model": "m.gguf", "url": "http://127.0.0.1:9",
                               "lastError": "llama-server stopped (exit code -9); restarting", "serving": "llamacpp",
                               "reason": None}
    shown = BackendStatus.from_describe(info, last_error="llama-server at x: connection refused")
    assert shown.last_error == "llama-server at x: connection refused"  # the error shown to the user wins


def test_status_without_or_with_a_broken_completion_report_gives_none():
    assert CompletionReport.from_wire({"folder": "file:///r", "mode": "none"}) is None
    assert CompletionReport.from_wire({"lastCompletion": {"uri": "file:///r/app.py"}}) is None
    assert CompletionReport.from_wire(["not", "a", "dict"]) is None


def test_prepare_report_wire_names():
    wire = to_plain(PrepareReport(folder="f", uri="u", line=3, character=4, version=2, mode="none", prompt_tokens=9,
                                  prefilled=9, reused=0, ms=1.5))
    assert wire == {"folder": "f", "uri": "u", "line": 3, "character": 4, "version": 2, "mode": "none",
                    "promptTokens": 9, "prefilled": 9, "reused": 0, "ms": 1.5}


def test_cursor_params_are_parsed_strictly():
    good = {"textDocument": {"uri": "file:///r/app.py"}, "position": {"line": 3, "character": 0}}
    assert CursorParams.from_wire(good) == CursorParams("file:///r/app.py", 3, 0)
    assert CursorParams.from_wire(good).to_wire() == good
    for bad in ({"textDocument": {"uri": "file:///r/app.py"}}, {"position": {"line": 1, "character": 1}},
                {"textDocument": {"uri": 5}, "position": {"line": 1, "character": 1}},
                {"textDocument": {"uri": "u"}, "position": {"line": -1, "character": 0}},
                {"textDocument": {"uri": "u"}, "position": {"line": "3", "character": 0}},
                {"textDocument": {"uri": "u"}, "position": {"line": True, "character": 0}}, None, [1, 2]):
        with pytest.raises(ProtocolError, match="titans/cursor"):
            CursorParams.from_wire(bad)


def test_command_arguments_are_validated():
    assert FolderArgs.from_command("c", ()) == FolderArgs()
    assert FolderArgs.from_command("c", [{"folder": "file:///r", "force": True}]) == FolderArgs("file:///r", True)
    assert FolderArgs.from_command("c", ["file:///r"]) == FolderArgs("file:///r")
    for bad in ([123], [{"folder": 5}], [{"folder": ""}], [{"force": "yes"}], [{"folder": "f", "extra": 1}],
                [{"folder": "a"}, {"folder": "b"}], "file:///r"):
        with pytest.raises(ProtocolError, match="^c: "):
            FolderArgs.from_command("c", bad)
