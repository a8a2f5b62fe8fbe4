"""Pinned published packages as repositories: download once, unpack into one cache layout.

Training (``titans-lsp train --pypi``), ``titans-lsp eval build --pypi``, the latency bench and the
memory experiments all read real code from pinned packages. They share this one fetcher and one
layout under the cache directory, so a package is downloaded and unpacked once:

    <cache>/packages/downloads/<name>-<version>/<archive>   what ``pip download --no-deps`` fetched
    <cache>/packages/src/<name>-<version>/                  the unpacked tree (a repository root)

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
_DONE = ".unpacked"  # marker written last: a half-unpacked tree is never mistaken for a complete one


class PackageError(RuntimeError):
    """A package that cannot be fetched or unpacked; the message says which and why."""


def parse_pin(spec: str) -> tuple[str, str]:
    """``NAME==VERSION`` -> (name, version); anything else (unpinned, ranges, URLs) is refused."""
    match = _SPEC.match(spec)
    if match is None:
        raise PackageError(f"{spec!r}: pin an exact version, NAME==VERSION (results must be reproducible)")
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


def _unpack(archive: Path, root: Path) -> None:
    """Unpack into a temporary sibling, then rename: a crash leaves no half tree at ``root``."""
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
        (staging / _DONE).write_text(archive.name + "\n")
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise PackageError(f"cannot unpack {archive}: {exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
