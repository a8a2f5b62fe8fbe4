"""The language registry and definition chunks per language."""

from __future__ import annotations

import pytest

from titans_lsp.retrieval import languages
from titans_lsp.retrieval.chunking import definition_chunks
from titans_lsp.retrieval.languages import PLAIN_TEXT, PYTHON, TYPESCRIPT, by_name, detect, for_language_id


def test_files_and_language_ids_map_to_one_entry():
    assert detect("src/a.py") is PYTHON and detect("pkg/types.pyi") is PYTHON
    assert detect("src/a.ts") is TYPESCRIPT and detect("src/a.d.ts") is TYPESCRIPT and detect("A.MTS") is TYPESCRIPT
    assert detect("src/App.tsx").name == "tsx" and detect("x.jsx").name == "javascript"
    assert detect(language_id="typescriptreact").name == "tsx"
    # the editor's languageId wins over the extension (an untitled buffer, a misnamed file)
    assert detect("notes.txt", "typescript") is TYPESCRIPT
    assert [detect(f"a.{ext}").comment for ext in ("java", "go", "rs", "cs", "c", "lua", "sql", "sh")] == \
        ["//", "//", "//", "//", "//", "--", "--", "#"]


def test_unknown_files_are_plain_text_with_the_old_rules():
    for path, language_id in (("README.md", None), ("data.xyz", "brainfuck"), (None, None), ("Makefile", None)):
        assert detect(path, language_id) is PLAIN_TEXT
    assert PLAIN_TEXT.comment == "#" and PLAIN_TEXT.block == "indent" and PLAIN_TEXT.imports is None
    assert definition_chunks("def f():\n    pass\n", language=PLAIN_TEXT) == []
    assert for_language_id(None) is None and for_language_id("cobol") is None


def test_unknown_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="known: .*typescript"):
        by_name("klingon")


def test_every_pinned_grammar_loads():
    assert languages.grammar_status() == {name: "ok" for name in
                                          ("python", "typescript", "tsx", "javascript", "java", "go", "rust", "csharp")}


def test_a_missing_grammar_wheel_reads_files_as_plain_text(monkeypatch):
    broken = languages.Language("fake", (".fake",), grammar=("no_such_grammar_module", "language"),
                                rules=languages.JAVASCRIPT_RULES)
    monkeypatch.setitem(languages._BY_NAME, "fake", broken)
    languages.parser.cache_clear()
    try:
        assert languages.parser("fake") is None
        assert definition_chunks("function f() {}\n", language=broken) == []
    finally:
        languages.parser.cache_clear()


TS = '''import { Base } from "./base";

/** Adds two numbers.
 * Returns their sum. */
export function add(a: number, b: number): number {
  return a + b;
}

export default class Store<T> extends Base {
  private items: T[] = [];
  constructor(name: string) { super(name); }
  get(index: number): T { return this.items[index]; }
}

export interface Options { name: string; retries?: number }
export type Handler = (event: string) => void;
export const DEFAULT_RETRIES = 3, makeHandler = (name: string): Handler => (event) => console.log(name, event);
const internal = 1;
export enum Color { Red, Green }
declare function ambient(x: string): void;
export abstract class Shape { abstract area(): number }
'''


def names(text: str, language) -> list[str]:
    return [c.name for c in definition_chunks(text, language=language)]


def test_typescript_definitions():
    assert names(TS, TYPESCRIPT) == ["add", "Store", "Store.constructor", "Store.get", "Options", "Handler",
                                     "DEFAULT_RETRIES", "makeHandler", "internal", "Color", "ambient", "Shape",
                                     "Shape.area"]
    chunks = {c.name: c for c in definition_chunks(TS, language=TYPESCRIPT)}
    assert chunks["add"].text.startswith("/** Adds two numbers.\n * Returns their sum. */\nexport function add(")
    assert (chunks["add"].start_line, chunks["add"].end_line) == (4, 6)
    assert chunks["Store"].text.startswith("export default class Store<T> extends Base {")


def test_long_typescript_definitions_are_summarized():
    body = "\n".join(f"  const v{i} = {i};" for i in range(30))
    members = "\n".join(f"  m{i}(): void {{}}" for i in range(30))
    text = (f"export async function big(a: string): Promise<void> {{\n{body}\n}}\n"
            f"export class Wide {{\n{members}\n}}\n")
    chunks = {c.name: c.text for c in definition_chunks(text, language=TYPESCRIPT)}
    assert chunks["big"] == "export async function big(a: string): Promise<void> {\n  ...\n}"
    wide = chunks["Wide"].split("\n")
    assert wide[0] == "export class Wide {" and wide[1] == "  m0(): void {}" and wide[-1] == "}"
    assert "  ..." in wide and len(wide) <= 20


def test_javascript_definitions():
    js = ("const path = require('path');\nfunction walk(dir) {\n  return dir;\n}\nclass Tree {\n  grow() {}\n}\n"
          "export const leaf = () => 1;\nmodule.exports = { walk };\n")
    assert names(js, by_name("javascript")) == ["path", "walk", "Tree", "Tree.grow", "leaf"]


def test_java_go_rust_csharp_definitions():
    java = ("package a.b;\nimport x.Y;\n/** A thing. */\npublic class Thing extends Base {\n  private int n = 1;\n"
            "  public Thing() {}\n  public int size(int a) { return n; }\n}\ninterface Sized { int size(); }\n")
    assert names(java, by_name("java")) == ["Thing", "Thing.Thing", "Thing.size", "Sized", "Sized.size"]
    go = ("package main\nimport \"fmt\"\n// F prints.\nfunc F(a int) int { return a }\nfunc (s *S) M() {}\n"
          "type S struct { A int }\ntype (\n  I interface { M() }\n)\nconst C = 1\nvar V = 2\n")
    assert names(go, by_name("go")) == ["F", "M", "S", "I", "C", "V"]
    rust = ("use a::b;\n/// Doc.\npub fn f(a: i32) -> i32 { a }\npub struct S { a: i32 }\nimpl S {\n"
            "    pub fn m(&self) {}\n}\ntrait T { fn t(&self); }\nconst C: i32 = 1;\nmod inner { pub fn g() {} }\n")
    assert names(rust, by_name("rust")) == ["f", "S", "S", "S.m", "T", "T.t", "C", "g"]
    assert definition_chunks(rust, language=by_name("rust"))[0].text == "/// Doc.\npub fn f(a: i32) -> i32 { a }"
    csharp = ("using System;\nnamespace N {\n  public class A {\n    public int P { get; set; }\n    public A() {}\n"
              "    public void M() {}\n  }\n  interface I { void M(); }\n}\n")
    assert names(csharp, by_name("csharp")) == ["A", "A.A", "A.M", "I", "I.M"]


def test_python_definitions_are_unchanged_by_the_registry():
    text = "import os\n\nclass A:\n    \"\"\"Doc.\"\"\"\n    def m(self):\n        return 1\n\nX = 2\n"
    assert names(text, None) == names(text, PYTHON) == ["A", "A.m", "X"]


def test_broken_source_still_gives_the_definitions_it_can():
    text = "export function ok(): number { return 1 }\nexport class {{{ broken\nexport const z = 2;\n"
    assert "ok" in names(text, TYPESCRIPT)


def test_editor_plugins_register_languages_the_registry_knows():
    """VS Code's activation events and document selector, and Neovim's filetypes, name the same
    languages, each one a registry language (so the server applies its rules)."""
    import json
    import re
    from pathlib import Path

    editors = Path(__file__).resolve().parents[1] / "editors"
    package = json.loads((editors / "vscode" / "package.json").read_text())
    activated = [e.split(":", 1)[1] for e in package["activationEvents"] if e.startswith("onLanguage:")]
    source = (editors / "vscode" / "src" / "extension.ts").read_text()
    selector = re.findall(r'"([a-z]+)"', re.search(r"const LANGUAGES = \[(.*?)\];", source, re.S).group(1))
    lua = (editors / "neovim" / "lua" / "titans_lsp" / "init.lua").read_text()
    filetypes = re.findall(r"'([a-z]+)'", re.search(r"filetypes = \{(.*?)\}", lua, re.S).group(1))
    assert activated == selector and "typescript" in activated and "python" in activated
    assert len(filetypes) == len(selector) and "typescript" in filetypes
    for language_id in activated + filetypes:
        assert for_language_id(language_id) is not None, language_id


def test_a_minified_file_gives_short_chunks():
    minified = "export function a(){return 1}" + ";var x=1" * 20_000 + "\nexport const b = 2;\n"
    found = definition_chunks(minified, language=languages.by_name("javascript"))
    assert found[0].name == "a" and len(found) <= 2_000 and max(len(c.text) for c in found) < 300
