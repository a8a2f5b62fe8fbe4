"""Files that change under the watcher in awkward ways: one bad path in a batch of changes must not
cost the others their re-index."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from titans_lsp import jobs
from titans_lsp.folder import FolderState


def stub_server() -> SimpleNamespace:
    """What jobs.files_changed needs from the server: the stop flag and the status notification."""
    return SimpleNamespace(scheduler=SimpleNamespace(stopping=threading.Event()), send_status=lambda *a, **k: None)


def test_a_symlink_loop_in_a_batch_of_changes_does_not_drop_the_other_files(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "a.py").write_text("def old_name():\n    return 1\n")
    state = FolderState(root.as_uri(), root, str(tmp_path / "cache"))
    state.load_index(dense_model=None)
    (root / "a.py").write_text("def renamed_function():\n    return 2\n")
    (root / "loop.py").symlink_to(root / "loop.py")  # e.g. a botched `ln -s`, saved in the same 0.4 s window
    (root / "b.py").symlink_to(root / "c.py")
    (root / "c.py").symlink_to(root / "b.py")
    jobs.files_changed(stub_server(), state, {root / "a.py", root / "loop.py", root / "b.py"})
    assert any("renamed_function" in chunk.text for chunk in state.index.entries["a.py"].chunks)
    assert set(state.index.files()) == {"a.py"}
    assert state.rel(root / "loop.py") == "loop.py"  # the link itself is in the folder


def test_a_document_at_a_symlink_loop_belongs_to_its_folder(tmp_path):
    """A client may open any URI (the text comes with didOpen); its folder must not be an internal error."""
    from titans_lsp.server import TitansServer

    root = tmp_path / "ws"
    root.mkdir()
    (root / "loop.py").symlink_to(root / "loop.py")
    server = TitansServer(cache_dir=str(tmp_path / "cache"), events_db=str(tmp_path / "events.db"))
    folder = server.add_folder(root.as_uri())
    assert server.folder_for((root / "loop.py").as_uri()) is folder
    assert server.folder_for((tmp_path / "elsewhere.py").as_uri()) is not folder
