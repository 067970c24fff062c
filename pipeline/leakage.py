"""Near-duplicate detection across splits (perceptual hashes).

Frames taken one second apart from the same video are near-duplicates: when one lands in train
and its twin in test, the test accuracy measures memory, not generalisation. :func:`dhash` gives
each image a 64-bit difference hash; two images whose hashes differ in at most ``max_distance``
bits are near-duplicates, and :func:`near_duplicate_groups` joins them transitively into groups
that the split can keep together.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def dhash(path: str | Path, size: int = 8) -> int:
    """64-bit difference hash of an image: brightness gradients of a 9×8 grayscale thumbnail."""
    with Image.open(path) as img:
        img.draft("L", (size * 8, size * 8))  # JPEG: decode at reduced size, much faster
        small = img.convert("L").resize((size + 1, size), Image.Resampling.BILINEAR)
    px = np.asarray(small, dtype=np.int16)
    bits = (px[:, 1:] > px[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def near_duplicate_pairs(hashes: Sequence[int], max_distance: int) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, whose hashes differ in at most ``max_distance`` bits."""
    h = np.asarray(hashes, dtype=np.uint64)
    as_bytes = h.view(np.uint8).reshape(-1, 8)
    pairs: list[tuple[int, int]] = []
    block = 512
    for start in range(0, len(h), block):
        rows = as_bytes[start : start + block]
        # Hamming distance of each row in the block to every hash: popcount of the XOR.
        dist = _POPCOUNT[rows[:, None, :] ^ as_bytes[None, :, :]].sum(axis=2, dtype=np.int32)
        i, j = np.nonzero(dist <= max_distance)
        i = i + start
        keep = i < j
        pairs.extend(zip(i[keep].tolist(), j[keep].tolist(), strict=True))
    return pairs


def near_duplicate_groups(n: int, pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Group id of each of ``n`` items, joining pairs transitively (union-find)."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]
