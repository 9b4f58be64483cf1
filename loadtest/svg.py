"""Minimal inline-SVG charts (histogram, lines, scatter) for a self-contained HTML report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

W, H = 640, 300
ML, MR, MT, MB = 64, 16, 34, 46  # margins
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")

Series = tuple[str, Sequence[tuple[float, float]]]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        pad = abs(lo) * 0.5 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    if ticks[-1] < hi - step * 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


class _Frame:
    def __init__(self, xs: Sequence[float], ys: Sequence[float], y0: bool = True) -> None:
        xlo, xhi = (min(xs), max(xs)) if xs else (0.0, 1.0)
        ylo, yhi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        if y0:
            ylo = min(0.0, ylo)
        self.xt = nice_ticks(xlo, xhi)
        self.yt = nice_ticks(ylo, yhi)
        self.x0, self.x1 = self.xt[0], self.xt[-1] if self.xt[-1] > self.xt[0] else self.xt[0] + 1
        self.y0, self.y1 = self.yt[0], self.yt[-1] if self.yt[-1] > self.yt[0] else self.yt[0] + 1

    def px(self, x: float) -> float:
        return ML + (x - self.x0) / (self.x1 - self.x0) * (W - ML - MR)

    def py(self, y: float) -> float:
        return H - MB - (y - self.y0) / (self.y1 - self.y0) * (H - MT - MB)

    def axes(self, title: str, xlabel: str, ylabel: str) -> list[str]:
        out = [
            f'<text x="{W / 2}" y="20" text-anchor="middle" class="title">{escape(title)}</text>',
            f'<line x1="{ML}" y1="{H - MB}" x2="{W - MR}" y2="{H - MB}" class="axis"/>',
            f'<line x1="{ML}" y1="{MT}" x2="{ML}" y2="{H - MB}" class="axis"/>',
            f'<text x="{(ML + W - MR) / 2}" y="{H - 8}" text-anchor="middle" class="label">{escape(xlabel)}</text>',
            f'<text x="14" y="{(MT + H - MB) / 2}" text-anchor="middle" class="label" '
            f'transform="rotate(-90 14 {(MT + H - MB) / 2})">{escape(ylabel)}</text>',
        ]
        for t in self.xt:
            x = self.px(t)
            out.append(f'<line x1="{x:.1f}" y1="{H - MB}" x2="{x:.1f}" y2="{H - MB + 4}" class="axis"/>')
            out.append(
                f'<text x="{x:.1f}" y="{H - MB + 16}" text-anchor="middle" class="tick">{_fmt(t)}</text>'
            )
        for t in self.yt:
            y = self.py(t)
            out.append(f'<line x1="{ML}" y1="{y:.1f}" x2="{W - MR}" y2="{y:.1f}" class="grid"/>')
            out.append(f'<text x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_fmt(t)}</text>')
        return out


def _svg(body: list[str], kind: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {kind}" viewBox="0 0 {W} {H}" '
        f'width="{W}" height="{H}" role="img">' + "".join(body) + "</svg>"
    )


def _empty(title: str, kind: str) -> str:
    return _svg(
        [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" class="title">{escape(title)}: no data</text>'],
        kind,
    )


def _legend(names: Sequence[str]) -> list[str]:
    out = []
    for i, name in enumerate(names):
        x = ML + 10 + i * 130
        c = COLORS[i % len(COLORS)]
        out.append(f'<rect x="{x}" y="{MT - 4}" width="10" height="10" fill="{c}"/>')
        out.append(f'<text x="{x + 14}" y="{MT + 5}" class="tick">{escape(name)}</text>')
    return out


def histogram(values: Sequence[float], title: str, xlabel: str, bins: int = 30, clip: float = 0.995) -> str:
    """Counts of `values` in equal-width bins; values above the `clip` quantile go in the last bin."""
    xs = sorted(v for v in values if v is not None and math.isfinite(v))
    if not xs:
        return _empty(title, "histogram")
    lo, hi = xs[0], xs[min(len(xs) - 1, int(clip * (len(xs) - 1) + 0.5))]
    if hi < xs[-1]:
        title = f"{title}, top {1 - clip:.1%} in last bin"
    if hi <= lo:
        hi = lo + (abs(lo) * 0.01 or 1.0)
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in xs:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    f = _Frame([lo, hi], [0, max(counts)])
    body = f.axes(title, xlabel, "requests")
    for i, c in enumerate(counts):
        if not c:
            continue
        x0, x1 = f.px(lo + i * width), f.px(lo + (i + 1) * width)
        y = f.py(c)
        body.append(
            f'<rect class="bar" x="{x0:.1f}" y="{y:.1f}" width="{max(1.0, x1 - x0 - 1):.1f}" '
            f'height="{H - MB - y:.1f}" fill="{COLORS[0]}"><title>{_fmt(lo + i * width)}-{_fmt(lo + (i + 1) * width)}: {c}</title></rect>'
        )
    return _svg(body, "histogram")


def lines(
    series: Sequence[Series],
    title: str,
    xlabel: str,
    ylabel: str,
    markers: bool = True,
    labels: Sequence[str] | None = None,
) -> str:
    """One polyline (with point markers) per series; `labels` annotate the points of every series."""
    pts = [p for _, s in series for p in s]
    if not pts:
        return _empty(title, "lines")
    f = _Frame([p[0] for p in pts], [p[1] for p in pts])
    body = f.axes(title, xlabel, ylabel) + (_legend([n for n, _ in series]) if len(series) > 1 else [])
    for i, (name, s) in enumerate(series):
        c = COLORS[i % len(COLORS)]
        path = " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in s)
        body.append(f'<polyline class="line" fill="none" stroke="{c}" stroke-width="2" points="{path}"/>')
        if markers:
            for j, (x, y) in enumerate(s):
                body.append(
                    f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="3.5" fill="{c}">'
                    f"<title>{escape(name)}: {_fmt(x)}, {_fmt(y)}</title></circle>"
                )
                if labels and j < len(labels):
                    body.append(
                        f'<text x="{f.px(x) + 5:.1f}" y="{f.py(y) - 5:.1f}" class="tick">{escape(labels[j])}</text>'
                    )
    return _svg(body, "lines")


def scatter(series: Sequence[Series], title: str, xlabel: str, ylabel: str, max_points: int = 4000) -> str:
    """Points per series (thinned evenly to `max_points` each)."""
    pts = [p for _, s in series for p in s]
    if not pts:
        return _empty(title, "scatter")
    f = _Frame([p[0] for p in pts], [p[1] for p in pts])
    body = f.axes(title, xlabel, ylabel) + (_legend([n for n, _ in series]) if len(series) > 1 else [])
    for i, (_, s) in enumerate(series):
        c = COLORS[i % len(COLORS)]
        step = max(1, len(s) // max_points)
        for x, y in list(s)[::step]:
            body.append(
                f'<circle class="pt" cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="1.8" fill="{c}" fill-opacity="0.6"/>'
            )
    return _svg(body, "scatter")
