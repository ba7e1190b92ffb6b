"""Bootstrap resampling by patient, the unit a RadCurate sample is independent in.

A patient imaged four times in the ICU contributes four correlated studies: resampling studies
as if they were independent makes every interval too narrow. So every confidence interval in a
report, a dataset card or a holdout score resamples PATIENTS with replacement and takes all of a
drawn patient's studies with them (the cluster bootstrap, Davison & Hinkley 1997, §3.8).

A resample is represented as weights, replicates x studies: how many times each study was
drawn. Statistics that accept weights then compute every replicate in one vectorised pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CI_LEVEL = 0.95
DEFAULT_REPLICATES = 1000


def patient_resample_weights(patient_ids: Sequence[str], n_bootstrap: int, seed: int) -> np.ndarray:
    """Replicates x studies draw counts of a patient-level bootstrap (seeded).

    Each replicate draws as many patients as there are, with replacement; a study's weight is
    the number of times its patient was drawn. Study order follows `patient_ids`.
    """
    if n_bootstrap < 0:
        raise ValueError("n_bootstrap must be >= 0")
    patients, index = np.unique(np.asarray(patient_ids, dtype=object).astype(str), return_inverse=True)
    n_patients = len(patients)
    if n_patients == 0:
        return np.zeros((n_bootstrap, 0))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_patients, size=(n_bootstrap, n_patients))
    draws += n_patients * np.arange(n_bootstrap)[:, None]  # each replicate counts into its own bins
    per_patient = np.bincount(draws.ravel(), minlength=n_bootstrap * n_patients).astype(np.float64)
    # Patients' columns to studies' with `take` on the transpose: the same values, and the same
    # column-major layout `per_patient[:, index].astype(float)` gave (a matrix-vector product's
    # summation order follows the layout, so a report's bits do too), in ~60% of its time.
    return per_patient.reshape(n_bootstrap, n_patients).T.take(index, axis=0).T


def percentile_interval(replicates: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Percentile interval of the defined (non-NaN) replicates; None when none is defined."""
    values = np.asarray(replicates, dtype=float)
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        return None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return (float(low), float(high))
