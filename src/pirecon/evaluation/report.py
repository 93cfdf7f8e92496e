"""The panel evaluation's report: ``metrics.json``, ``metrics.csv``, ``report.md`` (a plain-words summary first)
and ``blind_spots.png`` (detection rate over the lesion grid, one heat map per model)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

__all__ = ["write_report", "summary_paragraph", "known_limits", "below_baselines", "BELOW_MARK", "GAP_DB"]

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


def _failures(result: dict, model: str) -> list[tuple[str, str]]:
    """``(condition, reason)`` of the shifted conditions where ``model`` must not be used (see :data:`GAP_DB`)."""
    out = []
    for condition in _shifts(result):
        row = result["rows"][model][condition]
        if "error" in row:
            out.append((condition, f"cannot run: {row['error']}"))
        elif row.get("psnr_gap") is not None and row["psnr_gap"][1] > GAP_DB:
            out.append((condition, f"-{row['psnr_gap'][0]:.1f} dB"))
        elif row.get("guarantee_holds") is False:
            out.append((condition, f"intervals miss {row['miscoverage'][0]:.3f} of pixels, alpha {row['alpha']:g}"))
    return out


BELOW_MARK = " (below a baseline)"
"""Appended in the tables to a learned model's PSNR under a condition where a classical baseline's is higher."""


def below_baselines(result: dict, model: str) -> dict[str, str]:
    """The conditions where a learned ``model``'s mean PSNR is below the best classical baseline's that ran,
    each with that baseline's name: a model worse than TV (or FBP, CG-SENSE) under a condition is marked."""
    if model in result["baselines"] or not result["baselines"]:
        return {}
    rows = result["rows"]
    out = {}
    for condition, row in rows[model].items():
        ran = {b: rows[b][condition]["psnr"][0] for b in result["baselines"] if "psnr" in rows[b][condition]}
        best = max(ran, key=ran.get, default=None)
        if "psnr" in row and best is not None and row["psnr"][0] < ran[best]:
            out[condition] = best
    return out


def _below_in_words(result: dict, model: str) -> str:
    """:func:`below_baselines` under the reference and the shifts (not the lesion cells), grouped by baseline:
    "tv under a, b; fbp under c"; empty when there are none."""
    judged = {c["name"] for c in result["conditions"] if c["kind"] == "reference"} | set(_shifts(result))
    grouped: dict[str, list[str]] = {}
    for condition, baseline in below_baselines(result, model).items():
        if condition not in judged:
            continue
        grouped.setdefault(baseline, []).append(condition)
    return "; ".join(f"{baseline} under {', '.join(conditions)}" for baseline, conditions in grouped.items())


def known_limits(result: dict, model: str) -> list[str]:
    """The model card's "Known limits" from an evaluation: each blind spot, with the panel named."""
    panel = result["panel"]["panel"] + (" (small)" if result["panel"]["small"] else "")
    descriptions = {c["name"]: c["description"] for c in result["conditions"]}
    limits = [f"Panel {panel}: not to be used under {condition} ({descriptions[condition]}): {reason}"
              for condition, reason in _failures(result, model)]
    worse = _below_in_words(result, model)
    if worse:
        limits.append(f"Panel {panel}: PSNR below that of the classical baseline {worse}")
    missed = [c for c, r in result["smallest"].get(model, {}).items() if r is None]
    if missed:
        limits.append(f"Panel {panel}: no lesion size of the grid is detected in 90% of cases at contrast "
                      f"{', '.join(missed)}")
    return limits


def summary_paragraph(result: dict) -> str:
    """One paragraph in plain words: per model, where it can be used and where it must not."""
    sentences = []
    for model in result["models"]:
        failures = _failures(result, model)
        failed = {condition for condition, _ in failures}
        fine = [c for c in _shifts(result) if c not in failed]
        named = ", ".join(f"{condition} ({reason})" for condition, reason in failures)
        sentence = f"{model} " + (f"must not be used under {named}" if failures else
                                  f"shows no loss of more than {GAP_DB:g} dB (95% interval) under any shift of the panel")
        if fine and failures:
            sentence += f"; it shows no loss of more than {GAP_DB:g} dB under {', '.join(fine)}"
        sentence += "."
        worse = _below_in_words(result, model)
        if worse:
            sentence += f" Its PSNR is below that of the classical baseline {worse}."
        smallest = result["smallest"].get(model, {})
        if smallest:
            parts = [f"radius {r:g} at contrast {c}" for c, r in smallest.items() if r is not None]
            missed = [c for c, r in smallest.items() if r is None]
            sentence += " Lesions detected in 90% of cases: " + ("; ".join(parts) if parts else "none") + \
                (f" (none at contrast {', '.join(missed)})" if missed else "") + "."
        flag = (result.get("ood") or {}).get(model)
        if flag and flag["failing"]:
            sentence += (f" Its out-of-distribution flag catches {flag['flagged']:.0%} of the {flag['failing']} failing "
                         f"cases, with false alarms on {flag['false_alarms']:.0%} of the {flag['others']} others.")
        features = result["rows"][model].get("small_features", {})
        rate = features.get("sensitivity") or features.get("rose_detection")
        if rate is not None:
            sentence += f" Small high-contrast features found: {rate[0]:.0%}."
        sentences.append(sentence)
    return " ".join(sentences)


Table = tuple[str, list[str], list[list[str]]]
"""``(title, header, rows)``: one table of the report, rendered as Markdown and as HTML."""


def _summary_table(result: dict) -> Table:
    """One compact table: per shift (and the reference) each model's mean PSNR with its gap in brackets, the
    fraction of pixels outside calibrated intervals; then per model the smallest lesion detected in 90% of cases
    per contrast, the OOD flag's catch and false-alarm rates, and the reconstruction time."""
    models = result["models"]
    intervals = [m for m in models if any("miscoverage" in r for r in result["rows"][m].values())]
    header = ["condition", *(f"{m} PSNR (gap)" for m in models), *(f"{m} pixels outside" for m in intervals)]
    reference = [c["name"] for c in result["conditions"] if c["kind"] == "reference"]
    marked = {m: below_baselines(result, m) for m in models}
    rows = []
    for condition in reference + _shifts(result):
        cells = [condition]
        for m in models:
            row = result["rows"][m][condition]
            if "error" in row:
                cells.append("cannot run")
                continue
            gap = None if condition in reference else row.get("psnr_gap")
            cells.append(f"{row['psnr'][0]:.2f}" + (f" ({-gap[0]:+.2f})" if gap else "") +
                         (BELOW_MARK if condition in marked[m] else ""))
        for m in intervals:
            row = result["rows"][m][condition]
            cells.append(f"{row['miscoverage'][0]:.3f}" + ("" if row["guarantee_holds"] else " (lost)")
                         if "miscoverage" in row else "-")
        rows.append(cells)
    blank = ["-"] * len(intervals)
    smallest = [", ".join(f"{'none' if r is None else f'{r:g}'} at {c}"
                          for c, r in result["smallest"].get(m, {}).items()) or "-" for m in models]
    rows.append(["smallest lesion radius detected (at contrast)", *smallest, *blank])
    flags = [(result.get("ood") or {}).get(m) for m in models]
    rows.append(["OOD flag: failing cases caught / false alarms",
                 *("-" if not f or not f["failing"] else f"{f['flagged']:.0%} / {f['false_alarms']:.0%}"
                   for f in flags), *blank])
    if result.get("seconds"):
        rows.append(["reconstruction time (min)", *(f"{result['seconds'][m] / 60:.1f}" for m in models), *blank])
    return ("Summary: mean PSNR (dB) and its change from in-distribution", header, rows)


def _tables(result: dict) -> list[Table]:
    models = result["models"]
    header = ["condition"] + [f"{m} {what}" for m in models for what in ("PSNR (dB)", "gap (dB)")]
    marked = {m: below_baselines(result, m) for m in models}
    rows = []
    for condition in result["rows"][models[0]]:
        cells = [condition]
        for m in models:
            row = result["rows"][m][condition]
            if "error" in row:
                cells += ["cannot run", "-"]
                continue
            mark = BELOW_MARK if condition in marked[m] else ""
            cells += [_fmt(row["psnr"]) + mark, _fmt(row.get("psnr_gap"))]
        rows.append(cells)
    tables = [_summary_table(result), ("Image quality per condition", header, rows)]
    flagged = [m for m in models if any("ood_flagged" in r for r in result["rows"][m].values())]
    if flagged:
        conditions = [c for c in result["rows"][flagged[0]] if "ood_flagged" in result["rows"][flagged[0]][c]]
        tables.append(("Out-of-distribution flag: fraction of cases flagged", ["condition", *flagged],
                       [[c, *(_fmt(result["rows"][m][c].get("ood_flagged"), 2) for m in flagged)]
                        for c in conditions]))
    for m in models:
        found = result["rows"][m]
        task = [c for c, r in found.items() if "auc" in r or "sensitivity" in r]
        if task:
            tables.append((f"{m}: the lesion label", ["condition", "AUC", "sensitivity", "specificity"],
                           [[c, _fmt(found[c].get("auc"), 3), _fmt(found[c].get("sensitivity"), 3),
                             _fmt(found[c].get("specificity"), 3)] for c in task]))
        intervals = [c for c, r in found.items() if "miscoverage" in r]
        if intervals:
            tables.append((f"{m}: calibrated intervals", ["condition", "pixels outside", "alpha", "guarantee"],
                           [[c, _fmt(found[c]["miscoverage"], 4), f"{found[c]['alpha']:g}",
                             "holds" if found[c]["guarantee_holds"] else "lost"] for c in intervals]))
    return tables


def _markdown_table(table: Table) -> list[str]:
    title, header, rows = table
    return [f"### {title}", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def _html_table(table: Table) -> str:
    from html import escape

    title, header, rows = table
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<h3>{escape(title)}</h3>\n<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


GALLERY_KINDS = ("reference", "shift", "user_images", "small_features")
"""The condition kinds shown in the failure gallery (the lesion grid has its heat map)."""


def _gallery(model: str, galleries: dict, conditions: list[dict], path: Path) -> bool:
    """One row per condition: its worst cases' truth, reconstruction, |error| (and width, predicted mask)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c["name"] for c in conditions if c["kind"] in GALLERY_KINDS and galleries.get(c["name"], {})
             .get("image") is not None]
    if not names:
        return False
    first = galleries[names[0]]
    panels = ["truth", "image", "error"] + [k for k in ("width", "segmentation") if k in first]
    cases = max(len(galleries[n]["index"]) for n in names)
    fig, axes = plt.subplots(len(names), cases * len(panels), figsize=(1.5 * cases * len(panels), 1.6 * len(names)),
                             squeeze=False, constrained_layout=True)
    for row, name in enumerate(names):
        g = galleries[name]
        for k in range(cases):
            for j, key in enumerate(panels):
                ax = axes[row, k * len(panels) + j]
                ax.axis("off")
                if k >= len(g["index"]):
                    continue
                picture = np.abs(g["image"][k] - g["truth"][k]) if key == "error" else g[key][k]
                scale = {"vmin": float(g["truth"][k].min()), "vmax": float(g["truth"][k].max())} \
                    if key in ("truth", "image") else {"vmin": 0, "vmax": 1} if key == "segmentation" else {}
                ax.imshow(picture, cmap="magma" if key in ("error", "width") else "gray", **scale)
                title = {"image": "reconstruction", "error": "|error|"}.get(key, key)
                if key == "segmentation" and "label" in g:
                    title += f" p={g['label'][k]:.2f}"
                ax.set_title(f"{name} #{int(g['index'][k])}: {title}" if j == 0 else title, fontsize=6)
    fig.suptitle(f"{model}: the {cases} worst cases (PSNR) of each condition", fontsize=9)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return True


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


def write_report(result: dict, grid: dict, galleries: dict, out: Path) -> None:
    """``metrics.json`` (``result``), ``metrics.csv`` (one row per model and condition), ``blind_spots.png``,
    ``gallery_<model>.png``, ``report.md`` and ``report.html`` (the same, figures embedded) under ``out``."""
    from .._atomic import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "metrics.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1, default=float) + "\n")
    fields = ["model", "condition", "cases", "psnr", "psnr_low", "psnr_high", "ssim", "psnr_gap", "auc", "sensitivity",
              "specificity", "miscoverage", "alpha", "rose_detection", "ood_flagged", "error"]
    with atomic_path(out / "metrics.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fields)
            writer.writeheader()
            for model, rows in result["rows"].items():
                for condition, row in rows.items():
                    line = {"model": model, "condition": condition, "cases": row["cases"]}
                    if "psnr" in row:
                        line.update(psnr=row["psnr"][0], psnr_low=row["psnr"][1], psnr_high=row["psnr"][2])
                    for key in fields[6:]:
                        value = row.get(key)
                        line[key] = value[0] if isinstance(value, (list, tuple)) else value
                    writer.writerow(line)
    figures = []
    _heat_maps(result, grid, out / "blind_spots.png")
    if (out / "blind_spots.png").is_file():
        figures.append(("Blind-spot map: detection rate over the lesion grid (the task's decision, or the Rose "
                        "criterion C sqrt(N) / sigma >= 5 for a model without a task head)", "blind_spots.png"))
    for model in result["models"]:
        name = f"gallery_{model.replace(':', '_').replace(',', '_').replace('=', '')}.png"
        if _gallery(model, galleries.get(model, {}), result["conditions"], out / name):
            figures.append((f"Failure gallery of {model}", name))
    panel = result["panel"]
    title = (f"Blind-spot report: {', '.join(result['models'])} on {panel['panel']}"
             f"{' (small)' if panel['small'] else ''}")
    summary = summary_paragraph(result)
    tables = _tables(result)
    descriptions = [f"`{c['name']}` ({c['n'] if c['n'] is not None else 'all'} cases): {c['description']}"
                    for c in result["conditions"]]
    note = ("Mean PSNR with its 95% bootstrap interval over cases; the gap is the in-distribution mean minus the "
            "condition's (bootstrap over both)." + "".join(
                f" {name}: {t['parameter']} chosen by mean PSNR on {t['validation_cases']} in-distribution slices "
                f"of the validation split among {', '.join(str(v) for v, _ in t['scores'])}."
                for name, t in result.get("tuning", {}).items()) + (
                " Reconstruction time over the panel (wall clock, summed over conditions): " + "; ".join(
                    f"{name} {seconds / 60:.1f} min" for name, seconds in result["seconds"].items()) + "."
                if result.get("seconds") else ""))
    lines = [f"# {title}", "", summary, "", "## Results", "", note, ""]
    for table in tables:
        lines += _markdown_table(table)
    lines += ["## Figures", "", *(f"- {caption}: `{name}`" for caption, name in figures), "", "## Conditions", "",
              *(f"- {d}" for d in descriptions), ""]
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    with atomic_path(out / "report.html") as tmp:
        Path(tmp).write_text(_html(title, summary, note, tables, figures, descriptions, out))


def _html(title: str, summary: str, note: str, tables: list[Table], figures: list[tuple[str, str]],
          descriptions: list[str], out: Path) -> str:
    """The report as one HTML file, its PNG figures embedded as base64 data URIs."""
    import base64
    from html import escape

    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:first-child{"
             "text-align:left}img{max-width:100%}</style></head><body>",
             f"<h1>{escape(title)}</h1>", f"<p id=\"summary\">{escape(summary)}</p>", "<h2>Results</h2>",
             f"<p>{escape(note)}</p>", *(_html_table(t) for t in tables), "<h2>Figures</h2>"]
    for caption, name in figures:
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt=\"{escape(name)}\" src=\"data:image/png;base64,{data}\">"
                     f"<figcaption>{escape(caption)}</figcaption></figure>")
    parts += ["<h2>Conditions</h2>", "<ul>", *(f"<li>{escape(d)}</li>" for d in descriptions), "</ul>",
              "</body></html>"]
    return "\n".join(parts) + "\n"
