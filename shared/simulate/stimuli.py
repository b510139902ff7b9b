"""Seeded stimulus images: natural-like scenes, coloured shapes and letters, and the
grey presets that look like small public fMRI sets.

Every function returns float32 RGB arrays of shape ``(3, size, size)`` in [0, 1].
Scenes are drawn at twice the size and averaged down 2x2, so edges are antialiased.
The same seed always gives the same images.

``PRESETS`` maps ``simulation.stimuli`` to the generator ``draw(rng, size)`` of its training
and test images:

* ``natural``: ``natural_scene``, colourful composed scenes (the demo's).
* ``strokes``: ``stroke_character``, a handwritten-like digit or letter (MNIST/EMNIST-like):
  thin white strokes on black, grey (three equal channels), drawn from the outlines of fonts
  matplotlib ships, with seeded jitter in font, stroke width, slant, rotation, scale, position
  and a smooth warp of the outline.
* ``shapes``: ``binary_shape``, a black/white geometric shape or bitmap letter on a coarse
  ``SHAPE_GRID`` x ``SHAPE_GRID`` grid (like Miyawaki et al. 2008's 10 x 10 patches),
  upscaled to ``size`` by nearest neighbour; only the values 0 and 1.
"""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Callable

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "star", "bar")
SHAPE_COLOURS = {
    "red": (0.85, 0.1, 0.1), "green": (0.1, 0.7, 0.2), "blue": (0.15, 0.25, 0.9),
    "yellow": (0.9, 0.85, 0.1), "white": (0.98, 0.98, 0.98),
}
LETTERS = ("A", "E", "H", "K", "M", "N", "R", "S", "V", "X")
GREY = 0.5


def one_over_f(rng: np.random.Generator, size: int, exponent: float = 1.0) -> np.ndarray:
    """A ``(size, size)`` field with amplitude spectrum 1/f**exponent, zero mean, unit SD."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amp = f ** (-exponent)
    amp[0, 0] = 0.0
    phase = rng.uniform(0, 2 * np.pi, amp.shape)
    field = np.fft.irfft2(amp * np.exp(1j * phase), s=(size, size))
    return (field - field.mean()) / (field.std() + 1e-12)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size) + 0.5) / size * 2 - 1
    return np.meshgrid(c, c, indexing="xy")  # x to the right, y downwards, in [-1, 1]


def _downsample(img: np.ndarray) -> np.ndarray:
    c, h, w = img.shape
    return img.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.uniform(0, 1), rng.uniform(0.35, 1.0), rng.uniform(0.3, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def _object_mask(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random object's soft mask and its local coordinates (u, v) in object units."""
    cx, cy = rng.uniform(-0.65, 0.65, 2)
    radius = rng.uniform(0.18, 0.48)
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.5, 1.0)
    ca, sa = np.cos(angle), np.sin(angle)
    u = ((x - cx) * ca + (y - cy) * sa) / radius
    v = (-(x - cx) * sa + (y - cy) * ca) / (radius * aspect)
    kind = rng.integers(3)
    if kind == 0:  # ellipse
        inside = u**2 + v**2 <= 1.0
    elif kind == 1:  # rectangle
        inside = (np.abs(u) <= 0.9) & (np.abs(v) <= 0.9)
    else:  # blob with a wobbly outline
        theta = np.arctan2(v, u)
        rad = 0.8 + sum(rng.uniform(0, 0.18) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
        inside = np.sqrt(u**2 + v**2) <= rad
    return inside.astype(np.float32), u, v


def natural_scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """A composed "natural-like" scene: a 1/f coloured background with 2-4 textured objects."""
    big = 2 * size
    x, y = _grid(big)
    # a muted colour cast around a random grey level (photographs rarely have saturated casts)
    base = rng.uniform(0.3, 0.7) * (1.0 + rng.normal(0, 0.12, 3))
    # mostly achromatic 1/f structure with a weaker chromatic part, as in natural scenes
    lum = one_over_f(rng, big, rng.uniform(1.1, 1.6))
    chroma = np.stack([one_over_f(rng, big, 1.4) for _ in range(3)])
    img = base[:, None, None] * (1.0 + rng.uniform(0.15, 0.35) * lum[None]) + 0.04 * chroma
    # a large-scale luminance gradient (sky/ground, lighting) at a random orientation
    g_angle = rng.uniform(0, 2 * np.pi)
    img += rng.uniform(0.05, 0.25) * (np.cos(g_angle) * x + np.sin(g_angle) * y)[None]
    for _ in range(rng.integers(2, 5)):
        mask, u, v = _object_mask(rng, x, y)
        colour = _random_colour(rng)
        texture_kind = rng.integers(3)
        if texture_kind == 0:  # grating
            freq = rng.uniform(1.5, 6.0)
            ori = rng.uniform(0, np.pi)
            tex = np.sin(2 * np.pi * freq * (np.cos(ori) * u + np.sin(ori) * v) + rng.uniform(0, 2 * np.pi))
        elif texture_kind == 1:  # 1/f texture
            tex = one_over_f(rng, big, rng.uniform(0.6, 1.4))
        else:  # spots
            tex = np.sign(np.sin(rng.uniform(2, 6) * np.pi * u) * np.sin(rng.uniform(2, 6) * np.pi * v))
        contrast = rng.uniform(0.1, 0.35)
        shade = 1.0 + rng.uniform(-0.25, 0.25) * u + rng.uniform(-0.25, 0.25) * v
        obj = colour[:, None, None] * shade[None] * (1.0 + contrast * tex[None])
        img = img * (1 - mask[None]) + obj * mask[None]
    return np.clip(_downsample(img), 0.0, 1.0).astype(np.float32)


def _shape_mask(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r = np.sqrt(x**2 + y**2)
    if shape == "circle":
        m = r <= 0.5
    elif shape == "square":
        m = (np.abs(x) <= 0.42) & (np.abs(y) <= 0.42)
    elif shape == "triangle":
        m = (y <= 0.4) & (y >= -0.5 + 1.9 * np.abs(x) - 0.05)
    elif shape == "cross":
        m = ((np.abs(x) <= 0.14) & (np.abs(y) <= 0.55)) | ((np.abs(y) <= 0.14) & (np.abs(x) <= 0.55))
    elif shape == "ring":
        m = (r <= 0.55) & (r >= 0.35)
    elif shape == "diamond":
        m = np.abs(x) + np.abs(y) <= 0.58
    elif shape == "star":
        theta = np.arctan2(y, x)
        m = r <= 0.32 + 0.22 * np.cos(5 * theta) ** 2
    elif shape == "bar":
        m = (np.abs(x) <= 0.6) & (np.abs(y) <= 0.16)
    else:
        raise ValueError(shape)
    return m.astype(np.float32)


def shape_image(shape: str, colour: str, size: int) -> np.ndarray:
    """A coloured geometric shape centred on a grey background (the "artificial" set)."""
    big = 2 * size
    x, y = _grid(big)
    mask = _shape_mask(shape, x, y)
    rgb = np.array(SHAPE_COLOURS[colour])[:, None, None]
    img = GREY * (1 - mask[None]) + rgb * mask[None]
    return _downsample(img).astype(np.float32)


def artificial_set(size: int, n: int) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` (shape, colour) combinations as ``(name, image)`` pairs."""
    combos = [(s, c) for c in SHAPE_COLOURS for s in SHAPES]
    return [(f"shape_{s}_{c}", shape_image(s, c, size)) for s, c in combos[:n]]


def letter_image(letter: str, size: int) -> np.ndarray:
    """A black capital letter centred on a grey background (the "letter" set)."""
    from PIL import Image, ImageDraw, ImageFont

    big = 4 * size
    canvas = Image.new("L", (big, big), 255)
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=int(big * 0.8))
    except TypeError:  # Pillow without FreeType: small bitmap font, scaled up below
        font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
    draw.text(((big - (right - left)) / 2 - left, (big - (bottom - top)) / 2 - top), letter, fill=0, font=font)
    ink = 1.0 - np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32) / 255.0
    img = GREY * (1 - ink)
    return np.repeat(img[None], 3, axis=0).astype(np.float32)


def letter_set(size: int, n: int) -> list[tuple[str, np.ndarray]]:
    return [(f"letter_{c}", letter_image(c, size)) for c in LETTERS[:n]]


# ------------------------------------------------------------------ strokes: handwritten-like characters

STROKE_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# regular-weight fonts in matplotlib's own mpl-data/fonts/ttf (no system fonts: the same glyphs everywhere)
STROKE_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf", "DejaVuSerif.ttf",
                "DejaVuSerif-Italic.ttf", "cmss10.ttf", "cmr10.ttf", "cmti10.ttf", "cmtt10.ttf",
                "STIXGeneralItalic.ttf")
SUPERSAMPLE = 4  # strokes are rasterised at 4x the size and box-averaged down (antialiased edges)


@functools.lru_cache(maxsize=1024)
def _glyph(char: str, font: str) -> tuple[np.ndarray, ...]:
    """The outline polygons of ``char`` in ``font``, centred on its bounding box, largest extent 1,
    y pointing down."""
    import os

    import matplotlib
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", font)
    polys = TextPath((0, 0), char, size=1, prop=FontProperties(fname=path)).to_polygons(closed_only=True)
    lo = np.min([p.min(axis=0) for p in polys], axis=0)
    hi = np.max([p.max(axis=0) for p in polys], axis=0)
    scale = float(np.max(hi - lo))
    return tuple(((p - (lo + hi) / 2) / scale) * np.array([1.0, -1.0]) for p in polys)


def _warp(rng: np.random.Generator, amplitude: float) -> Callable[[np.ndarray], np.ndarray]:
    """A smooth random displacement of points ``(n, 2)`` (two low-frequency waves per axis)."""
    freq = rng.uniform(0.5, 1.5, (2, 2, 2))  # axis, wave, (fx, fy) in cycles per glyph
    phase = rng.uniform(0, 2 * np.pi, (2, 2))
    amp = amplitude * rng.uniform(0.3, 1.0, (2, 2))

    def apply(p: np.ndarray) -> np.ndarray:
        d = [(amp[a, :, None] * np.sin(2 * np.pi * (freq[a] @ p.T) + phase[a, :, None])).sum(0) for a in (0, 1)]
        return p + np.stack(d, axis=1)

    return apply


def _fill_even_odd(polys: list[np.ndarray], big: int) -> np.ndarray:
    """``(big, big)`` bool: pixels inside an odd number of polygons (glyph holes stay open)."""
    from PIL import Image, ImageDraw

    mask = np.zeros((big, big), dtype=bool)
    for p in polys:
        canvas = Image.new("1", (big, big), 0)
        ImageDraw.Draw(canvas).polygon([tuple(v) for v in p], fill=1)
        mask ^= np.asarray(canvas, dtype=bool)
    return mask


def stroke_character(rng: np.random.Generator, size: int) -> np.ndarray:
    """A handwritten-like digit or letter: white strokes on black, grey, about 2-3 px wide at 28 px."""
    from PIL import Image, ImageFilter

    char = STROKE_CHARS[rng.integers(len(STROKE_CHARS))]
    font = STROKE_FONTS[rng.integers(len(STROKE_FONTS))]
    height = rng.uniform(0.55, 0.8)  # the glyph's larger extent, as a fraction of the image
    aspect = rng.uniform(0.8, 1.15)
    slant = rng.uniform(-0.3, 0.3)  # x shift per unit of height (negative y is up)
    angle = rng.normal(0, 0.12)
    offset = rng.uniform(-0.08, 0.08, 2)
    warp = _warp(rng, 0.035)
    widen = rng.uniform(0.0, 0.7) * size / 28  # extra stroke width in output pixels
    ca, sa = np.cos(angle), np.sin(angle)
    linear = np.array([[ca, -sa], [sa, ca]]) @ np.array([[aspect, -slant], [0.0, 1.0]]) * height
    big = SUPERSAMPLE * size
    polys = [(warp(p) @ linear.T + offset + 0.5) * big for p in _glyph(char, font)]
    mask = Image.fromarray(_fill_even_odd(polys, big).astype(np.uint8) * 255)
    radius = int(round(widen * SUPERSAMPLE / 2))
    if radius:
        mask = mask.filter(ImageFilter.MaxFilter(2 * radius + 1))
    ink = np.asarray(mask, dtype=np.float32).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3)) / 255
    return np.repeat(ink[None], 3, axis=0).astype(np.float32)


# ------------------------------------------------------------------ shapes: binary figures on a coarse grid

SHAPE_GRID = 10  # cells per side of the binary pattern (Miyawaki et al. 2008 used 10 x 10)
# a 5 x 7 bitmap font ('#' = on) for the letters of the binary set
BITMAP_LETTERS = {
    "N": ("#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "C": (".####", "#....", "#....", "#....", "#....", "#....", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
}
BINARY_KINDS = ("square", "frame", "plus", "x", "disc", "ring", "triangle", "diamond", "bar", "letter")


def _cell_mask(kind: str, rng: np.random.Generator, g: int) -> np.ndarray:
    """A ``(g, g)`` bool pattern of one figure, centred at a random cell position."""
    r, c = np.mgrid[0:g, 0:g] + 0.5
    half = rng.uniform(0.2, 0.42) * g  # half the figure's extent in cells
    # centres snap to cell centres or corners, so figures are symmetric on the grid
    cy, cx = np.round(2 * (g / 2 + rng.uniform(-1, 1, 2) * (g / 2 - half))) / 2
    dy, dx = r - cy, c - cx
    if kind == "square":
        return (np.abs(dy) < half) & (np.abs(dx) < half * rng.uniform(0.6, 1.0))
    if kind == "frame":
        return (np.maximum(np.abs(dy), np.abs(dx)) < half) & (np.maximum(np.abs(dy), np.abs(dx)) >= half - 1)
    if kind == "plus":
        return ((np.abs(dx) < 0.75) & (np.abs(dy) < half)) | ((np.abs(dy) < 0.75) & (np.abs(dx) < half))
    if kind == "x":
        return (np.abs(np.abs(dy) - np.abs(dx)) < 0.75) & (np.abs(dy) < half)
    if kind == "disc":
        return dy**2 + dx**2 < half**2
    if kind == "ring":
        return (dy**2 + dx**2 < half**2) & (dy**2 + dx**2 >= (half - 1.2) ** 2)
    if kind == "triangle":
        flip = 1 if rng.integers(2) else -1  # pointing up or down
        return (np.abs(flip * dy) < half) & (np.abs(dx) <= (flip * dy + half) / 2)
    if kind == "diamond":
        return np.abs(dy) + np.abs(dx) < half
    if kind == "bar":
        width = rng.uniform(0.5, 1.0)
        bar = (np.abs(dy) < width) & (np.abs(dx) < half)
        return bar.T if rng.integers(2) else bar
    raise ValueError(kind)


def _letter_mask(rng: np.random.Generator, g: int) -> np.ndarray:
    letters = sorted(BITMAP_LETTERS)
    rows = BITMAP_LETTERS[letters[rng.integers(len(letters))]]
    bitmap = np.array([[ch == "#" for ch in row] for row in rows])
    out = np.zeros((g, g), dtype=bool)
    top = rng.integers(0, g - bitmap.shape[0] + 1)
    left = rng.integers(0, g - bitmap.shape[1] + 1)
    out[top:top + bitmap.shape[0], left:left + bitmap.shape[1]] = bitmap
    return out


def binary_shape(rng: np.random.Generator, size: int) -> np.ndarray:
    """A white figure (shape or letter) on black, ``SHAPE_GRID`` cells upscaled by nearest neighbour."""
    cells = np.zeros((SHAPE_GRID, SHAPE_GRID), dtype=bool)
    while not cells.any():  # a figure too thin for the grid leaves no cell on: draw another
        kind = BINARY_KINDS[rng.integers(len(BINARY_KINDS))]
        cells = _letter_mask(rng, SHAPE_GRID) if kind == "letter" else _cell_mask(kind, rng, SHAPE_GRID)
    idx = np.arange(size) * SHAPE_GRID // size
    img = cells[idx][:, idx].astype(np.float32)
    return np.repeat(img[None], 3, axis=0)


PRESETS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "natural": natural_scene, "strokes": stroke_character, "shapes": binary_shape,
}
