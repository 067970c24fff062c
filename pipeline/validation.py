"""Check every image once, normalise the usable ones, and report the rest.

:func:`validate_images` runs in the ``download_data`` stage on the freshly materialised
``<root>/<class>/<files>`` tree, whatever the source. Each file is opened by content, not by
extension, and must be a real, fully decodable image of a supported format within the size
limits. Usable images that TensorFlow would decode differently from what a viewer shows (EXIF
orientation, CMYK, 16-bit, palette, alpha, grayscale, formats other than JPEG/PNG) are rewritten
as 8-bit RGB PNG files; the rest are left byte for byte. Unusable files are removed from the tree
and listed with the reason, so a bad file never crashes a later stage.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.utils import PipelineError

# Formats TensorFlow decodes natively; anything else Pillow can read is converted to PNG.
NATIVE_FORMATS = frozenset({"JPEG", "PNG"})
READABLE_FORMATS = frozenset({"JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "MPO"})
EXIF_ORIENTATION = 0x0112


@dataclass
class ValidationReport:
    """What :func:`validate_images` kept, converted and skipped."""

    kept: dict[str, int] = field(default_factory=dict)
    converted: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def stats(values: list[int]) -> dict[str, float]:
            if not values:
                return {}
            arr = np.asarray(values)
            return {"min": int(arr.min()), "median": float(np.median(arr)), "max": int(arr.max())}

        return {
            "images": sum(self.kept.values()),
            "per_class": dict(sorted(self.kept.items())),
            "skipped": len(self.skipped),
            "skipped_files": self.skipped,
            "converted": len(self.converted),
            "converted_files": self.converted,
            "width": stats(self.widths),
            "height": stats(self.heights),
        }


def _needs_rewrite(img: Image.Image) -> str | None:
    """Why ``img`` must be rewritten as RGB PNG for TensorFlow, or ``None``."""
    if img.format not in NATIVE_FORMATS:
        return f"{img.format} converted to PNG"
    if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
        return "EXIF orientation applied"
    if img.mode != "RGB":
        return f"{img.mode} converted to RGB"
    if getattr(img, "n_frames", 1) > 1:
        return "first frame of an animation kept"
    return None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any mode (16-bit, CMYK, palette, alpha) to 8-bit RGB."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def check_image(
    path: Path, min_side: int, max_pixels: int
) -> tuple[Image.Image | None, str | None, tuple[int, int]]:
    """Open ``path`` by content; return ``(image to rewrite or None, reason or error, size)``.

    The first element is the normalised RGB image when the file must be rewritten; the second is
    the rewrite reason, or the error (with the first ``None``) when the file is unusable, which
    :func:`validate_images` tells apart by ``size == (0, 0)``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as probe:
                fmt, size = probe.format, probe.size
                if fmt not in READABLE_FORMATS:
                    return None, f"unsupported image format {fmt}", (0, 0)
                if size[0] * size[1] > max_pixels:
                    return (
                        None,
                        (
                            f"too large: {size[0]}x{size[1]} pixels exceeds data.max_image_pixels "
                            f"({max_pixels}); a possible decompression bomb"
                        ),
                        (0, 0),
                    )
                probe.verify()
            with Image.open(path) as img:
                img.load()  # decodes every pixel: catches truncated files verify() misses
                reason = _needs_rewrite(img)
                out = _to_rgb(img) if reason else None
                w, h = out.size if out is not None else img.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return None, "too large: refused as a possible decompression bomb", (0, 0)
        except UnidentifiedImageError:
            return None, "not an image (content not recognised, whatever the extension)", (0, 0)
        except (OSError, SyntaxError, ValueError) as exc:
            return None, f"cannot be decoded: {str(exc).splitlines()[0][:200]}", (0, 0)
    if min(w, h) < min_side:
        return None, f"too small: {w}x{h} pixels, below data.min_image_side ({min_side})", (0, 0)
    return out, reason, (w, h)


def validate_images(
    root: Path, *, min_side: int, max_pixels: int, min_per_class: int = 3
) -> ValidationReport:
    """Check every file of ``root/<class>/…``; normalise in place; drop and report bad ones.

    Raises :class:`PipelineError` when a class is left with fewer than ``min_per_class`` images.
    """
    report = ValidationReport()
    for class_dir in sorted(d for d in root.iterdir() if d.is_dir()):
        kept = 0
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                rel = path.relative_to(root).as_posix()
                out, reason, size = check_image(path, min_side, max_pixels)
                if size == (0, 0):
                    path.unlink()
                    report.skipped.append({"path": rel, "reason": str(reason)})
                    continue
                if out is not None:
                    target = (
                        path
                        if path.suffix.lower() == ".png"
                        else path.with_name(f"{path.name}.png")
                    )
                    out.save(target, format="PNG")
                    if target != path:
                        path.unlink()
                    report.converted.append(
                        {"path": target.relative_to(root).as_posix(), "reason": str(reason)}
                    )
                kept += 1
                report.widths.append(size[0])
                report.heights.append(size[1])
        report.kept[class_dir.name] = kept
    small = {c: n for c, n in report.kept.items() if n < min_per_class}
    if small:
        reasons = sorted({s["reason"].split(":")[0] for s in report.skipped})
        raise PipelineError(
            f"too few usable images in class(es) {small} (need at least {min_per_class} each "
            f"for the train/val/test split); skipped files: {len(report.skipped)}"
            + (f" ({', '.join(reasons)})" if reasons else "")
            + ". Add images to those classes or remove their folders"
        )
    return report
