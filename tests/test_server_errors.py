"""How the server tells the user about errors, on a server object without a model or a client:
a persistent error pops up once (not again every few seconds while typing), stays in the status,
and pops up again only once it has cleared (a completion succeeded) or the settings changed."""

from __future__ import annotations

import pytest

from titans_lsp import server as server_module
from titans_lsp.backends import BackendError, ModeUnsupported
from titans_lsp.modes import Mode
from titans_lsp.protocol import NO_FOLDER


@pytest.fixture
def bare(tmp_path, monkeypatch):
    """A TitansServer (no model, no client) whose pop-ups are recorded in ``bare.popups``."""
    server = server_module.build_server(events_db=str(tmp_path / "events.sqlite3"))
    server.popups = []
    monkeypatch.setattr(server, "show_message", lambda message, kind=None: server.popups.append(message))
    yield server
    server.events.close()


class Clock:
    """time.monotonic that the test moves forward."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_persistent_backend_error_pops_up_once_and_stays_in_the_status(bare, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(server_module.time, "monotonic", clock)
    state = bare.add_folder(NO_FOLDER)
    error = BackendError("fim is 'on' but model tiny has no fill-in-the-middle tokens: set titansLsp.fim to auto")
    for _ in range(5):  # a minute of typing with the error standing
        bare.report_backend_error(state, error)
        clock.now += 15
    assert bare.popups == [str(error)]
    assert bare.backend_status(Mode.CONCAT).last_error == str(error)

    bare.backend_answered(state)  # a completion succeeded: the error cleared ...
    assert bare.backend_status(Mode.CONCAT).last_error is None
    bare.report_backend_error(state, error)  # ... so its return is news
    assert bare.popups == [str(error)] * 2

    bare.apply_settings(state, {"fim": "off"})  # the user changed the settings: a standing error is news again
    bare.report_backend_error(state, error)
    assert bare.popups == [str(error)] * 3


def test_the_memory_mode_message_is_one_popup_whether_priming_or_a_request_finds_it(bare):
    """Opening a folder in a memory mode on a remote backend says so; its completions then fail with
    the same message, which must not pop up again on every keystroke."""
    bare.backend_config = bare.backend_config.with_options({"backend": "openai", "backendUrl": "http://127.0.0.1:9"})
    state = bare.add_folder(NO_FOLDER)
    bare.apply_settings(state, {"mode": "memory"})
    assert not bare.memory_available(state)
    for _ in range(3):
        bare.report_backend_error(state, ModeUnsupported("memory", "openai"))
    assert len(bare.popups) == 1 and "needs the in-process model" in bare.popups[0]


def test_an_invalid_setting_pops_up_once_not_on_every_settings_pull(bare):
    """An editor that pushes settings and is then pulled (didChangeConfiguration), or a change to
    another folder's settings, re-applies the same invalid value: the user was already told."""
    state = bare.add_folder(NO_FOLDER)
    for _ in range(3):
        bare.apply_settings(state, {"maxNewTokens": 7.5})
    assert len(bare.popups) == 1 and "titansLsp.maxNewTokens" in bare.popups[0]
    bare.apply_settings(state, {"maxNewTokens": 7.5, "mode": "none"})  # the settings changed: told again
    assert len(bare.popups) == 2
