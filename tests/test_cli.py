"""The console script: help for every subcommand, clean errors instead of tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from titans_lsp.cli import COMMANDS, main


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "titans_lsp", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def test_help_lists_all_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in ("serve", "eval", "train", "prime", "bench", "doctor", "stats"):
        assert name in result.stdout
    assert set(COMMANDS) == {"serve", "eval", "train", "prime", "bench", "doctor", "stats"}


@pytest.mark.parametrize("name", COMMANDS)
def test_each_subcommand_has_a_description(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"titans-lsp {name}" in out and len(out.splitlines()) > 3


def test_bad_model_is_one_line_error_not_traceback(tmp_path):
    result = run_cli("doctor", "--model", str(tmp_path / "missing-dir"), "--no-load")
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    fail_lines = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fail_lines) == 1 and "model" in fail_lines[0] and "not found" in fail_lines[0]


def test_doctor_passes_with_the_default_model():
    result = run_cli("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout
    assert "LlamaForCausalLM" in result.stdout


def test_doctor_on_a_machine_without_llama_server_says_serve_will_run_locally(tmp_path):
    """serve defaults to auto; without a provisioned llama-server doctor passes and says what auto will do."""
    import os

    env = {**os.environ, "TITANS_LSP_TOOLS": str(tmp_path / "no-tools"), "PATH": os.path.dirname(sys.executable)}
    env.pop("TITANS_LSP_LLAMA_SERVER", None)
    result = run_cli("doctor", "--no-load", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    backend_line = next(line for line in result.stdout.splitlines() if " backend " in line)
    assert backend_line.startswith("ok") and "every mode on local" in backend_line
    assert "provision-llamacpp" in backend_line
