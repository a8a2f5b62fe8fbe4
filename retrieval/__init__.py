"""Workspace files, chunking, BM25 / dense indexes, import-aware context and prompt assembly.

- ``languages``: the language registry (``detect``: a file's grammar, comment syntax, definition
  rules, import family, completion cut, keywords).
- ``workspace``: ``iter_workspace_files``, ``WorkspaceFilter`` (.gitignore incl. nested, secrets,
  symlink escapes, binary, size; ``load_config`` for package.json/tsconfig), ``priming_order``.
- ``chunking``: ``rg1_chunks`` (CrossCodeEval), ``definition_chunks`` (tree-sitter, per language), ``bm25_tokens``.
- ``bm25``: ``IncrementalBM25``, rank-bm25's Okapi scores with exact incremental statistics.
- ``dense``: ``load_encoder``, ``DenseStore`` (embeddings cached by chunk text: lazy, incremental).
- ``index``: ``WorkspaceIndex`` (build / update_file / remove_file / sync / save / load_or_build /
  retrieve with bm25 | dense | hybrid | imports or a list fused by RRF), ``Snippet``.
- ``imports``: ``import_context`` (definitions behind the prefix's imports; Python, TypeScript/JavaScript).
- ``ecmascript``: ``EcmaResolver`` (TypeScript/JavaScript specifiers to workspace files: tsconfig
  paths/baseUrl, index files, package.json exports/main).
- ``prompt``: ``crossfile_block``, ``build_prompt_ids`` (CrossCodeEval format within a token budget).
- ``cceval``: ``rg1_retrieve``, the published rg1 recipe with rank-bm25, for building eval files.
"""
