"""redact() before (retrieval/secrets.py at 11f753f, main before this branch) vs this branch on a generated 2,000-line file with candidate lines; alternating runs, caches cleared.

    .venv/bin/python evals/results/2026-12-02-retrievers/redact_bench.py
"""
import importlib.util, statistics, subprocess, sys, time
src = subprocess.run(["git", "-C", ".", "show", "11f753f:retrieval/secrets.py"], capture_output=True, text=True, check=True).stdout
open("/tmp/secrets_main.py", "w").write(src)
spec = importlib.util.spec_from_file_location("secrets_old", "/tmp/secrets_main.py")
old = importlib.util.module_from_spec(spec); sys.modules["secrets_old"] = old; spec.loader.exec_module(old)
from titans_lsp.retrieval import secrets as new
lines = []
for i in range(500):  # 2,000 lines, half of them candidates (a secret-like name), 10 real secrets
    lines += [f"def handler_{i}(request):", f"    token = read_token(request.auth_{i})" if i % 50 else
              f'    password = "hunter{i}-correct-horse-staple"', "    return token", ""]
text = "\n".join(lines)
times = {"old": [], "new": []}
for rep in range(5):
    for name, mod in (("old", old), ("new", new)):
        mod._scan.cache_clear()
        t = time.perf_counter(); r = mod.redact(text); times[name].append(time.perf_counter() - t)
        assert r.text == new.redact(text).text
print({k: round(statistics.median(v) * 1000, 1) for k, v in times.items()}, "ms median of 5;",
      "ratio old/new", round(statistics.median(times["old"]) / statistics.median(times["new"]), 2),
      "; candidate lines", sum(1 for l in lines if new.CANDIDATE.search(l)), "redacted", new.redact(text).lines)
