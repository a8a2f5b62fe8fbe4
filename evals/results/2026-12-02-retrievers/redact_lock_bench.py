"""The secrets lock before (retrieval/secrets.py at d2a8850: held for a file's whole redaction) and
after (held only while detect-secrets scans uncached candidate lines), in the same run:

1. same output for every .py file of the dev set's packages (and a generated 2,000-line file);
2. serial time to redact those files (caches cleared), and the share of it spent holding the lock;
3. a "request" thread redacting the package files one at a time while an "indexing" thread redacts
   distinct generated 2,000-line files (1,000 candidate lines each): the request's latency, with its
   files' lines cached (as after a first read) and uncached.

    .venv/bin/python \\
        evals/results/2026-12-02-retrievers/redact_lock_bench.py [REV] [PACKAGES_DIR]
"""
import importlib.util, json, pathlib, statistics, subprocess, sys, threading, time

REV = sys.argv[1] if len(sys.argv) > 1 else "d2a8850"
SRC = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "/root/.cache/titans-lsp/packages/src")
src = subprocess.run(["git", "show", f"{REV}:retrieval/secrets.py"], capture_output=True, text=True, check=True).stdout
pathlib.Path("/tmp/secrets_before.py").write_text(src)
spec = importlib.util.spec_from_file_location("secrets_before", "/tmp/secrets_before.py")
before = importlib.util.module_from_spec(spec); sys.modules["secrets_before"] = before; spec.loader.exec_module(before)
from titans_lsp.retrieval import secrets as after
MODS = {"before": before, "after": after}


class TimedLock:
    """Wraps a module's lock: total seconds it was held (outermost holds only; the old one is re-entered)."""
    def __init__(self, lock):
        self.lock, self.depth, self.held, self.since = lock, 0, 0.0, 0.0
    def __enter__(self):
        self.lock.__enter__()
        self.depth += 1
        if self.depth == 1:
            self.since = time.perf_counter()
    def __exit__(self, *exc):
        self.depth -= 1
        if self.depth == 0:
            self.held += time.perf_counter() - self.since
        return self.lock.__exit__(*exc)
    def acquire(self, *a, **k): return self.lock.acquire(*a, **k)
    def release(self): return self.lock.release()


def generated(n: int) -> str:
    lines = []
    for i in range(500):  # 2,000 lines, half of them candidates, 10 real secrets
        lines += [f"def handler_{n}_{i}(request):", f"    token = read_token(request.auth_{n}_{i})" if i % 50 else
                  f'    password = "hunter{n}-{i}-correct-horse-staple"', "    return token", ""]
    return "\n".join(lines)


files = [p.read_text(errors="replace") for p in sorted(SRC.rglob("*.py"))]
out: dict = {"rev_before": REV, "files": len(files), "lines": sum(t.count("\n") + 1 for t in files),
             "candidate_lines": sum(1 for t in files for l in t.split("\n") if len(l) <= 2000 and after.CANDIDATE.search(l))}

# 1. same output
for mod in MODS.values():
    mod._scan.cache_clear()
key = lambda r: (r.text, r.lines, r.kinds)  # (the two modules' Redacted classes never compare equal)
same = all(key(before.redact(t)) == key(after.redact(t)) for t in files + [generated(0)])
out["same_output"] = same
out["redacted_files"] = sum(1 for t in files if after.redact(t).lines)

# 2. serial time and lock share, alternating, 5 rounds
serial = {k: [] for k in MODS}
share = {k: [] for k in MODS}
for _ in range(5):
    for name, mod in MODS.items():
        mod._scan.cache_clear()
        real = mod._LOCK; mod._LOCK = timed = TimedLock(real)
        t = time.perf_counter()
        for text in files:
            mod.redact(text)
        total = time.perf_counter() - t
        mod._LOCK = real
        serial[name].append(total); share[name].append(timed.held / total)
out["serial_ms_median"] = {k: round(statistics.median(v) * 1000, 1) for k, v in serial.items()}
out["lock_share_median"] = {k: round(statistics.median(v), 3) for k, v in share.items()}


# 3. request thread vs indexing thread
def contended(mod, warm: bool, n0: int) -> list[float]:
    mod._scan.cache_clear()
    if warm:
        for text in files:
            mod.redact(text)
    stop = threading.Event()

    def indexing():
        n = n0
        while not stop.is_set():
            n += 1
            mod.redact(generated(n))

    worker = threading.Thread(target=indexing); worker.start()
    time.sleep(0.05)
    lat = []
    for text in files:
        t = time.perf_counter(); mod.redact(text); lat.append(time.perf_counter() - t)
    stop.set(); worker.join()
    return lat


def alone(mod, warm: bool) -> list[float]:
    mod._scan.cache_clear()
    if warm:
        for text in files:
            mod.redact(text)
    lat = []
    for text in files:
        t = time.perf_counter(); mod.redact(text); lat.append(time.perf_counter() - t)
    return lat


def summary(lat: list[float]) -> dict:
    q = statistics.quantiles(lat, n=20)
    return {"p50_ms": round(statistics.median(lat) * 1000, 2), "p95_ms": round(q[18] * 1000, 2),
            "max_ms": round(max(lat) * 1000, 2), "total_ms": round(sum(lat) * 1000, 1)}


n0 = 1000
for warm in (True, False):
    key = "warm" if warm else "cold"
    for rnd in range(2):
        for name, mod in MODS.items():
            n0 += 10000
            out.setdefault(f"request_{key}_contended", {}).setdefault(name, []).append(summary(contended(mod, warm, n0)))
            out.setdefault(f"request_{key}_alone", {}).setdefault(name, []).append(summary(alone(mod, warm)))
print(json.dumps(out, indent=1))
