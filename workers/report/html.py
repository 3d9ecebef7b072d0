"""A self-contained ``report.html`` (no network: figures inlined as base64 PNG, CSS inline)."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workers.report import figures
from workers.report.figures import Thumb
from workers.report.withheld import NOT_ASSESSED, not_assessed, withheld_reason
from wsi.export.colors import display_name
from wsi.results import SlideOutputs

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;color:#1d2330;
background:#f5f6f8}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:0 0 4px}
h2{font-size:1.2em;margin:28px 0 8px;border-bottom:2px solid #d5d9e0}
.sub{color:#5b6475;margin:0 0 16px}
.disclaimer{background:#fff4d6;border-left:4px solid #e0a800;padding:10px 14px;margin:12px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px}
.scope{border-radius:8px;padding:10px 14px;margin:10px 0;background:#eef4ff}
.scope-no_tumour{background:#f1f1f1}.scope-outside_validated{background:#fff1dc}
.card{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px #0002}
.card .v{font-size:1.5em;font-weight:600} .card .k{color:#5b6475;font-size:.9em}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;min-width:50%}
td,th{border:1px solid #d5d9e0;padding:5px 10px;text-align:left;font-size:.95em}
th{background:#eef0f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{background:#fff;margin:10px 0;padding:10px;border-radius:8px;display:inline-block}
figure img{max-width:100%} figcaption{color:#5b6475;font-size:.9em}
.met{color:#b00020;font-weight:600} .notmet{color:#2e7d32}
.card .v.na{font-size:1.1em;color:#5b6475} p.withheld{color:#5b6475;font-style:italic}
h3{font-size:1em;margin:16px 0 4px}
.gallery{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0}
.gallery figure.cell{margin:0;padding:4px;text-align:center}
.gallery figure.cell img{width:96px;height:96px;image-rendering:auto}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    """Format a value for a table cell (``—`` for missing)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:,.{digits}f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def table(rows: Iterable[tuple[str, str]], header: tuple[str, str] | None = None) -> str:
    """Return a two-column HTML table of (label, already-formatted value)."""
    head = f"<tr><th>{_esc(header[0])}</th><th>{_esc(header[1])}</th></tr>" if header else ""
    body = "".join(f"<tr><th>{_esc(k)}</th><td class='num'>{_esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{head}{body}</table>"


def _figure(png: bytes | None, caption: str) -> str:
    if png is None:
        return ""
    b64 = base64.b64encode(png).decode("ascii")
    return (
        f"<figure><img alt='{_esc(caption)}' src='data:image/png;base64,{b64}'>"
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


SCOPE_TITLES = {
    "in_scope": "In scope: tumour found",
    "no_tumour": "No tumour found",
    "outside_validated": "Outside validated inputs",
}


def _scope(report: dict[str, Any]) -> str:
    """The scope verdict as a banner above the figures (empty when the verdict is absent)."""
    sc = report.get("scope")
    if not sc:
        return ""
    title = SCOPE_TITLES.get(sc["verdict"], sc["verdict"])
    return (
        f"<div class='scope scope-{_esc(sc['verdict'])}'><strong>{_esc(title)}.</strong> "
        f"{_esc(sc['reason'])}</div>"
    )


def _card_value(section: dict[str, Any], value: str) -> tuple[str, bool]:
    """The card's value, or "not assessed" (True) when the section is withheld."""
    return (NOT_ASSESSED, True) if withheld_reason(section) else (value, False)


def _cards(report: dict[str, Any]) -> str:
    cards: list[tuple[str, tuple[str, bool]]] = []
    if "scope" in report:
        cards.append(("Scope", (SCOPE_TITLES.get(report["scope"]["verdict"], "—"), False)))
    if "pattern" in report:
        p = report["pattern"]
        pred = display_name(p["predominant"]) if p.get("predominant") else "—"
        pred += " (mixed)" if p.get("mixed") else ""
        cards.append(("Predominant pattern", _card_value(p, pred)))
    if "necrosis" in report:
        n = report["necrosis"]
        pct = fmt(n["percent_of_tumour_bed"], "%", 1)
        cards.append(("Necrosis, % of tumour bed", _card_value(n, pct)))
    m = report.get("mitosis", {})
    if m.get("count_total") is not None or withheld_reason(m):
        cards.append(
            ("Mitoses in 2 mm² hotspot", _card_value(m, fmt(m["mitoses_per_2mm2_hotspot"])))
        )
        label = f"Mitoses per {m['n_hpf']} HPF ({m['hpf_area_mm2']} mm² per HPF)"
        cards.append((label, _card_value(m, fmt(m["mitoses_per_10hpf"]))))
    t = report.get("tam", {})
    if t.get("density_per_mm2") is not None or withheld_reason(t):
        cards.append(("TAM density", _card_value(t, fmt(t["density_per_mm2"], "/mm²", 0))))
    if "grading" in report:
        flags = report["grading"]["flags"]
        met = sum(1 for f in flags if f["met"] is True)
        known = sum(1 for f in flags if f["met"] is not None)
        cards.append(("Grading criteria met", (f"{met} of {known} assessed", False)))
    return (
        "<div class='cards'>"
        + "".join(
            f"<div class='card'><div class='v{' na' if na else ''}'>{_esc(v)}</div>"
            f"<div class='k'>{_esc(k)}</div></div>"
            for k, (v, na) in cards
        )
        + "</div>"
    )


def _slide_table(report: dict[str, Any]) -> str:
    s = report["slide"]
    return "<h2>Slide</h2>" + table(
        [
            ("File", Path(s["path"]).name),
            ("Size (level 0)", f"{s['width']:,} × {s['height']:,} px"),
            ("Pixel size", fmt(s["mpp"], "µm/px", 3)),
            ("Scanner", fmt(s["vendor"])),
            ("Objective", fmt(s.get("objective_power"), "×", 0)),
            ("Fingerprint", s["fingerprint"]),
        ]
    )


def _tissue_table(report: dict[str, Any]) -> str:
    rows = []
    if "tissue" in report:
        rows.append(("Tissue area", fmt(report["tissue"]["area_mm2"], "mm²")))
    if "qc" in report:
        q = report["qc"]
        rows += [
            ("Unreadable tiles", fmt(q["unreadable_tiles"])),
            ("Pen-marked fraction", fmt(100 * q["pen_fraction"], "%", 1)),
            ("Blurred fraction", fmt(100 * q["blur_fraction"], "%", 1)),
        ]
    return "<h2>Tissue and quality</h2>" + table(rows) if rows else ""


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _tam_table(t: dict[str, Any]) -> str:
    routes = {"he": "H&E macrophage detector", "ihc": "CD68/CD163 immunostain"}
    route = routes.get(t["route"], "not run") if t["route"] else "not run (stain does not fit)"
    rows = [("Route", route)]
    withheld = not_assessed(t)
    if withheld:
        rows += [("Density", withheld), ("Share of nucleated cells", NOT_ASSESSED)]
    elif t["route"]:
        basis = t.get("area_basis", "tumour")
        rows += [
            ("Density", fmt(t.get("density_per_mm2"), "cells/mm²", 1)),
            ("Area basis", str(basis)),
            ("Share of nucleated cells", fmt(_pct(t.get("tam_fraction")), "%", 1)),
            ("DAB-positive area", fmt(_pct(t.get("dab_positive_area_fraction")), "%", 1)),
        ]
    rows += [("Note", str(w)) for w in t.get("warnings", [])]
    return "<h2>Tumour-associated macrophages</h2>" + table(rows)


def _analysis_tables(report: dict[str, Any]) -> str:
    parts = [_slide_table(report), _tissue_table(report)]
    if "pattern" in report:
        mix_withheld = withheld_reason(report["pattern"]) is not None
        rows = [
            (
                display_name(c),
                f"{fmt(v['area_mm2'], 'mm²', 3)} · "
                + (NOT_ASSESSED if mix_withheld else fmt(v["percent_of_tumour"], "%", 1)),
            )
            for c, v in report["pattern"]["per_class"].items()
        ]
        parts.append(
            "<h2>Growth patterns</h2>" + table(rows, ("Pattern", "Area · share of tumour"))
        )
    if "necrosis" in report:
        n = report["necrosis"]
        parts.append(
            "<h2>Necrosis</h2>"
            + table(
                [
                    ("Area", fmt(n["area_mm2"], "mm²", 3)),
                    (
                        "Share of tumour bed",
                        not_assessed(n) or fmt(n["percent_of_tumour_bed"], "%", 1),
                    ),
                ]
            )
        )
    mitosis = report.get("mitosis")
    withheld = not_assessed(mitosis)
    if mitosis is not None and withheld:
        notes = "".join(f"<li>{_esc(w)}</li>" for w in mitosis.get("warnings", []))
        parts.append(
            f"<h2>Mitoses</h2><p class='withheld'>{_esc(withheld.capitalize())}</p>"
            + (f"<ul>{notes}</ul>" if notes else "")
        )
    elif mitosis is not None and mitosis.get("count_total") is not None:
        parts.append("<h2>Mitoses</h2>" + table(_mitosis_rows(mitosis)))
    elif mitosis is not None:
        notes = "; ".join(mitosis.get("warnings", [])) or "not run"
        parts.append(f"<h2>Mitoses</h2><p>Not counted: {_esc(notes)}</p>")
    if "tam" in report:
        parts.append(_tam_table(report["tam"]))
    return "".join(parts)


def _mitosis_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    n_hpf, hpf_mm2 = m["n_hpf"], m["hpf_area_mm2"]
    return [
        ("Total detected", fmt(m["count_total"])),
        ("  Typical", fmt(m["count_typical"])),
        ("  Atypical (all forms)", fmt(m["count_atypical"])),
        ("    of which tripolar / multipolar", fmt(m["count_tripolar"])),
        ("Atypical share", fmt(m["percent_atypical"], "%", 1)),
        ("Per mm² of viable tumour", fmt(m["per_mm2_viable_tumour"], "", 2)),
        ("In the 2 mm² hotspot", fmt(m["mitoses_per_2mm2_hotspot"])),
        (
            f"Per {n_hpf} HPF",
            f"{fmt(m['mitoses_per_10hpf'])} (one HPF = {hpf_mm2} mm²; "
            f"{n_hpf} HPF = {n_hpf * hpf_mm2:.2f} mm²)",
        ),
    ]


def _grading(report: dict[str, Any]) -> str:
    if "grading" not in report:
        return ""
    g = report["grading"]
    status = {True: "<td class='met'>met</td>", False: "<td class='notmet'>not met</td>"}
    rows = "".join(
        f"<tr><td>{_esc(f['criterion'])}</td>"
        f"<td class='num'>{_esc(fmt(f['measured'], f['unit']))}</td>"
        f"<td class='num'>{_esc(fmt(f['threshold'], f['unit']))}</td>"
        + status.get(f["met"], "<td>not assessed</td>")
        + "</tr>"
        for f in g["flags"]
    )
    return (
        f"<h2>Grading criteria</h2><div class='disclaimer'>{_esc(g['disclaimer'])}</div>"
        f"<table><tr><th>Criterion</th><th>Measured</th><th>Threshold</th><th>Status</th></tr>"
        f"{rows}</table>"
    )


def _provenance(report: dict[str, Any]) -> str:
    p = report["provenance"]
    models = "".join(
        f"<tr><td>{_esc(m['name'])}</td><td>{_esc(m['version'])}</td>"
        f"<td><code>{_esc(m['sha256'][:16])}…</code></td></tr>"
        for m in p["models"]
    )
    durations = [(k, fmt(float(v), "s", 1)) for k, v in p["durations_s"].items()]
    return (
        "<h2>Provenance</h2>"
        + table(
            [
                ("atc-wsi version", p["package_version"]),
                ("Source commit", fmt(p.get("git_commit"))),
                ("Configuration hash", p["config_hash"]),
                ("Device / precision", f"{p['device']} / {p['dtype']}"),
                ("Started", p["started_at"]),
                ("Finished", p["finished_at"]),
            ]
        )
        + (
            "<table><tr><th>Model</th><th>Version</th><th>Weights SHA-256</th></tr>"
            + models
            + "</table>"
            if models
            else ""
        )
        + table(durations, ("Stage", "Duration"))
    )


def render_html(
    outputs: SlideOutputs, thumb: Thumb, *, thumb_note: str = "", gallery: str = ""
) -> str:
    """Return the whole report page.

    Args:
        outputs: the slide's outputs (``outputs.report`` validated beforehand).
        thumb: the slide thumbnail (or :func:`figures.blank_thumb`).
        thumb_note: shown under the title when the thumbnail is a stand-in.
        gallery: the detection-gallery section (``workers.report.gallery.gallery_html``).
    """
    report = outputs.report
    name = Path(report["slide"]["path"]).name
    tam = next((m for m in outputs.maps if m.name == "tam_density"), None)
    overview = "Slide thumbnail: necrosis outlined, mitoses marked, dashed circle = 2 mm² mitosis "
    overview += "hotspot"
    if withheld_reason(report.get("mitosis")):
        overview = "Slide thumbnail: necrosis outlined (mitoses not assessed, no hotspot)"
    figs = [
        _figure(figures.overview(thumb, outputs), overview),
        _figure(figures.pattern_map(thumb, outputs), "Most probable growth pattern per region"),
        _figure(
            None if withheld_reason(report.get("pattern")) else figures.pattern_mix(report),
            "Share of viable tumour per pattern",
        ),
        _figure(figures.mitosis_density(thumb, outputs, outputs.mpp), "Mitotic density"),
        _figure(
            None if tam is None else figures.density_map(thumb, tam, "TAM density"),
            "Tumour-associated macrophage density",
        ),
    ]
    disclaimer = report.get("grading", {}).get(
        "disclaimer", "Decision support only; not a diagnosis. Review the slide."
    )
    note = f"<p class='sub'>{_esc(thumb_note)}</p>" if thumb_note else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>ATC slide report: {_esc(name)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>Anaplastic thyroid carcinoma: slide analysis</h1>"
        f"<p class='sub'>{_esc(name)} · analysed "
        f"{_esc(report['provenance']['finished_at'])}</p>{note}"
        f"<div class='disclaimer'>{_esc(disclaimer)}</div>{_scope(report)}{_cards(report)}"
        f"<h2>Maps</h2>{''.join(figs)}{gallery}{_grading(report)}{_analysis_tables(report)}"
        f"{_provenance(report)}</main></body></html>\n"
    )
