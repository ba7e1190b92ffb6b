"""Omission safeguards and the token cache: the gateway's review rules that need no database."""

from __future__ import annotations

from services.common.protocols.cxr.omissions import describe, omissions
from services.gateway.auth import Role, TokenCache, User

SUGGESTED = [
    {"label_id": "pleural_effusion", "uncertain": False, "evidence": ["Small right pleural effusion."]},
    {"label_id": "atelectasis", "uncertain": True, "evidence": ["Possible basilar atelectasis."]},
]
UNMAPPED = [{"text": "azygos fissure", "evidence": "Incidental azygos fissure."}]


def test_removing_a_label_the_report_states_as_present_asks_for_confirmation():
    asks = omissions(SUGGESTED, [], added=[], removed=["pleural_effusion"])
    assert asks == [{"kind": "removes_positive_label", "label_id": "pleural_effusion",
                     "evidence": ["Small right pleural effusion."]}]
    assert "pleural_effusion" in describe(asks) and "confirm: true" in describe(asks)


def test_removing_a_hedged_label_needs_no_confirmation():
    assert omissions(SUGGESTED, [], added=[], removed=["atelectasis"]) == []


def test_an_unmapped_finding_left_without_any_added_label_asks_for_confirmation():
    asks = omissions(SUGGESTED, UNMAPPED, added=[], removed=[])
    assert [a["kind"] for a in asks] == ["unmapped_finding"] and asks[0]["evidence"] == ["Incidental azygos fissure."]
    assert omissions(SUGGESTED, UNMAPPED, added=["fracture"], removed=[]) == []


def test_a_plain_agreement_asks_nothing():
    assert omissions(SUGGESTED, [], added=[], removed=[]) == []


def test_the_token_cache_remembers_valid_tokens_briefly_and_forgets_a_revoked_user():
    cache = TokenCache(ttl=60)
    user = User(user_id="r1", display_name="", role=Role.REVIEWER)
    cache.put("h1", user)
    assert cache.get("h1") == user and cache.get("unknown") is None
    cache.forget_user("r1")
    assert cache.get("h1") is None
    expired = TokenCache(ttl=-1)
    expired.put("h2", user)
    assert expired.get("h2") is None
    cache.put("h3", user, seconds_left=-0.001)  # expires before the cache's ttl: not remembered past it
    assert cache.get("h3") is None
    cache.put("h4", user, seconds_left=30)
    assert cache.get("h4") == user
