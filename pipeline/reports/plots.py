"""Hand-written inline SVG plots for ``report.html`` (no plotting library, no network, no JavaScript).

* :func:`forest_svg` - ROR with its CI (log scale, reference line at 1) and IC with [IC025, IC975] (reference 0)
  side by side, one row per substance x PT group or PT; filled marker = the row's flag is raised.
* :func:`trend_svg` - small multiples, one panel per PT group (or PT): the cumulative ROR lower bound by quarter,
  one line per substance, reference line at 1; filled marker = ``signal_ror`` in that quarter.
* :func:`funnel_svg` - horizontal bars of reports kept after each curation/report step.
"""

from __future__ import annotations

import math
from html import escape

PALETTE = {"ketamine": "#1f77b4", "esketamine": "#d62728", "arketamine": "#2ca02c", "norketamine": "#9467bd",
           "ketamine_family": "#444444"}
FONT = "font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif"


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _t(x, y, text, *, anchor="start", size=12, weight="normal", fill="#222", extra=""):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}" '
            f'fill="{fill}" {extra}>{escape(str(text))}</text>')


def _fmt_tick(v: float) -> str:
    if v >= 1:
        return f"{v:g}"
    return f"{v:.2g}"


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo <= v <= hi:
                ticks.append(v)
    if len(ticks) > 8:
        ticks = [t for t in ticks if math.log10(t) == int(math.log10(t))]
    return ticks


def forest_svg(rows: list[dict], *, title: str = "", ror_label: str = "ROR (95% CI, log scale)",
               ic_label: str = "IC (95% credibility interval)") -> str:
    """rows: dicts with label, a, ror, ror_lo, ror_hi, ic, ic025, ic975, signal_ror, signal_ic, color, header."""
    label_w, panel_w, gap, row_h, top, bottom = 300, 330, 40, 20, 46, 40
    width = label_w + 2 * panel_w + gap + 20
    height = top + row_h * max(1, len(rows)) + bottom
    x0r, x0i = label_w, label_w + panel_w + gap
    live = [r for r in rows if r.get("a")]
    ror_vals = [v for r in live for v in (r.get("ror_lo"), r.get("ror_hi"), r.get("ror"))
                if _finite(v) and v > 0]
    lo = min(ror_vals + [0.5]) if ror_vals else 0.5
    hi = max(ror_vals + [2.0]) if ror_vals else 2.0
    lo, hi = max(lo / 1.3, 1e-3), min(hi * 1.3, 1e5)
    lx = lambda v: x0r + (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * panel_w  # noqa
    ic_vals = [v for r in live for v in (r.get("ic025"), r.get("ic975"), r.get("ic")) if _finite(v)]
    ilo, ihi = (min(ic_vals + [-1.0]) - 0.5, max(ic_vals + [1.0]) + 0.5) if ic_vals else (-2.0, 2.0)
    ix = lambda v: x0i + (v - ilo) / (ihi - ilo) * panel_w  # noqa
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="plot forest" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" style="{FONT}">',
           f"<title>{escape(title or 'Forest plot')}</title>",
           '<rect x="0" y="0" width="100%" height="100%" fill="#fff"/>']
    if title:
        out.append(_t(8, 16, title, size=14, weight="bold"))
    out.append(_t(x0r + panel_w / 2, 36, ror_label, anchor="middle", weight="bold"))
    out.append(_t(x0i + panel_w / 2, 36, ic_label, anchor="middle", weight="bold"))
    y_end = top + row_h * len(rows)
    for i, r in enumerate(rows):
        if i % 2 == 0:
            out.append(f'<rect x="0" y="{top + i * row_h}" width="{width}" height="{row_h}" fill="#f4f6f8"/>')
    # axes, ticks, reference lines
    for v in _log_ticks(lo, hi):
        x = lx(v)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{y_end}" stroke="#ddd"/>')
        out.append(_t(x, y_end + 14, _fmt_tick(v), anchor="middle", size=10, fill="#555"))
    if lo < 1 < hi:
        out.append(f'<line x1="{lx(1):.1f}" y1="{top - 4}" x2="{lx(1):.1f}" y2="{y_end}" stroke="#333" '
                   f'stroke-dasharray="4 3"/>')
    step = max(0.5, round((ihi - ilo) / 6 * 2) / 2)
    v = math.ceil(ilo / step) * step
    while v <= ihi:
        out.append(f'<line x1="{ix(v):.1f}" y1="{top}" x2="{ix(v):.1f}" y2="{y_end}" stroke="#ddd"/>')
        out.append(_t(ix(v), y_end + 14, f"{v:g}", anchor="middle", size=10, fill="#555"))
        v += step
    if ilo < 0 < ihi:
        out.append(f'<line x1="{ix(0):.1f}" y1="{top - 4}" x2="{ix(0):.1f}" y2="{y_end}" stroke="#333" '
                   f'stroke-dasharray="4 3"/>')
    out.append(_t(x0r + panel_w / 2, y_end + 30, "no disproportionality at ROR = 1", anchor="middle", size=10,
                  fill="#555"))
    out.append(_t(x0i + panel_w / 2, y_end + 30, "signal when IC025 > 0", anchor="middle", size=10, fill="#555"))
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        color = r.get("color", "#333")
        weight = "bold" if r.get("header") else "normal"
        out.append(_t(6, y + 4, r["label"], size=12, weight=weight))
        a = r.get("a")
        out.append(_t(label_w - 8, y + 4, f"a={a}", anchor="end", size=11, fill="#555"))
        if not a:
            out.append(_t(x0r + 4, y + 4, "no report with both (a = 0): nothing to plot", size=10, fill="#777"))
            continue
        # ROR
        ror, rlo, rhi = r.get("ror"), r.get("ror_lo"), r.get("ror_hi")
        if _finite(ror) and ror > 0:
            xa = lx(max(rlo, lo)) if _finite(rlo) and rlo > 0 else x0r
            xb = lx(min(rhi, hi)) if _finite(rhi) else x0r + panel_w
            out.append(f'<line x1="{xa:.1f}" y1="{y:.1f}" x2="{xb:.1f}" y2="{y:.1f}" stroke="{color}" '
                       f'stroke-width="2"/>')
            if not _finite(rhi) or rhi > hi:
                out.append(f'<path d="M{xb:.1f},{y:.1f} l-6,-4 v8 z" fill="{color}"/>')
            xm = lx(min(max(ror, lo), hi))
            fill = color if r.get("signal_ror") else "#fff"
            out.append(f'<rect x="{xm - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="{fill}" '
                       f'stroke="{color}" stroke-width="2"><title>{escape(r.get("tooltip_ror", ""))}</title></rect>')
        elif _finite(ror) and ror == 0:
            out.append(_t(x0r + 4, y + 4, "a = 0: ROR 0", size=10, fill="#777"))
        elif ror is not None and isinstance(ror, float) and math.isinf(ror):
            out.append(_t(x0r + panel_w - 4, y + 4, "ROR ∞ (b·c = 0)", anchor="end", size=10, fill="#777"))
        else:
            out.append(_t(x0r + 4, y + 4, "ROR undefined", size=10, fill="#777"))
        # IC
        ic, i25, i97 = r.get("ic"), r.get("ic025"), r.get("ic975")
        if _finite(ic):
            xa = ix(max(i25, ilo)) if _finite(i25) else x0i
            xb = ix(min(i97, ihi)) if _finite(i97) else x0i + panel_w
            out.append(f'<line x1="{xa:.1f}" y1="{y:.1f}" x2="{xb:.1f}" y2="{y:.1f}" stroke="{color}" '
                       f'stroke-width="2"/>')
            fill = color if r.get("signal_ic") else "#fff"
            out.append(f'<circle cx="{ix(ic):.1f}" cy="{y:.1f}" r="4.5" fill="{fill}" stroke="{color}" '
                       f'stroke-width="2"><title>{escape(r.get("tooltip_ic", ""))}</title></circle>')
    out.append("</svg>")
    return "\n".join(out)


def trend_svg(panels: list[dict], quarters: list[str], *, ncol: int = 3) -> str:
    """panels: dicts with title and series=[{name, color, points=[(quarter, ror_lo, signal, a)]}]."""
    pw, ph, ml, mt, mb = 300, 190, 46, 28, 34
    nrow = max(1, math.ceil(len(panels) / ncol))
    legend_h = 28
    width, height = ncol * pw + 10, nrow * ph + legend_h + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="plot trend" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" style="{FONT}">',
           "<title>Cumulative ROR lower bound by quarter</title>",
           '<rect x="0" y="0" width="100%" height="100%" fill="#fff"/>']
    names: dict[str, str] = {}
    nq = len(quarters)
    for k, p in enumerate(panels):
        ox, oy = (k % ncol) * pw, legend_h + (k // ncol) * ph
        x0, x1, y0, y1 = ox + ml, ox + pw - 12, oy + mt, oy + ph - mb
        vals = [pt[1] for s in p["series"] for pt in s["points"] if _finite(pt[1]) and pt[1] > 0]
        lo = min(vals + [0.5]) / 1.2 if vals else 0.5
        hi = max(vals + [2.0]) * 1.2 if vals else 2.0
        ly = lambda v: y1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (y1 - y0)  # noqa
        qx = lambda i: x0 + (i / max(1, nq - 1)) * (x1 - x0)  # noqa
        out.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="#fafbfc" stroke="#ccc"/>')
        out.append(_t(ox + pw / 2, oy + 18, p["title"], anchor="middle", size=12, weight="bold"))
        for v in _log_ticks(lo, hi):
            out.append(f'<line x1="{x0}" y1="{ly(v):.1f}" x2="{x1}" y2="{ly(v):.1f}" stroke="#e3e3e3"/>')
            out.append(_t(x0 - 4, ly(v) + 3, _fmt_tick(v), anchor="end", size=9, fill="#555"))
        if lo < 1 < hi:
            out.append(f'<line x1="{x0}" y1="{ly(1):.1f}" x2="{x1}" y2="{ly(1):.1f}" stroke="#333" '
                       f'stroke-dasharray="4 3"/>')
        every = max(1, math.ceil(nq / 4))
        shown = [i for i in range(nq) if i % every == 0]
        if nq - 1 not in shown:
            if shown and (nq - 1) - shown[-1] < max(2, every * 0.75):
                shown[-1] = nq - 1  # keep the last quarter, drop the crowded neighbour
            else:
                shown.append(nq - 1)
        for i in shown:
            out.append(_t(qx(i), y1 + 13, quarters[i], anchor="middle", size=9, fill="#555"))
        for s in p["series"]:
            names[s["name"]] = s["color"]
            pts = [(quarters.index(q), v, sig, a) for q, v, sig, a in s["points"] if q in quarters]
            seg = []
            for i, v, sig, a in pts:
                if _finite(v) and v > 0:
                    seg.append(f"{qx(i):.1f},{ly(min(max(v, lo), hi)):.1f}")
                else:
                    if len(seg) > 1:
                        out.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{s["color"]}" '
                                   f'stroke-width="1.8"/>')
                    seg = []
            if len(seg) > 1:
                out.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{s["color"]}" '
                           f'stroke-width="1.8"/>')
            for i, v, sig, a in pts:
                if _finite(v) and v > 0:
                    fill = s["color"] if sig else "#fff"
                    out.append(f'<circle cx="{qx(i):.1f}" cy="{ly(min(max(v, lo), hi)):.1f}" r="3.2" fill="{fill}" '
                               f'stroke="{s["color"]}" stroke-width="1.5"><title>{escape(s["name"])} '
                               f'{quarters[i]}: ROR lower bound {v:.3g}, a={a}</title></circle>')
        out.append(_t(ox + 12, oy + mt + (y1 - y0) / 2, "ROR₀.₀₂₅", anchor="middle", size=9, fill="#555",
                      extra=f'transform="rotate(-90 {ox + 12} {oy + mt + (y1 - y0) / 2:.1f})"'))
    x = 8
    order = list(PALETTE)
    for name, color in sorted(names.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        out.append(f'<circle cx="{x + 5}" cy="14" r="5" fill="{color}"/>')
        out.append(_t(x + 14, 18, name, size=12))
        x += 24 + 7.5 * len(name)
    out.append(_t(x + 10, 18, "filled = ROR signal (a ≥ 3, lower bound > 1) at that quarter; dashed = 1",
                  size=11, fill="#555"))
    out.append("</svg>")
    return "\n".join(out)


def funnel_svg(steps: list[dict]) -> str:
    """steps: dicts with name, reports_out, stage."""
    if not steps:
        return ""
    label_w, bar_w, row_h = 330, 460, 24
    width, height = label_w + bar_w + 110, row_h * len(steps) + 16
    top = max(max(int(s["reports_out"]) for s in steps), 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="plot funnel" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" style="{FONT}">',
           "<title>Reports kept after each step</title>",
           '<rect x="0" y="0" width="100%" height="100%" fill="#fff"/>']
    for i, s in enumerate(steps):
        y = 8 + i * row_h
        w = max(1.0, int(s["reports_out"]) / top * bar_w)
        color = "#4c78a8" if s.get("stage", "curate") == "curate" else "#f58518"
        out.append(_t(label_w - 8, y + 15, s["name"], anchor="end", size=12))
        out.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{color}"/>')
        out.append(_t(label_w + w + 6, y + 15, f"{int(s['reports_out']):,}", size=11, fill="#333"))
    out.append("</svg>")
    return "\n".join(out)
