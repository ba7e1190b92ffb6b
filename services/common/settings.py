"""Settings shared by every service; each service subclasses with its own env prefix.

Nothing else in the code base reads `os.environ`: a service builds its settings object once in
its entrypoint and passes what each part needs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What every service needs to reach the outside world."""

    model_config = SettingsConfigDict(extra="ignore")

    service_name: str = "service"
    database_url: SecretStr  # no default: a secret
    kafka_bootstrap: str = "127.0.0.1:9092"
    # How every Kafka client of the service authenticates (services.common.kafka.KafkaConnection):
    # SASL_SSL + SCRAM-SHA-512 against Strimzi's scram listener or a managed Kafka; PLAINTEXT for
    # the local stack's tansu (see the README's local-stack section for why).
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None  # a secret: no default
    kafka_ssl_cafile: str | None = None  # the broker's CA (Strimzi's cluster CA); None: the system's
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: SecretStr = SecretStr("")
    s3_secret_key: SecretStr = SecretStr("")
    s3_secure: bool = False
    # Explicit object-store timeouts (the minio client's default is 300 s each; see objectstore.py).
    s3_connect_timeout_seconds: float = 5.0
    s3_read_timeout_seconds: float = 30.0
    objects_bucket: str = "radcurate-objects"
    public_bucket: str = "radcurate-public"
    holdout_bucket: str = "radcurate-holdout"
    # When set, /metrics answers only `Authorization: Bearer <metrics_token>` (Prometheus'
    # `authorization` / a ServiceMonitor's bearerTokenSecret): vote counters move when a reader
    # votes, so on a port readers can reach they would time other readers' verdicts.
    metrics_token: SecretStr | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # A listening socket inherited from the process that started this one (`radcurate up` binds
    # each service's port itself and passes it on, so the port cannot be lost between its choice
    # and the bind); when set, http_host/http_port are not bound.
    http_fd: int | None = Field(None, ge=0)
    log_level: str = "INFO"
    # One log line per published event, consumed record (its outcome) and offset commit, at INFO on
    # the `radcurate.delivery` logger: the trail from a producer's ack to an effect (the fault test).
    delivery_log: bool = False
    # Consumer tuning. Defaults suit a real Kafka cluster; the local stack shortens the session
    # timeout because tansu's group join waits about half of it.
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 1_000
    kafka_max_batch: int = 500
    max_attempts: int = 3  # handler attempts before an event goes to the dead-letter topic
    outbox_poll_seconds: float = 0.5
    # After a wake-up the relay waits this long to gather more rows into one produce request:
    # every request costs the broker storage writes per partition, so bigger batches are cheaper.
    outbox_linger_seconds: float = 0.05
    # ...but a round goes once no commit came for this long: the last event of a stream (the last
    # vote before a release) waits this, not the rest of the linger. Neither holds a lone command
    # (`notify(at_once=True)`) or what a consumer batch emits once it drained its input (consumer.py).
    outbox_quiet_seconds: float = 0.05
    # Kafka's usual knobs; keep min bytes at 1 on tansu: it does not gather data across its S3
    # segments for a fetch, it waits out fetch_max_wait_ms instead (measured: 9 events/s at 64 KiB).
    kafka_fetch_min_bytes: int = 1
    kafka_fetch_max_wait_ms: int = 500
    # The fetch wait for `kafka_fetch_active_seconds` after the consumer saw records or the service
    # published (services/common/fetch_pacing.py). None: always kafka_fetch_max_wait_ms, right for
    # a real Kafka, which answers a waiting fetch as soon as data arrives; the local stack's tansu
    # only looks again after half the wait left, so the local stack sets 100 ms (one hop's median
    # 61 -> 18 ms) and keeps 500 ms when idle. 30 s: a release's build took up to 12 s on a loaded
    # machine, and its answer (benchmark-released) should still find the gateway fetching briskly;
    # each consumer pays ~3 ms of CPU per second of the spell (broker and client).
    kafka_fetch_active_wait_ms: int | None = Field(None, ge=0)
    kafka_fetch_active_seconds: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> ServiceSettings:
        """A SASL protocol without a username and password fails at start-up, with a message,
        not at the first connection as an authentication error."""
        if self.kafka_security_protocol.startswith("SASL_") and not (
                self.kafka_sasl_username and self.kafka_sasl_password and self.kafka_sasl_password.get_secret_value()):
            raise ValueError(f"kafka_security_protocol={self.kafka_security_protocol} needs kafka_sasl_username "
                             "and kafka_sasl_password")
        return self


class LlmSettings(BaseSettings):
    """An OpenAI-compatible endpoint. Each LLM-using service subclasses it with its env prefix and
    its own defaults; kept apart from ServiceSettings so `radcurate label --backend llm` can read
    it without the database and broker settings a service process requires."""

    model_config = SettingsConfigDict(extra="ignore")

    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None  # a secret: no default (a local server may need none)
    llm_model: str = ""
    llm_concurrency: int = 32
    llm_timeout_seconds: float = 60.0
    llm_max_attempts: int = 4  # HTTP attempts per completion (429/5xx/timeouts are retried)
