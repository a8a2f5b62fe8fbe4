"""The README's table from results.json (EM/ES with 95% intervals, definition in block, paired tests vs rg1-bm25)."""
import json
from pathlib import Path

here = Path(__file__).resolve().parent
results = json.loads((here / "results.json").read_text())
tests = results["paired_tests"]
print("| row | n | EM % [95% CI] | ES [95% CI] | definition in block % | EM diff vs rg1-bm25 (only this / only rg1) | McNemar p | ES diff [95% CI] |")
print("|---|---|---|---|---|---|---|---|")
for label, e in results.items():
    if label in ("info", "paired_tests") or not e.get("retriever"):
        continue
    t = tests.get(f"{label} vs concat-rg1-bm25")
    paired = (f"{t['em_diff']:+.1f} on {t['n']} ({t['em_only_first']} / {t['em_only_second']}) | {t['em_mcnemar_p']:.3g} | "
              f"{t['es_diff']:+.1f} [{t['es_diff_ci95'][0]:+.1f}, {t['es_diff_ci95'][1]:+.1f}]") if t else "reference | | "
    print(f"| {label} | {e['n']} | {e['em']:.1f} [{e['em_ci95'][0]:.1f}, {e['em_ci95'][1]:.1f}] | {e['es']:.1f} "
          f"[{e['es_ci95'][0]:.1f}, {e['es_ci95'][1]:.1f}] | {100 * e.get('definition_in_block', 0):.1f} | {paired} |")
