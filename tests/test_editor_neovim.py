"""End-to-end: headless Neovim with the Lua plugin in editors/neovim, driven as a user would type.

Neovim runs headless with --listen; the test sends keys with `nvim --server SOCK --remote-send` and
reads state with --remote-expr. The server is `titans-lsp serve --stdio` from this checkout, with a
cache of its own (sharing the converted model) so its event store holds this test's events only.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from editor_tools import (REPO, TS_REPORT_LINE, assert_events_match, editor_env, find_modes, make_workspace,
                          private_cache, require, server_command, stop_process)

pytestmark = [pytest.mark.editor, pytest.mark.timeout(300)]

INIT_LUA = """
vim.opt.rtp:prepend({plugin_dir})
vim.opt.swapfile = false
require('titans_lsp').setup({{
  cmd = {cmd},
  settings = {{ titansLsp = {{ mode = 'concat', maxNewTokens = 16, multiline = 'never',
    telemetry = {{ enabled = true, storeText = true }} }} }},
}})

-- Probes the test reads through --remote-expr.
_G.T = {{}}
function T.ready()
  local c = vim.lsp.get_clients({{ name = 'titans', bufnr = 0 }})[1]
  return c ~= nil and c.initialized == true and vim.lsp.inline_completion.is_enabled({{ bufnr = 0 }})
end
function T.ghost()
  local ns = vim.api.nvim_get_namespaces()['nvim.lsp.inline_completion']
  if not ns then return '' end
  local text = {{}}
  for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, {{ details = true }})) do
    for _, chunk in ipairs(mark[4].virt_text or {{}}) do table.insert(text, chunk[1]) end
    for _, line in ipairs(mark[4].virt_lines or {{}}) do
      table.insert(text, '\\n')
      for _, chunk in ipairs(line) do table.insert(text, chunk[1]) end
    end
  end
  return table.concat(text)
end
function T.state()
  return vim.json.encode({{ mode = vim.api.nvim_get_mode().mode, line = vim.api.nvim_get_current_line(),
    lines = vim.api.nvim_buf_get_lines(0, 0, -1, false) }})
end
function T.cursor()
  local pos = vim.api.nvim_win_get_cursor(0)
  return vim.json.encode({{ uri = vim.uri_from_bufnr(0), line = pos[1] - 1, character = pos[2] }})
end
function T.status()
  local answers = vim.lsp.buf_request_sync(0, 'workspace/executeCommand',
    {{ command = 'titans-lsp.status', arguments = {{}} }}, 20000)
  for _, answer in pairs(answers or {{}}) do
    if answer.result then return vim.json.encode(answer.result) end
    if answer.err then return vim.json.encode({{ error = answer.err.message }}) end
  end
  return ''
end
"""


def lua_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid Lua string literal for these paths


class Nvim:
    def __init__(self, nvim: str, sock: Path):
        self.nvim, self.sock = nvim, sock

    def send(self, keys: str) -> None:
        subprocess.run([self.nvim, "--server", str(self.sock), "--remote-send", keys], check=True, timeout=30)

    def lua(self, expr: str) -> str:
        out = subprocess.run(
            [self.nvim, "--server", str(self.sock), "--remote-expr", f"luaeval({json.dumps(expr)})"],
            check=True, timeout=60, capture_output=True, text=True,
        )
        return out.stdout.strip()

    def wait_for(self, what: str, probe, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = probe()
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_neovim_ghost_text_tab_and_mode(tmp_path: Path):
    nvim_bin = require("NVIM")
    workspace = make_workspace(tmp_path / "shapes")
    server_log = tmp_path / "server.log"
    cache = private_cache(tmp_path)
    cmd = server_command(server_log) + ["--cache-dir", str(cache)]
    init = tmp_path / "init.lua"
    init.write_text(INIT_LUA.format(
        plugin_dir=lua_str(str(REPO / "editors" / "neovim")),
        cmd="{" + ", ".join(lua_str(part) for part in cmd) + "}",
    ))
    sock = tmp_path / "nvim.sock"
    env = editor_env(tmp_path)
    proc = subprocess.Popen(
        [nvim_bin, "--headless", "--listen", str(sock), "-u", str(init), str(workspace / "main.py")],
        cwd=workspace, env=env, stdin=subprocess.DEVNULL,
        stdout=open(tmp_path / "nvim.out", "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        nv = Nvim(nvim_bin, sock)
        t0 = time.monotonic()
        nv.wait_for("the socket", sock.exists, 30)
        nv.wait_for("the titans client to initialize", lambda: nv.lua("T.ready()") == "true", 120)
        t_ready = time.monotonic() - t0

        # A user opens a new line under the last one and starts typing: ghost text appears.
        nv.send("Goperimeter = ")
        ghost = nv.wait_for("ghost text from the server", lambda: nv.lua("T.ghost()"), 120)
        before = json.loads(nv.lua("T.state()"))
        assert before["mode"] == "i", before
        assert before["line"].endswith("perimeter = "), before

        # Tab accepts it: the ghost text's first line is now in the buffer.
        nv.send("<Tab>")
        after = nv.wait_for("the accepted text", lambda: (s := json.loads(nv.lua("T.state()")))["line"] != before["line"] and s, 30)
        first = ghost.split("\n")[0]
        assert after["line"].startswith(before["line"]), (before, after)
        assert first.strip() and first.strip() in after["line"], (ghost, after)
        assert "\t" not in after["line"], "Tab was inserted instead of accepting the suggestion"

        # A second suggestion the user does not take: a new line, ghost text, then a key that does not
        # follow it. The next request for the document dismisses it.
        nv.send("<Esc>oradius = ")
        dismissed = nv.wait_for("a second ghost text", lambda: nv.lua("T.ghost()"), 120)
        time.sleep(1.0)  # let the answer to the last key settle
        dismissed = nv.lua("T.ghost()") or dismissed
        nv.send("@" if not dismissed.startswith("@") else "!")

        # :TitansMode memory reaches the server: its status command reports the new mode.
        assert "memory" not in find_modes(json.loads(nv.lua("T.status()"))), "memory before switching"
        nv.send("<Esc>:TitansMode memory<CR>")
        nv.wait_for("the server to report mode memory",
                    lambda: "memory" in find_modes(json.loads(nv.lua("T.status()") or "{}")), 60)

        # The cursor moves to another line and rests there (no typing): the plugin sends
        # titans/cursor and the server pre-warms the prompt at that place (status: lastPrepare).
        nv.send(":call cursor(6, 9)<CR>")
        cursor = nv.wait_for("the cursor on line 6", lambda: (c := json.loads(nv.lua("T.cursor()")))["line"] == 5 and c, 10)
        assert cursor["character"] == 8, cursor
        prepared = nv.wait_for(
            "the server to report a pre-warm at the cursor",
            lambda: (p := json.loads(nv.lua("T.status()") or "{}").get("lastPrepare")) and p["line"] == cursor["line"] and p,
            60,
        )
        assert prepared["uri"] == cursor["uri"], (prepared, cursor)
        assert prepared["character"] == cursor["character"], (prepared, cursor)
        assert prepared["promptTokens"] > 0, prepared

        # A TypeScript file of the same workspace: back to concat, open report.ts, type in report().
        nv.send("<Esc>:TitansMode concat<CR>")
        nv.wait_for("the server to report mode concat",
                    lambda: [f["mode"] for f in json.loads(nv.lua("T.status()") or "{}").get("folders", [])] == ["concat"],
                    60)
        nv.send("<Esc>:edit report.ts<CR>")
        nv.wait_for("the titans client on report.ts", lambda: nv.lua("T.ready()") == "true"
                    and json.loads(nv.lua("T.cursor()"))["uri"].endswith("/report.ts"), 60)
        nv.send(f"{TS_REPORT_LINE}GA<CR>const perimeter = ")
        ts_ghost = nv.wait_for("ghost text in report.ts", lambda: nv.lua("T.ghost()"), 120)
        ts_before = json.loads(nv.lua("T.state()"))
        assert ts_before["line"].endswith("const perimeter = "), ts_before
        nv.send("<Tab>")
        ts_after = nv.wait_for("the accepted TypeScript text",
                               lambda: (s := json.loads(nv.lua("T.state()")))["line"] != ts_before["line"] and s, 30)
        assert ts_ghost.split("\n")[0].strip() in ts_after["line"], (ts_ghost, ts_after)
        last = json.loads(nv.lua("T.status()"))["lastCompletion"]
        assert last["uri"].endswith("/report.ts") and last["language"] == "typescript", last
        nv.send("<Esc>")

        # The event store holds exactly what the user did: the two suggestions taken with Tab
        # accepted (the plugin's accept ran the item's titans-lsp.accepted command), the one typed
        # over dismissed, and every other suggestion shown while typing dismissed or still pending.
        outcome = assert_events_match(cache, accepted=[ghost, ts_ghost], dismissed=[dismissed])
        print(f"neovim events: {outcome}")
        print(f"neovim: client ready in {t_ready:.1f}s; ghost {ghost!r}; accepted line {after['line']!r}; "
              f"pre-warm {prepared}; TypeScript ghost {ts_ghost!r}, line {ts_after['line']!r}")
    finally:
        try:
            nv.send("<Esc>:qa!<CR>")
            proc.wait(timeout=10)
        except Exception:
            pass
        stop_process(proc)
        if server_log.exists():
            print("server log tail:\n" + "\n".join(server_log.read_text(errors="replace").splitlines()[-20:]))


# ---- the plugin's own behaviour, in seconds: setup() against stand-in servers ----
UNIT_SCRIPT = REPO / "tests" / "e2e" / "nvim_unit.lua"
LSP_STUB = REPO / "tests" / "e2e" / "lsp_stub.py"


def run_plugin(tmp_path: Path, scenario: dict) -> dict:
    """setup() with ``scenario`` (setup options, exec, timeouts) in a headless Neovim that opens a
    Python file; what the user saw: notifications, the statusline, the commands that exist."""
    import sys

    nvim_bin = require("NVIM")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "main.py").write_text("x = 1\n")
    result = tmp_path / "result.json"
    env = dict(editor_env(tmp_path), PLUGIN=str(REPO / "editors" / "neovim"), FILE=str(tmp_path / "main.py"),
               RESULT=str(result), SCENARIO=json.dumps(scenario).replace("PYTHON", sys.executable))
    run = subprocess.run([nvim_bin, "--headless", "--clean", "-l", str(UNIT_SCRIPT)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and result.exists(), (run.stdout[-2000:], run.stderr[-2000:])
    return json.loads(result.read_text())


def errors(result: dict, level: int = 4) -> list[str]:
    """The notifications at ``level`` (vim.log.levels: 3 WARN, 4 ERROR)."""
    return [m["msg"] for m in result["messages"] if m["level"] == level]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cmd, wanted", [
    (["/no/such/titans-lsp", "serve", "--stdio"], "cmd: /no/such/titans-lsp is not an executable"),
    ("titans-lsp serve --stdio", "cmd must be a list like"),
])
def test_neovim_cmd_that_cannot_start_is_a_visible_error(tmp_path: Path, cmd, wanted):
    # Neovim's vim.lsp.enable only logs an unusable cmd (lsp.log) and starts nothing: was a silent nothing
    result = run_plugin(tmp_path, {"setup": {"cmd": cmd}, "wait_ms": 500})
    assert result["setup_ok"] and not result["attached"], result
    assert any(message.startswith(f"titans-lsp: {wanted}") for message in errors(result)), result["messages"]
    assert result["statusline"] != "Titans: starting", result  # nothing is starting


@pytest.mark.timeout(60)
def test_neovim_unreadable_auth_token_file_is_one_line_and_setup_goes_on(tmp_path: Path):
    missing = tmp_path / "no-token"
    result = run_plugin(tmp_path, {"setup": {"cmd": ["/no/such/titans-lsp"], "auth_token_file": str(missing)},
                                   "wait_ms": 200, "settle_ms": 200})
    assert result["setup_ok"], result["setup_error"]  # was: E484 out of setup(), the :Titans commands never made
    assert f"titans-lsp: auth_token_file {missing}: cannot read it" in "\n".join(errors(result)), result["messages"]
    assert "TitansMode" in result["commands"], result["commands"]


@pytest.mark.timeout(60)
def test_neovim_server_that_exits_at_start_shows_in_the_statusline(tmp_path: Path):
    crash = ["sh", "-c", "echo 'titans-lsp serve: error: --model x: no such model' >&2; exit 3"]
    result = run_plugin(tmp_path, {"setup": {"cmd": crash}, "wait_ms": 1500})
    assert any("quit with exit code 3" in message for message in errors(result, 3)), result["messages"]
    assert result["statusline"] == "Titans: stopped (exit code 3)", result  # was: '' as if never set up


@pytest.mark.timeout(60)
def test_neovim_command_the_server_never_answers_is_reported(tmp_path: Path):
    result = run_plugin(tmp_path, {"setup": {"cmd": ["PYTHON", str(LSP_STUB)]}, "exec": "titans-lsp.status",
                                   "request_timeout_ms": 300, "wait_ms": 10000, "settle_ms": 1500})
    assert result["attached"], result
    assert any("titans-lsp.status: no answer from the server after 0.3 s" in message
               for message in errors(result, 3)), result["messages"]  # was: nothing, ever


@pytest.mark.timeout(60)
@pytest.mark.parametrize("settings", [{"titansLsp": "memory"}, "memory"])
def test_neovim_settings_that_are_not_a_table_are_one_error_and_modes_still_switch(tmp_path: Path, settings):
    # settings.titansLsp = 'memory' (a string) made :TitansMode raise "attempt to index a string value"
    result = run_plugin(tmp_path, {"setup": {"cmd": ["/no/such/titans-lsp"], "settings": settings},
                                   "set_mode": "none", "wait_ms": 200, "settle_ms": 200})
    assert result["setup_ok"], result["setup_error"]
    assert any("settings.titansLsp must be a table" in message for message in errors(result)), result["messages"]
    assert result["set_mode_ok"] and result["mode"] == "none", result


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stub_env, wanted", [
    ("STUB_NO_INITIALIZE=1", "Titans: starting"),  # was: '' until the server answered initialize
    ('STUB_STATUS={"mode": "none", "backend": {"name": "local", "state": "loading"}}',
     "Titans: none · loading model"),  # was: "Titans: none" while the model loaded (no completions yet)
    ('STUB_STATUS={"mode": "none", "backend": {"name": "llamacpp", "state": "down", "lastError": "llama-server stopped"}}',
     "Titans: none · backend error (:TitansStatus)"),  # was: "Titans: none", the error only in a pop-up
    ('STUB_STATUS={"mode": "none", "backend": "down", "lastLatencyMs": "fast"}', "Titans: none"),  # wrong types: ignored
])
def test_neovim_statusline_says_when_completions_cannot_come_yet(tmp_path: Path, stub_env, wanted):
    result = run_plugin(tmp_path, {"setup": {"cmd": ["env", stub_env, "PYTHON", str(LSP_STUB)]}, "wait_ms": 1500,
                                   "settle_ms": 500})
    assert result["statusline"] == wanted, result
