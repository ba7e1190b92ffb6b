"""How a service's Kafka clients connect: one KafkaConnection from the typed settings, the same
authentication for the producer, the consumer, the admin client and the dead-letter reader."""

from __future__ import annotations

import ssl

import pytest
from pydantic import SecretStr, ValidationError

from services.common.kafka import KafkaConnection, client_options
from services.consensus.app import ConsensusSettings
from services.gateway.app import GatewaySettings


def test_a_plain_address_connects_without_authentication() -> None:
    assert client_options("broker:9092") == {"bootstrap_servers": "broker:9092", "security_protocol": "PLAINTEXT"}


def test_scram_over_tls_comes_from_the_services_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"DATABASE_URL": "postgresql://x", "KAFKA_BOOTSTRAP": "kafka:9093",
                       "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "radcurate-gateway",
                       "KAFKA_SASL_PASSWORD": "s3cret"}.items():
        monkeypatch.setenv(f"RADCURATE_GATEWAY_{key}", value)
    options = KafkaConnection.from_settings(GatewaySettings()).client_options()
    assert options["bootstrap_servers"] == "kafka:9093"
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("radcurate-gateway", "s3cret")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_scram_without_tls_sends_no_tls_context() -> None:
    options = KafkaConnection("k:9092", "SASL_PLAINTEXT", "SCRAM-SHA-256", "u", SecretStr("p")).client_options()
    assert "ssl_context" not in options
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"


def test_the_password_is_never_shown_in_the_connections_repr() -> None:
    connection = KafkaConnection("k:9092", "SASL_PLAINTEXT", "SCRAM-SHA-512", "u", SecretStr("hunter2"))
    assert "hunter2" not in repr(connection)


@pytest.mark.parametrize("password", [None, ""])
def test_sasl_without_credentials_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch, password: str | None) -> None:
    monkeypatch.setenv("RADCURATE_CONSENSUS_DATABASE_URL", "postgresql://x")
    monkeypatch.setenv("RADCURATE_CONSENSUS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RADCURATE_CONSENSUS_KAFKA_SASL_USERNAME", "radcurate-consensus")
    if password is not None:
        monkeypatch.setenv("RADCURATE_CONSENSUS_KAFKA_SASL_PASSWORD", password)
    with pytest.raises(ValidationError, match="needs kafka_sasl_username and kafka_sasl_password"):
        ConsensusSettings()
    with pytest.raises(ValueError, match="needs a SASL username and password"):
        KafkaConnection("k:9092", "SASL_SSL", "SCRAM-SHA-512", "u",
                        SecretStr(password) if password is not None else None)


def test_an_unknown_mechanism_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADCURATE_CONSENSUS_DATABASE_URL", "postgresql://x")
    monkeypatch.setenv("RADCURATE_CONSENSUS_KAFKA_SASL_MECHANISM", "PLAIN")
    with pytest.raises(ValidationError, match="kafka_sasl_mechanism"):
        ConsensusSettings()
