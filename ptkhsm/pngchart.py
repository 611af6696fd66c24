"""A tiny PNG bar chart of ratios, written with the standard library only.

`ptkhsm ctperf --plot` and the `make bench` report draw one chart: a
horizontal bar per test on a log scale around 1.0x, coloured by whether its
goal is met, with the goal marked. matplotlib would do it in three lines but
is a large dependency for one picture, so this module rasterises it itself:
rectangles, a 5x7 bitmap font, and zlib/struct for the PNG container.
"""

import math
import struct
import zlib

# 5x7 glyphs, one hex digit pair per row (5 bits, MSB left). Lowercase letters
# are drawn as capitals, except "x", the multiplication sign of "2.0x".
_FONT = {
    "A": "0e11111f111111", "B": "1e11111e11111e", "C": "0e11101010110e", "D": "1c12111111121c",
    "E": "1f10101e10101f", "F": "1f10101e101010", "G": "0e11101711110f", "H": "1111111f111111",
    "I": "0e04040404040e", "J": "0702020202120c", "K": "11121418141211", "L": "1010101010101f",
    "M": "111b1515111111", "N": "11111915131111", "O": "0e11111111110e", "P": "1e11111e101010",
    "Q": "0e11111115120d", "R": "1e11111e141211", "S": "0f10100e01011e", "T": "1f040404040404",
    "U": "1111111111110e", "V": "11111111110a04", "W": "1111111515150a", "X": "11110a040a1111",
    "Y": "1111110a040404", "Z": "1f01020408101f", "0": "0e11131519110e", "1": "040c040404040e",
    "2": "0e11010204081f", "3": "1f02040201110e", "4": "02060a121f0202", "5": "1f101e0101110e",
    "6": "0608101e11110e", "7": "1f010204080808", "8": "0e11110e11110e", "9": "0e11110f01020c",
    "-": "0000001f000000", ".": "00000000000c0c", "/": "00010204081000", "(": "02040808080402",
    ")": "08040202020408", ":": "000c0c000c0c00", "%": "18190204081303", ">": "08040201020408",
    "<": "02040810080402", "=": "00001f001f0000", ",": "000000000c0408", "+": "0004041f040400",
    "_": "0000000000001f", " ": "00000000000000", "x": "0000110a040a11", "|": "04040404040404",
}

WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (0, 0, 0), (128, 128, 128), (225, 225, 225)
GREEN, RED, BLUE = (46, 160, 67), (214, 39, 40), (31, 119, 180)


class Canvas:
    def __init__(self, width, height):
        self.width, self.height = width, height
        self.pixels = bytearray(WHITE * (width * height))

    def rect(self, x0, y0, x1, y1, colour):
        x0, x1 = max(0, min(x0, x1)), min(self.width, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height, max(y0, y1))
        row = bytes(colour) * (x1 - x0)
        for y in range(y0, y1):
            start = (y * self.width + x0) * 3
            self.pixels[start:start + len(row)] = row

    def text(self, x, y, text, colour=BLACK, scale=2):
        for ch in text:
            glyph = _FONT.get(ch) or _FONT.get(ch.upper()) or _FONT["_"]
            for r in range(7):
                bits = int(glyph[2 * r:2 * r + 2], 16)
                for c in range(5):
                    if bits & (0x10 >> c):
                        self.rect(x + c * scale, y + r * scale, x + (c + 1) * scale, y + (r + 1) * scale, colour)
            x += 6 * scale
        return x

    @staticmethod
    def text_width(text, scale=2):
        return len(text) * 6 * scale

    def png(self):
        stride = self.width * 3
        raw = b"".join(b"\x00" + bytes(self.pixels[y * stride:(y + 1) * stride]) for y in range(self.height))

        def chunk(kind, data):
            return (struct.pack(">I", len(data)) + kind + data
                    + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
                + chunk(b"IEND", b""))


def _label(value):
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


def ratio_chart(path, title, bars):
    """bars: [(label, ratio or None for n/a, goal or None)]. Higher ratios are better;
    a bar is green when ratio >= goal, red when below, blue without a goal."""
    values = [v for _, v, _ in bars if v] + [g for _, _, g in bars if g] + [1.0]
    low = 2.0 ** math.floor(math.log2(min(values) / 1.5))
    high = 2.0 ** math.ceil(math.log2(max(values) * 1.5))
    label_w = max(Canvas.text_width(label) for label, _, _ in bars) + 20 if bars else 100
    plot_x0, plot_w = label_w, 620
    row_h, top = 26, 50
    width = plot_x0 + plot_w + 110
    height = top + row_h * len(bars) + 70
    canvas = Canvas(width, height)

    def x_of(value):
        return plot_x0 + int(round((math.log(value) - math.log(low)) / (math.log(high) - math.log(low)) * plot_w))

    canvas.text(10, 12, title, BLACK, 2)
    # decade and half-decade grid
    steps = (1, 2, 5) if high / low <= 1e4 else (1,)  # thinner grid on a wide range
    ticks = [m * 10.0 ** e for e in range(-4, 6) for m in steps if low <= m * 10.0 ** e <= high]
    for tick in ticks:
        x = x_of(tick)
        canvas.rect(x, top - 4, x + 1, top + row_h * len(bars), LIGHT)
        text = f"{tick:g}x"
        canvas.text(x - Canvas.text_width(text, 1) // 2, top + row_h * len(bars) + 6, text, GREY, 1)
    one = x_of(1.0)
    canvas.rect(one, top - 6, one + 2, top + row_h * len(bars) + 2, BLACK)
    for i, (label, value, goal) in enumerate(bars):
        y = top + i * row_h
        canvas.text(10, y + 5, label, BLACK, 2)
        if not value:
            canvas.text(one + 8, y + 5, "n/a", GREY, 2)
            continue
        colour = BLUE if goal is None else (GREEN if value >= goal else RED)
        x = x_of(value)
        canvas.rect(min(one, x), y + 4, max(one + 2, x), y + row_h - 4, colour)
        canvas.text(max(one + 2, x) + 6, y + 5, _label(value), BLACK, 2)
        if goal:
            gx = x_of(goal)
            canvas.rect(gx - 1, y + 1, gx + 2, y + row_h - 1, BLACK)
    legend_y = top + row_h * len(bars) + 26
    x = canvas.text(10, legend_y, "goal met", GREEN, 2) + 24
    x = canvas.text(x, legend_y, "missed", RED, 2) + 24
    x = canvas.text(x, legend_y, "no goal", BLUE, 2) + 24
    canvas.text(x, legend_y, "| goal   log scale", BLACK, 2)
    with open(path, "wb") as out:
        out.write(canvas.png())
    return path
