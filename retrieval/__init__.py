"""Workspace files, chunking, BM25 / dense indexes, import-aware context and prompt assembly."""
