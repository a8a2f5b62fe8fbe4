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


# ---- npm ------------------------------------------------------------------------------------------------
import io  # noqa: E402
import os  # noqa: E402
import stat  # noqa: E402
import tarfile  # noqa: E402

from titans_lsp.retrieval.packages import fetch_npm, parse_npm_pin  # noqa: E402


@pytest.mark.parametrize("spec", ["zod", "zod@4.1.12", "zod==^4", "zod==latest", "Zod==1.0.0", "@scope==1.0.0",
                                  "zod==4.1.12; rm -rf /", "../x==1.0.0"])
def test_npm_specs_must_be_exact_pins(spec):
    with pytest.raises(PackageError, match="pin an exact npm version"):
        parse_npm_pin(spec)
    assert parse_npm_pin(" @tanstack/db == 0.15.2 ") == ("@tanstack/db", "0.15.2")
    assert parse_npm_pin("zod==4.0.0-beta.1") == ("zod", "4.0.0-beta.1")


def make_tgz(path, members: dict[str, str]):
    with tarfile.open(path, "w:gz") as tf:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def fake_npm(tmp_path, monkeypatch, members: dict[str, str]):
    """An `npm` on PATH that 'packs' a tarball with ``members`` and logs its arguments."""
    source = tmp_path / "fake.tgz"
    make_tgz(source, members)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "npm"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/npm.log\n'
                      f'while [ "$1" != "--pack-destination" ]; do shift; done\ncp {source} "$2/pkg.tgz"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "npm.log"


def test_npm_package_unpacks_its_package_folder_once(tmp_path, monkeypatch):
    log = fake_npm(tmp_path, monkeypatch, {"package/package.json": '{"name": "@acme/kit"}',
                                           "package/src/index.ts": "export const A = 1;\n"})
    cache = tmp_path / "cache"
    root = fetch_npm("@acme/kit==1.2.3", cache)
    assert root == repos_dir(cache) / "@acme+kit-1.2.3" and (root / "src" / "index.ts").is_file()
    assert (root / "package.json").is_file() and not (root / "package").exists()
    assert fetch_npm("@acme/kit==1.2.3", cache) == root
    assert log.read_text().split("\n")[0].startswith("pack @acme/kit@1.2.3 --ignore-scripts")
    assert len(log.read_text().strip().split("\n")) == 1  # cached: packed once


def test_npm_tarball_escaping_its_folder_is_refused(tmp_path, monkeypatch):
    fake_npm(tmp_path, monkeypatch, {"package/index.ts": "", "../../escaped.ts": "boom"})
    with pytest.raises(PackageError, match="cannot unpack"):
        fetch_npm("evil==1.0.0", tmp_path / "cache")
    assert not list(tmp_path.rglob("escaped.ts")) and not (repos_dir(tmp_path / "cache") / "evil-1.0.0").exists()


def test_npm_tarball_without_a_package_folder_is_refused(tmp_path, monkeypatch):
    fake_npm(tmp_path, monkeypatch, {"other/index.ts": ""})
    with pytest.raises(PackageError, match="no package/ folder"):
        fetch_npm("odd==1.0.0", tmp_path / "cache")
