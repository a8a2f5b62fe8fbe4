"""Workspace rules: ignore files, secrets, symlink escapes, binary, size, decoding; a canary in an
excluded file never reaches any retrieved context."""

from __future__ import annotations

import os

import pytest

from titans_lsp.retrieval.index import WorkspaceIndex
from titans_lsp.retrieval.workspace import WorkspaceFilter, iter_workspace_files, priming_order

CANARY = "CANARY_7f3a9_do_not_leak"


def write(path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def canary_code(name: str) -> str:
    return f"def {name}(config):\n    token = '{CANARY}'\n    return load_config(config, token)\n"


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "ws"
    outside = tmp_path / "outside"
    write(root / "app" / "main.py", "from app.util import load_config\n\ndef run(config):\n    return load_config(config)\n")
    write(root / "app" / "util.py", "def load_config(path, token=None):\n    with open(path) as f:\n        return f.read()\n")
    write(root / "app" / "__init__.py", "")
    write(root / ".gitignore", "build/\n*.gen.py\n!keep.gen.py\n")
    write(root / "build" / "out.py", canary_code("built"))
    write(root / "app" / "x.gen.py", canary_code("generated"))
    write(root / "app" / "keep.gen.py", "def kept():\n    return 'visible'\n")
    write(root / "lib" / ".gitignore", "private_*.py\n")
    write(root / "lib" / "private_cfg.py", canary_code("nested_ignored"))
    write(root / "lib" / "public.py", "def public_helper(config):\n    return config\n")
    for secret in (".env", ".env.local", "server.pem", "deploy.key", "id_rsa", "id_ed25519.pub", "credentials.py",
                   "aws_credentials.txt"):
        write(root / "conf" / secret, canary_code("secret"))
    write(root / "conf" / "settings.py", "-----BEGIN RSA PRIVATE KEY-----\n" + canary_code("pk"))
    write(outside / "escape.py", canary_code("escaped"))
    write(outside / "pkg" / "inner.py", canary_code("escaped_dir"))
    os.symlink(outside / "escape.py", root / "app" / "link.py")
    os.symlink(outside / "pkg", root / "linked_pkg")
    write(root / "app" / "blob.py", b"\x00\x01binary" + CANARY.encode())
    write(root / "big.py", "x = 1\n" * 200 + f"# {CANARY}\n")
    write(root / "node_modules" / "dep.js", f"var a = '{CANARY}';\n")
    write(root / "latin.py", "name = 'caf\xe9'\n".encode("latin-1"))
    return root


def test_walk_applies_every_rule(workspace):
    rels = {f.rel for f in iter_workspace_files(workspace, max_bytes=1000)}
    assert rels == {"app/main.py", "app/util.py", "app/__init__.py", "app/keep.gen.py", "lib/public.py", "latin.py"}
    files = list(iter_workspace_files(workspace, max_bytes=1000))
    assert all(CANARY not in f.text for f in files)
    assert next(f for f in files if f.rel == "latin.py").text == "name = 'caf\ufffd'\n"  # decoded, never raises


def test_single_file_load_applies_the_same_rules(workspace):
    rules = WorkspaceFilter(workspace, max_bytes=1000)
    for rel in ("build/out.py", "app/x.gen.py", "lib/private_cfg.py", "conf/.env", "conf/server.pem", "conf/id_rsa",
                "conf/credentials.py", "conf/settings.py", "app/link.py", "linked_pkg/inner.py", "app/blob.py", "big.py"):
        assert rules.load(workspace / rel) is None, rel
    assert rules.load(workspace / "app" / "keep.gen.py") is not None
    assert rules.load(workspace / ".." / "outside" / "escape.py") is None  # a path that walks out
    assert rules.load("../outside/escape.py") is None


def test_canary_never_retrieved(workspace, tmp_path):
    index = WorkspaceIndex(workspace, tmp_path / "state", dense_model=None, max_bytes=1000)
    index.build()
    # the server also calls update_file for files the watcher reports: excluded ones must stay out
    for rel in ("build/out.py", "conf/.env", "app/link.py", "lib/private_cfg.py", "conf/settings.py"):
        assert index.update_file(workspace / rel) is False
    prefix = f"def run(config):\n    token = '{CANARY}'\n    return load_config(config, token)\n"
    for retriever in ("bm25", "imports", ["bm25", "imports"]):
        for snippet in index.retrieve(prefix + "from app.util import load_config\nload_config(", "app/main.py", retriever, k=50):
            assert CANARY not in snippet.text
    assert all(CANARY not in c.text for c in index.doc_chunk if c is not None)


def test_priming_order_definitions_first():
    rels = ["pkg/sub/b.py", "z.py", "pkg/a.py", "pkg/__init__.py", "a.py"]
    assert priming_order(rels) == ["a.py", "z.py", "pkg/__init__.py", "pkg/a.py", "pkg/sub/b.py"]


def test_priming_order_puts_index_files_and_declarations_first_in_their_directory():
    rels = ["src/cart.ts", "src/types.d.ts", "src/index.ts", "src/app.tsx", "lib/mod.rs", "lib/a.rs", "b.ts"]
    assert priming_order(rels) == ["b.ts", "lib/mod.rs", "lib/a.rs", "src/index.ts", "src/types.d.ts", "src/app.tsx",
                                   "src/cart.ts"]


def test_config_files_are_read_for_import_resolution_but_not_from_node_modules_or_outside(tmp_path):
    (tmp_path / "node_modules" / "p").mkdir(parents=True)
    (tmp_path / "node_modules" / "p" / "package.json").write_text('{"name": "p"}')
    (tmp_path / "tsconfig.json").write_text("{}")
    (tmp_path / "secrets.json").write_text("{}")
    (tmp_path.parent / "outside-package.json").write_text("{}")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "package.json").symlink_to(tmp_path.parent / "outside-package.json")
    rules = WorkspaceFilter(tmp_path)
    assert rules.load_config("tsconfig.json") == "{}"
    assert rules.load_config("node_modules/p/package.json") is None
    assert rules.load_config("secrets.json") is None  # not a config file import resolution reads
    assert rules.load_config("pkg/package.json") is None  # a link out of the workspace
    assert rules.load_config("../outside-package.json") is None and rules.load_config("missing/package.json") is None
