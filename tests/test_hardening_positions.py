"""Where a request's cursor is in the document: LSP positions (line breaks \\n, \\r\\n, \\r only;
UTF-16 columns) must split the text exactly where the editor shows the cursor."""

from __future__ import annotations

import pytest
from lsprotocol import types
from pygls.workspace import TextDocument

from titans_lsp.server import _split_at


def split(source: str, line: int, character: int) -> tuple[str, str]:
    return _split_at(TextDocument("file:///w/a.py", source), types.Position(line=line, character=character))


@pytest.mark.parametrize("separator", ["\x0c", "\x0b", "\x1c", "\x85", "\u2028", "\u2029"])
def test_characters_python_splits_lines_on_are_not_lsp_line_breaks(separator):
    """A form feed (^L between sections, as in CPython's own sources) or a U+2028 in a string is
    one character of its line for the editor; before the fix the cursor below it was taken one
    line further up, so the model completed the end of another line."""
    source = f"import os\n{separator}\ndef f():\n    return os.pa"
    assert split(source, 3, 16) == (source, "")
    assert split(source, 2, 8) == (f"import os\n{separator}\ndef f():", "\n    return os.pa")


def test_utf16_columns_and_every_line_break_kind():
    source = 'a = "😋"; b = 1\r\nc = 2\rd = os.\ne'
    assert split(source, 0, 10) == ('a = "😋"; ', 'b = 1\r\nc = 2\rd = os.\ne')  # 😋 is two UTF-16 units
    assert split(source, 0, 6) == ('a = "😋', '"; b = 1\r\nc = 2\rd = os.\ne')  # inside the pair: after it
    assert split(source, 2, 7) == ('a = "😋"; b = 1\r\nc = 2\rd = os.', "\ne")
    assert split(source, 1, 99) == ('a = "😋"; b = 1\r\nc = 2', "\rd = os.\ne")  # past the end: the line's end
    assert split(source, 3, 99) == (source, "")  # the last line has no line break
    assert split(source, 9, 0) == (source, "")  # past the last line: the document's end
    assert split("x = 1\n", 1, 0) == ("x = 1\n", "")
