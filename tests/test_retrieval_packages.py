"""Pinned packages: one fetcher and one cache layout for training, eval build and the bench."""

from __future__ import annotations

import zipfile

import pytest

from titans_lsp.model.training_data import read_repository
from titans_lsp.retrieval import packages
from titans_lsp.retrieval.packages import PackageError, fetch_pypi, parse_pin, repos_dir


@pytest.mark.parametrize("spec", ["requests", "requests>=2", "requests==", "==1.0", "https://x/y.whl", "a==1 ; rm -rf /"])
def test_unpinned_or_odd_specs_are_refused(spec):
    with pytest.raises(PackageError, match="pin an exact version"):
        parse_pin(spec)
    assert parse_pin(" mcp == 2.3.0 ") == ("mcp", "2.3.0")


def make_wheel(path, members: dict[str, str]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def test_fetch_unpacks_once_into_the_shared_layout(tmp_path, monkeypatch):
    calls = []

    def fake_download(spec, target):
        calls.append(spec)
        target.mkdir(parents=True, exist_ok=True)
        return make_wheel(target / "demo-1.0-py3-none-any.whl", {"demo/__init__.py": "X = 1\n", "demo/core.py": "def f():\n    pass\n"})

    monkeypatch.setattr(packages, "_download", fake_download)
    root = fetch_pypi("demo==1.0", tmp_path)
    assert root == repos_dir(tmp_path) / "demo-1.0" and (root / "demo" / "core.py").is_file()
    assert fetch_pypi("demo==1.0", tmp_path) == root and calls == ["demo==1.0"]  # cached: no second download


def test_an_archive_escaping_its_folder_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    def evil_download(spec, target):
        target.mkdir(parents=True, exist_ok=True)
        return make_wheel(target / "evil-1.0-py3-none-any.whl", {"../../escaped.py": "boom = 1\n"})

    monkeypatch.setattr(packages, "_download", evil_download)
    with pytest.raises(PackageError, match="escapes"):
        fetch_pypi("evil==1.0", tmp_path)
    assert not (repos_dir(tmp_path) / "evil-1.0").exists()
    assert not list(tmp_path.rglob("escaped.py"))


def test_a_failed_download_names_the_package(tmp_path):
    with pytest.raises(PackageError, match="no-such-package-titans-lsp-test==0.0.1"):
        fetch_pypi("no-such-package-titans-lsp-test==0.0.1", tmp_path)


def test_training_reads_a_repository_by_the_server_rules(tmp_path):
    root = tmp_path / "repo"
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("from .core import f\n")
    (root / "pkg" / "core.py").write_text("def f():\n    return 1\n")
    (root / "pkg" / "sub" / "deep.py").write_text("from pkg.core import f\n")
    (root / "main.py").write_text("import pkg\n")
    (root / "generated.py").write_text("GENERATED = 1\n")
    (root / ".gitignore").write_text("generated.py\n")
    (root / "credentials.py").write_text("TOKEN = 'x'\n")
    (root / "key.py").write_text("-----BEGIN RSA PRIVATE KEY-----\nabc\n")
    repo = read_repository(root)
    assert [f.path for f in repo.files] == ["main.py", "pkg/__init__.py", "pkg/core.py", "pkg/sub/deep.py"]
