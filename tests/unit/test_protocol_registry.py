"""The protocol registry: built-ins on first use, plug-ins by registration or RADCURATE_PROTOCOLS,
and no silent fallback for a name nobody registered."""

from __future__ import annotations

import sys

import pytest

from services.common import protocols
from services.common.protocols.cxr import CxrLabelVerification
from tests.support import pneumothorax


def test_the_built_in_protocols_are_known_and_loaded_on_first_use():
    assert {"cxr-label-verification", "lumbar-grading"} <= set(protocols.names())
    lumbar = protocols.get("lumbar-grading")
    assert (lumbar.name, lumbar.short_name) == ("lumbar-grading", "lumbar")
    assert protocols.get("cxr-label-verification").rules == {"cxr-agree-all-majority"}


def test_an_unknown_protocol_fails_loudly_with_the_known_names():
    with pytest.raises(protocols.UnknownProtocol, match=r"unknown protocol 'knee'; known: cxr-label-verification"):
        protocols.get("knee")
    assert not protocols.is_known("knee")


def test_two_plug_ins_cannot_claim_one_name():
    class Impostor(CxrLabelVerification):
        pass

    with pytest.raises(ValueError, match="already registered by CxrLabelVerification"):
        protocols.register(Impostor())
    assert type(protocols.get("cxr-label-verification")) is CxrLabelVerification


def test_a_plug_in_named_in_the_environment_is_imported_and_registered(monkeypatch):
    protocols.unregister(pneumothorax.NAME)
    monkeypatch.delitem(sys.modules, "tests.support.pneumothorax")  # imported afresh, as in a service
    monkeypatch.setenv(protocols.PLUGINS_ENV, "tests.support.pneumothorax")
    monkeypatch.setattr(protocols, "_env_loaded", False)
    try:
        assert pneumothorax.NAME in protocols.names()
        assert protocols.get(pneumothorax.NAME).short_name == "ptx"
    finally:
        protocols.unregister(pneumothorax.NAME)
        protocols.register(pneumothorax.PROTOCOL)
