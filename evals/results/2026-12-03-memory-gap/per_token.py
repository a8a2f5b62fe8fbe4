"""Per-mode decode ms/token and prefill ms over the answered requests of a `titans-lsp bench --server` JSON."""
import json, sys, statistics
d = json.load(open(sys.argv[1]))
for m, v in d["modes"].items():
    rs = [r for r in v["request_records"] if not r["cancelled"] and r.get("timings_ms") and r["decoded"]]
    pt = [r["timings_ms"]["decode_s"] / r["decoded"] for r in rs]
    pf = [r["timings_ms"]["prefill_s"] for r in rs]
    print(f"{m:10s} answered {len(rs):3d} p50 {v['p50_ms']:7.1f} p95 {v['p95_ms']:7.1f}  decode ms/token median {statistics.median(pt):6.1f} mean {statistics.mean(pt):6.1f}  prefill median {statistics.median(pf):6.1f}")
