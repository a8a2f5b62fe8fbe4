"""Import-aware context: the definitions behind the current file's imports, nearest use first.

The current file's imports are parsed with tree-sitter and resolved to workspace modules (absolute,
relative, ``from pkg import mod``, aliases, re-exports through ``__init__``). Then the definitions of
the imported names, and of ``module.attr`` uses, are returned as snippets, ordered by how close to
the cursor they are used. These are the cross-file symbols a completion most often needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

from .chunking import Chunk, definition_chunks, python_parser

PY_SUFFIXES = (".py", ".pyi")
UNUSED_FIRST = [False]


@dataclass(frozen=True)
class Binding:
    """A name the current file binds by importing: ``alias`` refers to ``module`` or ``module.symbol``."""
    alias: str
    module: str  # dotted name, or a resolved relative module's rel path prefixed with "./"
    symbol: str | None
    level: int = 0  # dots of a relative import


def parse_imports(text: str) -> list[Binding]:
    tree = python_parser().parse(text.encode("utf-8", errors="replace"))
    out: list[Binding] = []

    def walk(node) -> None:
        for child in node.named_children:
            if child.type == "import_statement":
                for item in child.named_children:
                    if item.type == "dotted_name":
                        name = item.text.decode()
                        out.append(Binding(name, name, None))
                    elif item.type == "aliased_import":
                        name = item.child_by_field_name("name").text.decode()
                        out.append(Binding(item.child_by_field_name("alias").text.decode(), name, None))
            elif child.type == "import_from_statement":
                module_node = child.child_by_field_name("module_name")
                level, module = 0, ""
                if module_node is not None and module_node.type == "relative_import":
                    for part in module_node.named_children:
                        if part.type == "import_prefix":
                            level = part.text.decode().count(".")
                        elif part.type == "dotted_name":
                            module = part.text.decode()
                elif module_node is not None:
                    module = module_node.text.decode()
                for item in child.children_by_field_name("name"):
                    if item.type == "dotted_name":
                        name = item.text.decode()
                        out.append(Binding(name, module, name, level))
                    elif item.type == "aliased_import":
                        name = item.child_by_field_name("name").text.decode()
                        out.append(Binding(item.child_by_field_name("alias").text.decode(), module, name, level))
            elif child.type in ("if_statement", "try_statement", "block", "else_clause", "except_clause",
                                "finally_clause", "elif_clause"):
                walk(child)  # imports under `if TYPE_CHECKING:` / `try:` count too

    walk(tree.root_node)
    return out


def module_name(rel: str, root_package: str = "") -> str:
    parts = rel.split("/")
    last = parts[-1].rsplit(".", 1)[0]
    parts = parts[:-1] if last == "__init__" else parts[:-1] + [last]
    if root_package:
        parts = [root_package] + parts
    return ".".join(parts)


def _distance(a: str, b: str) -> int:
    pa, pb = a.split("/")[:-1], b.split("/")[:-1]
    common = 0
    while common < min(len(pa), len(pb)) and pa[common] == pb[common]:
        common += 1
    return len(pa) + len(pb) - 2 * common


class ModuleMap:
    """Workspace Python files by dotted module name (with the root's own package name when the
    root is itself a package, and matching by suffix so ``src/`` layouts resolve)."""

    def __init__(self, rels: Iterable[str], root_package: str = ""):
        self.by_name: dict[str, list[str]] = {}
        self.rels = set()
        for rel in rels:
            if not rel.endswith(PY_SUFFIXES):
                continue
            self.rels.add(rel)
            parts = module_name(rel, root_package).split(".")
            for start in range(len(parts)):  # every suffix, so "pkg.mod" finds "src/pkg/mod.py"
                self.by_name.setdefault(".".join(parts[start:]), []).append(rel)

    def resolve(self, name: str, current: str | None = None) -> str | None:
        candidates = self.by_name.get(name, [])
        if not candidates:
            return None
        return min(candidates, key=lambda rel: (_distance(rel, current or ""), rel.count("/"),
                                                rel.endswith(".pyi"), rel))

    def resolve_relative(self, level: int, name: str, current: str) -> str | None:
        parts = current.split("/")[:-1]
        if level > 1:
            parts = parts[:len(parts) - (level - 1)] if level - 1 <= len(parts) else []
        base = "/".join(parts + (name.split(".") if name else []))
        for candidate in (f"{base}.py", f"{base}/__init__.py", f"{base}.pyi", f"{base}/__init__.pyi"):
            candidate = candidate.lstrip("/")
            if candidate in self.rels:
                return candidate
        return None

    def resolve_binding_module(self, binding: Binding, current: str) -> str | None:
        if binding.level:
            return self.resolve_relative(binding.level, binding.module, current)
        return self.resolve(binding.module, current)


class DefinitionLookup:
    """Definitions per module file, parsed on demand and cached by content."""

    def __init__(self, modules: ModuleMap, read: Callable[[str], str | None]):
        self.modules, self.read = modules, read
        self._cache: dict[str, tuple[str, list[Chunk], list[Binding]]] = {}

    def _parsed(self, rel: str) -> tuple[list[Chunk], list[Binding]]:
        text = self.read(rel)
        if text is None:
            return [], []
        cached = self._cache.get(rel)
        if cached is None or cached[0] != text:
            cached = self._cache[rel] = (text, definition_chunks(text), parse_imports(text))
        return cached[1], cached[2]

    def find(self, rel: str, symbol: str, depth: int = 0) -> tuple[str, Chunk] | tuple[str, None] | None:
        """(file, definition) of ``symbol`` in module ``rel``; (submodule file, None) when the name is
        a submodule; following re-exports (``from .x import Foo`` in ``__init__``) up to 3 levels."""
        chunks, bindings = self._parsed(rel)
        for chunk in chunks:
            if chunk.name == symbol:
                return rel, chunk
        if depth < 3:
            for binding in bindings:
                if binding.alias == symbol:
                    target = self.modules.resolve_binding_module(binding, rel)
                    if target is None:
                        continue
                    if binding.symbol is None:
                        return target, None
                    found = self.find(target, binding.symbol, depth + 1)
                    if found is not None:
                        return found
        if rel.endswith(("__init__.py", "__init__.pyi")):
            sub = self.modules.resolve_relative(1, symbol, rel)
            if sub is not None:
                return sub, None
        return None


@dataclass(frozen=True)
class ImportSnippet:
    filename: str
    text: str
    name: str
    position: int  # offset of the nearest use in the prefix (-1: imported, not used yet)


def _uses(prefix: str, alias: str) -> list[tuple[int, str | None]]:
    """(offset, attribute) of each use of ``alias`` (``alias.attr`` gives the attribute)."""
    pattern = re.compile(r"(?<![\w.])" + re.escape(alias) + r"(?:\.(\w+))?(?!\w)")
    return [(m.start(), m.group(1)) for m in pattern.finditer(prefix)]


def import_context(prefix: str, current_file: str | None, modules, read: Callable[[str], str | None] | None = None,
                   limit: int = 20, lookup: DefinitionLookup | None = None, root_package: str = "") -> list[ImportSnippet]:
    """Definitions of what the prefix imports and uses, nearest use to the cursor first.

    ``modules``: a ModuleMap (with ``read``: rel -> text), or simply the repository as a dict
    rel -> text (the eval's case; ``root_package`` names the root when it is itself a package).
    """
    if isinstance(modules, dict):
        files = modules
        modules, read = ModuleMap(files, root_package), files.get
    lookup = lookup or DefinitionLookup(modules, read)
    current = current_file or ""
    found: dict[tuple[str, str], ImportSnippet] = {}

    def add(rel: str, chunk: Chunk, position: int) -> None:
        key = (rel, chunk.name)
        if rel == current:
            return
        old = found.get(key)
        if old is None or position > old.position:
            found[key] = ImportSnippet(rel, chunk.text, chunk.name, position)

    def is_import_line(offset: int) -> bool:
        start = prefix.rfind("\n", 0, offset) + 1
        return bool(re.match(r"\s*(from\s|import\s)", prefix[start:offset + 1] + " "))

    for binding in parse_imports(prefix):
        module_rel = lookup.modules.resolve_binding_module(binding, current)
        if module_rel is None:
            continue
        target_rel, target_chunk = module_rel, None
        if binding.symbol is not None:
            resolved = lookup.find(module_rel, binding.symbol)
            if resolved is None:
                continue
            target_rel, target_chunk = resolved
        uses = [(offset, attr) for offset, attr in _uses(prefix, binding.alias) if not is_import_line(offset)]
        if target_chunk is not None:  # a class / function / constant
            add(target_rel, target_chunk, max((o for o, _ in uses), default=-1))
            continue
        for offset, attr in uses:  # a module: resolve `alias.attr`
            if attr is None:
                continue
            resolved = lookup.find(target_rel, attr)
            if resolved is not None and resolved[1] is not None:
                add(resolved[0], resolved[1], offset)
    # nearest use to the cursor first; imported-but-unused names after them (see UNUSED_FIRST)
    unused_rank = -1 if UNUSED_FIRST else 1
    ranked = sorted(found.values(), key=lambda s: (unused_rank if s.position < 0 else 0, -s.position, s.filename, s.name))
    return ranked[:limit]
