"""Generated images: the offline sample dataset and the source task used to pretrain the base.

Everything is drawn with Pillow from a seeded :class:`numpy.random.Generator`, so the same seed
gives byte-identical images on every machine.

* :func:`draw_scene` draws the target task: a cat-like first character (:data:`CAT`) and a
  mouse-like second character (:data:`MOUSE`) on a cluttered background, with the same four
  classes as the Kaggle Tom and Jerry set (:data:`SCENE_CLASSES`).
* :func:`draw_animal` draws the source task used to pretrain the base network: which of eight
  other cartoon animals (:data:`ANIMALS`) is in a cluttered scene. Neither character is among
  them, but recognising them takes the same kind of features (heads, ears, eyes, fur colours,
  figures among clutter), the way ImageNet features serve cartoon frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Color = tuple[int, int, int]

# Class folder -> (first character present, second character present), as in the Kaggle set.
SCENE_CLASSES: dict[str, tuple[bool, bool]] = {
    "jerry": (False, True),
    "tom": (True, False),
    "tom_jerry_0": (False, False),
    "tom_jerry_1": (True, True),
}


def _color(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> Color:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))  # type: ignore[return-value]


def _jitter(rng: np.random.Generator, base: Color, amount: int) -> Color:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in base)  # type: ignore[return-value]


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, n: int) -> None:
    """Random rectangles, ellipses, lines and polygons in random colours."""
    for _ in range(n):
        kind = rng.integers(0, 4)
        x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x1 = x0 + int(rng.integers(w // 12, w // 2))
        y1 = y0 + int(rng.integers(h // 12, h // 2))
        fill = _color(rng)
        if kind == 0:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif kind == 1:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif kind == 2:
            draw.line((x0, y0, x1, y1), fill=fill, width=int(rng.integers(1, max(2, w // 40))))
        else:
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
            draw.polygon(pts, fill=fill)


def _background(rng: np.random.Generator, w: int, h: int, clutter: int) -> Image.Image:
    top, bottom = np.array(_color(rng, 40, 230)), np.array(_color(rng, 40, 230))
    ramp = np.linspace(0.0, 1.0, h)[:, None, None]
    grad = (top * (1 - ramp) + bottom * ramp).repeat(w, axis=1)
    noise = rng.normal(0.0, 10.0, size=(h, w, 3))
    img = Image.fromarray(np.clip(grad + noise, 0, 255).astype(np.uint8))
    _clutter(ImageDraw.Draw(img), rng, w, h, clutter)
    return img


@dataclass(frozen=True)
class Animal:
    """How to draw a cartoon animal from a few parts."""

    fur: Color
    ears: str  # pointed | round | long | tufts | none
    ear_size: float = 1.0  # relative to the head
    inner_ear: Color | None = None
    muzzle: Color | None = None
    snout: Color | None = None  # a disc with two nostrils (pig)
    beak: Color | None = None
    tail: str = "none"  # line | bushy | curl | none
    head: float = 0.25  # head radius as a fraction of the size
    body: tuple[float, float] = (0.66, 0.6)  # body width, height as fractions of the size
    eyes: float = 0.2  # eye radius as a fraction of the head radius
    whiskers: bool = False
    belly: Color | None = None


# The two characters of the target task (the Kaggle set's Tom and Jerry stand-ins)...
CAT = Animal(
    (105, 120, 150),
    "pointed",
    muzzle=(235, 230, 215),
    tail="line",
    whiskers=True,
    belly=(225, 225, 210),
    eyes=0.3,
)
MOUSE = Animal(
    (160, 95, 45),
    "round",
    1.5,
    inner_ear=(240, 170, 170),
    muzzle=(230, 190, 150),
    tail="curl",
    head=0.3,
    body=(0.6, 0.5),
)
# ...and the animals of the source task used to pretrain the base: neither of the characters.
ANIMALS: dict[str, Animal] = {
    "dog": Animal((175, 130, 80), "round", 1.1, muzzle=(240, 225, 200), tail="line", head=0.28),
    "rabbit": Animal(
        (225, 225, 225), "long", 1.6, inner_ear=(240, 170, 180), tail="none", head=0.24
    ),
    "bear": Animal((95, 60, 35), "round", 0.7, muzzle=(190, 150, 110), head=0.3, body=(0.8, 0.7)),
    "frog": Animal((70, 170, 60), "none", eyes=0.35, head=0.3, body=(0.8, 0.5)),
    "pig": Animal((240, 170, 180), "pointed", 0.7, snout=(225, 130, 150), tail="curl"),
    "fox": Animal((225, 120, 40), "pointed", 1.3, muzzle=(245, 240, 230), tail="bushy", head=0.23),
    "duck": Animal((240, 215, 60), "none", beak=(240, 130, 30), head=0.22, body=(0.7, 0.5)),
    "owl": Animal((130, 95, 60), "tufts", eyes=0.4, beak=(230, 180, 60), head=0.3, body=(0.6, 0.7)),
}


def _draw_tail(
    draw: ImageDraw.ImageDraw, a: Animal, fur: tuple, cx: int, bw: int, by: int, s: int
) -> None:
    if a.tail == "line":
        draw.line(
            (cx + bw // 2, by, cx + bw + s // 5, by - s // 3), fill=fur, width=max(1, s // 12)
        )
    elif a.tail == "bushy":
        draw.ellipse((cx + bw // 2, by - s // 3, cx + bw + s // 4, by + s // 10), fill=fur)
        draw.ellipse((cx + bw, by - s // 3, cx + bw + s // 8, by - s // 5), fill=(245, 240, 230))
    elif a.tail == "curl":
        draw.arc(
            (cx, by - s // 8, cx + bw + s // 3, by + s // 3),
            start=180,
            end=360,
            fill=fur,
            width=max(1, s // 16),
        )


def _draw_ear(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    a: Animal,
    colours: tuple[tuple, tuple],
    head: tuple[int, int, int],
    er: int,
    side: int,
) -> None:
    """One ear of the head ``(hx, hy, radius)``, on ``side`` -1 (left) or 1 (right)."""
    (fur, dark), (hx, hy, hr) = colours, head
    if a.ears == "pointed":
        tip = (hx + side * int(hr * 0.75), hy - hr - er)
        draw.polygon(
            [(hx + side * hr // 4, hy - hr // 2), (hx + side * hr, hy - hr // 4), tip],
            fill=fur,
            outline=dark,
        )
    elif a.ears == "round":
        ex, ey = hx + side * hr, hy - hr
        draw.ellipse((ex - er, ey - er, ex + er, ey + er), fill=fur, outline=dark)
        if a.inner_ear:
            draw.ellipse(
                (ex - er // 2, ey - er // 2, ex + er // 2, ey + er // 2),
                fill=_jitter(rng, a.inner_ear, 10),
            )
    elif a.ears == "long":
        ex = hx + side * hr // 2
        draw.ellipse(
            (ex - hr // 4, hy - hr - 2 * er, ex + hr // 4, hy - hr // 2), fill=fur, outline=dark
        )
        if a.inner_ear:
            draw.ellipse(
                (ex - hr // 8, hy - hr - 2 * er + hr // 6, ex + hr // 8, hy - hr * 2 // 3),
                fill=_jitter(rng, a.inner_ear, 10),
            )
    elif a.ears == "tufts":
        draw.polygon(
            [
                (hx + side * hr // 2, hy - hr * 3 // 4),
                (hx + side * hr, hy - hr // 2),
                (hx + side * hr, hy - hr - hr // 3),
            ],
            fill=dark,
        )


def _draw_face(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    a: Animal,
    dark: tuple,
    hx: int,
    hy: int,
    hr: int,
) -> None:
    """Muzzle, eyes, snout or beak or nose, and whiskers of the head ``(hx, hy, hr)``."""
    if a.muzzle:
        draw.ellipse(
            (hx - hr // 2, hy, hx + hr // 2, hy + hr * 3 // 4), fill=_jitter(rng, a.muzzle, 10)
        )
    r = max(1, int(hr * a.eyes))
    for side in (-1, 1):
        ex, ey = hx + side * hr // 2, hy - hr // 4
        draw.ellipse((ex - r, ey - r, ex + r, ey + r), fill=(250, 250, 240))
        pr = max(1, r // 2)
        draw.ellipse((ex - pr, ey - pr, ex + pr, ey + pr), fill=(15, 15, 15))
    if a.snout:
        sr = hr // 2
        draw.ellipse(
            (hx - sr, hy + hr // 8, hx + sr, hy + hr // 8 + sr), fill=_jitter(rng, a.snout, 10)
        )
        for side in (-1, 1):
            draw.ellipse(
                (hx + side * sr // 3 - 2, hy + hr // 4, hx + side * sr // 3 + 2, hy + hr // 4 + 4),
                fill=(90, 40, 50),
            )
    elif a.beak:
        draw.polygon(
            [
                (hx - hr // 3, hy + hr // 8),
                (hx + hr // 3, hy + hr // 8),
                (hx, hy + hr // 2 + hr // 4),
            ],
            fill=_jitter(rng, a.beak, 10),
        )
    elif a.muzzle:
        draw.ellipse((hx - hr // 8, hy + hr // 6, hx + hr // 8, hy + hr // 3), fill=(30, 30, 30))
    if a.whiskers:
        for side in (-1, 1):
            for dy in (0, hr // 8):
                draw.line((hx, hy + hr // 3 + dy, hx + side * hr, hy + hr // 4 + 2 * dy), fill=dark)


def _draw_animal(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, a: Animal, cx: int, cy: int, s: int
) -> None:
    """Draw animal ``a`` with its body centred near ``(cx, cy)``, about ``s`` pixels tall."""
    fur = _jitter(rng, a.fur, 18)
    dark = tuple(max(0, c - 50) for c in fur)
    bw, bh = int(s * a.body[0] / 2), int(s * a.body[1] / 2)
    by = cy + s // 6
    _draw_tail(draw, a, fur, cx, bw, by, s)
    draw.ellipse(
        (cx - bw, by - bh, cx + bw, by + bh), fill=fur, outline=dark, width=max(1, s // 40)
    )
    if a.belly:
        draw.ellipse(
            (cx - bw // 2, by - bh // 3, cx + bw // 2, by + bh * 4 // 5),
            fill=_jitter(rng, a.belly, 10),
        )
    hr = max(2, int(s * a.head))
    hx, hy = cx, by - bh - hr // 2
    er = int(hr * 0.6 * a.ear_size)
    for side in (-1, 1):
        _draw_ear(draw, rng, a, (fur, dark), (hx, hy, hr), er, side)
    draw.ellipse(
        (hx - hr, hy - hr, hx + hr, hy + hr), fill=fur, outline=dark, width=max(1, s // 40)
    )
    _draw_face(draw, rng, a, dark, hx, hy, hr)


def draw_scene(rng: np.random.Generator, cls: str, width: int, height: int) -> Image.Image:
    """Draw one image of class ``cls`` (a key of :data:`SCENE_CLASSES`), RGB, ``width×height``."""
    has_cat, has_mouse = SCENE_CLASSES[cls]
    img = _background(rng, width, height, clutter=int(rng.integers(4, 11)))
    draw = ImageDraw.Draw(img)
    short = min(width, height)
    # Characters sit in opposite halves when both are present, so neither hides the other.
    cat_left = bool(rng.integers(0, 2))
    if has_cat:
        s = int(short * rng.uniform(0.45, 0.7))
        lo, hi = (
            (0.3, 0.45) if (has_mouse and cat_left) else ((0.55, 0.7) if has_mouse else (0.3, 0.7))
        )
        cx = int(width * rng.uniform(lo, hi))
        cy = int(height * rng.uniform(0.45, 0.6))
        _draw_animal(draw, rng, CAT, cx, cy, s)
    if has_mouse:
        s = int(short * rng.uniform(0.25, 0.4))
        lo, hi = (
            (0.62, 0.75) if (has_cat and cat_left) else ((0.25, 0.38) if has_cat else (0.25, 0.75))
        )
        cx = int(width * rng.uniform(lo, hi))
        cy = int(height * rng.uniform(0.5, 0.7))
        _draw_animal(draw, rng, MOUSE, cx, cy, s)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
    return img


def draw_animal(rng: np.random.Generator, cls: str, size: int) -> Image.Image:
    """Draw one ``size×size`` RGB source-task image of animal ``cls`` (see :data:`ANIMALS`)."""
    if cls not in ANIMALS:
        raise ValueError(f"unknown animal {cls!r}; expected one of {tuple(ANIMALS)}")
    img = _background(rng, size, size, clutter=int(rng.integers(6, 16)))
    draw = ImageDraw.Draw(img)
    s = int(size * rng.uniform(0.35, 0.65))
    cx = int(rng.integers(s // 2, size - s // 2 + 1))
    cy = int(rng.integers(s // 2, size - s // 2 + 1))
    _draw_animal(draw, rng, ANIMALS[cls], cx, cy, s)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))
    return img


def animal_batch(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` source-task images and labels: uint8 ``(n, size, size, 3)``, int32 ``(n,)``.

    Labels index ``list(ANIMALS)``; they are balanced (equal counts when ``n`` is a multiple of
    the number of animals).
    """
    labels = np.arange(n, dtype=np.int32) % len(ANIMALS)
    rng.shuffle(labels)
    names = list(ANIMALS)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i] = np.asarray(draw_animal(rng, names[label], size))
    return images, labels
