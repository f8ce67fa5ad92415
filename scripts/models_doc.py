"""Regenerate docs/models.md from the model cards: python scripts/models_doc.py"""
import json
from pathlib import Path

cards = [json.loads(p.read_text()) for p in sorted(Path("models").glob("*.json"))]
lines = ["# Shipped models", "", "Generated from `models/*.json` by `python scripts/models_doc.py`.", "",
         "| name | channels | h | r | width | K | activation bits | parameters | file bytes | training data | steps | wall time | best val bpd (crops) | evaluation (bits/sub-pixel, actual .nlc files) |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for c in cards:
    a, t = c["architecture"], c["training"]
    ev = "; ".join(f"{k}: {v['bits_per_subpixel']} ({v['images']} images)" for k, v in c["evaluation"]["bits_per_subpixel_actual_files"].items())
    lines.append(f"| `{c['name']}` | {a['channels']} | {a['horizon']} | {a['res_blocks']} | {a['width']} | {a['mixtures']} | {a.get('act_bits', 8)} | "
                 f"{c['parameters']} | {c['file_bytes']} | {', '.join(t['data'])} | {t['steps']} (QAT from {t['qat_from_step']}) | "
                 f"{t['wall_seconds'] / 60:.0f} min on {t['hardware']} | {t['best_val_bpd']} | {ev} |")
lines += ["", "Learning curves (validation bits per dimension on held-out crops, by step):", ""]
for c in cards:
    lines.append(f"- `{c['name']}`: " + ", ".join(f"{s}: {v}" for s, v in c["training"]["val_curve"]))
notes = [f"- `{c['name']}`: {c['training_notes']}" for c in cards if c.get("training_notes")]
if notes:
    lines += ["", "How they were trained (`training_notes` in each card):", "", *notes]
Path("docs/models.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
