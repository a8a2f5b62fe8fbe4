"""Issue 16: a fuzz test of the LSP surface. Hypothesis sends random sequences of messages (documents
opened, changed and closed; completions at random positions, also for documents never opened;
cursor notifications; settings and command arguments of any shape; unknown methods; junk bytes)
to one real `titans-lsp serve --stdio` process with a tiny model. After every sequence each
request must have been answered and the server must still answer a status request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raw_lsp import StdioServer

pytestmark = [pytest.mark.timeout(300)]

ROOT_FILES = {"pkg/util.py": "def helper(x):\n    return x * 2\n", "app.py": "from pkg.util import helper\n\nhelper(\n"}
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
                           | st.text(max_size=20), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
setting_values = st.one_of(st.sampled_from(["none", "concat", "memory", "hybrid", "ablation", "bm25", "imports",
                                            "auto", "never", "always", "on", "off", "16", "7.5", ""]),
                           st.integers(-5, 5000), st.floats(allow_nan=True), st.booleans(), st.none(), json_values)
settings_dicts = st.dictionaries(st.sampled_from(["mode", "retriever", "maxNewTokens", "contextBudget", "multiline",
                                                  "fim", "unknownKey"]), setting_values, max_size=4)
positions = st.fixed_dictionaries({"line": st.integers(-3, 2**31 + 5), "character": st.integers(-3, 2**31 + 5)}) \
    | st.fixed_dictionaries({"line": st.integers(0, 6), "character": st.integers(0, 30)}) | json_values
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60) \
    | st.sampled_from(list(ROOT_FILES.values()))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_llama_dir):
    tmp = tmp_path_factory.mktemp("fuzz")
    root = tmp / "ws"
    for rel, text in ROOT_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    srv = StdioServer(tiny_llama_dir, tmp / "cache", tmp / "serve.log",
                      {None: {"mode": "concat", "maxNewTokens": 8}})
    assert "result" in srv.client.initialize([root])
    srv.root = root
    yield srv
    srv.close()


def ops(root: Path):
    uris = st.sampled_from([(root / "app.py").as_uri(), (root / "new.py").as_uri(), "file:///etc/passwd",
                            "untitled:Untitled-1", "not a uri"])
    doc = st.fixed_dictionaries({"uri": uris})
    return st.one_of(
        st.tuples(st.just("notify"), st.just("textDocument/didOpen"),
                  st.fixed_dictionaries({"textDocument": st.fixed_dictionaries(
                      {"uri": uris, "languageId": st.sampled_from(["python", "typescript", "x"]),
                       "version": st.integers(0, 100), "text": texts})})),
        st.tuples(st.just("notify"), st.just("textDocument/didChange"),
                  st.fixed_dictionaries({"textDocument": st.fixed_dictionaries({"uri": uris, "version": st.integers(0, 100)}),
                                         "contentChanges": st.lists(st.fixed_dictionaries({"text": texts}), max_size=2)})),
        st.tuples(st.just("notify"), st.just("textDocument/didClose"), st.fixed_dictionaries({"textDocument": doc})),
        st.tuples(st.just("request"), st.just("textDocument/inlineCompletion"),
                  st.fixed_dictionaries({"textDocument": doc, "position": positions,
                                         "context": st.fixed_dictionaries({"triggerKind": st.sampled_from([1, 2, 7])})})),
        st.tuples(st.just("request"), st.just("textDocument/completion"),
                  st.fixed_dictionaries({"textDocument": doc, "position": positions})),
        st.tuples(st.just("notify"), st.just("titans/cursor"),
                  st.fixed_dictionaries({"textDocument": doc, "position": positions}) | json_values),
        st.tuples(st.just("config"), st.just(""), settings_dicts),
        st.tuples(st.just("request"), st.just("workspace/executeCommand"),
                  st.fixed_dictionaries({"command": st.sampled_from(["titans-lsp.primeWorkspace", "titans-lsp.resetMemory",
                                                                     "titans-lsp.status", "nope"]),
                                         "arguments": st.lists(json_values | st.fixed_dictionaries(
                                             {"folder": st.sampled_from([root.as_uri(), "file:///x"]) | json_values}),
                                             max_size=2)})),
        st.tuples(st.just("request"), st.sampled_from(["titans/unknown", "textDocument/hover", "$/weird"]), json_values),
        st.tuples(st.just("junk"), st.just(""), st.binary(max_size=40).map(lambda b: b.replace(b":", b"."))),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_message_sequences_leave_the_server_answering(server, data):
    client = server.client
    pending = []
    for kind, method, params in data.draw(st.lists(ops(server.root), min_size=1, max_size=8)):
        if kind == "notify":
            client.notify(method, params)
        elif kind == "request":
            pending.append(client.send_request(method, params))
        elif kind == "config":
            client.settings[None] = params
            client.notify("workspace/didChangeConfiguration", {"settings": None})
        else:
            client.send_bytes(params + b"\r\n\r\n")  # junk where a header belongs
    for msg_id in pending:
        reply = client.response(msg_id, timeout=60)
        assert ("result" in reply) != ("error" in reply), reply
        if "error" in reply:
            assert "traceback" not in json.dumps(reply).lower()
    status = client.status()
    assert status["version"] and server.proc.poll() is None
