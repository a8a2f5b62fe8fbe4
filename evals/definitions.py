"""Whether a cross-file block holds the definition of the symbol a sample completes (recall of the
context, next to EM): the block has a fragment from a file the symbol is defined in (the sample's
``metadata.defined_in``) with a line that defines it (``def``/``class``/``function``/... NAME, or
``NAME =`` / ``NAME:`` at a line start)."""

from __future__ import annotations

import re

FRAGMENT = re.compile(r"^(?:#|//) the below code fragment is found in (.+)$")
DEFINING = r"^\s*(?:export\s+)?(?:default\s+)?(?:async\s+)?(?:def|class|function|interface|type|enum|const|let|var)\s+{0}\b" \
           r"|^\s*{0}\s*(?::[^=\n]*)?=(?!=)"


def definition_in_block(block: str, symbol: str | None, defined_in: list[str] | None) -> bool | None:
    """True/False, or None when the sample names no symbol or defining file (nothing to measure)."""
    if not symbol or not defined_in:
        return None
    pattern = re.compile(DEFINING.format(re.escape(symbol)))
    wanted = set(defined_in)
    current = None
    for line in block.split("\n"):
        match = FRAGMENT.match(line)
        if match:
            current = match.group(1).strip()
            continue
        if current in wanted:
            text = line[2:] if line.startswith("# ") else line[3:] if line.startswith("// ") else line
            if pattern.search(text):
                return True
    return False


def definition_rate(rows: list[dict]) -> tuple[float, int] | None:
    """(fraction of rows whose block holds the definition, rows measured); None when none can be."""
    found = [definition_in_block(str(r.get("context") or ""), r.get("crossfile_symbol"), r.get("defined_in"))
             for r in rows]
    measured = [f for f in found if f is not None]
    return (sum(measured) / len(measured), len(measured)) if measured else None
