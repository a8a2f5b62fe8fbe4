"""Issue 16, finding 7: secrets inside ordinary file names are found by content and redacted before
indexing, priming and retrieval; more secret names are never read; status reports the counts."""

from __future__ import annotations

import pytest

from titans_lsp.retrieval.index import WorkspaceIndex
from titans_lsp.retrieval.secrets import CANDIDATE, REDACTED, line_secrets, redact
from titans_lsp.retrieval.workspace import WorkspaceFilter, is_secret_name

AWS_KEY = "AKIAZ7QW3ERTY5UIOPLK"  # the canary: an AWS access key id's format
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8Zr3Lk9P"

# One example per detect-secrets plugin used (and the unquoted rule): each must pass the cheap gate
# and be found.
EXAMPLES = [
    f'AWS_ACCESS_KEY_ID = "{AWS_KEY}"',
    f"aws_secret_access_key={AWS_SECRET}",
    'artifactory = "AKCp5budTFpbypBqQbGJPz3pGCi28pPivfWczqjfYb9drAmd9LbRZbj6UpKFxJXA8ksWGc9fM"',
    'conn = "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=lJzRc1YdHaAA2KCNJJ1tkYwF/+mKK6Ygw0NGe170Xu592euJv2wYUtBlV8z+qnlcNQSnIYVTkLWntUO1F8j8rQ=="',
    'url = "https://admin:s3cr3tP4ssw0rd@db.example.com/app"',
    'discord = "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"',
    'gh = "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"',
    'gl = "glpat-a1b2c3d4e5f6g7h8i9j0"',
    'jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"',
    'password = "correct-horse-battery-staple"',
    'mailchimp = "343ea45721923ed956e2b38c31db76aa-us30"',
    "//registry.npmjs.org/:_authToken=743b294a-cd03-11ec-9d64-0242ac120002",
    'openai = "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"',
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    'pypi = "pypi-AgEIcHlwaS5vcmcCJGExMDIxZjRhLTFhZDMtNDc4YS1iOWNmLWQwCf32Zk9Lm3Np7Qr5St8Uv0Wx2Yz4Ab6Cd8Ef0Gh2Ij4Kl"',
    'sendgrid = "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"',
    'slack = "xoxb-34532454-e039d02840a0b9379c"',
    'square = "sq0csp-0p9h7g6f4s3s3s3-4a3ardgwa6ADRDJDDKUFYDYDYDY"',
    'stripe = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"',
    'telegram = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq"',
    'twilio = "SKxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"',
]
ORDINARY = [
    "def check_password(password):", 'token = os.environ["API_TOKEN"]', "x = compute(a, b)",
    'sha = "3f786850e387550fdab836ed7e6dc881de23001b"', "max_tokens = DEFAULT_MAX_TOKENS",
    "token = read_token(args.auth_token_file)", 'if token == "":', "secret = None",
]


@pytest.mark.parametrize("line", EXAMPLES)
def test_each_detector_example_passes_the_gate_and_is_found(line):
    assert CANDIDATE.search(line), "the cheap gate would skip this line"
    assert line_secrets(line), f"not detected: {line}"


@pytest.mark.parametrize("line", ORDINARY)
def test_ordinary_code_is_not_redacted(line):
    assert not line_secrets(line)


def test_redaction_keeps_lines_and_indentation():
    text = f'import os\n\nclass Config:\n    KEY = "{AWS_KEY}"\n    name = "app"\n'
    result = redact(text)
    assert result.lines == 1 and AWS_KEY not in result.text
    assert result.text.split("\n")[3] == "    " + REDACTED
    assert len(result.text.split("\n")) == len(text.split("\n"))


@pytest.mark.parametrize("name", ["secrets.txt", "secrets.py", "prod.env.txt", "staging.env.yaml", "aws_credentials.py",
                                  "my-credentials.toml", ".env.local"])
def test_more_secret_names_are_never_read(name):
    assert is_secret_name(name)


def workspace(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "settings_local.py").write_text(f'DEBUG = True\nAWS_ACCESS_KEY_ID = "{AWS_KEY}"\n'
                                            f"aws_secret = \"{AWS_SECRET}\"\nREGION = 'eu-west-1'\n")
    (root / "secrets.txt").write_text(f"key {AWS_KEY}\n")
    (root / "prod.env.txt").write_text(f"AWS_ACCESS_KEY_ID={AWS_KEY}\n")
    (root / "deploy.py").write_text("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n")
    (root / "app.py").write_text("import boto3\n\nclient = boto3.client('s3', region_name=REGION)\n")
    return root


def test_indexed_text_never_holds_the_secret_and_status_counts_it(tmp_path):
    root = workspace(tmp_path)
    index = WorkspaceIndex.load_or_build(root, tmp_path / "state", dense_model=None)
    assert sorted(index.files()) == ["app.py", "settings_local.py"]
    chunks = [c.text for entry in index.entries.values() for c in entry.chunks]
    assert chunks and not any(AWS_KEY in text or AWS_SECRET in text for text in chunks)
    assert any("REGION = 'eu-west-1'" in text for text in chunks)  # the rest of the file is still indexed
    hits = index.retrieve("AWS_ACCESS_KEY_ID = boto3 client REGION", "app.py", "bm25")
    assert hits and not any(AWS_KEY in h.text for h in hits)
    assert index.rules.secrets_summary() == {"redactedFiles": 1, "redactedLines": 2, "skippedFiles": 1}
    # An unsaved editor buffer re-indexed from its text is cleaned the same way.
    index.update_file(root / "app.py", text=f"KEY = '{AWS_KEY}'\n")
    assert not any(AWS_KEY in c.text for c in index.entries["app.py"].chunks)
    assert WorkspaceFilter(root).load(root / "settings_local.py").text.count(REDACTED) == 2


def test_priming_reads_the_redacted_text(tmp_path, tiny_llama_dir):
    from titans_lsp.engine import CompletionEngine
    from titans_lsp.folder import FolderState
    from titans_lsp.model.loading import load_model
    from titans_lsp.model.memory import MemoryConfig
    from titans_lsp.priming import Primer

    root = workspace(tmp_path)
    engine = CompletionEngine(load_model(str(tiny_llama_dir), device="cpu"),
                              memory_config=MemoryConfig(memory_dim=32, chunk_size=8, layers=[1]))
    folder = FolderState(root.as_uri(), root, str(tmp_path / "cache"))
    folder.load_index(dense_model=None)
    written: list[str] = []
    prime = engine.prime

    def spy(workspace, texts, **kwargs):
        written.extend(engine.tokenizer.decode(ids) if not isinstance(ids, str) else ids for ids in texts)
        return prime(workspace, texts, **kwargs)

    engine.prime = spy
    result = Primer(folder, engine).run()
    assert result.primed == 2 and written
    assert not any(AWS_KEY in text or AWS_SECRET in text for text in written)
    assert any("REGION" in text for text in written)


def _secret_file() -> str:
    """Every plugin's example and the ordinary look-alikes, between lines of plain code."""
    lines = []
    for i, line in enumerate(EXAMPLES + ORDINARY):
        lines += [f"def step_{i}(value):", f"    {line}", "    return value", ""]
    return "\n".join(lines)


def test_one_file_is_redacted_as_line_by_line_scans_redact_it():
    from titans_lsp.retrieval import secrets

    text = _secret_file()
    secrets._scan.cache_clear()
    expected = [line if not line.strip() or not line_secrets(line) else "    " + REDACTED for line in text.split("\n")]
    secrets._scan.cache_clear()
    result = redact(text)
    assert result.text.split("\n") == expected
    assert result.lines == len(EXAMPLES)


def test_a_file_enters_the_detector_settings_once_and_restores_them(monkeypatch):
    import detect_secrets.settings as ds_settings

    from titans_lsp.retrieval import secrets

    entered = []
    real = ds_settings.transient_settings

    def counting(config):
        entered.append(config)
        return real(config)

    monkeypatch.setattr(ds_settings, "transient_settings", counting)
    before = ds_settings.get_settings().json()
    secrets._scan.cache_clear()
    assert redact(_secret_file()).lines == len(EXAMPLES)
    assert len(entered) == 1
    assert ds_settings.get_settings().json() == before
    assert redact(_secret_file()).lines == len(EXAMPLES)  # every line cached: the settings are not entered
    assert len(entered) == 1


def _numbered_secret_file(n: int) -> str:
    """A different file per ``n`` (its own secrets and look-alikes), so threads do not share cache hits."""
    return _secret_file().replace("step_", f"step{n}_").replace("hunter", f"hunter{n}") + (
        f'\ndb_password = "n{n}-Tr0ub4dor-and-3-more-words"\ntoken = read_token(request, {n})\n')


def test_threads_redacting_different_files_give_the_serial_output():
    from concurrent.futures import ThreadPoolExecutor

    from titans_lsp.retrieval import secrets

    texts = [_numbered_secret_file(n) for n in range(8)]
    secrets._scan.cache_clear()
    serial = [redact(text) for text in texts]
    for _ in range(3):
        secrets._scan.cache_clear()
        with ThreadPoolExecutor(max_workers=4) as pool:
            assert list(pool.map(redact, texts)) == serial
    assert all(result.lines == len(EXAMPLES) + 1 for result in serial)


def test_only_detect_secrets_scans_hold_the_lock():
    """While another thread holds the scan lock (a scan in progress), a file without candidate lines
    and a file whose candidate lines are all cached are redacted at once; a file with lines still to
    scan waits for the lock, then gets the same output as alone."""
    import threading

    from titans_lsp.retrieval import secrets

    plain = "\n".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(200))
    cached, fresh = _numbered_secret_file(100), _numbered_secret_file(101)
    secrets._scan.cache_clear()
    expected_cached = redact(cached)  # fills the cache with its lines
    secrets._scan.cache_clear()
    expected_fresh = redact(fresh)
    secrets._scan.cache_clear()
    redact(cached)
    results: dict[str, object] = {}

    def run(name: str, text: str) -> None:
        results[name] = redact(text)

    with secrets._LOCK:
        quick = [threading.Thread(target=run, args=args) for args in (("plain", plain), ("cached", cached))]
        blocked = threading.Thread(target=run, args=("fresh", fresh))
        for thread in (*quick, blocked):
            thread.start()
        for thread in quick:
            thread.join(timeout=10)
            assert not thread.is_alive(), "redaction waited for the scan lock without scanning"
        blocked.join(timeout=0.3)
        assert blocked.is_alive(), "a detect-secrets scan ran without the lock"
    blocked.join(timeout=10)
    assert not blocked.is_alive()
    assert results == {"plain": redact(plain), "cached": expected_cached, "fresh": expected_fresh}
    assert results["plain"].lines == 0
