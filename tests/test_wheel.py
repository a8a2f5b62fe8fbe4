"""What users install is a wheel: build one, install it into a fresh venv and run the CLI from it.

The fresh venv reaches the test venv's dependencies through a ``.pth`` line (installing torch and
transformers again would take minutes), but not its editable install of titans-lsp: paths added by
a ``.pth`` line do not have their own ``.pth`` files processed, so ``titans_lsp`` can only come from
the wheel. The test checks that, then that every module of the source tree is in the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# source folder -> package name (pyproject.toml's package-dir mapping)
SOURCE_PACKAGES = {"titans_lsp": "titans_lsp", "model": "titans_lsp.model", "retrieval": "titans_lsp.retrieval",
                   "evals": "titans_lsp.evals"}


def source_modules() -> set[str]:
    names = set()
    for folder, package in SOURCE_PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder)
            if "results" in rel.parts:  # evals/results/ holds run artefacts, not package code
                continue
            parts = [package, *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.add(".".join(parts))
    return names


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(work / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((work / "dist").glob("titans_lsp-*.whl"))
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps-from-test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    return env_dir


def run_in(env_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env, cwd=env_dir)


def test_wheel_holds_every_module_of_the_source_tree(installed):
    probe = ("import pkgutil, titans_lsp\n"
             "print(titans_lsp.__file__)\n"
             "for m in pkgutil.walk_packages(titans_lsp.__path__, 'titans_lsp.'):\n"
             "    print(m.name)\n")
    result = run_in(installed, str(installed / "bin" / "python"), "-c", probe)
    assert result.returncode == 0, result.stderr
    location, *names = result.stdout.split()
    assert str(installed) in location, f"titans_lsp was imported from {location}, not from the wheel"
    missing = source_modules() - set(names) - {"titans_lsp"}
    assert not missing, f"modules missing from the wheel: {sorted(missing)}"


def test_installed_cli_runs_help_and_doctor(installed):
    cli = str(installed / "bin" / "titans-lsp")
    result = run_in(installed, cli, "--help")
    assert result.returncode == 0, result.stderr
    for name in ("serve", "eval", "train", "prime", "bench", "doctor"):
        assert name in result.stdout
    result = run_in(installed, cli, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout
