"""Which failures park an outbox row, and which make a consumer wait: the classification that
decides between "set aside for an operator" and "wait out the outage" (issue 11, items 1 and 2)."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from aiokafka.errors import (
    BrokerNotAvailableError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    ProducerClosed,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from services.common.failures import PermanentError, TransientError, is_transient
from services.common.llm import LlmUnavailable
from services.common.outbox import EventTooLarge, is_refused_for_good


@pytest.mark.parametrize("exc", [MessageSizeTooLargeError(), ValueError("not JSON-encodable")])
def test_a_row_the_broker_can_never_take_is_parked(exc):
    assert is_refused_for_good(exc)


@pytest.mark.parametrize("exc", [KafkaTimeoutError(), BrokerNotAvailableError(), KafkaConnectionError(),
                                 ProducerClosed(), NotLeaderForPartitionError(), UnknownTopicOrPartitionError(),
                                 TopicAuthorizationFailedError(), ConnectionResetError()])
def test_an_outage_or_a_cluster_setting_never_parks_a_row(exc):
    assert not is_refused_for_good(exc)


def _caused_by(cause: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("wrapped") from cause
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize("exc", [
    TransientError("x"), ConnectionRefusedError(), TimeoutError(), psycopg.OperationalError("server closed"),
    httpx.ConnectError("refused"), LlmUnavailable("4 attempts"), _caused_by(ConnectionResetError())])
def test_a_dependency_that_does_not_answer_is_transient(exc):
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    PermanentError("bad event"), EventTooLarge("too big"), ValueError("bad content"), KeyError("label"),
    psycopg.errors.DataError("NUL"), FileNotFoundError("rules.yml")])
def test_content_errors_and_bugs_are_not_transient(exc):
    assert not is_transient(exc)


def test_an_error_raised_while_handling_an_outage_is_judged_on_its_own():
    try:
        try:
            raise ConnectionResetError()
        except ConnectionResetError:
            raise ValueError("the parser choked")  # noqa: B904 - the point of the test
    except ValueError as exc:
        assert not is_transient(exc)
