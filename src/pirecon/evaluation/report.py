"""The panel evaluation's report: ``metrics.json``, ``metrics.csv``, ``report.md`` (a plain-words summary first)
and ``blind_spots.png`` (detection rate over the lesion grid, one heat map per model)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

__all__ = ["write_report", "summary_paragraph", "GAP_DB"]

GAP_DB = 1.0
"""A condition is a blind spot of a model when its PSNR falls by more than this (dB) below the in-distribution
mean with the 95% interval of the gap above it, or its calibrated intervals lose their guarantee."""


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        estimate, low, high = value
        return "-" if math.isnan(estimate) else f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return f"{value:.{digits}f}"


SHIFTS = ("shift", "user_images")
"""The condition kinds judged against the in-distribution quality (the lesion grid and the small features are
judged by detection: their background is another phantom)."""


def _shifts(result: dict) -> list[str]:
    return [c["name"] for c in result["conditions"] if c["kind"] in SHIFTS]


def _failures(result: dict, model: str) -> list[str]:
    """The shifted conditions where ``model`` must not be used (see :data:`GAP_DB`), with the reason."""
    out = []
    for condition in _shifts(result):
        row = result["rows"][model][condition]
        if "error" in row:
            out.append(f"{condition} (cannot run: {row['error']})")
        elif row.get("psnr_gap") is not None and row["psnr_gap"][1] > GAP_DB:
            out.append(f"{condition} (-{row['psnr_gap'][0]:.1f} dB)")
        elif row.get("guarantee_holds") is False:
            out.append(f"{condition} (intervals miss {row['miscoverage'][0]:.3f} of pixels, alpha {row['alpha']:g})")
    return out


def below_baselines(result: dict, model: str) -> list[str]:
    """The conditions where a learned ``model``'s mean PSNR is below every baseline's that ran."""
    if model in result["baselines"] or not result["baselines"]:
        return []
    rows = result["rows"]
    out = []
    for condition, row in rows[model].items():
        ran = [rows[b][condition]["psnr"][0] for b in result["baselines"] if "psnr" in rows[b][condition]]
        if "psnr" in row and ran and row["psnr"][0] < min(ran):
            out.append(condition)
    return out


def summary_paragraph(result: dict) -> str:
    """One paragraph in plain words: per model, where it can be used and where it must not."""
    sentences = []
    for model in result["models"]:
        failures = _failures(result, model)
        fine = [c for c in _shifts(result) if not any(f.startswith(c + " ") for f in failures)]
        sentence = f"{model} " + (f"must not be used under {', '.join(failures)}" if failures else
                                  f"shows no loss of more than {GAP_DB:g} dB (95% interval) under any shift of the panel")
        if fine and failures:
            sentence += f"; it shows no loss of more than {GAP_DB:g} dB under {', '.join(fine)}"
        sentence += "."
        worse = [c for c in below_baselines(result, model) if c in _shifts(result) or c == "in_distribution"]
        if worse:
            sentence += f" It is worse than every classical baseline under {', '.join(worse)}."
        smallest = result["smallest"].get(model, {})
        if smallest:
            parts = [f"radius {r:g} at contrast {c}" for c, r in smallest.items() if r is not None]
            missed = [c for c, r in smallest.items() if r is None]
            sentence += " Lesions detected in 90% of cases: " + ("; ".join(parts) if parts else "none") + \
                (f" (none at contrast {', '.join(missed)})" if missed else "") + "."
        features = result["rows"][model].get("small_features", {})
        rate = features.get("sensitivity") or features.get("rose_detection")
        if rate is not None:
            sentence += f" Small high-contrast features found: {rate[0]:.0%}."
        sentences.append(sentence)
    return " ".join(sentences)


def _table(result: dict) -> list[str]:
    models = result["models"]
    conditions = list(result["rows"][models[0]])
    header = "| condition | " + " | ".join(f"{m} PSNR (dB) | {m} gap (dB)" for m in models) + " |"
    lines = [header, "|---|" + "---:|" * (2 * len(models))]
    for condition in conditions:
        cells = []
        for m in models:
            row = result["rows"][m][condition]
            if "error" in row:
                cells += ["cannot run", "-"]
                continue
            mark = " (below baselines)" if condition in below_baselines(result, m) else ""
            cells += [_fmt(row["psnr"]) + mark, _fmt(row.get("psnr_gap"))]
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    return lines


def _extra_tables(result: dict) -> list[str]:
    lines = []
    for m in result["models"]:
        rows = result["rows"][m]
        task = [c for c, r in rows.items() if "auc" in r or "sensitivity" in r]
        if task:
            lines += ["", f"### {m}: the lesion label", "", "| condition | AUC | sensitivity | specificity |",
                      "|---|---:|---:|---:|"]
            lines += [f"| {c} | {_fmt(rows[c].get('auc'), 3)} | {_fmt(rows[c].get('sensitivity'), 3)} | "
                      f"{_fmt(rows[c].get('specificity'), 3)} |" for c in task]
        intervals = [c for c, r in rows.items() if "miscoverage" in r]
        if intervals:
            lines += ["", f"### {m}: calibrated intervals", "", "| condition | pixels outside | alpha | guarantee |",
                      "|---|---:|---:|---|"]
            lines += [f"| {c} | {_fmt(rows[c]['miscoverage'], 4)} | {rows[c]['alpha']:g} | "
                      f"{'holds' if rows[c]['guarantee_holds'] else 'lost'} |" for c in intervals]
    return lines


def _heat_maps(result: dict, grid: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in result["models"] if grid.get(m)]
    if not models:
        return
    radii = sorted({r for cells in grid.values() for r, _ in cells})
    contrasts = sorted({c for cells in grid.values() for _, c in cells})
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models) + 1, 3.4), squeeze=False,
                             constrained_layout=True)
    for ax, model in zip(axes[0], models):
        values = np.array([[np.nan if grid[model].get((r, c)) is None else grid[model][(r, c)] for r in radii]
                           for c in contrasts])
        image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", origin="lower")
        for i in range(len(contrasts)):
            for j in range(len(radii)):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="w" if values[i, j] < 0.6 else "k")
        ax.set_xticks(range(len(radii)), [f"{r:g}" for r in radii])
        ax.set_yticks(range(len(contrasts)), [f"{c:g}" for c in contrasts])
        ax.set_xlabel("lesion radius (normalised)")
        ax.set_ylabel("contrast")
        ax.set_title(model, fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), label="detection rate")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: dict, grid: dict, out: Path) -> None:
    """``metrics.json`` (``result``), ``metrics.csv`` (one row per model and condition), ``report.md`` and
    ``blind_spots.png`` under ``out``."""
    from .._atomic import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "metrics.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1, default=float) + "\n")
    fields = ["model", "condition", "cases", "psnr", "psnr_low", "psnr_high", "ssim", "psnr_gap", "auc", "sensitivity",
              "specificity", "miscoverage", "alpha", "rose_detection"]
    with atomic_path(out / "metrics.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fields)
            writer.writeheader()
            for model, rows in result["rows"].items():
                for condition, row in rows.items():
                    if "error" in row:
                        writer.writerow({"model": model, "condition": condition, "cases": 0})
                        continue
                    line = {"model": model, "condition": condition, "cases": row["cases"],
                            "psnr": row["psnr"][0], "psnr_low": row["psnr"][1], "psnr_high": row["psnr"][2]}
                    for key in fields[6:]:
                        value = row.get(key)
                        line[key] = value[0] if isinstance(value, (list, tuple)) else value
                    writer.writerow(line)
    _heat_maps(result, grid, out / "blind_spots.png")
    descriptions = "\n".join(f"- `{c['name']}` ({c['n'] if c['n'] is not None else 'all'} cases): "
                             f"{c['description']}" for c in result["conditions"])
    panel = result["panel"]
    lines = [f"# Blind-spot report: {', '.join(result['models'])} on {panel['panel']}"
             f"{' (small)' if panel['small'] else ''}", "", summary_paragraph(result), "",
             "## Image quality per condition", "",
             "Mean PSNR with its 95% bootstrap interval over cases; the gap is the in-distribution mean minus the "
             "condition's (bootstrap over both).", "", *_table(result), *_extra_tables(result), "",
             "## Blind-spot map", "",
             "Detection rate over the lesion grid (the task's decision, or the Rose criterion `C sqrt(N) / sigma "
             ">= 5` for a model without a task head): `blind_spots.png`.", "", "## Conditions", "", descriptions, ""]
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text("\n".join(lines))
