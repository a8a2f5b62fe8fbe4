"""A toy Python package whose modules use each other's top-level names, with filler lines before
each use: the eval's sample builder and the retrievers both need cross-file uses to find."""

from __future__ import annotations

from pathlib import Path


def write_toy_package(root: Path, filler: str = "# filler line {i}\n", init: bool = False) -> Path:
    """Write ``root/toypkg`` (config, server, main; ``__init__.py`` when ``init``); returns the package dir.
    ``filler`` is formatted with ``i`` for 12 lines before each module's code (words in it reach BM25)."""
    pkg = root / "toypkg"
    pkg.mkdir(parents=True)
    if init:
        (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text(
        "import os\n\n\ndef load_config(path):\n    return {'path': path}\n\n\nDEFAULT_PORT = 8080\n\n\n"
        "class Settings:\n    def __init__(self, host, port):\n        self.host = host\n        self.port = port\n")
    body = "".join(filler.format(i=i) for i in range(12))
    (pkg / "server.py").write_text(
        "from toypkg.config import DEFAULT_PORT, Settings, load_config\n" + body +
        "\n\ndef start_server(path):\n    config = load_config(path)\n    settings = Settings('localhost', DEFAULT_PORT)\n"
        "    return settings\n")
    (pkg / "main.py").write_text(
        "from toypkg.server import start_server\nfrom toypkg.config import Settings\n" + body +
        "\n\ndef main():\n    server = start_server('config.json')\n    other = Settings('0.0.0.0', 1)\n    return server, other\n")
    return pkg
