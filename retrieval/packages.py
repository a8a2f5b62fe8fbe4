"""Pinned published packages as repositories: download once, unpack into one cache layout.

Training (``titans-lsp train --pypi``), ``titans-lsp eval build --pypi/--npm``, the latency bench and
the memory experiments all read real code from pinned packages. They share this one fetcher and one
layout under the cache directory, so a package is downloaded and unpacked once:

    <cache>/packages/downloads/<name>-<version>/<archive>   what ``pip download --no-deps`` (PyPI) or
                                                            ``npm pack`` (npm) fetched
    <cache>/packages/src/<name>-<version>/                  the unpacked tree (a repository root)

An npm package's tarball holds one ``package/`` folder; its content is the tree. A scoped name
(``@scope/name``) becomes ``@scope+name`` in folder names.

``<cache>/packages/src`` is therefore a ``--repos`` directory for ``titans-lsp eval``: each
sample's ``metadata.repository`` (``<name>-<version>``) is a folder in it. Wheels are preferred
(unpacking needs no build step); an sdist is the fallback. Reading the files goes through
:mod:`titans_lsp.retrieval.workspace`, the rules the server indexes with.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)\s*$")
_NPM_SPEC = re.compile(r"^\s*((?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*)\s*==\s*"
                       r"([0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)\s*$")
_DONE = ".unpacked"  # marker written last: a half-unpacked tree is never mistaken for a complete one


class PackageError(RuntimeError):
    """A package that cannot be fetched or unpacked; the message says which and why."""


def parse_pin(spec: str) -> tuple[str, str]:
    """``NAME==VERSION`` -> (name, version); anything else (unpinned, ranges, URLs) is refused."""
    match = _SPEC.match(spec)
    if match is None:
        raise PackageError(f"{spec!r}: pin an exact version, NAME==VERSION (results must be reproducible)")
    return match.group(1), match.group(2)


def parse_npm_pin(spec: str) -> tuple[str, str]:
    """``NAME==VERSION`` (``@scope/name==1.2.3``) -> (name, version); ranges, tags and URLs are refused."""
    match = _NPM_SPEC.match(spec)
    if match is None:
        raise PackageError(f"{spec!r}: pin an exact npm version, NAME==VERSION (e.g. zod==4.1.12)")
    return match.group(1), match.group(2)


def packages_dir(cache_root: Path) -> Path:
    return Path(cache_root) / "packages"


def repos_dir(cache_root: Path) -> Path:
    """The folder holding one unpacked tree per fetched package (``eval --repos``)."""
    return packages_dir(cache_root) / "src"


def fetch_pypi(spec: str, cache_root: Path) -> Path:
    """Download (once) and unpack the pinned PyPI package ``spec``; returns the unpacked root
    (``<cache>/packages/src/<name>-<version>``). Raises :class:`PackageError`."""
    name, version = parse_pin(spec)
    slug = f"{name}-{version}"
    root = repos_dir(cache_root) / slug
    if (root / _DONE).exists():
        return root
    archive = _download(spec, packages_dir(cache_root) / "downloads" / slug)
    _unpack(archive, root)
    return root


def fetch_npm(spec: str, cache_root: Path) -> Path:
    """Download (once, ``npm pack``, no install scripts) and unpack the pinned npm package ``spec``;
    returns the unpacked package root (``<cache>/packages/src/<name>-<version>``). Raises
    :class:`PackageError`."""
    name, version = parse_npm_pin(spec)
    slug = f"{name.replace('/', '+')}-{version}"
    root = repos_dir(cache_root) / slug
    if (root / _DONE).exists():
        return root
    target = packages_dir(cache_root) / "downloads" / slug
    archives = sorted(target.glob("*.tgz")) if target.is_dir() else []
    if not archives:
        if shutil.which("npm") is None:
            raise PackageError(f"npm pack {name}@{version}: npm is not installed (it fetches npm packages)")
        target.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["npm", "pack", f"{name}@{version}", "--ignore-scripts", "--silent",
                                 "--pack-destination", str(target)], capture_output=True, text=True)
        archives = sorted(target.glob("*.tgz"))
        if result.returncode != 0 or not archives:
            why = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
            raise PackageError(f"npm pack {name}@{version} failed: {why}")
    _unpack(archives[0], root, inner="package")
    return root


def _download(spec: str, target: Path) -> Path:
    archives = sorted(p for p in target.glob("*") if p.is_file()) if target.is_dir() else []
    if archives:
        return archives[0]
    target.mkdir(parents=True, exist_ok=True)
    errors = []
    for extra in (["--only-binary", ":all:"], ["--no-binary", ":all:", "--no-build-isolation"]):
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "-d", str(target), *extra, spec]
        result = subprocess.run(cmd, capture_output=True, text=True)
        archives = sorted(p for p in target.glob("*") if p.is_file())
        if result.returncode == 0 and archives:
            return archives[0]
        errors.append((result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1])
    raise PackageError(f"pip download {spec} failed: {errors[-1]}")


def _unpack(archive: Path, root: Path, inner: str | None = None) -> None:
    """Unpack into a temporary sibling, then rename: a crash leaves no half tree at ``root``.
    ``inner``: the archive's single top folder whose content is the tree (npm's ``package/``)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():  # zip members may name absolute or ../ paths
                    target = (staging / member).resolve()
                    if not target.is_relative_to(staging.resolve()):
                        raise PackageError(f"{archive.name}: member {member!r} escapes the archive")
                zf.extractall(staging)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(staging, filter="data")
        tree = staging
        if inner is not None:
            tree = staging / inner
            if not tree.is_dir() or tree.is_symlink():
                raise PackageError(f"{archive.name}: no {inner}/ folder in the archive")
        (tree / _DONE).write_text(archive.name + "\n")
        if root.exists():
            shutil.rmtree(root)
        tree.rename(root)
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise PackageError(f"cannot unpack {archive}: {exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
