"""A plausible left-lateral chest radiograph (ViewPosition LL): the patient's front is on the
image's left. Air-filled lungs dark, the heart shadow anterior and low, the spine a bright column
behind, the diaphragm domes below. Enough for a reader (and a hanging protocol) to tell it from
the frontal view; findings are painted on the frontal view only."""

from __future__ import annotations

import numpy as np

from radcurate.synth.image import MAX_VALUE, SIZE, ellipse, grid, noise_field

LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL"})


def render_lateral(rng: np.random.Generator) -> np.ndarray:
    """uint16 pixels (0..4095) of one lateral view, deterministic from `rng`."""
    x, y = grid()
    jitter = rng.uniform(-0.02, 0.02, size=4)
    body = ellipse(0.5 + jitter[0], 0.55, 0.36, 0.52)
    lungs = ellipse(0.5 + jitter[1], 0.45, 0.27, 0.33)
    heart = ellipse(0.38 + jitter[2], 0.60, 0.15, 0.14)
    spine = np.clip(1.0 - np.abs(x - (0.74 + jitter[3])) / 0.05, 0.0, 1.0) * (y > 0.12)
    diaphragm = np.clip((y - (0.72 + 0.08 * (x - 0.5) ** 2 * 4)) * 30.0, 0.0, 1.0)
    air = lungs * (1.0 - diaphragm)
    img = (400.0 + 1500.0 * body - 1100.0 * air + 800.0 * heart * air + 1200.0 * spine * body
           + 300.0 * diaphragm * body)
    oy, ox = (int(v) for v in rng.integers(0, 3 * SIZE, size=2))
    img = img.astype(np.float32) + noise_field()[oy:oy + SIZE, ox:ox + SIZE]
    return np.clip(img, 0, MAX_VALUE).astype(np.uint16)
