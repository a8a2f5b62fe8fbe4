"""evals/memory_recall.py: the generated facts, the exact-recall check, a run on a tiny model, bad input."""

from __future__ import annotations

import json
import random

import pytest

from titans_lsp.evals import memory_recall as mr


def test_workspace_facts_are_random_unique_and_defined_in_their_file():
    a = mr.make_workspace(random.Random(3), 3, 4)
    b = mr.make_workspace(random.Random(3), 3, 4)
    assert [f.text for f in a] == [f.text for f in b]  # seeded
    names = [fact.name for f in a for fact in f.facts]
    assert len(names) == len(set(names)) == 12
    for position, f in enumerate(a):
        for fact in f.facts:
            assert fact.position == position and fact.module == f.module
            assert f"{fact.name} = " in f.text and fact.value in f.text
            assert fact.value not in fact.prompt() and fact.name in fact.prompt()


def test_recall_is_exact():
    s = mr.Fact("settings_x", "ZAVI_TOKEN", "ab12cd34", "str", 0)
    assert s.recalled('ab12cd34"\n') and not s.recalled("ab12cd34x\"") and not s.recalled("ab12cd3")
    n = mr.Fact("settings_x", "ZAVI_PORT", "48213", "int", 0)
    assert n.recalled("48213\n") and n.recalled("48213)") and not n.recalled("482131") and not n.recalled(" 48213")


def test_wilson_interval():
    assert mr.wilson(0, 0) == (0.0, 0.0)
    low, high = mr.wilson(5, 10)
    assert low < 0.5 < high and 0 <= low and high <= 1


def test_run_on_a_tiny_model(tiny_llama_dir, tmp_path):
    out = tmp_path / "recall"
    assert mr.main(["--model", str(tiny_llama_dir), "--variants", "ablation,ntp,concat,hybrid-ntp", "--workspaces", "1",
                    "--files", "2", "--facts", "2", "--max-new-tokens", "4", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert {r["variant"] for r in rows} == {"ablation", "ntp", "concat", "hybrid-ntp"} and len(rows) == 16
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["ntp"]["n"] == 4 and "vs_ablation" in summary["ntp"]
    ntp_rows = [r for r in rows if r["variant"] == "ntp"]
    assert {r["position"]: r["tokens_after"] for r in ntp_rows}[0] > 0  # file 0 has file 1 primed after it
    assert "| ntp |" in (out / "table.md").read_text()
    replay = tmp_path / "replay"
    assert mr.main(["--model", str(tiny_llama_dir), "--variants", "ntp", "--workspaces", "1", "--files", "2",
                    "--facts", "2", "--max-new-tokens", "4", "--prime-passes", "2", "--out", str(replay)]) == 0
    replayed = [json.loads(line) for line in (replay / "rows.jsonl").read_text().splitlines()]
    # distances count the last pass only; priming took two passes' time
    assert [r["tokens_after"] for r in replayed] == [r["tokens_after"] for r in ntp_rows]
    assert json.loads((replay / "summary.json").read_text())["info"]["prime_passes"] == 2


def test_bad_input(tmp_path):
    with pytest.raises(SystemExit):
        mr.main(["--variants", "ablation,bogus", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        mr.main(["--ntp-config", "[1]", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        mr.main(["--files", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        mr.main(["--prime-passes", "0", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="unknown variant"):
        mr.variant_setup("bogus", {})


def test_wrong_binding_and_report_only(tmp_path):
    rows = [{"variant": "ntp", "workspace": 0, "position": 0, "name": n, "value": v, "completion": c,
             "recalled": c.startswith(v + '"'), "value_nll": 1.0, "tokens_after": 0}
            for n, v, c in (("A_KEY", "aaaa1111", 'bbbb2222"'), ("B_KEY", "bbbb2222", 'bbbb2222"'), ("C_KEY", "cccc3333", "x"))]
    assert [mr.wrong_binding(r, rows) for r in rows] == [True, False, False]
    base = [dict(r, variant="ablation", completion="x", recalled=False) for r in rows]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows + base))
    assert mr.main(["--out", str(tmp_path / "merged"), "--report-only", str(tmp_path / "a.jsonl")]) == 0
    summary = json.loads((tmp_path / "merged" / "summary.json").read_text())["summary"]
    assert list(summary) == ["ablation", "ntp"] and summary["ntp"]["wrong_binding"] == 1 and summary["ntp"]["recalled"] == 1
