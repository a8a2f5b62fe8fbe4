"""The language registry: one place that says, for a file, how to read it.

A :class:`Language` maps a file (extension, or the editor's LSP ``languageId``) to its tree-sitter
grammar (a maintained grammar wheel, imported lazily), its line-comment syntax (the CrossCodeEval
block is written in it), what counts as a definition (:class:`DefinitionRules`, for the chunker),
how imports resolve (``imports``: ``"python"`` or ``"ecmascript"``, see retrieval/imports.py), how a
completion is cut (``block``: ``"indent"`` blocks after ``:``, or ``"brace"`` blocks after ``{`` that
never repeat the closers already after the cursor; ``statement_cut``: the metric's cut), the
keywords the identifier metrics leave out, and which file names hold a package's definitions
(``index_files``, primed first).

Python is one entry; its chunker and import parser are the original Python code, unchanged. A file
no entry claims is :data:`PLAIN_TEXT`: 10-line windows for BM25 and the completion rules every file
had before languages were told apart.
"""

from __future__ import annotations

import importlib
import keyword
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DefinitionRules:
    """Which tree-sitter nodes define names, for the generic chunker (retrieval/chunking.py).

    ``definitions`` are chunked under their ``name`` field (or ``type``, for Rust's ``impl``);
    ``functions`` among them are shown as signature + ``...`` when long, the others (classes,
    interfaces, enums) as their header and one line per member. Members of ``containers`` listed in
    ``methods`` get chunks of their own, named ``Container.member``. ``variables`` hold
    ``declarators`` (``const a = 1, b = 2``), each a definition. ``wrappers`` are looked through
    (``export``, ``declare``, namespaces, Go's ``type (...)`` groups). ``doc_comments``: comment
    node types shown above a definition when they end on the line before it.
    """

    definitions: frozenset[str]
    functions: frozenset[str] = frozenset()
    containers: frozenset[str] = frozenset()
    methods: frozenset[str] = frozenset()
    variables: frozenset[str] = frozenset()
    declarators: frozenset[str] = frozenset()
    wrappers: frozenset[str] = frozenset()
    doc_comments: frozenset[str] = frozenset({"comment"})
    function_values: frozenset[str] = frozenset()  # a declarator whose value is one of these is a function


@dataclass(frozen=True)
class Language:
    name: str  # registry key; also the name the metrics use ("python", "typescript", ...)
    extensions: tuple[str, ...]  # lower-case, with the dot
    language_ids: tuple[str, ...] = ()  # LSP languageIds the editors send
    comment: str = "#"  # line-comment prefix
    grammar: tuple[str, str] | None = None  # (grammar wheel module, function returning the language pointer)
    rules: DefinitionRules | None = None  # None: no definition chunks (Python has its own chunker)
    keywords: frozenset[str] = frozenset()  # left out of identifier EM/F1
    block: str = "indent"  # completion blocks: "indent" (after ':', ends at a dedent) or "brace" (after '{')
    statement_cut: str = "none"  # metric: "python" (parses), "bracket" (first ; { or }), "none"
    imports: str | None = None  # import resolution family: "python" | "ecmascript" | None
    index_files: tuple[str, ...] = ()  # a directory's entry files (definitions re-exported), primed first
    family: str = ""  # languages that import each other's files (TypeScript and JavaScript)
    word_chars: str = r"\w"  # identifier characters, inside a regex character class ($ is one in JavaScript)

    @property
    def has_grammar(self) -> bool:
        return self.grammar is not None


# ---- keywords (the reserved words of each language's specification; CrossCodeEval keeps the same lists) ----
PYTHON_KEYWORDS = frozenset(keyword.kwlist)  # the metric has always used keyword.kwlist for Python
ECMASCRIPT_KEYWORDS = frozenset(
    "break case catch class const continue debugger default delete do else export extends finally for function if "
    "import in instanceof new return super switch this throw try typeof var void while with yield enum implements "
    "interface let package private protected public static".split())
JAVA_KEYWORDS = frozenset(
    "abstract assert boolean break byte case catch char class continue default do double else enum extends final "
    "finally float for if implements import instanceof int interface long native new package private protected "
    "public return short static strictfp super switch synchronized this throw throws transient try void volatile "
    "while var const goto".split())
CSHARP_KEYWORDS = frozenset(
    "abstract as base bool break byte case catch char checked class const continue decimal default delegate do "
    "double else enum event explicit extern finally fixed float for foreach goto if implicit in int interface "
    "internal is lock long namespace new null object operator out override params private protected public "
    "readonly ref return sbyte sealed short sizeof stackalloc static string struct switch this throw try typeof "
    "uint ulong unchecked unsafe ushort using virtual void volatile while".split())
GO_KEYWORDS = frozenset(
    "break case chan const continue default defer else fallthrough for func go goto if import interface map "
    "package range return select struct switch type var".split())
RUST_KEYWORDS = frozenset(
    "as async await break const continue crate dyn else enum extern false fn for if impl in let loop match mod "
    "move mut pub ref return self Self static struct super trait true type unsafe use where while".split())

# ---- definition rules ----------------------------------------------------------------------------------
_ECMA_FUNCTIONS = frozenset({"function_declaration", "generator_function_declaration", "function_signature"})
_ECMA_VALUES = frozenset({"arrow_function", "function_expression", "function", "generator_function"})
JAVASCRIPT_RULES = DefinitionRules(
    definitions=_ECMA_FUNCTIONS | {"class_declaration"},
    functions=_ECMA_FUNCTIONS,
    containers=frozenset({"class_declaration"}),
    methods=frozenset({"method_definition"}),
    variables=frozenset({"lexical_declaration", "variable_declaration"}),
    declarators=frozenset({"variable_declarator"}),
    wrappers=frozenset({"export_statement"}),
    function_values=_ECMA_VALUES,
)
TYPESCRIPT_RULES = DefinitionRules(
    definitions=_ECMA_FUNCTIONS | {"class_declaration", "abstract_class_declaration", "interface_declaration",
                                   "type_alias_declaration", "enum_declaration"},
    functions=_ECMA_FUNCTIONS,
    containers=frozenset({"class_declaration", "abstract_class_declaration"}),
    methods=frozenset({"method_definition", "method_signature", "abstract_method_signature"}),
    variables=frozenset({"lexical_declaration", "variable_declaration"}),
    declarators=frozenset({"variable_declarator"}),
    wrappers=frozenset({"export_statement", "ambient_declaration"}),
    function_values=_ECMA_VALUES,
)
JAVA_RULES = DefinitionRules(
    definitions=frozenset({"class_declaration", "interface_declaration", "enum_declaration", "record_declaration",
                           "annotation_type_declaration"}),
    containers=frozenset({"class_declaration", "interface_declaration", "enum_declaration", "record_declaration"}),
    methods=frozenset({"method_declaration", "constructor_declaration"}),
    doc_comments=frozenset({"block_comment", "line_comment"}),
)
GO_RULES = DefinitionRules(
    definitions=frozenset({"function_declaration", "method_declaration", "type_spec"}),
    functions=frozenset({"function_declaration", "method_declaration"}),
    variables=frozenset({"const_declaration", "var_declaration"}),
    declarators=frozenset({"const_spec", "var_spec"}),
    wrappers=frozenset({"type_declaration"}),
)
RUST_RULES = DefinitionRules(
    definitions=frozenset({"function_item", "function_signature_item", "struct_item", "enum_item", "union_item",
                           "trait_item", "impl_item", "type_item", "const_item", "static_item", "macro_definition"}),
    functions=frozenset({"function_item", "function_signature_item"}),
    containers=frozenset({"impl_item", "trait_item"}),
    methods=frozenset({"function_item", "function_signature_item"}),
    wrappers=frozenset({"mod_item"}),
    doc_comments=frozenset({"line_comment", "block_comment"}),
)
CSHARP_RULES = DefinitionRules(
    definitions=frozenset({"class_declaration", "interface_declaration", "struct_declaration", "enum_declaration",
                           "record_declaration", "delegate_declaration"}),
    containers=frozenset({"class_declaration", "interface_declaration", "struct_declaration", "record_declaration"}),
    methods=frozenset({"method_declaration", "constructor_declaration"}),
    wrappers=frozenset({"namespace_declaration", "file_scoped_namespace_declaration"}),
)

# ---- the registry --------------------------------------------------------------------------------------
PLAIN_TEXT = Language("text", (), ("plaintext",))
PYTHON = Language("python", (".py", ".pyi"), ("python",), "#", ("tree_sitter_python", "language"), None,
                  PYTHON_KEYWORDS, "indent", "python", "python", ("__init__.py", "__init__.pyi"))
_ECMA_INDEX = ("index.ts", "index.tsx", "index.mts", "index.js", "index.jsx", "index.mjs", "index.cjs")
TYPESCRIPT = Language("typescript", (".ts", ".mts", ".cts"), ("typescript",), "//",
                      ("tree_sitter_typescript", "language_typescript"), TYPESCRIPT_RULES, ECMASCRIPT_KEYWORDS,
                      "brace", "bracket", "ecmascript", _ECMA_INDEX, "ecmascript", r"\w$")
TSX = Language("tsx", (".tsx",), ("typescriptreact",), "//", ("tree_sitter_typescript", "language_tsx"),
               TYPESCRIPT_RULES, ECMASCRIPT_KEYWORDS, "brace", "bracket", "ecmascript", _ECMA_INDEX, "ecmascript",
               r"\w$")
JAVASCRIPT = Language("javascript", (".js", ".jsx", ".mjs", ".cjs"), ("javascript", "javascriptreact"), "//",
                      ("tree_sitter_javascript", "language"), JAVASCRIPT_RULES, ECMASCRIPT_KEYWORDS, "brace",
                      "bracket", "ecmascript", _ECMA_INDEX, "ecmascript", r"\w$")
JAVA = Language("java", (".java",), ("java",), "//", ("tree_sitter_java", "language"), JAVA_RULES, JAVA_KEYWORDS,
                "brace", "bracket")
GO = Language("go", (".go",), ("go",), "//", ("tree_sitter_go", "language"), GO_RULES, GO_KEYWORDS, "brace",
              "bracket")
RUST = Language("rust", (".rs",), ("rust",), "//", ("tree_sitter_rust", "language"), RUST_RULES, RUST_KEYWORDS,
                "brace", "bracket", index_files=("mod.rs", "lib.rs"))
# Neovim sends its filetype as the languageId: "cs" for C#.
CSHARP = Language("csharp", (".cs",), ("csharp", "cs"), "//", ("tree_sitter_c_sharp", "language"), CSHARP_RULES,
                  CSHARP_KEYWORDS, "brace", "bracket")
# Comment syntax only (no grammar wheel pinned): the cross-file block is written in the right syntax.
_C_FAMILY = [
    Language("c", (".c", ".h"), ("c",), "//", block="brace"),
    Language("cpp", (".cc", ".cpp", ".cxx", ".hpp", ".hh"), ("cpp",), "//", block="brace"),
    Language("kotlin", (".kt", ".kts"), ("kotlin",), "//", block="brace"),
    Language("scala", (".scala",), ("scala",), "//", block="brace"),
    Language("swift", (".swift",), ("swift",), "//", block="brace"),
    Language("php", (".php",), ("php",), "//", block="brace"),
    Language("objective-c", (".m",), ("objective-c",), "//", block="brace"),
    Language("proto", (".proto",), ("proto3", "proto"), "//", block="brace"),
]
_OTHER = [
    Language("lua", (".lua",), ("lua",), "--"),
    Language("sql", (".sql",), ("sql",), "--"),
    Language("shellscript", (".sh", ".bash"), ("shellscript",), "#"),
    Language("ruby", (".rb",), ("ruby",), "#"),
]
LANGUAGES: tuple[Language, ...] = (PYTHON, TYPESCRIPT, TSX, JAVASCRIPT, JAVA, GO, RUST, CSHARP, *_C_FAMILY, *_OTHER)

INDEX_FILES = frozenset(name for lang in LANGUAGES for name in lang.index_files)
_BY_EXTENSION = {ext: lang for lang in LANGUAGES for ext in lang.extensions}
_BY_ID = {lid: lang for lang in LANGUAGES for lid in lang.language_ids}
_BY_NAME = {lang.name: lang for lang in LANGUAGES} | {PLAIN_TEXT.name: PLAIN_TEXT}


@lru_cache(maxsize=4096)
def for_path(path: str | None) -> Language | None:
    """The language of a file by its extension (None when no entry claims it); cached: import
    resolution asks it for the same few files once per import of every request."""
    if not path:
        return None
    return _BY_EXTENSION.get(PurePosixPath(str(path).replace("\\", "/")).suffix.lower())


def for_language_id(language_id: str | None) -> Language | None:
    """The language for an LSP ``languageId`` (None when unknown)."""
    return _BY_ID.get(language_id) if language_id else None


def by_name(name: str) -> Language:
    """A registry entry by its name; ValueError names the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown language {name!r}; known: {', '.join(sorted(_BY_NAME))}") from None


def detect(path: str | None = None, language_id: str | None = None) -> Language:
    """The file's language: the editor's ``languageId`` when it names a known one, else the
    extension, else :data:`PLAIN_TEXT`."""
    return for_language_id(language_id) or for_path(path) or PLAIN_TEXT


def same_family(a: Language, b: Language) -> bool:
    """Whether files of ``a`` import files of ``b`` (TypeScript imports JavaScript and back)."""
    return a is b or bool(a.family) and a.family == b.family


@lru_cache(maxsize=None)
def parser(name: str):
    """A tree-sitter parser for the language ``name`` (cached), or None when it has no grammar or its
    grammar wheel is not installed (then the file is read as plain text; logged once)."""
    lang = by_name(name)
    if lang.grammar is None:
        return None
    module_name, function = lang.grammar
    try:
        from tree_sitter import Language as TSLanguage, Parser

        module = importlib.import_module(module_name)
        return Parser(TSLanguage(getattr(module, function)()))
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        log.warning("%s: tree-sitter grammar %s unavailable (%s); reading these files as plain text",
                    name, module_name, exc)
        return None


def grammar_status() -> dict[str, str]:
    """Per language with a grammar: "ok" or why it does not load (for ``titans-lsp doctor``)."""
    out = {}
    for lang in LANGUAGES:
        if lang.grammar is not None:
            out[lang.name] = "ok" if parser(lang.name) is not None else f"{lang.grammar[0]} not installed"
    return out


__all__ = ["DefinitionRules", "LANGUAGES", "Language", "PLAIN_TEXT", "PYTHON", "TYPESCRIPT", "TSX", "JAVASCRIPT",
           "by_name", "detect", "for_language_id", "for_path", "parser", "same_family", "grammar_status"]
