"""End-to-end: a real VS Code (code-server) in headless Chromium with the packaged extension.

code-server serves the fixture workspace on 127.0.0.1; tests/e2e/vscode_inline.cjs (playwright-core)
opens main.py, types, waits for the ghost text of the server's inline suggestion, accepts it with
Tab, types another line and dismisses its suggestion, moves the cursor and reads where the server
pre-warmed (titans/cursor), switches titansLsp.mode with the status bar quick pick, reads the
server's status command, and finally kills the server to see the extension restart it. The
server runs with a cache of its own, so its event store holds exactly this session's events.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from editor_tools import (
    ARTIFACTS, REPO, TS_REPORT_LINE, assert_events_match, editor_env, find_modes, make_workspace, private_cache, require,
    server_executable, server_log_args, stop_process,
)

pytestmark = [pytest.mark.editor, pytest.mark.timeout(420)]

VSIX = REPO / "editors" / "vscode" / "titans-lsp.vsix"
SCRIPT = REPO / "tests" / "e2e" / "vscode_inline.cjs"
TYPED = "perimeter = "
TS_TYPED = "const perimeter = "
DISMISS_TYPED = "radius = "
NEW_MODE = "memory"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"code-server did not answer at {url} within {timeout:.0f}s")


def test_vscode_ghost_text_tab_and_mode(tmp_path: Path):
    node = require("NODE")
    code_server = require("CODE_SERVER")
    chromium = require("CHROMIUM")
    node_path = require("PLAYWRIGHT_NODE_PATH")
    if not VSIX.exists():
        pytest.skip(f"{VSIX.name} not built: run scripts/provision-editors")

    workspace = make_workspace(tmp_path / "shapes")
    (workspace / ".vscode").mkdir()
    (workspace / ".vscode" / "settings.json").write_text(json.dumps(
        {"titansLsp.mode": "concat", "titansLsp.maxNewTokens": 16, "titansLsp.multiline": "never",
         "titansLsp.telemetry.storeText": True}, indent=2))
    server_log = tmp_path / "server.log"
    cache = private_cache(tmp_path)
    user_data, extensions = tmp_path / "user-data", tmp_path / "extensions"
    (user_data / "User").mkdir(parents=True)
    (user_data / "User" / "settings.json").write_text(json.dumps({
        "security.workspace.trust.enabled": False,
        "workbench.startupEditor": "none",
        "workbench.tips.enabled": False,
        "chat.disableAIFeatures": True,
        "workbench.secondarySideBar.defaultVisibility": "hidden",
        "extensions.autoCheckUpdates": False,
        "extensions.autoUpdate": False,
        "telemetry.telemetryLevel": "off",
        "editor.inlineSuggest.enabled": True,
    }, indent=2))
    # Machine-scoped settings of a remote window (code-server) live in the Machine settings file.
    (user_data / "Machine").mkdir()
    (user_data / "Machine" / "settings.json").write_text(json.dumps({
        "titansLsp.serverCommand": server_executable(),
        "titansLsp.serverArgs": [*server_log_args(server_log), "--cache-dir", str(cache)],
    }, indent=2))
    env = editor_env(tmp_path)

    t0 = time.monotonic()
    subprocess.run([code_server, "--install-extension", str(VSIX), "--extensions-dir", str(extensions),
                    "--user-data-dir", str(user_data)], check=True, env=env, capture_output=True, timeout=120)
    t_install = time.monotonic() - t0

    port = free_port()
    cs_log = open(tmp_path / "code-server.log", "w")
    proc = subprocess.Popen(
        [code_server, "--bind-addr", f"127.0.0.1:{port}", "--auth", "none", "--disable-telemetry",
         "--disable-update-check", "--disable-workspace-trust", "--user-data-dir", str(user_data),
         "--extensions-dir", str(extensions), str(workspace)],
        env=env, stdin=subprocess.DEVNULL, stdout=cs_log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    shots = tmp_path / "shots"
    shots.mkdir()
    result_file = tmp_path / "result.json"
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60)
        run = subprocess.run(
            [node, str(SCRIPT)],
            env=dict(env, NODE_PATH=node_path, URL=f"http://127.0.0.1:{port}", FOLDER=str(workspace),
                     SCREENSHOT_DIR=str(shots), RESULT=str(result_file), CHROMIUM=chromium,
                     TYPED=TYPED, NEW_MODE=NEW_MODE, SERVER_MARK=str(server_log), TS_TYPED=TS_TYPED,
                     TS_LINE=str(TS_REPORT_LINE), DISMISS_TYPED=DISMISS_TYPED),
            capture_output=True, text=True, timeout=360,
        )
        print(run.stdout[-4000:], run.stderr[-4000:])
    finally:
        stop_process(proc)
        cs_log.close()
        ARTIFACTS.mkdir(exist_ok=True)
        for shot in shots.glob("*.png"):
            (ARTIFACTS / shot.name).write_bytes(shot.read_bytes())
        if server_log.exists():
            (ARTIFACTS / "vscode-server.log").write_bytes(server_log.read_bytes())
    result = json.loads(result_file.read_text())
    print(json.dumps({k: v for k, v in result.items() if k != "linesWithGhost"}, indent=2)[:6000])
    print(f"extension install {t_install:.1f}s; steps at {result.get('timings')}")
    assert result.get("ok"), f"the VS Code script failed: {result.get('error')} (screenshots in {ARTIFACTS})"

    # Ghost text appeared after typing, and Tab put it into the document.
    ghost = result["ghost"]
    assert ghost.strip(), result
    before = result["lineBeforeAccept"]
    assert before.rstrip().endswith(TYPED.strip()), before
    joined_after = "\n".join(result["linesAfterAccept"])
    first = ghost.split("\n")[0].strip()
    assert first and first in joined_after, (ghost, result["linesAfterAccept"])
    assert (ARTIFACTS / "vscode-ghost-text.png").stat().st_size > 10000

    # The cursor moved and rested: the extension sent titans/cursor and the server pre-warmed there.
    prepared, cursor = result["lastPrepare"], result["cursorAfterMove"]
    assert prepared, f"the server reports no pre-warm (lastPrepare) after the cursor rested at {cursor}"
    assert prepared["uri"] == (workspace / "main.py").as_uri(), prepared
    assert prepared["line"] == cursor["line"] - 1, (prepared, cursor)
    assert prepared["character"] == cursor["column"] - 1, (prepared, cursor)

    # The same in report.ts: ghost text after typing, accepted with Tab, answered by TypeScript rules.
    ts_ghost = result["tsGhost"]
    assert ts_ghost.strip(), result
    assert result["tsLineBeforeAccept"].rstrip().endswith(TS_TYPED.strip()), result["tsLineBeforeAccept"]
    assert ts_ghost.split("\n")[0].strip() in "\n".join(result["tsLinesAfterAccept"]), (ts_ghost, result["tsLinesAfterAccept"])
    last = result["tsLastCompletion"]
    assert last["uri"] == (workspace / "report.ts").as_uri() and last["language"] == "typescript", last

    # The quick pick wrote the workspace setting, and the server reports the new mode.
    settings = json.loads((workspace / ".vscode" / "settings.json").read_text())
    assert settings["titansLsp.mode"] == NEW_MODE, settings
    assert NEW_MODE not in find_modes(result["statusBeforeModeChange"]), result["statusBeforeModeChange"]
    assert NEW_MODE in find_modes(result["statusAfterModeChange"]), result["statusAfterModeChange"]

    # The event store holds what the user did: the two suggestions taken with Tab accepted (VS Code ran
    # each item's titans-lsp.accepted command), the one typed over dismissed, every other suggestion
    # shown while typing dismissed or still pending; the status bar showed today's acceptance.
    outcome = assert_events_match(cache, accepted=[ghost, ts_ghost], dismissed=[result["dismissedGhost"]])
    print(f"vscode events: {outcome}")
    assert "% accepted" in result["statusBarAfterAccept"], result["statusBarAfterAccept"]

    # After the server was killed the user was told, and a new server process took over.
    assert "restarting in" in result["crashNotification"], result["crashNotification"]
    assert set(result["restartedPids"]).isdisjoint(result["killedPids"]), result


# ---- the extension's own behaviour, in seconds: activate() against stand-ins for vscode and the client ----
UNIT_SCRIPT = REPO / "tests" / "e2e" / "vscode_unit.cjs"
STUBS = REPO / "tests" / "e2e" / "vscode_stubs"


def run_extension(tmp_path: Path, scenario: dict) -> dict:
    """activate() from the packaged .vsix's out/ with ``scenario`` (settings, start, request, commands);
    what the user saw: messages, the status bar item, whether activation and each command finished."""
    import zipfile

    node = require("NODE")
    if not VSIX.exists():
        pytest.skip(f"{VSIX.name} not built: run scripts/provision-editors")
    out = tmp_path / "out"
    with zipfile.ZipFile(VSIX) as vsix:
        for name in vsix.namelist():
            if name.startswith("extension/out/") and name.endswith(".js"):
                (out / Path(name).name).parent.mkdir(parents=True, exist_ok=True)
                (out / Path(name).name).write_bytes(vsix.read(name))
    run = subprocess.run([node, str(UNIT_SCRIPT)], env={"NODE_PATH": str(STUBS), "OUT_DIR": str(out),
                                                        "SCENARIO": json.dumps(scenario), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["error"] is None, result["error"]
    return result


@pytest.mark.timeout(60)
@pytest.mark.parametrize("key, value, wanted", [
    ("serverCommand", "/opt/venv/bin/titans-lsp", "a list of strings"),  # was: a TypeError, activation failed
    ("serverArgs", "--log-file /tmp/x.log", "a list of strings"),  # was: spread into one argument per character
    ("model", 7, "a string"),
    ("logLevel", ["debug"], "a string"),
])
def test_vscode_setting_of_the_wrong_type_is_a_visible_error(tmp_path: Path, key, value, wanted):
    result = run_extension(tmp_path, {"settings": {key: value}})
    assert result["activated"], result
    errors = [m["text"] for m in result["messages"] if m["level"] == "error"]
    assert any(f"titansLsp.{key} must be {wanted}" in text for text in errors), result["messages"]
    assert "failed" in result["status"]["text"], result["status"]


@pytest.mark.timeout(60)
def test_vscode_server_that_never_starts_does_not_block_activation(tmp_path: Path):
    result = run_extension(tmp_path, {"start": "hang", "commands": ["titansLsp.showServerLog"]})
    assert result["activated"], "activate() waited for a server that never answered initialize"
    assert result["commandsFinished"] == ["titansLsp.showServerLog"], result
    assert "starting" in result["status"]["text"], result["status"]
    warnings = [m["text"] for m in result["messages"] if m["level"] == "warning"]
    assert any("has not answered" in text for text in warnings), result["messages"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("request_outcome, wanted", [("hang", "did not answer"), ("reject", "failed: stub:")])
def test_vscode_status_command_without_an_answer_says_so(tmp_path: Path, request_outcome, wanted):
    result = run_extension(tmp_path, {"request": request_outcome, "commands": ["titansLsp.showStatus"]})
    assert result["commandsFinished"] == ["titansLsp.showStatus"], result  # was: waited forever, or threw
    errors = [m["text"] for m in result["messages"] if m["level"] == "error"]
    assert any("titans-lsp.status" in text and wanted in text for text in errors), result["messages"]


@pytest.mark.timeout(60)
def test_vscode_status_item_after_a_failed_start_opens_the_log(tmp_path: Path):
    result = run_extension(tmp_path, {"start": "reject"})
    assert result["activated"], result
    assert any("could not start the server" in m["text"] for m in result["messages"]), result["messages"]
    status = result["status"]
    assert "failed" in status["text"], status
    assert status["command"] == "titansLsp.showServerLog", status  # was: the mode quick pick of a dead server
    assert "server log" in status["tooltip"], status


@pytest.mark.timeout(60)
def test_vscode_server_program_not_found_says_which_setting_to_fix(tmp_path: Path):
    spawn_error = "Launching server using command titans-lsp failed. Error: spawn titans-lsp ENOENT"
    result = run_extension(tmp_path, {"start": "reject", "error": spawn_error})
    errors = [m for m in result["messages"] if m["level"] == "error"]
    assert any(spawn_error in m["text"] and "titansLsp.serverCommand" in m["text"] and "Open settings" in m["items"]
               for m in errors), result["messages"]  # was: LSP's launch error alone, no word on what to set


@pytest.mark.timeout(60)
def test_vscode_server_that_stops_at_start_is_reported_with_its_own_error_line(tmp_path: Path):
    # was: "the server stopped unexpectedly; restarting..." up to 5 times, the reason only in the log
    said = "titans-lsp serve: error: --model /models/x.gguf: no such file"
    result = run_extension(tmp_path, {"start": "crash", "stderr": ["INFO titans_lsp: starting", said, "bye"]})
    warnings = [m["text"] for m in result["messages"] if m["level"] == "warning"]
    assert any("stopped unexpectedly" in text and text.endswith(f"It said: {said}") for text in warnings), result["messages"]


@pytest.mark.timeout(60)
def test_vscode_quotes_at_most_300_characters_of_a_huge_server_error_line(tmp_path: Path):
    said = "titans-lsp serve: error: --model " + "x" * 5000 + ": no such file"  # was: a pop-up 5,000 characters wide
    result = run_extension(tmp_path, {"start": "crash", "stderr": [said]})
    warnings = [m["text"] for m in result["messages"] if m["level"] == "warning"]
    quoted = [text.split("It said: ", 1)[1] for text in warnings if "It said: " in text]
    assert quoted and all(q == said[:299] + "\u2026" for q in quoted), [q[-20:] for q in quoted]


@pytest.mark.timeout(60)
def test_vscode_status_item_says_the_model_is_loading(tmp_path: Path):
    folder = {"folder": "file:///ws", "mode": "concat", "indexing": None, "priming": None,
              "backend": {"name": "local", "state": "loading", "serving": "local"}}
    result = run_extension(tmp_path, {"folder": "/ws", "notifications": {"titans/status": [folder]}})
    assert "loading model" in result["status"]["text"], result["status"]  # was: "concat", as if ready
