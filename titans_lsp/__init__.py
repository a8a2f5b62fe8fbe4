"""titans-lsp: code completion over LSP with Titans test-time memory and cross-file retrieval."""

__version__ = "0.1.0"
