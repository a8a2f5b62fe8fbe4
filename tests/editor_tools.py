"""Shared helpers for the end-to-end editor tests: provisioned tools, the server command, a fixture workspace.

The tools (Node 24, Neovim, code-server, Chromium, playwright-core, the packaged .vsix) come from
scripts/provision-editors, which scripts/test runs first; it records their paths in
$TITANS_LSP_TOOLS/env. A test skips, naming what is missing, only when that provisioning is absent.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOOLS = Path(os.environ.get("TITANS_LSP_TOOLS", Path.home() / ".cache" / "titans-lsp-tools"))
ARTIFACTS = REPO / "test-artifacts"
MODES = ("none", "concat", "memory", "ablation", "hybrid")


def tools() -> dict[str, str]:
    """Paths written by scripts/provision-editors; skips the test when provisioning never ran."""
    env_file = TOOLS / "env"
    if not env_file.is_file():
        pytest.skip(f"editor tools not provisioned ({env_file} missing): run scripts/provision-editors")
    found = {}
    for line in env_file.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found[key.strip()] = value.strip()
    return found


def require(name: str) -> str:
    """One provisioned tool's path; skips with the reason when it is absent."""
    path = tools().get(name)
    if not path or not Path(path).exists():
        pytest.skip(f"editor tool {name} not provisioned ({path or 'not recorded'}): run scripts/provision-editors")
    return path


def server_executable() -> list[str]:
    """The titans-lsp executable of this checkout (TITANS_EDITOR_TEST_SERVER replaces it, e.g. for a stand-in)."""
    override = os.environ.get("TITANS_EDITOR_TEST_SERVER")
    if override:
        return shlex.split(override)
    exe = Path(sys.executable).parent / "titans-lsp"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "titans_lsp"]


def server_log_args(log_file: Path) -> list[str]:
    return ["--log-level", "debug", "--log-file", str(log_file)]


def server_command(log_file: Path) -> list[str]:
    """`titans-lsp serve --stdio` with a debug log file."""
    return [*server_executable(), "serve", "--stdio", *server_log_args(log_file)]


def editor_env(tmp_path: Path) -> dict[str, str]:
    """Environment for an editor under test: its own XDG config/data/state, the user's titans-lsp cache.

    The server keeps the converted default model in its cache; pinning TITANS_LSP_CACHE keeps the
    editor's private XDG dirs from sending it to an empty one.
    """
    from titans_lsp.paths import cache_root

    env = dict(os.environ, TITANS_LSP_CACHE=str(cache_root()))
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        env[var] = str(tmp_path / "xdg" / var.lower())
    return env


TS_GEOMETRY = """\
/** Areas and perimeters of simple shapes. */
export function circleArea(radius: number): number {
  return Math.PI * radius * radius;
}

export function rectanglePerimeter(width: number, height: number): number {
  return 2 * (width + height);
}
"""
TS_REPORT = """\
import { circleArea, rectanglePerimeter } from "./geometry";

export function report(width: number, height: number): void {
  const area = circleArea(width);
  console.log("area", area);
}
"""
TS_REPORT_LINE = 5  # 1-based: the line of report.ts after which the tests type a new one


def make_workspace(root: Path) -> Path:
    """A small Python project: a helper module and a main file that uses it (cross-file context), and
    the same in TypeScript (geometry.ts, report.ts)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text('[project]\nname = "shapes"\nversion = "0.1.0"\n')
    (root / "geometry.py").write_text(textwrap.dedent('''\
        """Areas and perimeters of simple shapes."""
        import math


        def circle_area(radius: float) -> float:
            """Area of a circle."""
            return math.pi * radius * radius


        def rectangle_area(width: float, height: float) -> float:
            """Area of a rectangle."""
            return width * height


        def rectangle_perimeter(width: float, height: float) -> float:
            """Perimeter of a rectangle."""
            return 2 * (width + height)
        '''))
    (root / "main.py").write_text(textwrap.dedent('''\
        """Print the areas of a few shapes."""
        from geometry import circle_area, rectangle_area, rectangle_perimeter


        def report(width: float, height: float) -> None:
            area = rectangle_area(width, height)
            print("area", area)
        '''))
    (root / "geometry.ts").write_text(TS_GEOMETRY)
    (root / "report.ts").write_text(TS_REPORT)
    return root


def find_modes(status: object) -> list[str]:
    """Every value of a "mode" key anywhere in the server's status JSON."""
    found: list[str] = []
    if isinstance(status, dict):
        for key, value in status.items():
            if key == "mode" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(find_modes(value))
    elif isinstance(status, list):
        for value in status:
            found.extend(find_modes(value))
    return found


def stop_process(proc) -> None:
    """Stop a process we started (and its process group, when it has its own)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, 15)
    except (ProcessLookupError, PermissionError):
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except Exception:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def save_artifact(src: Path, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    dest = ARTIFACTS / name
    shutil.copyfile(src, dest)
    return dest


def private_cache(tmp_path: Path) -> Path:
    """A titans-lsp cache of the test's own (`serve --cache-dir`), sharing the converted models, so the
    server's event store (<cache>/telemetry/events.sqlite3) holds this test's events only."""
    from titans_lsp.paths import cache_sharing_models

    return cache_sharing_models(tmp_path / "titans-cache")


def _first_line(text: str) -> str:
    return text.strip().split("\n")[0].strip()


def assert_events_match(cache: Path, accepted: list[str], dismissed: list[str], timeout: float = 30.0) -> dict:
    """The server's event store holds what the user did: exactly one accepted item per text in
    ``accepted`` (the ghost texts taken, matched on their first line) and nothing else accepted; an
    item of each text in ``dismissed`` dismissed and not accepted; no item both. The store is written
    off the request path, so this waits up to ``timeout`` for the events to arrive."""
    import time

    from titans_lsp import telemetry
    from titans_lsp.stats import items_of

    path = telemetry.default_path(str(cache))
    deadline = time.monotonic() + timeout
    while True:
        items = items_of(telemetry.read_events(path)) if path.exists() else []
        taken = [i for i in items if i.accepted]
        dropped = [i for i in items if i.dismissed and not i.accepted]
        complete = len(taken) >= len(accepted) and all(
            any(_first_line(i.shown.text or "") == _first_line(text) for i in dropped) for text in dismissed)
        if complete or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    summary = {"items": len(items), "accepted": [i.shown.text for i in taken],
               "dismissed": len(dropped), "pending": len([i for i in items if not i.decided])}
    assert sorted(_first_line(i.shown.text or "") for i in taken) == sorted(_first_line(t) for t in accepted), summary
    for text in dismissed:
        assert any(_first_line(i.shown.text or "") == _first_line(text) for i in dropped), (text, summary)
    assert not [i for i in items if i.accepted and i.dismissed], ("an accepted item was also dismissed", summary)
    assert all(i.shown.text is not None for i in items), "storeText was on: every event keeps its text"
    return summary
