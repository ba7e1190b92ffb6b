"""Paint findings and devices onto a base chest, then shift and add noise.

Each painter adds contrast where the finding lives (in the lung of the named side: the
patient's right lung is on the image's left). Subtle findings get a fraction of the contrast,
which is what makes them easy for the simulated radiologist to miss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from radcurate.synth.image import (
    MAX_SHIFT,
    MAX_VALUE,
    SIZE,
    SUBTLE_AMPLITUDE,
    BaseChest,
    bases,
    ellipse,
    grid,
    noise_field,
)
from radcurate.synth.labels import Label, Side


def _lung_indices(side: Side | None) -> tuple[int, ...]:
    return {Side.RIGHT: (0,), Side.LEFT: (1,)}.get(side, (0, 1))


def _line(img: np.ndarray, points: list[tuple[float, float]], value: float) -> None:
    """A 2-pixel-wide polyline through normalised points (tubes and wires)."""
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        t = np.linspace(0.0, 1.0, SIZE)
        cols = np.clip(((x0 + (x1 - x0) * t) * SIZE).astype(int), 0, SIZE - 2)
        rows = np.clip(((y0 + (y1 - y0) * t) * SIZE).astype(int), 0, SIZE - 1)
        img[rows, cols] += value
        img[rows, cols + 1] += value


def _basal(chest: BaseChest, i: int, height: float) -> np.ndarray:
    """The part of lung i below a meniscus `height` above its base."""
    cx, cy, rx, ry = chest.lungs[i]
    _, y = grid()
    top = cy + ry - height
    return chest.lung_masks[i] * np.clip((y - top) * 60.0, 0.0, 1.0)


def _paint_label(img, chest: BaseChest, label: Label, side, amp: float, rng) -> None:
    x, y = grid()
    for i in _lung_indices(side):
        cx, cy, rx, ry = chest.lungs[i]
        mask = chest.lung_masks[i]
        if label is Label.PLEURAL_EFFUSION:
            img += 850 * amp * _basal(chest, i, float(rng.uniform(0.12, 0.22)))
        elif label is Label.ATELECTASIS:
            img += 500 * amp * mask * ellipse(cx, cy + 0.6 * ry, 0.8 * rx, 0.025, edge=2.0)
        elif label is Label.CONSOLIDATION:
            by = cy + float(rng.uniform(-0.3, 0.5)) * ry
            img += 800 * amp * mask * ellipse(cx, by, 0.6 * rx, 0.2 * ry, edge=1.5)
        elif label is Label.PNEUMOTHORAX:
            outer = 1 if i == 1 else -1
            rim = ellipse(cx + outer * 0.55 * rx, cy - 0.55 * ry, 0.5 * rx, 0.45 * ry, edge=3.0)
            img -= 450 * amp * mask * rim
        elif label is Label.LUNG_NODULE_MASS:
            r = float(rng.uniform(0.012, 0.03))
            img += 900 * amp * ellipse(cx + float(rng.uniform(-0.4, 0.4)) * rx,
                                       cy + float(rng.uniform(-0.6, 0.3)) * ry, r, r, edge=2.0)
        elif label is Label.FRACTURE:
            img -= 300 * amp * ellipse(cx + (0.8 if i else -0.8) * rx, cy, 0.012, 0.02)
        elif label is Label.EMPHYSEMA:
            img -= 220 * amp * mask
        elif label is Label.INTERSTITIAL_LUNG_DISEASE:
            texture = np.abs(noise_field()[:SIZE, :SIZE]) * 8.0
            img += amp * texture * mask * np.clip((y - cy) * 4.0 + 0.5, 0.0, 1.0)
        elif label is Label.PULMONARY_EDEMA:
            img += 450 * amp * mask * ellipse(0.5, cy, 0.3, 0.25, edge=1.0)


def _paint_centre(img, chest: BaseChest, label: Label, amp: float) -> None:
    if label is Label.CARDIOMEGALY:
        cx, cy, rx, ry = chest.heart
        img += 550 * amp * ellipse(cx, cy, 1.4 * rx, 1.25 * ry, edge=3.0)
    elif label is Label.MEDIASTINAL_HILAR_ABNORMALITY:
        img += 600 * amp * ellipse(0.5, 0.3, 0.1, 0.14, edge=3.0)
        img += 400 * amp * (ellipse(0.41, 0.44, 0.04, 0.04) + ellipse(0.59, 0.44, 0.04, 0.04))


DEVICE_PATHS = {
    "et_tube": [(0.5, 0.0), (0.5, 0.27)],
    "ng_tube": [(0.49, 0.0), (0.5, 0.6), (0.6, 0.85)],
    "right_ij_line": [(0.38, 0.05), (0.45, 0.2), (0.47, 0.36)],
    "left_subclavian_line": [(0.75, 0.18), (0.55, 0.22), (0.48, 0.34)],
    "picc": [(0.02, 0.3), (0.2, 0.2), (0.44, 0.23), (0.47, 0.36)],
    "swan_ganz": [(0.38, 0.05), (0.46, 0.3), (0.52, 0.55), (0.42, 0.45)],
    "chest_tube": [(0.12, 0.75), (0.2, 0.45), (0.25, 0.25)],
    "pacemaker": [(0.74, 0.2), (0.55, 0.35), (0.5, 0.55), (0.58, 0.7)],
    "port": [(0.3, 0.25), (0.44, 0.2), (0.47, 0.36)],
}


def _paint_devices(img: np.ndarray, devices: Iterable[str]) -> None:
    for device in devices:
        _line(img, DEVICE_PATHS[device], 1600.0)
        if device in ("pacemaker", "port"):
            cx, cy = DEVICE_PATHS[device][0]
            img += 2600 * ellipse(cx, cy, 0.045, 0.03, edge=20.0)


def render_chest(labels: Iterable[Label], subtle: Iterable[Label], laterality: Mapping,
                 devices: Iterable[str], rng: np.random.Generator) -> np.ndarray:
    """uint16 pixels (0..4095) for one study, deterministic from `rng`."""
    chest = bases()[int(rng.integers(len(bases())))]
    img = chest.pixels.copy()
    # Accept plain strings too (e.g. ids read back from truth.jsonl).
    labels = [Label(label) for label in labels]
    subtle = {Label(label) for label in subtle}
    laterality = {Label(k): Side(v) for k, v in laterality.items()}
    for label in labels:
        amp = SUBTLE_AMPLITUDE if label in subtle else 1.0
        if label in (Label.CARDIOMEGALY, Label.MEDIASTINAL_HILAR_ABNORMALITY):
            _paint_centre(img, chest, label, amp)
        elif label is not Label.SUPPORT_DEVICES:
            _paint_label(img, chest, label, laterality.get(label), amp, rng)
    _paint_devices(img, devices)
    dy, dx = (int(v) for v in rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=2))
    img = np.pad(img, MAX_SHIFT, mode="edge")[MAX_SHIFT + dy:MAX_SHIFT + dy + SIZE,
                                               MAX_SHIFT + dx:MAX_SHIFT + dx + SIZE]
    oy, ox = (int(v) for v in rng.integers(0, 3 * SIZE, size=2))
    img += noise_field()[oy:oy + SIZE, ox:ox + SIZE]
    return np.clip(img, 0, MAX_VALUE).astype(np.uint16)
