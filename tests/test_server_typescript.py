"""`titans-lsp serve` on a TypeScript workspace (default model, pygls's LanguageClient over stdio):
completions in `concat` and `memory`, the file's language rules, import-aware context from tsconfig paths."""

from __future__ import annotations

import importlib.util

import pytest
import pytest_asyncio
from lsprotocol import types

from server_client import (command, end_position, folder_status, inline, isolated_cache, open_document, start_server,
                           status, stop_server, wait_for)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]
needs_memory = pytest.mark.skipif(importlib.util.find_spec("titans_lsp.model.memory") is None,
                                  reason="the Titans memory is not installed")

TS_FILES = {
    "tsconfig.json": '{\n  // the app imports its library by alias\n  "compilerOptions": {"baseUrl": ".", "paths": {"@lib/*": ["lib/*"]}},\n}\n',
    "lib/geometry.ts": ("/** Area of a circle of the given radius. */\nexport function areaOfCircle(radius: number): number {\n"
                        "  return Math.PI * radius * radius;\n}\n\nexport interface Point {\n  x: number;\n  y: number;\n}\n"),
    "lib/index.ts": 'export * from "./geometry";\n',
    "src/app.ts": ('import { areaOfCircle, Point } from "@lib/geometry";\n\nconst origin: Point = { x: 0, y: 0 };\n\n'
                   "export function report(radius: number): string {\n  const area = areaOfCircle(radius);\n"
                   "  return `area ${area}`;\n}\n"),
}
TAIL = "\nconsole.log(areaOfCircle("  # the editor has closed the parenthesis: the suffix is ")"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ts-server")
    root = tmp / "shop"
    for rel, text in TS_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    client = await start_server([root], isolated_cache(tmp), {"mode": "concat", "maxNewTokens": 16})

    async def indexed():
        st = await status(client)
        return folder_status(st, root)["filesIndexed"] == 3 and st  # tsconfig.json is read, not indexed

    await wait_for(indexed, 60, what="TypeScript workspace indexed")
    yield client, root
    await stop_server(client)


async def set_settings(client, root, settings: dict) -> None:
    client.settings[root.as_uri()] = settings
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))

    async def applied():
        current = folder_status(await status(client), root)["settings"]
        return all(current[k] == v for k, v in settings.items())

    await wait_for(applied, 20, what=f"settings {settings}")


async def complete_in_app(client, root, version: int):
    text = TS_FILES["src/app.ts"] + TAIL + ");\n"
    uri = await open_document(client, root / "src" / "app.ts", text, version, language_id="typescript")
    position = end_position(TS_FILES["src/app.ts"] + TAIL)
    result = await inline(client, uri, position)
    return result, (await status(client))["lastCompletion"]


def assert_never_recloses(text: str) -> None:
    """The suffix already closes `areaOfCircle(`: the completion must not close it again."""
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        assert depth >= 0, f"completion {text!r} closes the bracket the suffix closes"


async def test_concat_completes_a_typescript_file_with_imports_context(shop):
    client, root = shop
    await set_settings(client, root, {"mode": "concat", "retriever": ["imports", "bm25"]})
    result, last = await complete_in_app(client, root, 1)
    assert last["mode"] == "concat" and last["language"] == "typescript"
    assert last["contextChars"] > 0  # areaOfCircle's definition through the tsconfig path alias
    assert result.items and result.items[0].insert_text.strip(), "no completion"
    assert_never_recloses(result.items[0].insert_text)


@needs_memory
async def test_memory_primes_and_completes_a_typescript_file(shop):
    client, root = shop
    await set_settings(client, root, {"mode": "memory"})
    await command(client, "titans-lsp.primeWorkspace", {"folder": root.as_uri()})

    async def primed():
        return folder_status(await status(client), root)["filesPrimed"] == 3

    await wait_for(primed, 120, what="TypeScript workspace primed")
    result, last = await complete_in_app(client, root, 2)
    assert last["mode"] == "memory" and last["language"] == "typescript" and last["contextChars"] == 0
    assert result.items and result.items[0].insert_text.strip(), "no completion"
    assert_never_recloses(result.items[0].insert_text)
