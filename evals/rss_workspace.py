"""Peak memory of the real server with a large workspace indexed (issue 9: ≤ 2 GiB with ~3,000 files).

Copies the ``.py`` files of installed packages (by default transformers, then torch, from the
running interpreter's site-packages) into a throw-away workspace until it has ``--files`` files,
starts ``titans-lsp serve`` over stdio with the default model and a fresh cache directory (the
converted model is shared by a symlink, the index is built from scratch), waits until the
folder is indexed and the model loaded, opens one file, requests one Automatic inline completion
and reports the server's peak RSS (``VmHWM``) with its RSS at each stage, the index build time,
and the on-disk size of the index. ``--compare-small`` repeats the run with a one-file workspace,
so the difference is what the index of the large workspace costs.

    python -m titans_lsp.evals.rss_workspace --files 3000 --out evals/results/<date>-rss-3000/rss.json
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from lsprotocol import types

from titans_lsp.benchserver import BenchClient
from titans_lsp.paths import cache_sharing_models

DEFAULT_PACKAGES = ("transformers", "torch")


def make_workspace(target: Path, packages: list[Path], files: int) -> dict:
    """Copy up to ``files`` .py files (in sorted order, package by package) under ``target``."""
    copied, size = 0, 0
    for package in packages:
        for path in sorted(package.rglob("*.py")):
            if copied >= files:
                break
            if "__pycache__" in path.parts or not path.is_file():
                continue
            dest = target / package.name / path.relative_to(package)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            copied += 1
            size += dest.stat().st_size
    return {"files": copied, "bytes": size, "packages": [p.name for p in packages]}


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = round(int(rest.split()[0]) / 1024.0, 1)
    return values


class Sampler:
    """Polls the server's RSS on a thread (for the stage-by-stage picture; the peak is VmHWM)."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.started = time.perf_counter()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.samples.append((time.perf_counter() - self.started, proc_memory_mb(self.pid)["VmRSS"]))
            except (OSError, KeyError):
                return
            self.stop.wait(self.interval)

    def close(self) -> list[tuple[float, float]]:
        self.stop.set()
        self.thread.join()
        return self.samples


def _as_dict(value):
    if isinstance(value, dict):
        return {k: _as_dict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_dict(v) for v in value]
    if hasattr(value, "_asdict"):
        return {k: _as_dict(v) for k, v in value._asdict().items()}
    if hasattr(value, "__dict__"):
        return {k: _as_dict(v) for k, v in vars(value).items()}
    return value


async def _status(client: BenchClient) -> dict:
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="titans-lsp.status", arguments=[]))
    return _as_dict(result)


async def measure(root: Path, open_file: Path, cache: Path, model: str, mode: str, timeout: float) -> dict:
    """One server run over ``root``; returns timings and memory per stage."""
    client = BenchClient({"mode": mode})
    await client.start_io(sys.executable, "-m", "titans_lsp", "serve", "--stdio", "--model", model,
                          "--device", "cpu", "--cache-dir", str(cache))
    pid = client._server.pid
    sampler = Sampler(pid)
    result: dict = {"workspace": str(root), "mode": mode, "model": model, "stages": {}}
    try:
        started = time.perf_counter()
        await client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(), root_uri=root.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name=root.name)]))
        client.initialized(types.InitializedParams())
        indexed_at = loaded_at = None
        deadline = time.perf_counter() + timeout
        while (indexed_at is None or loaded_at is None) and time.perf_counter() < deadline:
            status = await _status(client)
            folder = status["folders"][0] if status.get("folders") else {}
            now = time.perf_counter()
            if indexed_at is None and folder.get("filesIndexed") and folder.get("indexing") is None:
                indexed_at = now
                result["stages"]["indexed"] = proc_memory_mb(pid)
                result["files_indexed"], result["chunks_indexed"] = folder["filesIndexed"], folder["chunksIndexed"]
            if loaded_at is None and status.get("modelLoaded"):
                loaded_at = now
                result["stages"]["model_loaded"] = proc_memory_mb(pid)
            if status.get("modelError"):
                raise RuntimeError(f"the server could not load the model: {status['modelError']}")
            await asyncio.sleep(0.5)
        if indexed_at is None or loaded_at is None:
            raise TimeoutError(f"not indexed / model not loaded after {timeout:.0f} s")
        result["index_s"] = round(indexed_at - started, 1)  # from initialize (model loading runs alongside)
        result["model_loaded_s"] = round(loaded_at - started, 1)

        text = open_file.read_text(encoding="utf-8", errors="replace")
        cut = text.find("\n", len(text) // 2) + 1 or len(text)  # mid-file, at a line start
        prefix = text[:cut] + "    "
        uri = open_file.as_uri()
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=prefix + text[cut:])))
        lines = prefix.split("\n")
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=len(lines) - 1, character=len(lines[-1])),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))
        t0 = time.perf_counter()
        answer = await asyncio.wait_for(client.text_document_inline_completion_async(params), timeout)
        result["completion_s"] = round(time.perf_counter() - t0, 2)
        items = answer.items if hasattr(answer, "items") else (answer or [])
        result["completion"] = items[0].insert_text if items else None
        status = await _status(client)
        result["last_completion"] = status.get("lastCompletion")
        result["stages"]["after_completion"] = proc_memory_mb(pid)
        result["peak_rss_mb"] = result["stages"]["after_completion"]["VmHWM"]
        state_dirs = list((cache / "workspaces").glob(f"{root.name}-*"))
        on_disk = sum(f.stat().st_size for d in state_dirs for f in d.rglob("*") if f.is_file())
        result["index_on_disk_mb"] = round(on_disk / 2**20, 1)
        await client.shutdown_async(None)
        client.exit(None)
    finally:
        samples = sampler.close()
        await client.stop()
    result["rss_samples"] = [(round(t, 1), mb) for t, mb in samples[:: max(1, len(samples) // 200)]]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=3000, help="files in the generated workspace")
    parser.add_argument("--packages", default=",".join(DEFAULT_PACKAGES),
                        help="installed packages (or directories) whose .py files fill the workspace, in order")
    parser.add_argument("--model", default="default")
    parser.add_argument("--open", default="transformers/models/llama/modeling_llama.py",
                        help="workspace file to open and complete in (mid-file); else one of about 20 kB")
    parser.add_argument("--mode", default="concat", help="the folder's titansLsp.mode (concat: the default)")
    parser.add_argument("--work-dir", default=None, help="where the workspace and cache go (default: a temp dir)")
    parser.add_argument("--compare-small", action="store_true", help="also run with a one-file workspace")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    packages = [Path(p) if "/" in p else _package_dir(p) for p in args.packages.split(",") if p]
    missing = [str(p) for p in packages if not p.is_dir()]
    if missing:
        parser.error(f"not a directory: {', '.join(missing)}")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="titans-rss-"))
    root = work / "workspace"
    if root.exists():
        shutil.rmtree(root)
    made = make_workspace(root, packages, args.files)
    print(f"workspace: {made['files']} files, {made['bytes'] / 2**20:.1f} MiB in {root}", flush=True)
    open_file = root / args.open
    if not open_file.is_file():  # another package mix: an ordinary-sized module
        open_file = min(root.rglob("*.py"), key=lambda p: (abs(p.stat().st_size - 20_000), str(p)))
    results = {"workspace": made, "opened": str(open_file.relative_to(root))}
    cache = work / "cache"
    if cache.exists():
        shutil.rmtree(cache)
    results["large"] = asyncio.run(measure(root, open_file, cache_sharing_models(cache), args.model, args.mode, args.timeout))
    print(_line("large", results["large"]), flush=True)
    if args.compare_small:
        small = work / "small"
        if small.exists():
            shutil.rmtree(small)
        (small / open_file.parent.relative_to(root)).mkdir(parents=True)
        shutil.copyfile(open_file, small / open_file.relative_to(root))
        small_file = small / open_file.relative_to(root)
        results["small"] = asyncio.run(measure(small, small_file, cache_sharing_models(work / "cache-small"), args.model,
                                               args.mode, args.timeout))
        print(_line("one file", results["small"]), flush=True)
        results["index_cost_mb"] = round(results["large"]["peak_rss_mb"] - results["small"]["peak_rss_mb"], 1)
        print(f"peak RSS difference (what the large workspace costs): {results['index_cost_mb']} MiB")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _package_dir(name: str) -> Path:
    """Where an installed package's sources are (without importing it)."""
    spec = importlib.util.find_spec(name)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else Path(name)


def _line(name: str, r: dict) -> str:
    stages = ", ".join(f"{k} {v['VmRSS']:.0f}" for k, v in r["stages"].items())
    return (f"{name}: peak RSS {r['peak_rss_mb']:.0f} MiB (RSS MiB at {stages}); {r.get('files_indexed')} files, "
            f"{r.get('chunks_indexed')} chunks indexed {r['index_s']} s after initialize; model loaded at "
            f"{r['model_loaded_s']} s; index on disk {r['index_on_disk_mb']} MiB; completion {r['completion_s']} s")


if __name__ == "__main__":
    sys.exit(main())
