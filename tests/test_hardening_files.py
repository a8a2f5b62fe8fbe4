"""Workspace files and folders that change under the server in awkward ways (a symlink loop in a batch
of changes, a folder removed while it is primed), and a model that does not load: each is named or
stopped, never left to fail the work around it or to look fine."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from titans_lsp import jobs
from titans_lsp.folder import FolderState


def stub_server(state: FolderState) -> SimpleNamespace:
    """What jobs.files_changed needs from the server: the stop flag, the folders and the status notification."""
    return SimpleNamespace(scheduler=SimpleNamespace(stopping=threading.Event()), folders={state.uri: state},
                           send_status=lambda *a, **k: None)


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
    jobs.files_changed(stub_server(state), state, {root / "a.py", root / "loop.py", root / "b.py"})
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


def test_removing_a_workspace_folder_stops_its_priming(tmp_path, tiny_llama_dir):
    """A folder taken out of a multi-root workspace used to be primed to the end (minutes of CPU and
    model time on a large one) for a memory nobody reads any more."""
    from titans_lsp.engine import CompletionEngine
    from titans_lsp.model.loading import load_model
    from titans_lsp.model.memory import MemoryConfig
    from titans_lsp.scheduling import Scheduler

    engine = CompletionEngine(load_model(str(tiny_llama_dir), device="cpu"),
                              memory_config=MemoryConfig(memory_dim=32, chunk_size=8, layers=[1, 3]))
    root = tmp_path / "ws"
    root.mkdir()
    for i in range(6):
        (root / f"m{i}.py").write_text(f"def f{i}(x):\n    return x + {i}\n")
    state = FolderState(root.as_uri(), root, str(tmp_path / "cache"))
    state.load_index(dense_model=None)
    server = SimpleNamespace(scheduler=Scheduler(), folders={state.uri: state}, supports_progress=False, loop=None,
                             engine=lambda: engine)

    def send_status(folder, force=False):
        if folder.priming is not None and folder.priming[0] >= 1:
            server.folders.pop(folder.uri, None)  # folders_changed removed it after the first file

    server.send_status = send_status
    result = jobs.prime(server, state, False)
    assert result["stopped"] and result["primed"] == 1


def test_a_model_that_fails_to_load_shows_in_the_status_bar_not_loading_forever(tmp_path):
    """The one popup at load time is easy to miss; afterwards titans/status said the backend was
    still 'loading' with no error, while every completion failed."""
    from titans_lsp.modes import Mode
    from titans_lsp.server import TitansServer

    server = TitansServer(model=str(tmp_path / "no-such-model"), cache_dir=str(tmp_path / "cache"),
                          events_db=str(tmp_path / "events.db"))
    folder = server.add_folder(tmp_path.as_uri())
    sent = []
    server.send_status = lambda state, force=False: sent.append((state, server.backend_status(state.settings.mode)))
    server.start_model(None)
    assert server.engine_future.exception(timeout=120) is not None
    status = server.backend_status(Mode.CONCAT)
    assert status.state == "down" and "cannot load model" in status.last_error and "no-such-model" in status.last_error
    assert sent and sent[-1][0] is folder and "cannot load model" in sent[-1][1].last_error  # the status bar is told
