"""The one mode definition and the one settings table: parsing, strict types, editor names."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from titans_lsp.backends.config import BACKEND_NAMES
from titans_lsp.modes import MODE_NAMES, Mode, parse_modes
from titans_lsp.settings import EDITOR_SETTINGS, SECTION, CompletionSettings, SettingsError

PACKAGE_JSON = Path(__file__).resolve().parents[1] / "editors" / "vscode" / "package.json"


def test_each_mode_says_what_it_reads():
    assert MODE_NAMES == ("none", "concat", "memory", "ablation", "hybrid")
    assert [m for m in Mode if m.uses_context] == [Mode.CONCAT, Mode.HYBRID]
    assert [m for m in Mode if m.uses_memory] == [Mode.MEMORY, Mode.ABLATION, Mode.HYBRID]
    assert [m for m in Mode if m.primes] == [Mode.MEMORY, Mode.HYBRID]
    assert Mode.ABLATION.gates == "shut" and Mode.MEMORY.gates == "open" and Mode.NONE.gates is None
    assert Mode("concat") == "concat" and json.dumps({"m": Mode.HYBRID}) == '{"m": "hybrid"}'
    assert parse_modes("memory, none") == [Mode.MEMORY, Mode.NONE] and parse_modes("") == []
    with pytest.raises(ValueError, match="telepathy"):
        parse_modes("none,telepathy")


def test_editor_values_are_converted_to_their_type():
    settings = CompletionSettings.from_editor({"mode": "memory", "maxNewTokens": "16", "contextBudget": 100.0,
                                               "retriever": "imports, bm25"})
    assert settings.mode is Mode.MEMORY and settings.max_new_tokens == 16 and type(settings.max_new_tokens) is int
    assert settings.context_budget == 100 and type(settings.context_budget) is int
    assert settings.retriever == ("imports", "bm25")
    assert settings.to_editor() == {"mode": "memory", "retriever": ["imports", "bm25"], "maxNewTokens": 16,
                                    "contextBudget": 100, "multiline": "auto", "fim": "auto",
                                    "telemetry": {"enabled": True, "storeText": False}, "experiment": None}


@pytest.mark.parametrize("values, key", [
    ({"mode": "telepathy"}, "mode"), ({"mode": 3}, "mode"), ({"retriever": "grep"}, "retriever"),
    ({"retriever": [1, 2]}, "retriever"), ({"retriever": []}, "retriever"), ({"maxNewTokens": 0}, "maxNewTokens"),
    ({"maxNewTokens": 7.5}, "maxNewTokens"), ({"maxNewTokens": True}, "maxNewTokens"),
    ({"maxNewTokens": "16x"}, "maxNewTokens"), ({"maxNewTokens": [16]}, "maxNewTokens"),
    ({"contextBudget": "100 tokens"}, "contextBudget"), ({"contextBudget": 5000}, "contextBudget"),
    ({"multiline": "sometimes"}, "multiline"), ({"multiline": None, "maxNewTokens": -1}, "maxNewTokens"),
    ({"telemetry": False}, "telemetry"), ({"telemetry": {"enabled": "no"}}, "telemetry"),
    ({"telemetry": {"storeText": 1}}, "telemetry"), ({"telemetry": {"upload": True}}, "telemetry"),
    ({"experiment": {"modes": ["concat"]}}, "experiment"),
])
def test_invalid_values_are_rejected_naming_the_key(values, key):
    with pytest.raises(SettingsError) as info:
        CompletionSettings.from_editor(values)
    assert len(info.value.errors) == 1 and info.value.errors[0].startswith(f"{SECTION}.{key}:")


def test_merge_keeps_the_current_value_of_a_rejected_key_and_resets_absent_ones():
    current = CompletionSettings.from_editor({"mode": "hybrid", "maxNewTokens": 20})
    merged, changed, errors = current.merge_editor({"mode": "telepathy", "maxNewTokens": "30"})
    assert merged.mode is Mode.HYBRID and merged.max_new_tokens == 30 and changed == ["max_new_tokens"]
    assert len(errors) == 1 and "telepathy" in errors[0] and "keeping 'hybrid'" in errors[0]
    merged, changed, errors = merged.merge_editor({})
    assert merged == CompletionSettings() and set(changed) == {"mode", "max_new_tokens"} and not errors
    same, changed, errors = merged.merge_editor(["not", "an", "object"])
    assert same is merged and not changed and "must be an object" in errors[0]


def test_every_setting_is_a_field_and_vscode_declares_it():
    field_names = {f.name for f in fields(CompletionSettings)}
    properties = json.loads(PACKAGE_JSON.read_text())["contributes"]["configuration"]["properties"]
    for setting in EDITOR_SETTINGS:
        assert setting.field in field_names
        default = setting.to_editor(getattr(CompletionSettings(), setting.field))
        if isinstance(default, dict):  # an object setting: VS Code declares each key (titansLsp.telemetry.enabled)
            for key, value in default.items():
                nested = properties.get(f"{SECTION}.{setting.key}.{key}")
                assert nested is not None and nested["default"] == value, f"package.json lacks {SECTION}.{setting.key}.{key}"
            continue
        declared = properties.get(f"{SECTION}.{setting.key}")
        assert declared is not None, f"editors/vscode/package.json lacks {SECTION}.{setting.key}"
        assert declared["default"] in (default, default[0] if isinstance(default, list) and len(default) == 1 else default)
    assert properties[f"{SECTION}.mode"]["enum"] == list(MODE_NAMES)


def test_vscode_declares_and_passes_every_backend_option():
    """Backend options are per server process (initializationOptions, restart), not per-folder settings."""
    from titans_lsp.backends.config import OPTION_KEYS

    properties = json.loads(PACKAGE_JSON.read_text())["contributes"]["configuration"]["properties"]
    extension = (PACKAGE_JSON.parent / "src" / "extension.ts").read_text()
    restart = (PACKAGE_JSON.parent / "src" / "serverCommand.ts").read_text()
    for key in OPTION_KEYS:
        declared = properties.get(f"{SECTION}.{key}")
        assert declared is not None and declared["scope"] == "window", f"package.json lacks a window setting {SECTION}.{key}"
        assert f'{key}: config.get' in extension, f"extension.ts does not pass {key} in initializationOptions"
        assert f'"{SECTION}.{key}"' in restart, f"changing {SECTION}.{key} does not restart the server"
        assert key not in {s.key for s in EDITOR_SETTINGS}  # the server cannot switch backends per folder
    assert properties[f"{SECTION}.backend"]["enum"][1:] == list(BACKEND_NAMES)


def test_the_editor_docs_and_settings_ui_offer_every_retriever_and_setting():
    """VS Code's settings UI flags a value outside the declared enum as invalid, and editors/README.md
    is where both plugins send users for the settings: neither may lag behind the server."""
    import re

    from titans_lsp.retrieval.index import RETRIEVERS

    properties = json.loads(PACKAGE_JSON.read_text())["contributes"]["configuration"]["properties"]
    assert properties[f"{SECTION}.retriever"]["items"]["enum"] == list(RETRIEVERS)
    readme = (PACKAGE_JSON.parents[1] / "README.md").read_text()
    table = readme.split("## Settings (both editors)", 1)[1].split("\n\n")[2]  # the table after the intro
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| (.*) \|", table, re.M)}
    assert set(rows) == {s.key for s in EDITOR_SETTINGS}
    assert all(f"`{name}`" in rows["retriever"] for name in RETRIEVERS)
