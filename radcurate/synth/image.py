"""Chest-like 12-bit pixel data made with numpy: fast enough for 13,735 studies.

A handful of base chests (lungs, mediastinum, heart, ribs, clavicles) are drawn once per
process; each study copies one, paints its true findings on it (faintly when subtle), shifts it
a few pixels and adds a crop of a precomputed noise field. The images are not meant to fool a
radiologist, only to give viewers, window/level and image-side checks something chest-shaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SIZE = 256
N_BASES = 8  # distinct body habitus / rib patterns
BASE_SEED = 20240611  # bases are fixed across runs; per-study variation comes from the seed
NOISE_SIGMA = 35.0
MAX_SHIFT = 6
SUBTLE_AMPLITUDE = 0.35  # subtle findings are painted at this fraction of their contrast
MAX_VALUE = 4095  # 12 bits stored


@dataclass(frozen=True)
class BaseChest:
    pixels: np.ndarray  # float32 (SIZE, SIZE)
    lungs: tuple[tuple[float, float, float, float], ...]  # (cx, cy, rx, ry): patient right, left
    lung_masks: np.ndarray  # float32 (2, SIZE, SIZE), soft 0..1
    heart: tuple[float, float, float, float]


@lru_cache(maxsize=1)
def grid() -> tuple[np.ndarray, np.ndarray]:
    """Normalised (x, y) coordinates in [0, 1); x grows toward the patient's left."""
    axis = (np.arange(SIZE, dtype=np.float32) + 0.5) / SIZE
    return np.meshgrid(axis, axis)


def ellipse(cx: float, cy: float, rx: float, ry: float, edge: float = 6.0) -> np.ndarray:
    """A soft-edged filled ellipse (1 inside, 0 outside)."""
    x, y = grid()
    d = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
    return np.clip((1.0 - d) * edge, 0.0, 1.0)


def _blur(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    for axis in (0, 1):
        out = (np.roll(out, 1, axis) + out + np.roll(out, -1, axis)) / 3.0
    return out


def _ribs(rng: np.random.Generator, body: np.ndarray) -> np.ndarray:
    """Posterior rib arcs: bright bands that sweep down and outward from the spine."""
    x, y = grid()
    ribs = np.zeros((SIZE, SIZE), np.float32)
    phase = float(rng.uniform(-0.015, 0.015))
    for k in range(10):
        y0 = 0.14 + 0.062 * k + phase
        centre = y0 + 0.35 * np.abs(x - 0.5) - 0.25 * (x - 0.5) ** 2
        ribs += np.clip(1.0 - np.abs(y - centre) / 0.011, 0.0, 1.0)
    lateral = np.clip((np.abs(x - 0.5) - 0.05) * 20.0, 0.0, 1.0)
    return ribs * lateral * body


def _base(k: int) -> BaseChest:
    rng = np.random.default_rng([BASE_SEED, k])
    s = float(rng.uniform(0.92, 1.08))
    lungs = ((0.31, 0.47, 0.14 * s, 0.29 * s), (0.69, 0.48, 0.13 * s, 0.28 * s))
    heart = (0.56, 0.66, 0.15 * float(rng.uniform(0.9, 1.05)), 0.12)
    body = ellipse(0.5, 0.62, 0.47, 0.58, edge=20.0)
    masks = np.stack([ellipse(*lung) for lung in lungs])
    img = 150.0 + 1450.0 * body - 900.0 * masks.sum(0)
    img += 950.0 * ellipse(0.5, 0.4, 0.055, 0.45) + 500.0 * ellipse(*heart, edge=3.0)
    img += 260.0 * _ribs(rng, body)
    for cx in (0.32, 0.68):
        img += 280.0 * ellipse(cx, 0.17, 0.16, 0.012, edge=2.0)
    img *= float(rng.uniform(0.9, 1.1))
    return BaseChest(_blur(img).astype(np.float32), lungs, masks, heart)


@lru_cache(maxsize=1)
def bases() -> tuple[BaseChest, ...]:
    return tuple(_base(k) for k in range(N_BASES))


@lru_cache(maxsize=1)
def noise_field() -> np.ndarray:
    """One big noise field; studies take random crops of it instead of drawing fresh noise."""
    rng = np.random.default_rng([BASE_SEED, 999])
    return (rng.standard_normal((4 * SIZE, 4 * SIZE)) * NOISE_SIGMA).astype(np.float32)


def shrink(pixels: np.ndarray, size: int) -> np.ndarray:
    """A SIZE x SIZE image averaged down to `size` x `size` (SIZE a multiple of `size`): the same
    chest in fewer bytes, for the scale bench's lighter pool (issue 15 §6)."""
    if size == SIZE:
        return pixels
    if size < 1 or SIZE % size:
        raise ValueError(f"image size {size} does not divide {SIZE}")
    f = SIZE // size
    return pixels.reshape(size, f, size, f).mean(axis=(1, 3)).round().astype(np.uint16)
