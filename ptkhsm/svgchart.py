"""The bar chart of ratios that `ptkhsm ctperf --plot` and `make bench` draw, as SVG.

One horizontal bar per test on a log scale around 1.0x, coloured by whether its
goal is met, with the goal marked. SVG is text: the viewer draws the letters
with its own fonts, so the package carries none, and the standard library
writes it.
"""

import math
from xml.sax.saxutils import escape

GREEN, RED, BLUE, GREY, LIGHT = "#2ea043", "#d62728", "#1f77b4", "#808080", "#e1e1e1"
CHAR_W = 7.2  # px per character of the 12 px sans-serif labels, to size the label column


def _label(value):
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


def _text(x, y, text, fill="black", size=12, anchor="start"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" text-anchor="{anchor}">'
            f"{escape(text)}</text>")


def _rect(x0, y0, x1, y1, fill):
    return (f'<rect x="{min(x0, x1):.1f}" y="{y0:.1f}" width="{abs(x1 - x0):.1f}" height="{y1 - y0:.1f}" '
            f'fill="{fill}"/>')


def ratio_chart(path, title, bars):
    """bars: [(label, ratio or None for n/a, goal or None)]. Higher ratios are better;
    a bar is green when ratio >= goal, red when below, blue without a goal."""
    values = [v for _, v, _ in bars if v] + [g for _, _, g in bars if g] + [1.0]
    low = 2.0 ** math.floor(math.log2(min(values) / 1.5))
    high = 2.0 ** math.ceil(math.log2(max(values) * 1.5))
    label_w = max((len(label) for label, _, _ in bars), default=10) * CHAR_W + 20
    plot_x0, plot_w, row_h, top = label_w, 620, 26, 50
    width, height = plot_x0 + plot_w + 110, top + row_h * len(bars) + 70
    bottom = top + row_h * len(bars)

    def x_of(value):
        return plot_x0 + (math.log(value) - math.log(low)) / (math.log(high) - math.log(low)) * plot_w

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif">',
           '<rect width="100%" height="100%" fill="white"/>', _text(10, 28, title, size=16)]
    steps = (1, 2, 5) if high / low <= 1e4 else (1,)  # thinner grid on a wide range
    for tick in (m * 10.0 ** e for e in range(-4, 6) for m in steps):
        if low <= tick <= high:
            x = x_of(tick)
            out += [_rect(x, top - 4, x + 1, bottom, LIGHT), _text(x, bottom + 18, f"{tick:g}x", GREY, 10, "middle")]
    one = x_of(1.0)
    out.append(_rect(one, top - 6, one + 2, bottom + 2, "black"))
    for i, (label, value, goal) in enumerate(bars):
        y = top + i * row_h
        out.append(_text(10, y + 18, label))
        if not value:
            out.append(_text(one + 8, y + 18, "n/a", GREY))
            continue
        colour = BLUE if goal is None else (GREEN if value >= goal else RED)
        x = x_of(value)
        out += [f'<g class="bar" data-test="{escape(label)}" data-ratio="{value:g}">'
                + _rect(min(one, x), y + 4, max(one + 2, x), y + row_h - 4, colour) + "</g>",
                _text(max(one + 2, x) + 6, y + 18, _label(value))]
        if goal:
            gx = x_of(goal)
            out.append(_rect(gx - 1, y + 1, gx + 2, y + row_h - 1, "black"))
    legend = bottom + 46
    out += [_text(10, legend, "goal met", GREEN), _text(90, legend, "missed", RED),
            _text(160, legend, "no goal", BLUE), _text(235, legend, "| goal    log scale")]
    out.append("</svg>")
    with open(path, "w", encoding="utf-8") as svg:
        svg.write("\n".join(out) + "\n")
    return path
