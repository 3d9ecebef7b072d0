"""The report as a few lines of text for the terminal (``atc-wsi analyze`` and ``atc-wsi demo``).

A figure the scope verdict withholds reads "not assessed — <reason>", never 0.
"""

from __future__ import annotations

from typing import Any

from workers.report.withheld import not_assessed


def mitosis_line(m: dict[str, Any]) -> str:
    """Counts, hotspot and per-HPF count; or why there are none."""
    withheld = not_assessed(m)
    if withheld:
        return withheld
    if m.get("count_total") is None:
        return "not counted: " + ("; ".join(m.get("warnings") or []) or "not run")
    return (
        f"{m['count_total']} ({m['count_atypical']} atypical, {m['count_tripolar']} tripolar); "
        f"{m['mitoses_per_2mm2_hotspot']} in the 2 mm² hotspot, {m['mitoses_per_10hpf']} per "
        f"{m['n_hpf']} HPF ({m['hpf_area_mm2']} mm² each)"
    )


def tam_line(t: dict[str, Any]) -> str:
    """Density (and share of nucleated cells) per route; or why there is none."""
    withheld = not_assessed(t)
    if withheld:
        return withheld
    if t.get("route") is None:
        return "not run: " + ("; ".join(t.get("warnings") or []) or "no route")
    dens = t.get("density_per_mm2")
    if dens is None:
        return f"no density ({t['route']} route: no tumour region or tissue to refer it to)"
    frac = t.get("tam_fraction")
    share = f", {100 * frac:.1f}% of nucleated cells" if frac is not None else ""
    return f"{dens:.0f} per mm²{share} ({t['route']} route)"


def necrosis_line(n: dict[str, Any]) -> str:
    """Area and share of the tumour bed (the share may be withheld)."""
    pct = n.get("percent_of_tumour_bed")
    text = f"{n['area_mm2']:.3f} mm²"
    withheld = not_assessed(n)
    if withheld:
        return f"{text}; share of the tumour bed {withheld}"
    return text + (f" = {pct:.1f}% of the tumour bed" if pct is not None else "")


def section_lines(rep: dict[str, Any]) -> list[str]:
    """One line per analysis section present: scope, pattern, necrosis, mitoses, TAM, grading."""
    lines = []
    if "scope" in rep:
        lines.append(f"  scope     {rep['scope']['verdict']}: {rep['scope']['reason']}")
    if "pattern" in rep:
        p = rep["pattern"]
        mixed = f" (mixed: {', '.join(p['secondary_patterns'])})" if p.get("mixed") else ""
        pred = p.get("predominant_display") or ("not assessed" if p.get("withheld") else "none")
        viable = p.get("viable_tumour_mm2")
        area = f", viable tumour {viable:.2f} mm²" if viable is not None else ""
        lines.append(f"  pattern   predominant {pred}{mixed}{area}")
    if "necrosis" in rep:
        lines.append(f"  necrosis  {necrosis_line(rep['necrosis'])}")
    if "mitosis" in rep:
        lines.append(f"  mitoses   {mitosis_line(rep['mitosis'])}")
    if "tam" in rep:
        lines.append(f"  TAM       {tam_line(rep['tam'])}")
    if "grading" in rep:
        flags = rep["grading"]["flags"]
        met = sum(1 for f in flags if f["met"] is True)
        known = sum(1 for f in flags if f["met"] is not None)
        lines.append(f"  grading   {met} of {known} assessed criteria met ({len(flags)} in all)")
    return lines
