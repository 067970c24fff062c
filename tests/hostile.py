"""A generated hostile image folder: every kind of file a real download can hold."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# name -> what validation must do with it: "keep", "convert" or "skip"
EXPECTED: dict[str, str] = {}


def _img(rng: np.random.Generator, w: int = 64, h: int = 48, mode: str = "RGB") -> Image.Image:
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> None:
    """A tiny PNG whose header declares ``width×height`` pixels."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def make_hostile_dataset(root: Path, outside: Path, seed: int = 0) -> dict[str, str]:
    """Write ``root/<class>/…`` with good, odd and bad files; return ``{relative path: fate}``."""
    rng = np.random.default_rng(seed)
    fate: dict[str, str] = {}

    def put(rel: str, what: str, writer) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(path)
        fate[rel] = what

    for cls in ("cats", "dogs"):
        for i in range(6):  # plain, usable images
            put(f"{cls}/plain_{i}.jpg", "keep", lambda p: _img(rng).save(p, "JPEG"))
        put(f"{cls}/plain.png", "keep", lambda p: _img(rng).save(p, "PNG"))
    c = "cats"
    put(f"{c}/rgba.png", "convert", lambda p: _img(rng, mode="RGBA").save(p))
    put(f"{c}/palette.png", "convert", lambda p: _img(rng).convert("P").save(p))
    put(f"{c}/gray.jpg", "convert", lambda p: _img(rng, mode="L").save(p, "JPEG"))
    put(f"{c}/cmyk.jpg", "convert", lambda p: _img(rng, mode="CMYK").save(p, "JPEG"))

    def sixteen_bit(p: Path) -> None:
        arr = rng.integers(0, 65535, size=(40, 50), dtype=np.uint16)
        Image.fromarray(arr).save(p)

    put(f"{c}/deep16.png", "convert", sixteen_bit)

    def rotated(p: Path) -> None:
        img = _img(rng, 80, 40)
        exif = img.getexif()
        exif[0x0112] = 6  # rotate 90° clockwise to display
        img.save(p, "JPEG", exif=exif)

    put(f"{c}/rotated.jpg", "convert", rotated)
    put(f"{c}/bitmap.bmp", "convert", lambda p: _img(rng).save(p, "BMP"))
    put(f"{c}/photo.webp", "convert", lambda p: _img(rng).save(p, "WEBP"))
    put(f"{c}/scan.tiff", "convert", lambda p: _img(rng).save(p, "TIFF"))

    def animated(p: Path) -> None:
        frames = [_img(rng).convert("P") for _ in range(3)]
        frames[0].save(p, save_all=True, append_images=frames[1:])

    put(f"{c}/anim.gif", "convert", animated)
    put(f"{c}/png_named.jpg", "keep", lambda p: _img(rng).save(p, "PNG"))
    d = "dogs"
    put(f"{d}/text.jpg", "skip", lambda p: p.write_text("this is not an image\n"))
    put(f"{d}/empty.png", "skip", lambda p: p.write_bytes(b""))

    def truncated(p: Path) -> None:
        buf = io.BytesIO()
        _img(rng, 200, 150).save(buf, "JPEG")
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])

    put(f"{d}/truncated.jpg", "skip", truncated)
    put(f"{d}/tiny.png", "skip", lambda p: _img(rng, 4, 4).save(p))
    put(f"{d}/bomb.png", "skip", png_bomb)
    # Entries that are not read at all
    put(f"{d}/labels.csv", "ignore", lambda p: p.write_text("file,label\n"))
    put(f"{d}/.DS_Store", "ignore", lambda p: p.write_bytes(b"\0\0\0\1Bud1"))
    put(f"{d}/.hidden.jpg", "ignore", lambda p: _img(rng).save(p, "JPEG"))
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "secret.jpg"
    _img(rng).save(secret, "JPEG")
    put(f"{d}/link.jpg", "ignore", lambda p: os.symlink(secret, p))
    put(f"{d}/linked_dir", "ignore", lambda p: os.symlink(outside, p, target_is_directory=True))
    (root / "README.csv").write_text("top-level metadata\n")
    return fate
