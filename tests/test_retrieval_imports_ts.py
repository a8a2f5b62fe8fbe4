"""TypeScript/JavaScript import resolution: relative and ESM `.js` specifiers, index files, tsconfig
paths/baseUrl (with extends), workspace package.json exports/main, re-exports, namespaces, require."""

from __future__ import annotations

import json

import pytest

from titans_lsp.retrieval.ecmascript import EcmaResolver, export_target
from titans_lsp.retrieval.imports import import_context, parse_ecma_module
from titans_lsp.retrieval.index import WorkspaceIndex
from titans_lsp.retrieval.languages import TYPESCRIPT

FILES = {
    "tsconfig.base.json": '{\n  // shared options\n  "compilerOptions": {"baseUrl": ".", "paths": {"@core/*": ["packages/core/src/*"],},},\n}\n',
    "apps/web/tsconfig.json": '{"extends": "../../tsconfig.base.json", "compilerOptions": {"strict": true}}',
    "apps/web/src/main.ts": "",  # the current file: its prefix comes from the test
    "apps/web/src/util/format.ts": "export function formatPrice(cents: number): string {\n  return `${cents / 100}`;\n}\n",
    "apps/web/src/util/index.ts": 'export * from "./format.js";\nexport { slugify as toSlug } from "./text";\n',
    "apps/web/src/util/text.ts": "export const slugify = (s: string) => s.toLowerCase();\n",
    "apps/web/src/models/cart.ts": ("export interface CartItem {\n  sku: string;\n  qty: number;\n}\n"
                                    "export default class Cart {\n  items: CartItem[] = [];\n  add(item: CartItem): void {}\n}\n"
                                    "const TAX = 0.2;\nexport { TAX as taxRate };\n"),
    "packages/core/package.json": json.dumps({"name": "@acme/core", "exports": {".": {"types": "./dist/index.d.ts",
                                                                                      "import": "./dist/index.js"},
                                                                                "./money": "./dist/money.js"}}),
    "packages/core/src/index.ts": "export { Logger } from './logger';\n",
    "packages/core/src/logger.ts": "export class Logger {\n  log(message: string): void {}\n}\n",
    "packages/core/src/money.ts": "export type Currency = 'EUR' | 'USD';\n",
    "packages/legacy/package.json": json.dumps({"name": "legacy", "main": "lib/entry.js"}),
    "packages/legacy/lib/entry.js": "function legacyInit(opts) {\n  return opts;\n}\nmodule.exports = { legacyInit };\n",
    "node_modules/left-pad/index.js": "module.exports = function leftPad() {};\n",
}


@pytest.fixture
def index(tmp_path) -> WorkspaceIndex:
    for rel, text in FILES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    built = WorkspaceIndex(tmp_path, None, dense_model=None)
    built.build()
    return built


def first_lines(index, prefix, current="apps/web/src/main.ts"):
    return [(s.filename, s.text.split("\n")[0]) for s in index.retrieve(prefix, current, "imports", k=10)]


def test_parse_forms():
    text = ('import d, { a as b, c } from "./x.js";\nimport * as ns from "../y";\nimport type { T } from "@/z";\n'
            'export * from "./w";\nexport * as q from "./q";\nexport { r as s } from "./r";\nconst local = 1;\n'
            'export { local as pub };\nexport default local;\nconst m = require("./m");\nconst { k, j: jj } = require("./kj");\n')
    bindings, exports, spans = parse_ecma_module(text, TYPESCRIPT)
    assert [(b.alias, b.module, b.symbol) for b in bindings] == [
        ("d", "./x.js", "default"), ("b", "./x.js", "a"), ("c", "./x.js", "c"), ("ns", "../y", None), ("T", "@/z", "T"),
        ("*", "./w", None), ("q", "./q", None), ("s", "./r", "r"), ("m", "./m", None), ("k", "./kj", "k"),
        ("jj", "./kj", "j")]
    assert exports == [("pub", "local"), ("default", "local")]
    assert text[spans[0][0]:spans[0][1]] == 'import d, { a as b, c } from "./x.js";'


def test_relative_esm_js_specifier_resolves_to_the_typescript_source(index):
    got = first_lines(index, 'import { formatPrice } from "./util/format.js";\n\nconst label = formatPrice(')
    assert got == [("apps/web/src/util/format.ts", "export function formatPrice(cents: number): string {")]


def test_index_file_star_and_renamed_reexports(index):
    got = first_lines(index, 'import { formatPrice, toSlug } from "./util";\n\nconst a = formatPrice(1) + toSlug(')
    assert got == [("apps/web/src/util/text.ts", "export const slugify = (s: string) => s.toLowerCase();"),
                   ("apps/web/src/util/format.ts", "export function formatPrice(cents: number): string {")]


def test_default_namespace_and_local_renamed_exports(index):
    prefix = ('import Cart, { CartItem } from "./models/cart";\nimport * as cart from "./models/cart";\n\n'
              'const rate = cart.taxRate;\nconst c = new Cart();\nconst item: CartItem = ')
    got = first_lines(index, prefix)
    assert got[0] == ("apps/web/src/models/cart.ts", "export interface CartItem {")  # used nearest the cursor
    assert ("apps/web/src/models/cart.ts", "export default class Cart {") in got
    assert ("apps/web/src/models/cart.ts", "const TAX = 0.2;") in got


def test_tsconfig_paths_through_extends(index):
    got = first_lines(index, 'import { Logger } from "@core/logger";\n\nconst log = new Logger(')
    assert got == [("packages/core/src/logger.ts", "export class Logger {")]


def test_workspace_package_exports_and_main(index):
    got = first_lines(index, 'import { Logger } from "@acme/core";\nimport type { Currency } from "@acme/core/money";\n'
                             'let c: Currency;\nconst l = new Logger(')
    assert ("packages/core/src/logger.ts", "export class Logger {") in got  # dist/index.js -> src/index.ts
    assert ("packages/core/src/money.ts", "export type Currency = 'EUR' | 'USD';") in got
    got = first_lines(index, 'const { legacyInit } = require("legacy");\nlegacyInit(', current="apps/web/src/old.js")
    assert got == [("packages/legacy/lib/entry.js", "function legacyInit(opts) {")]


def test_node_modules_and_unknown_packages_resolve_to_nothing(index):
    assert first_lines(index, 'import leftPad from "left-pad";\nimport x from "react";\nleftPad(x') == []
    resolver = EcmaResolver(["a.ts"], {"node_modules/p/index.ts": ""}.get)
    assert resolver.resolve("p", "a.ts") is None and resolver.resolve("../outside", "a.ts") is None


def test_names_inside_import_statements_are_not_uses(index):
    prefix = 'import {\n  formatPrice,\n} from "./util/format";\n'
    found = import_context(prefix, "apps/web/src/main.ts", index.module_map(), index._read_rel)
    assert [s.position for s in found] == [-1]  # imported, not used yet


def test_a_broken_tsconfig_is_ignored_and_relative_imports_still_work(tmp_path, caplog):
    files = {"tsconfig.json": "{ not json", "src/a.ts": "export const A = 1;\n", "src/b.ts": ""}
    found = import_context('import { A } from "./a";\nA', "src/b.ts", files)
    assert [s.text for s in found] == ["export const A = 1;"]
    assert import_context('import { A } from "@x/a";\nA', "src/b.ts", files) == []
    assert "does not parse" in caplog.text


def test_export_targets():
    exports = {".": {"source": "./src/index.ts", "default": "./dist/index.js"}, "./utils/*": {"import": "./dist/u/*.js"},
               "./package.json": "./package.json"}
    assert export_target(exports, ".") == "./src/index.ts"  # a source condition first
    assert export_target(exports, "./utils/date") == "./dist/u/date.js"
    assert export_target(exports, "./missing") is None
    assert export_target("./main.js", ".") == "./main.js" and export_target({"import": "./m.js"}, ".") == "./m.js"


def test_languages_without_import_rules_get_no_import_context(index):
    assert import_context("import foo.Bar;\nBar.", "src/Main.java", {"src/Bar.java": "class Bar {}"}) == []
