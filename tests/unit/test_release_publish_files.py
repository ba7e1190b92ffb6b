"""A release's files (labels, card, provenance, holdout labels) are written at once, not one round
trip after another on the chain from the last vote, and the manifest only after every one of them
is stored: a manifest in the bucket still means a complete release."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from services.common.protocols.kit.release import ReleaseFiles
from services.consensus.publish import publish_release

BUCKETS = {"objects_bucket": "objects", "public_bucket": "public", "holdout_bucket": "holdout"}


class SlowStore:
    """Each PUT takes 50 ms; records when each began and ended."""

    def __init__(self) -> None:
        self.spans: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        began = time.monotonic()
        time.sleep(0.05)
        with self.lock:
            self.spans[key] = (began, time.monotonic())


def test_files_are_written_at_once_and_the_manifest_after_all_of_them():
    rf = ReleaseFiles(manifest_key="releases/r1/manifest.json")
    names = ["labels.csv", "dataset_card.json", "provenance.csv", "holdout/labels.csv", "holdout/provenance.csv"]
    for name in names:
        rf.files[("holdout" if name.startswith("holdout/") else "public", f"releases/r1/{name}")] = b"x"
    rf.files[("public", rf.manifest_key)] = b"{}"
    store = SlowStore()
    publish_release(store, SimpleNamespace(**BUCKETS), rf)  # type: ignore[arg-type]
    others = {k: v for k, v in store.spans.items() if k != rf.manifest_key}
    assert len(others) == len(names)
    manifest_began = store.spans[rf.manifest_key][0]
    assert manifest_began >= max(end for _, end in others.values())
    # at once: some file's PUT began before another's ended (one after another, none would)
    spans = sorted(others.values())
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))
