"""Import-aware context: the definitions behind the current file's imports, nearest use first.

The current file's imports are parsed with tree-sitter and resolved to workspace modules. Python:
absolute, relative, ``from pkg import mod``, aliases, re-exports through ``__init__``. TypeScript /
JavaScript (the registry's ``ecmascript`` family): ``import``/``export ... from``/``require``,
default, named and namespace imports, ``export *`` and renamed re-exports, resolved by
retrieval/ecmascript.py (relative paths, ``index`` files, tsconfig ``paths``/``baseUrl``, workspace
``package.json`` ``exports``/``main``). Then the definitions of the imported names, and of
``module.attr`` uses, are returned as snippets, ordered by how close to the cursor they are used.
These are the cross-file symbols a completion most often needs. A language without import rules
gets none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable

from dataclasses import replace

from .chunking import Chunk, definition_chunks, python_parser
from .ecmascript import EcmaResolver, ReadConfig
from .languages import PLAIN_TEXT, PYTHON, Language, detect, parser

PY_SUFFIXES = (".py", ".pyi")
STAR = "*"  # Binding.alias of ``export * from "m"``: every name of m is re-exported


@dataclass(frozen=True)
class Binding:
    """A name the current file binds by importing: ``alias`` refers to ``module`` or ``module.symbol``."""
    alias: str
    module: str  # dotted name, or a resolved relative module's rel path prefixed with "./"
    symbol: str | None
    level: int = 0  # dots of a relative import


def parse_imports(text: str, language: Language | None = None) -> list[Binding]:
    """The bindings ``text`` imports (Python by default; none for a language without import rules)."""
    if language is not None and language is not PYTHON:
        return parse_ecma_module(text, language)[0] if language.imports == "ecmascript" else []
    return _parse_python_imports(text)


def _parse_python_imports(text: str) -> list[Binding]:
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


# ---- TypeScript / JavaScript -------------------------------------------------------------------------------
def _string_value(node) -> str | None:
    if node is None or node.type not in ("string", "template_string"):
        return None
    return "".join(c.text.decode("utf-8", "replace") for c in node.named_children if c.type == "string_fragment")


def _require_source(node) -> str | None:
    """``require("m")`` -> ``m`` (else None)."""
    if node is None or node.type != "call_expression":
        return None
    function, arguments = node.child_by_field_name("function"), node.child_by_field_name("arguments")
    if function is None or function.text != b"require" or arguments is None or len(arguments.named_children) != 1:
        return None
    return _string_value(arguments.named_children[0])


def _name(node) -> str:
    return node.text.decode("utf-8", "replace") if node is not None else ""


def parse_ecma_module(text: str, language: Language) -> tuple[list[Binding], list[tuple[str, str]], list[tuple[int, int]]]:
    """(bindings, local exports, import spans) of a TypeScript/JavaScript file.

    Bindings: ``import d from "m"`` -> (d, m, "default"); ``import {a as b}`` -> (b, m, a);
    ``import * as ns`` / ``export * as ns from`` / ``const ns = require("m")`` -> (ns, m, None);
    ``export {a as b} from "m"`` -> (b, m, a); ``export * from "m"`` -> ("*", m, None).
    Local exports: (exported name, local name) for ``export {x as y}`` and ``export default x``.
    Import spans: byte ranges of import statements (their names are not uses)."""
    ts_parser = parser(language.name)
    if ts_parser is None:
        return [], [], []
    source = text.encode("utf-8", errors="replace")
    tree = ts_parser.parse(source)
    bindings: list[Binding] = []
    exports: list[tuple[str, str]] = []
    spans: list[tuple[int, int]] = []
    for node in tree.root_node.named_children:
        if node.type == "import_statement":
            spans.append((node.start_byte, node.end_byte))
            module = _string_value(node.child_by_field_name("source"))
            if module is None:
                continue
            for clause in node.named_children:
                if clause.type != "import_clause":
                    continue
                for item in clause.named_children:
                    if item.type == "identifier":
                        bindings.append(Binding(_name(item), module, "default"))
                    elif item.type == "namespace_import":
                        names = [c for c in item.named_children if c.type == "identifier"]
                        if names:
                            bindings.append(Binding(_name(names[-1]), module, None))
                    elif item.type == "named_imports":
                        for spec in item.named_children:
                            if spec.type == "import_specifier":
                                name = _name(spec.child_by_field_name("name"))
                                alias = _name(spec.child_by_field_name("alias")) or name
                                if name:
                                    bindings.append(Binding(alias, module, name))
        elif node.type == "export_statement":
            module = _string_value(node.child_by_field_name("source"))
            declaration = node.child_by_field_name("declaration")
            if module is not None:
                spans.append((node.start_byte, node.end_byte))
            if module is not None and not any(c.type in ("export_clause", "namespace_export") for c in node.named_children):
                bindings.append(Binding(STAR, module, None))
            for item in node.named_children:
                if item.type == "namespace_export" and module is not None:
                    names = [c for c in item.named_children if c.type in ("identifier", "string")]
                    if names:
                        bindings.append(Binding(_name(names[-1]).strip("\"'"), module, None))
                elif item.type == "export_clause":
                    for spec in item.named_children:
                        if spec.type != "export_specifier":
                            continue
                        name = _name(spec.child_by_field_name("name"))
                        alias = _name(spec.child_by_field_name("alias")) or name
                        if module is not None:
                            bindings.append(Binding(alias, module, name))
                        elif alias != name:
                            exports.append((alias, name))
            is_default = any(c.type == "default" for c in node.children)
            if is_default:
                target = declaration.child_by_field_name("name") if declaration is not None else None
                value = node.child_by_field_name("value")
                if target is None and value is not None and value.type == "identifier":
                    target = value
                if target is not None:
                    exports.append(("default", _name(target)))
        elif node.type in ("lexical_declaration", "variable_declaration"):
            for declarator in node.named_children:
                if declarator.type != "variable_declarator":
                    continue
                module = _require_source(declarator.child_by_field_name("value"))
                target = declarator.child_by_field_name("name")
                if module is None or target is None:
                    continue
                spans.append((node.start_byte, node.end_byte))
                if target.type == "identifier":
                    bindings.append(Binding(_name(target), module, None))
                elif target.type == "object_pattern":
                    for item in target.named_children:
                        if item.type == "shorthand_property_identifier_pattern":
                            bindings.append(Binding(_name(item), module, _name(item)))
                        elif item.type == "pair_pattern":
                            key, value = item.child_by_field_name("key"), item.child_by_field_name("value")
                            if key is not None and value is not None and value.type == "identifier":
                                bindings.append(Binding(_name(value), module, _name(key)))
    return bindings, exports, [(_char_offset(source, a), _char_offset(source, b)) for a, b in spans]


def _char_offset(source: bytes, byte_offset: int) -> int:
    return len(source[:byte_offset].decode("utf-8", errors="replace"))


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
    root is itself a package, and matching by suffix so ``src/`` layouts resolve); TypeScript and
    JavaScript files through an :class:`EcmaResolver` (``read_config`` reads tsconfig.json and
    package.json files by workspace-relative path)."""

    def __init__(self, rels: Iterable[str], root_package: str = "", read_config: ReadConfig | None = None):
        rels = list(rels)
        self.ecma = EcmaResolver(rels, read_config)
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

    def submodule(self, rel: str, name: str) -> str | None:
        """The file of ``name`` when it is a submodule of the package whose ``__init__`` is ``rel``."""
        if not rel.endswith(("__init__.py", "__init__.pyi")):
            return None
        return self.resolve_relative(1, name, rel)

    def resolve_binding_module(self, binding: Binding, current: str) -> str | None:
        if detect(current).imports == "ecmascript":
            return self.ecma.resolve(binding.module, current)
        if binding.level:
            return self.resolve_relative(binding.level, binding.module, current)
        return self.resolve(binding.module, current)


class DefinitionLookup:
    """Definitions per module file, parsed on demand and cached by content (or, with ``version``,
    by the file's version, so a cached file is not even read again: the index's (mtime, size))."""

    def __init__(self, modules: ModuleMap, read: Callable[[str], str | None],
                 version: Callable[[str], object] | None = None):
        self.modules, self.read, self.version = modules, read, version
        self._cache: dict[str, tuple[object, list[Chunk], list[Binding]]] = {}

    def _parsed(self, rel: str) -> tuple[list[Chunk], list[Binding]]:
        cached = self._cache.get(rel)
        key = self.version(rel) if self.version is not None else None
        if key is not None and cached is not None and cached[0] == key:
            return cached[1], cached[2]
        text = self.read(rel)
        if text is None:
            return [], []
        key = key if key is not None else text
        if cached is None or cached[0] != key:
            cached = self._cache[rel] = (key, *self._parse(rel, text))
        return cached[1], cached[2]

    @staticmethod
    def _parse(rel: str, text: str) -> tuple[list[Chunk], list[Binding]]:
        language = detect(rel)
        if language.imports != "ecmascript":
            return definition_chunks(text), parse_imports(text)
        chunks = definition_chunks(text, language=language)
        bindings, exports, _ = parse_ecma_module(text, language)
        by_name = {chunk.name: chunk for chunk in reversed(chunks)}  # the first definition of a name wins
        for exported, local in exports:  # export {x as y}, export default x: y / default name x's chunk
            if local in by_name and exported not in by_name:
                chunks.append(replace(by_name[local], name=exported))
            elif local not in by_name:
                bindings += [replace(b, alias=exported) for b in bindings if b.alias == local]
        return chunks, bindings

    def find(self, rel: str, symbol: str, depth: int = 0) -> tuple[str, Chunk] | tuple[str, None] | None:
        """(file, definition) of ``symbol`` in module ``rel``; (submodule file, None) when the name is
        a submodule (or a namespace import); following re-exports (``from .x import Foo`` in
        ``__init__``; ``export ... from``, ``export *`` in TypeScript) up to 3 levels (6 through
        ``export *`` chains, which index files nest)."""
        chunks, bindings = self._parsed(rel)
        for chunk in chunks:
            if chunk.name == symbol:
                return rel, chunk
        if depth < 3 or (depth < 6 and any(b.alias == STAR for b in bindings)):
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
            for binding in bindings:
                if binding.alias == STAR:  # export * from "m": any name of m
                    target = self.modules.resolve_binding_module(binding, rel)
                    found = self.find(target, symbol, depth + 1) if target is not None and target != rel else None
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


def _uses(prefix: str, alias: str, word: str = r"\w") -> list[tuple[int, str | None]]:
    """(offset, attribute) of each use of ``alias`` (``alias.attr`` gives the attribute); ``word``:
    the language's identifier characters (a regex class body)."""
    pattern = re.compile(rf"(?<![{word}.])" + re.escape(alias) + rf"(?:\.([{word}]+))?(?![{word}])")
    return [(m.start(), m.group(1)) for m in pattern.finditer(prefix)]


def _plain_uses(prefix: str, aliases: tuple[str, ...], word: str = r"\w") -> dict[str, list[tuple[int, str | None]]]:
    """:func:`_uses` for every plain (undotted) alias: a literal search per alias (patterns cached per
    alias, which recur across files), instead of a match object for every word of the prefix."""
    is_word = _word_char(word)
    out: dict[str, list[tuple[int, str | None]]] = {}
    for alias in aliases:
        for m in _alias_pattern(alias, word).finditer(prefix):
            start = m.start()
            if start and (prefix[start - 1] == "." or is_word(prefix[start - 1])):
                continue  # inside a longer name, or an attribute of something else
            out.setdefault(alias, []).append((start, m.group(1)))
    return out


@lru_cache(maxsize=1024)
def _alias_pattern(alias: str, word: str) -> re.Pattern:
    """``alias`` as a whole name, with the attribute after it (``alias.attr``); the literal comes
    first so the regex engine searches for it directly."""
    return re.compile(rf"{re.escape(alias)}(?![{word}])(?:\.([{word}]+))?")


@lru_cache(maxsize=16)
def _word_char(word: str) -> Callable[[str], object]:
    return re.compile(rf"[{word}]").match


def import_context(prefix: str, current_file: str | None, modules, read: Callable[[str], str | None] | None = None,
                   limit: int = 20, lookup: DefinitionLookup | None = None, root_package: str = "") -> list[ImportSnippet]:
    """Definitions of what the prefix imports and uses, nearest use to the cursor first.

    ``modules``: a ModuleMap (with ``read``: rel -> text), or simply the repository as a dict
    rel -> text (the eval's case; ``root_package`` names the root when it is itself a package).
    """
    language = detect(current_file)
    if language.imports is None and language is not PLAIN_TEXT:
        return []  # a language without import rules
    if isinstance(modules, dict):
        files = modules
        modules, read = ModuleMap(files, root_package, files.get), files.get
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

    bindings, uses_of = _prefix_imports(prefix, language)
    for binding in bindings:
        if binding.alias == STAR:
            continue
        module_rel = lookup.modules.resolve_binding_module(binding, current)
        if module_rel is None:
            continue
        target_rel, target_chunk = module_rel, None
        if binding.symbol is not None:
            resolved = lookup.find(module_rel, binding.symbol)
            if resolved is None:
                continue
            target_rel, target_chunk = resolved
        uses = uses_of(binding.alias)
        if target_chunk is not None:  # a class / function / constant
            add(target_rel, target_chunk, max((o for o, _ in uses), default=-1))
            continue
        for offset, attr in uses:  # a module: resolve `alias.attr`
            if attr is None:
                continue
            resolved = lookup.find(target_rel, attr)
            if resolved is not None and resolved[1] is not None:
                add(resolved[0], resolved[1], offset)
    # Imported-but-not-yet-used names first (the name about to be typed is often one of them), then
    # used names, nearest use to the cursor first. (This was written as a flag `UNUSED_FIRST = [False]`
    # whose non-empty list is truthy, so unused-first is the order every committed result measured.)
    ranked = sorted(found.values(), key=lambda s: (-1 if s.position < 0 else 0, -s.position, s.filename, s.name))
    return ranked[:limit]


def _prefix_imports(prefix: str, language: Language) -> tuple[list[Binding], Callable[[str], list[tuple[int, str | None]]]]:
    """The prefix's import bindings, and a function giving an alias's uses outside import statements
    as (offset, attribute of ``alias.attr`` or None)."""
    if language.imports == "ecmascript":
        bindings, _, spans = parse_ecma_module(prefix, language)

        def is_import_line(offset: int) -> bool:
            return any(start <= offset < end for start, end in spans)
    else:
        bindings = parse_imports(prefix)

        def is_import_line(offset: int) -> bool:
            start = prefix.rfind("\n", 0, offset) + 1
            return bool(re.match(r"\s*(from\s|import\s)", prefix[start:offset + 1] + " "))

    plain_alias = re.compile(rf"[{language.word_chars}]+")
    plain = tuple(sorted({b.alias for b in bindings if plain_alias.fullmatch(b.alias)}))
    plain_uses = _plain_uses(prefix, plain, language.word_chars)

    def uses_of(alias: str) -> list[tuple[int, str | None]]:
        found = plain_uses.get(alias, []) if alias in plain \
            else _uses(prefix, alias, language.word_chars)  # a dotted alias (import a.b)
        return [(offset, attr) for offset, attr in found if not is_import_line(offset)]

    return bindings, uses_of


def workspace_names(prefix: str, current_file: str | None, modules: ModuleMap, limit: int = 20,
                    mentions: Callable[[str, str], bool] | None = None) -> list[str]:
    """The names the prefix imports from workspace modules, as other files write them, ordered as
    :func:`import_context` orders definitions (imported-but-unused first, then nearest use to the cursor).

    Why not :func:`import_context`: this runs on every request of the ``usages`` retriever, and
    resolving a name to its definition reads, redacts and parses the module file (tens of ms the first
    time). The module map alone answers here: ``from m import X`` (m in the workspace) gives ``X``; a
    module imported whole (``import m as a``, ``from pkg import submodule``, a TypeScript namespace)
    gives the attributes used as ``a.attr`` that are not submodules; a TypeScript default import gives
    its local name. ``mentions(rel, name)``, when given, says whether module file ``rel`` has ``name``
    as a word (the index answers from its postings); a name its module never mentions is dropped, as
    ``import_context`` drops a name it cannot resolve (defined out of sight: ``import *``, C code)."""
    language = detect(current_file)
    if language.imports is None and language is not PLAIN_TEXT:
        return []
    current = current_file or ""
    bindings, uses_of = _prefix_imports(prefix, language)
    position: dict[str, int] = {}  # name -> offset of its nearest use to the cursor (-1: not used yet)
    attributes: dict[tuple[str, str], bool] = {}  # (module file, attr) -> kept: each asked once

    def is_attribute(module_file: str, attr: str) -> bool:
        key = (module_file, attr)
        if key not in attributes:
            attributes[key] = modules.submodule(module_file, attr) is None and (mentions is None or mentions(*key))
        return attributes[key]

    def add(name: str, offset: int) -> None:
        if name not in position or offset > position[name]:
            position[name] = offset

    for binding in bindings:
        if binding.alias == STAR:
            continue
        module_rel = modules.resolve_binding_module(binding, current)
        if module_rel is None or module_rel == current:
            continue
        uses = uses_of(binding.alias)
        module_file = module_rel  # the module whose attributes `alias.attr` names
        if binding.symbol is not None:
            named = mentions(module_rel, binding.symbol) if mentions is not None else None
            submodule = modules.submodule(module_rel, binding.symbol)
            if named or (named is None and submodule is None):  # a name defined in (or re-exported by) the module
                add(binding.alias if binding.symbol == "default" else binding.symbol, max((o for o, _ in uses), default=-1))
                continue
            if submodule is None:
                continue  # the module never mentions it: defined out of sight
            module_file = submodule  # ``from pkg import submodule``: its attributes, as for ``import m``
        for offset, attr in uses:
            if attr is not None and is_attribute(module_file, attr):
                add(attr, offset)
    ranked = sorted(position, key=lambda name: (-1 if position[name] < 0 else 0, -position[name], name))
    return ranked[:limit]
