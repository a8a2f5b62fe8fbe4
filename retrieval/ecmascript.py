"""TypeScript / JavaScript import resolution inside a workspace: which file an import specifier names.

The rules follow TypeScript's module resolution as far as files in the workspace go:

- relative specifiers (``./a``, ``../b/c.js``): the file itself, the TypeScript source of a ``.js``
  specifier (``./a.js`` -> ``a.ts``, ESM style), the name with each extension added, a directory's
  ``package.json`` (``types``/``main``) or its ``index`` file;
- the nearest ``tsconfig.json`` / ``jsconfig.json`` (following ``extends`` inside the workspace):
  ``compilerOptions.paths`` (exact or one ``*``, the longest matching prefix wins) and ``baseUrl``;
- packages of the workspace itself (monorepos, a package importing itself by name): the
  ``package.json`` ``exports`` map (subpaths, ``*`` patterns, conditions), else ``main``/``types``;
  an entry under ``dist/``/``lib/``/``build/`` that is not in the workspace is looked up under
  ``src/`` (the source the build came from).

Anything in ``node_modules`` or outside the workspace resolves to None. Config files are JSON with
comments and trailing commas (tsconfig's dialect); a file that does not parse is ignored with a log line.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# TypeScript's order: sources before declarations before JavaScript.
EXTENSIONS = (".ts", ".tsx", ".d.ts", ".mts", ".cts", ".js", ".jsx", ".mjs", ".cjs")
SOURCE_SUFFIXES = (".ts", ".tsx", ".mts", ".cts", ".js", ".jsx", ".mjs", ".cjs")  # what a workspace file may end in
_JS_TO_SOURCE = {".js": (".ts", ".tsx", ".d.ts", ".js", ".jsx"), ".jsx": (".tsx", ".jsx"),
                 ".mjs": (".mts", ".d.mts", ".mjs"), ".cjs": (".cts", ".d.cts", ".cjs")}
CONFIG_NAMES = ("tsconfig.json", "jsconfig.json")
BUILD_DIRS = ("dist", "lib", "build", "out", "esm", "cjs")
# exports conditions, most source-like first (a condition naming "source" points at .ts sources)
CONDITIONS = ("types", "import", "module", "default", "require", "node", "browser")
MAX_EXTENDS = 5

ReadConfig = Callable[[str], "str | None"]
_DECLARATION = re.compile(r"\.d\.[cm]?tsx?$")


def is_declaration_file(rel: str) -> bool:
    """``.d.ts``/``.d.mts``/``.d.cts``: type declarations, usually generated from sources by a build."""
    return _DECLARATION.search(rel) is not None


def parse_jsonc(text: str):
    """JSON with comments and trailing commas (tsconfig.json, jsconfig.json), via json5."""
    import json5

    return json5.loads(text)


def _join(*parts: str) -> str | None:
    """Normalized workspace-relative path, or None when it leaves the workspace."""
    path = posixpath.normpath(posixpath.join(*[p for p in parts if p]) or ".")
    if path == ".":
        return ""
    if path.startswith("../") or path == ".." or path.startswith("/"):
        return None
    return path


@dataclass
class TsConfig:
    """The resolution-relevant part of one tsconfig: ``paths`` (with the directory they are relative
    to) and ``baseUrl``, as workspace-relative directories."""

    base_url: str | None = None
    paths: dict[str, list[str]] = field(default_factory=dict)
    paths_base: str = ""

    def candidates(self, specifier: str) -> list[str]:
        out: list[str] = []
        best, best_len, captured = None, -1, ""
        for pattern in self.paths:
            if "*" not in pattern:
                if pattern == specifier and len(pattern) > best_len:
                    best, best_len, captured = pattern, len(pattern), ""
                continue
            head, _, tail = pattern.partition("*")
            if specifier.startswith(head) and specifier.endswith(tail) and len(specifier) >= len(head) + len(tail):
                if len(head) > best_len:
                    best, best_len, captured = pattern, len(head), specifier[len(head):len(specifier) - len(tail)]
        if best is not None:
            for target in self.paths[best]:
                if isinstance(target, str):
                    joined = _join(self.paths_base, target.replace("*", captured))
                    if joined is not None:
                        out.append(joined)
        if self.base_url is not None:
            joined = _join(self.base_url, specifier)
            if joined is not None:
                out.append(joined)
        return out


class EcmaResolver:
    """Resolves import specifiers of the workspace's TypeScript/JavaScript files to workspace files."""

    def __init__(self, rels: Iterable[str], read_config: ReadConfig | None = None):
        self.rels = {rel for rel in rels if rel.endswith(SOURCE_SUFFIXES)}
        self.read_config = read_config or (lambda rel: None)
        self._configs: dict[str, TsConfig | None] = {}  # directory -> the tsconfig that applies there
        self._packages: dict[str, str] | None = None  # package name -> its directory
        self._package_json: dict[str, dict | None] = {}

    # ---- files and directories
    def resolve(self, specifier: str, current: str) -> str | None:
        """The workspace file ``specifier`` names when imported from ``current`` (None: not in it)."""
        if not specifier or specifier.startswith("/") or "node_modules" in specifier.split("/"):
            return None
        if specifier in (".", "..") or specifier.startswith(("./", "../")):
            base = _join(posixpath.dirname(current), specifier)
            return self.file_or_directory(base) if base is not None else None
        config = self.config_for(current)
        for candidate in config.candidates(specifier) if config is not None else []:
            found = self.file_or_directory(candidate)
            if found is not None:
                return found
        return self._workspace_package(specifier)

    def file_or_directory(self, base: str, depth: int = 0) -> str | None:
        if base in self.rels:
            return base
        stem, ext = posixpath.splitext(base)
        for replacement in _JS_TO_SOURCE.get(ext, ()):
            if stem + replacement in self.rels:
                return stem + replacement
        for extension in EXTENSIONS:
            if base + extension in self.rels:
                return base + extension
        if depth == 0:
            package = self._read_package(base)
            if package is not None:
                for key in ("types", "typings", "module", "main"):
                    entry = package.get(key)
                    if isinstance(entry, str):
                        found = self._entry(base, entry)
                        if found is not None:
                            return found
        for extension in EXTENSIONS:
            index = _join(base, "index" + extension)
            if index in self.rels:
                return index
        return None

    def _entry(self, package_dir: str, target: str) -> str | None:
        """A package.json target (``./dist/index.js``), or its source under ``src/`` when the build is absent."""
        path = _join(package_dir, target)
        if path is None:
            return None
        found = self.file_or_directory(path, depth=1)
        if found is not None:
            return found
        rest = path[len(package_dir) + 1:] if package_dir else path
        first, _, tail = rest.partition("/")
        if first in BUILD_DIRS and tail:
            stem = posixpath.splitext(tail)[0]
            if stem.endswith(".d"):
                stem = stem[:-2]
            source = _join(package_dir, "src", stem)
            return self.file_or_directory(source, depth=1) if source is not None else None
        return None

    # ---- tsconfig.json / jsconfig.json
    def config_for(self, current: str) -> TsConfig | None:
        directory = posixpath.dirname(current)
        chain = []
        while True:
            if directory in self._configs:
                found = self._configs[directory]
                break
            chain.append(directory)
            found = None
            for name in CONFIG_NAMES:
                rel = _join(directory, name)
                if self.read_config(rel) is not None:
                    found = self._load_config(rel)
                    break
            if found is not None or directory == "":
                break
            directory = posixpath.dirname(directory)
        for visited in chain:
            self._configs[visited] = found
        return found

    def _load_config(self, rel: str) -> TsConfig | None:
        config = TsConfig()
        seen = []
        current: str | None = rel
        layers = []  # nearest first
        while current is not None and current not in seen and len(seen) < MAX_EXTENDS:
            seen.append(current)
            data = self._read_json(current)
            if not isinstance(data, dict):
                break
            layers.append((current, data.get("compilerOptions") if isinstance(data.get("compilerOptions"), dict) else {}))
            parent = data.get("extends")
            parent = parent[0] if isinstance(parent, list) and parent else parent
            current = None
            if isinstance(parent, str) and parent.startswith("."):  # a base inside the workspace
                target = _join(posixpath.dirname(seen[-1]), parent)
                if target is not None:
                    current = target if target.endswith(".json") else target + ".json"
        for config_rel, options in reversed(layers):  # the base first, nearer files override
            directory = posixpath.dirname(config_rel)
            if isinstance(options.get("baseUrl"), str):
                config.base_url = _join(directory, options["baseUrl"])
            if isinstance(options.get("paths"), dict):
                config.paths = {k: [t for t in v if isinstance(t, str)] for k, v in options["paths"].items()
                                if isinstance(v, list)}
                config.paths_base = directory
        if config.base_url is not None and config.paths:
            # paths are relative to baseUrl when it is set (TypeScript's rule)
            config.paths_base = config.base_url
        return config

    def _read_json(self, rel: str):
        text = self.read_config(rel)
        if text is None:
            return None
        try:
            return parse_jsonc(text)
        except (ValueError, RecursionError) as exc:
            log.warning("%s does not parse (%s); ignored for import resolution", rel, exc)
            return None

    # ---- package.json of workspace packages
    def _read_package(self, directory: str) -> dict | None:
        if directory not in self._package_json:
            data = self._read_json(_join(directory, "package.json"))
            self._package_json[directory] = data if isinstance(data, dict) else None
        return self._package_json[directory]

    def packages(self) -> dict[str, str]:
        """Package name -> directory, for every package.json above a workspace source file."""
        if self._packages is None:
            directories = set()
            for rel in self.rels:
                directory = posixpath.dirname(rel)
                while directory not in directories:
                    directories.add(directory)
                    if directory == "":
                        break
                    directory = posixpath.dirname(directory)
            self._packages = {}
            for directory in sorted(directories, key=lambda d: (d.count("/"), d)):
                package = self._read_package(directory)
                name = package.get("name") if package is not None else None
                if isinstance(name, str) and name not in self._packages:
                    self._packages[name] = directory
        return self._packages

    def _workspace_package(self, specifier: str) -> str | None:
        packages = self.packages()
        names = [n for n in packages if specifier == n or specifier.startswith(n + "/")]
        if not names:
            return None
        name = max(names, key=len)
        directory, sub = packages[name], specifier[len(name):].lstrip("/")
        package = self._read_package(directory) or {}
        exports = package.get("exports")
        if exports is not None:
            target = export_target(exports, "./" + sub if sub else ".")
            if target is not None:
                return self._entry(directory, target)
        if not sub:
            return self.file_or_directory(directory)
        path = _join(directory, sub)
        return self.file_or_directory(path) if path is not None else None


def _condition(value) -> str | None:
    """A string target out of a conditions object (source-like conditions first), or None."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for item in value:
            found = _condition(item)
            if found is not None:
                return found
        return None
    if not isinstance(value, dict):
        return None
    keys = [k for k in value if "source" in k] + [k for k in CONDITIONS if k in value]
    keys += [k for k in value if k not in keys]
    for key in keys:
        found = _condition(value[key])
        if found is not None:
            return found
    return None


def export_target(exports, subpath: str) -> str | None:
    """The target of ``subpath`` (``"."`` or ``"./x"``) in a package.json ``exports`` field."""
    if isinstance(exports, (str, list)) or (isinstance(exports, dict) and not any(k.startswith(".") for k in exports)):
        return _condition(exports) if subpath == "." else None
    if not isinstance(exports, dict):
        return None
    if subpath in exports:
        return _condition(exports[subpath])
    best, best_len, captured = None, -1, ""
    for pattern in exports:
        head, star, tail = pattern.partition("*")
        if star and subpath.startswith(head) and subpath.endswith(tail) and len(head) > best_len:
            best, best_len, captured = pattern, len(head), subpath[len(head):len(subpath) - len(tail)]
    if best is None:
        return None
    target = _condition(exports[best])
    return target.replace("*", captured) if target is not None else None
