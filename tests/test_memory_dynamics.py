"""evals/memory_dynamics.py on a tiny model and a three-file workspace: rows per log point and layer,
an empty memory reads nothing, priming grows the memory, and bad arguments are refused."""

from __future__ import annotations

import csv

import pytest

from titans_lsp.evals import memory_dynamics

SOURCE = "class Server{n}:\n    def __init__(self, host, port):\n        self.host = host\n        self.port = port + {n}\n"


def workspace(root):
    (root / "pkg").mkdir(parents=True)
    for n in range(3):
        (root / "pkg" / f"mod{n}.py").write_text(SOURCE.format(n=n) * 3)
    return root


def test_rows_per_layer_and_log_point(tiny_llama_dir, tmp_path):
    out = tmp_path / "out"
    code = memory_dynamics.main(["--model", str(tiny_llama_dir), "--workspace", str(workspace(tmp_path / "ws")),
                                 "--variants", "sgd", "titans", "ntp", "--config", '{"memory_dim": 16}',
                                 "--chunk-tokens", "16", "--probe-tokens", "8", "--every", "2", "--out", str(out)])
    assert code == 0
    with (out / "dynamics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["variant"] for r in rows} == {"sgd", "titans", "ntp"}
    for variant in ("sgd", "titans", "ntp"):
        mine = [r for r in rows if r["variant"] == variant]
        first = [r for r in mine if int(r["chunks"]) == 0]
        last_chunks = max(int(r["chunks"]) for r in mine)
        last = [r for r in mine if int(r["chunks"]) == last_chunks]
        assert first and len(first) == len(last)  # one row per memory layer at each log point
        assert all(float(r["delta_norm"]) == 0 and float(r["read_ratio"]) == 0 for r in first)
        assert float(first[0]["nll_open"]) == pytest.approx(float(first[0]["nll_shut"]), abs=1e-6)  # empty = ablation
        assert all(float(r["delta_norm"]) > 0 for r in last)
        assert any(float(r["read_ratio"]) > 0 for r in last)
    titans = [r for r in rows if r["variant"] == "titans"]
    assert all(0 < float(r["eta"]) < 1 for r in titans)
    assert (out / "table.md").read_text().count("| sgd |") >= 2
    assert (out / "dynamics.png").stat().st_size > 0
    assert memory_dynamics.main(["--workspace", "unused", "--out", str(out), "--report-only"]) == 0


def test_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        memory_dynamics.main(["--workspace", str(tmp_path), "--out", str(tmp_path / "o"), "--every", "0"])
    with pytest.raises(ValueError, match="update_rule"):
        memory_dynamics.main(["--workspace", str(tmp_path), "--out", str(tmp_path / "o"), "--variants", "adam"])
