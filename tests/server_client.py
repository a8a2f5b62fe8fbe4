"""A pygls LanguageClient driving `titans-lsp serve` as a subprocess, for the server tests and the
latency measurement (scripts or `python tests/server_client.py`)."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
import uuid
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from titans_lsp.protocol import to_plain

FIXTURE_FILES = {
    "pkg/__init__.py": "",
    "pkg/geometry.py": textwrap.dedent('''\
        import math


        class Point:
            def __init__(self, x: float, y: float):
                self.x = x
                self.y = y

            def distance_to(self, other: "Point") -> float:
                return math.hypot(self.x - other.x, self.y - other.y)


        def area_of_circle(radius: float) -> float:
            return math.pi * radius ** 2
        '''),
    "pkg/config.py": textwrap.dedent('''\
        import json


        def load_config(path):
            with open(path) as f:
                return json.load(f)


        def save_config(config, path):
            with open(path, "w") as f:
                json.dump(config, f, indent=2)
        '''),
    "app.py": textwrap.dedent('''\
        from pkg.config import load_config
        from pkg.geometry import Point, area_of_circle


        def main():
            config = load_config("settings.json")
            origin = Point(0, 0)
            target = Point(config["x"], config["y"])
            print(origin.distance_to(target))
        '''),
}

# Cursor positions: (file, text typed after the file's content); the prefix the model completes.
APP_TAIL = "    print(area_of_circle("


def write_fixture(root: Path) -> Path:
    for rel, text in FIXTURE_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def isolated_cache(tmp: Path) -> Path:
    """A cache dir of its own (workspace state), sharing the converted default model."""
    from titans_lsp.paths import cache_sharing_models

    return cache_sharing_models(tmp / "cache")


class TestClient(LanguageClient):
    """Answers workspace/configuration from ``self.settings`` (folder URI -> titansLsp dict) and
    records the server's notifications."""

    __test__ = False

    def __init__(self):
        super().__init__("titans-lsp-test", "0")
        self.settings: dict[str | None, dict] = {}
        self.statuses: list[dict] = []
        self.messages: list[types.ShowMessageParams] = []
        self.logs: list[str] = []
        self.progress: list[tuple[str, object]] = []

        @self.feature(types.WORKSPACE_CONFIGURATION)
        def configuration(params: types.ConfigurationParams):
            return [self.settings.get(item.scope_uri, self.settings.get(None, {})) for item in params.items]

        @self.feature("titans/status")
        def status(params):
            self.statuses.append(params if isinstance(params, dict) else to_plain(params))

        @self.feature(types.WINDOW_SHOW_MESSAGE)
        def show_message(params: types.ShowMessageParams):
            self.messages.append(params)

        @self.feature(types.WINDOW_LOG_MESSAGE)
        def log_message(params: types.LogMessageParams):
            self.logs.append(params.message)

        @self.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def create_progress(params: types.WorkDoneProgressCreateParams):
            return None

        @self.feature(types.PROGRESS)
        def progress(params: types.ProgressParams):
            self.progress.append((params.token, params.value))


async def start_server(folders: list[Path], cache: Path, settings: dict | None = None, log_file: Path | None = None,
                       extra_args: tuple[str, ...] = (), backend: str | None = "local") -> TestClient:
    """`titans-lsp serve --stdio` on the default model. ``backend`` pins --backend (``local``: these tests are
    about the server, and their expectations are the in-process model's); None runs serve's own default."""
    client = TestClient()
    for folder in folders:
        client.settings[folder.as_uri()] = dict(settings or {})
    args = ["-m", "titans_lsp", "serve", "--stdio", "--device", "cpu", "--cache-dir", str(cache), "--log-level", "debug"]
    if log_file is not None:
        args += ["--log-file", str(log_file)]
    if backend is not None and "--backend" not in extra_args:
        args += ["--backend", backend]
    await client.start_io(sys.executable, *args, *extra_args, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    capabilities = types.ClientCapabilities(
        workspace=types.WorkspaceClientCapabilities(configuration=True, workspace_folders=True,
                                                    did_change_configuration=types.DidChangeConfigurationClientCapabilities()),
        window=types.WindowClientCapabilities(work_done_progress=True))
    result = await client.initialize_async(types.InitializeParams(
        capabilities=capabilities, process_id=os.getpid(),
        workspace_folders=[types.WorkspaceFolder(uri=f.as_uri(), name=f.name) for f in folders]))
    client.server_capabilities = result.capabilities
    client.initialized(types.InitializedParams())
    return client


async def open_document(client: TestClient, path: Path, text: str, version: int = 1,
                        language_id: str = "python") -> str:
    uri = path.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language_id, version=version, text=text)))
    return uri


def end_position(text: str) -> types.Position:
    lines = text.split("\n")
    return types.Position(line=len(lines) - 1, character=len(lines[-1]))


async def inline(client: TestClient, uri: str, position: types.Position, invoked: bool = False,
                 msg_id: str | None = None):
    kind = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
    params = types.InlineCompletionParams(text_document=types.TextDocumentIdentifier(uri=uri), position=position,
                                          context=types.InlineCompletionContext(trigger_kind=kind))
    return await client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params,
                                                    msg_id=msg_id or str(uuid.uuid4()))


async def command(client: TestClient, name: str, *arguments):
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command=name, arguments=list(arguments)))


async def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


async def status(client: TestClient) -> dict:
    return _as_dict(await command(client, "titans-lsp.status"))


def _as_dict(value):
    """Command results arrive as plain JSON (dicts) or as attrs-like objects, depending on pygls."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return [_as_dict(v) for v in value]
    if hasattr(value, "__dict__"):
        return {k: _as_dict(v) for k, v in vars(value).items()}
    return value


def folder_status(st: dict, folder: Path) -> dict:
    return next(f for f in st["folders"] if f["folder"] == folder.as_uri())


async def stop_server(client: TestClient) -> None:
    try:
        await asyncio.wait_for(client.shutdown_async(None), timeout=10)
        client.exit(None)
    except Exception:  # noqa: BLE001
        pass
    await client.stop()
