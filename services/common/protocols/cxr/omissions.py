"""Omission safeguards: the vote that would silently drop a finding the report states is stopped
and shown back to the reader for confirmation.

The procedure's second aim is to minimise unnecessary omissions. Two kinds of vote lose
information the report carries: removing a suggested label whose evidence sentence states the
finding as present (not hedged), and leaving a finding the extractor read but the mapper could not
place in the taxonomy without adding any label for it. Both may be right — the reader sees the
image — so they are asked, not forbidden.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CONFIRMATION_TYPE = "https://radcurate.dev/problems/confirmation-required"


def omissions(suggested: Sequence[Mapping[str, Any]], unmapped: Sequence[Mapping[str, Any]],
              added: Iterable[str], removed: Iterable[str]) -> list[dict[str, Any]]:
    """What the reader must confirm before this vote is accepted (empty: nothing to confirm)."""
    removed, added = set(removed), set(added)
    asks: list[dict[str, Any]] = []
    for label in suggested:
        if label["label_id"] in removed and not label.get("uncertain", False):
            asks.append({"kind": "removes_positive_label", "label_id": label["label_id"],
                         "evidence": list(label.get("evidence", []))})
    if unmapped and not added:
        for finding in unmapped:
            asks.append({"kind": "unmapped_finding", "text": finding.get("text", ""),
                         "evidence": [finding.get("evidence", "")]})
    return asks


def describe(asks: Sequence[Mapping[str, Any]]) -> str:
    """One sentence for the problem's `detail`, naming each item."""
    parts = []
    for a in asks:
        if a["kind"] == "removes_positive_label":
            parts.append(f"removing {a['label_id']!r}, which the report states as present")
        else:
            parts.append(f"adding no label for the unmapped finding {a['text']!r}")
    return "please confirm (send confirm: true): " + "; ".join(parts)
