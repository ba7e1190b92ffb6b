"""The kustomize overlays render valid, hardened, correctly wired Kubernetes manifests.

Offline: `kubectl kustomize` builds each overlay; built-in kinds are validated strictly against
the Kubernetes OpenAPI schemas shipped with kubernetes-validate; custom resources (Strimzi,
CloudNativePG, KEDA, Prometheus Operator) are checked field by field here.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common import catalogue

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")
SERVICES = ("gateway", "extractor", "mapper", "sampler", "consensus")
# Every topic the services use, from the event catalogue (the source the manifests are generated from).
TOPICS = catalogue.topics(with_dlq=False)
# Oldest Kubernetes version the manifests promise to work on, and the newest schema available.
K8S_VERSIONS = ("1.29.0", "1.37.0")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
CUSTOM_KINDS = {
    "Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Cluster", "ScaledObject", "TriggerAuthentication",
    "PrometheusRule", "PodMonitor",
}

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed; cannot run `kubectl kustomize`")

Doc = dict[str, Any]


@functools.cache
def render(path: str) -> tuple[Doc, ...]:
    """Build a kustomization directory with `kubectl kustomize` and return its documents."""
    out = subprocess.run(
        [KUBECTL, "kustomize", path], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def overlay(name: str) -> tuple[Doc, ...]:
    return render(str(K8S / "overlays" / name))


def find(docs: tuple[Doc, ...], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(doc: Doc) -> Doc:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def containers(doc: Doc) -> list[Doc]:
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


def config_data(docs: tuple[Doc, ...], prefix: str) -> dict[str, str]:
    """Data of the (hash-suffixed) ConfigMap generated under `prefix`."""
    found = [d for d in find(docs, "ConfigMap") if re.fullmatch(rf"{prefix}(-[a-z0-9]+)?", d["metadata"]["name"])]
    assert len(found) == 1, f"expected one ConfigMap named {prefix}*, found {len(found)}"
    return found[0]["data"]


def is_builtin(doc: Doc) -> bool:
    group = doc["apiVersion"].rpartition("/")[0]
    return group == "" or "." not in group or group.endswith(".k8s.io")


def workloads(docs: tuple[Doc, ...]) -> list[Doc]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


pytestmark = needs_kubectl


# --- builds and schemas ------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_overlay_builds_with_kubectl_kustomize(name: str) -> None:
    docs = overlay(name)
    assert find(docs, "Namespace"), "an overlay creates its namespace"
    namespaced = [d for d in docs if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {find(docs, "Namespace")[0]["metadata"]["name"]}


@pytest.mark.parametrize("name", OVERLAYS)
def test_built_in_kinds_validate_strictly_against_kubernetes_schemas(name: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in filter(is_builtin, overlay(name)):
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:  # pragma: no cover - failure path
                pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} invalid for {version}: {err.message}")


@pytest.mark.parametrize("name", OVERLAYS)
def test_only_known_custom_resources_are_rendered(name: str) -> None:
    unknown = {d["kind"] for d in overlay(name) if not is_builtin(d)} - CUSTOM_KINDS
    assert not unknown, f"add field checks for new custom resource kinds: {unknown}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_no_secret_values_are_committed(name: str) -> None:
    assert not find(overlay(name), "Secret")
    for path in DEPLOY.rglob("*.y*ml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert not (isinstance(doc, dict) and doc.get("kind") == "Secret"), f"{path} commits a Secret"


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_referenced_secret_is_documented_in_the_readme(name: str) -> None:
    readme = (DEPLOY / "README.md").read_text()
    referenced: set[str] = set()
    for doc in workloads(overlay(name)):
        for c in containers(doc):
            referenced |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", [])
                           if "secretKeyRef" in e.get("valueFrom", {})}
            referenced |= {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
    for cluster in find(overlay(name), "Cluster"):
        referenced |= {r["passwordSecret"]["name"] for r in cluster["spec"]["managed"]["roles"]}
    for secret in referenced:
        documented = (secret in readme
                      or re.sub(r"-(gateway|extractor|mapper|sampler|consensus)$", "-<service>", secret) in readme)
        assert documented, f"Secret {secret} is referenced but not documented in deploy/README.md"


# --- images ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_image_is_pinned_to_a_tag_other_than_latest(name: str) -> None:
    for doc in workloads(overlay(name)):
        for c in containers(doc):
            image = c["image"]
            repo, _, tag = image.rpartition(":")
            assert repo and "/" not in tag, f"{doc['metadata']['name']}: image {image} has no tag"
            assert tag != "latest", f"{doc['metadata']['name']}: image {image} uses latest"
    for cluster in find(overlay(name), "Cluster"):
        assert not cluster["spec"]["imageName"].endswith(":latest")


def test_service_images_are_overridable_with_kustomize_images(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(K8S / "overlays" / "prod", tmp_path)],
            "images": [{"name": f"ghcr.io/radcurate/{s}", "newName": f"registry.example/{s}", "newTag": "9.9.9"}
                       for s in SERVICES],
        })
    )
    docs = render(str(tmp_path))
    for svc in SERVICES:
        for doc in (one(docs, "Deployment", svc), one(docs, "Job", f"{svc}-migrate")):
            assert containers(doc)[0]["image"] == f"registry.example/{svc}:9.9.9"


# --- hardened pods -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_container_has_probes_and_resource_requests_and_limits(name: str) -> None:
    for doc in workloads(overlay(name)):
        for c in containers(doc):
            where = f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}"
            if doc["kind"] not in {"Job", "CronJob"}:
                assert "livenessProbe" in c and "readinessProbe" in c, f"{where} lacks probes"
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(bound, {})), f"{where} lacks {bound}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_container_runs_hardened(name: str) -> None:
    for doc in workloads(overlay(name)):
        spec = pod_spec(doc)
        assert spec.get("automountServiceAccountToken") is False, doc["metadata"]["name"]
        pod_sc = spec.get("securityContext", {})
        for c in containers(doc):
            where = f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}"
            sc = {**pod_sc, **c.get("securityContext", {})}
            assert sc.get("runAsNonRoot") is True, where
            assert sc.get("runAsUser") == 10001, where
            assert c["securityContext"].get("readOnlyRootFilesystem") is True, where
            assert c["securityContext"].get("allowPrivilegeEscalation") is False, where
            assert c["securityContext"].get("capabilities", {}).get("drop") == ["ALL"], where
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where} has no writable /tmp"
            tmp = next(v for v in spec["volumes"] if v["name"] == mounts["/tmp"])
            assert "emptyDir" in tmp, f"{where}: /tmp is not an emptyDir"


@pytest.mark.parametrize("name", OVERLAYS)
def test_service_accounts_do_not_mount_api_tokens(name: str) -> None:
    for sa in find(overlay(name), "ServiceAccount"):
        assert sa.get("automountServiceAccountToken") is False


# --- per-service wiring ------------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
@pytest.mark.parametrize("svc", SERVICES)
def test_each_service_has_its_deployment_service_account_pdb_and_migration_job(name: str, svc: str) -> None:
    docs = overlay(name)
    deployment = one(docs, "Deployment", svc)
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert one(docs, "Service", svc)["spec"]["selector"] == labels
    assert one(docs, "PodDisruptionBudget", svc)["spec"]["selector"]["matchLabels"] == labels
    assert one(docs, "ServiceAccount", svc)
    assert pod_spec(deployment)["serviceAccountName"] == svc

    (app,) = pod_spec(deployment)["containers"]
    assert app["command"] == ["python", "-m", f"services.{svc}"]
    assert app["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert app[probe]["httpGet"] == {"path": "/healthz", "port": "http"}

    job = one(docs, "Job", f"{svc}-migrate")
    (migrate,) = pod_spec(job)["containers"]
    assert migrate["command"] == ["radcurate", "migrate", svc]
    assert migrate["image"] == app["image"]
    # Migration pods must never be selected by the Service.
    assert not set(labels.items()) <= set(pod_spec_labels(job).items())


def pod_spec_labels(doc: Doc) -> dict[str, str]:
    return doc["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("name", OVERLAYS)
@pytest.mark.parametrize("svc", SERVICES)
def test_each_service_reads_prefixed_settings_and_its_own_secret(name: str, svc: str) -> None:
    docs = overlay(name)
    (app,) = pod_spec(one(docs, "Deployment", svc))["containers"]
    prefix = f"RADCURATE_{svc.upper()}_"
    assert {e["prefix"] for e in app["envFrom"]} == {prefix}
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in app["env"]
                  if "secretKeyRef" in e.get("valueFrom", {})}
    for key in ("DATABASE_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
        assert secret_env[prefix + key] == {"name": f"radcurate-{svc}", "key": key}
    assert all(name.startswith(prefix) for name in secret_env)
    if svc == "gateway":
        assert secret_env[prefix + "ADMIN_TOKEN"]["name"] == "radcurate-gateway"
    settings = {**config_data(docs, "radcurate-platform"), **config_data(docs, f"{svc}-config")}
    assert settings["HTTP_PORT"] == "8080"
    assert {"KAFKA_BOOTSTRAP", "S3_ENDPOINT", "S3_SECURE", "LOG_LEVEL"} <= set(settings)
    assert settings["S3_SECURE"] in {"true", "false"}
    assert (settings["KAFKA_SECURITY_PROTOCOL"], settings["KAFKA_SASL_MECHANISM"]) == ("SASL_SSL", "SCRAM-SHA-512")


@pytest.mark.parametrize("name", OVERLAYS)
@pytest.mark.parametrize("svc", SERVICES)
def test_the_rendered_environment_makes_settings_with_a_scram_connection(name: str, svc: str) -> None:
    """What the Deployment gives the process (its ConfigMaps and Secret keys, values made up
    for the Secrets) loads into the service's settings, and the Kafka clients authenticate."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsConfigDict

    from services.common.kafka import KafkaConnection
    from services.common.settings import ServiceSettings

    docs = overlay(name)
    (app,) = pod_spec(one(docs, "Deployment", svc))["containers"]
    prefix = f"RADCURATE_{svc.upper()}_"
    env = {prefix + k: v for k, v in {**config_data(docs, "radcurate-platform"),
                                      **config_data(docs, f"{svc}-config")}.items()}
    secrets = {e["name"]: f"made-up-{e['valueFrom']['secretKeyRef']['key'].lower()}" for e in app["env"]
               if "secretKeyRef" in e.get("valueFrom", {})}

    class Settings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix=prefix, extra="ignore")

    connection = KafkaConnection.from_settings(Settings(**_fields(prefix, {**env, **secrets})))
    assert connection.security_protocol == "SASL_SSL" and connection.sasl_mechanism == "SCRAM-SHA-512"
    assert connection.username == "made-up-kafka_sasl_username"
    assert connection.ssl_cafile == (None if name == "prod" else "/etc/radcurate/kafka-ca/ca.crt")
    without_password = {k: v for k, v in secrets.items() if not k.endswith("KAFKA_SASL_PASSWORD")}
    with pytest.raises(ValidationError, match="kafka_sasl_password"):
        Settings(**_fields(prefix, {**env, **without_password}))


def _fields(prefix: str, env: dict[str, str]) -> dict[str, str]:
    """Environment variables as settings fields (what pydantic-settings would read)."""
    return {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}


# --- dev ---------------------------------------------------------------------------------------


def test_dev_runs_one_replica_each_without_gpu_or_llm() -> None:
    docs = overlay("dev")
    for doc in find(docs, "Deployment") + find(docs, "StatefulSet"):
        assert doc["spec"]["replicas"] == 1, doc["metadata"]["name"]
    assert not find(docs, "Deployment", "vllm")
    assert config_data(docs, "extractor-config")["BACKEND"] == "rules"
    assert config_data(docs, "mapper-config")["BACKEND"] == "lexicon"
    for doc in workloads(docs):
        for c in containers(doc):
            assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
            assert not any(e["name"].endswith("LLM_API_KEY") for e in c.get("env", []))


def test_dev_backs_the_services_with_in_cluster_kafka_postgres_and_minio() -> None:
    docs = overlay("dev")
    platform = config_data(docs, "radcurate-platform")
    assert platform["KAFKA_BOOTSTRAP"] == f"{one(docs, 'Kafka', 'radcurate')['metadata']['name']}-kafka-bootstrap:9092"
    assert platform["S3_ENDPOINT"] == "minio:9000" and platform["S3_SECURE"] == "false"
    assert one(docs, "Service", "minio") and one(docs, "StatefulSet", "minio")
    assert one(docs, "Cluster", "radcurate-pg")


# --- custom resources --------------------------------------------------------------------------


def test_strimzi_kafka_runs_kraft_with_a_node_pool() -> None:
    docs = overlay("dev")
    kafka = one(docs, "Kafka", "radcurate")
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1beta2"
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert kafka["metadata"]["annotations"]["strimzi.io/node-pools"] == "enabled"
    assert kafka["spec"]["kafka"]["version"] and kafka["spec"]["kafka"]["listeners"]
    assert {"port", "type", "tls", "name"} <= set(kafka["spec"]["kafka"]["listeners"][0])
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    assert "topicOperator" in kafka["spec"]["entityOperator"]
    (pool,) = find(docs, "KafkaNodePool")
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == "radcurate"
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert pool["spec"]["replicas"] >= 1 and pool["spec"]["storage"]["type"]


def test_strimzi_listeners_all_authenticate_with_scram_over_tls() -> None:
    kafka = one(overlay("dev"), "Kafka", "radcurate")["spec"]
    for listener in kafka["kafka"]["listeners"]:
        assert listener["tls"] is True, listener["name"]
        assert listener["authentication"] == {"type": "scram-sha-512"}, listener["name"]
    assert kafka["kafka"]["authorization"]["type"] == "simple"
    assert "userOperator" in kafka["entityOperator"]


@pytest.mark.parametrize("svc", SERVICES)
def test_strimzi_has_a_scram_user_per_service_with_its_secrets_password_and_own_group(svc: str) -> None:
    docs = overlay("dev")
    user = one(docs, "KafkaUser", f"radcurate-{svc}-kafka")
    assert user["metadata"]["labels"]["strimzi.io/cluster"] == "radcurate"
    auth = user["spec"]["authentication"]
    assert auth["type"] == "scram-sha-512"
    assert auth["password"]["valueFrom"]["secretKeyRef"] == {"name": f"radcurate-{svc}", "key": "KAFKA_SASL_PASSWORD"}
    groups = [a["resource"]["name"] for a in user["spec"]["authorization"]["acls"] if a["resource"]["type"] == "group"]
    assert groups == [f"radcurate-{svc}"], "a service may join only its own consumer group"
    operations = {op for a in user["spec"]["authorization"]["acls"] for op in a["operations"]}
    assert not operations & {"Create", "Delete", "Alter", "AlterConfigs", "All"}, "topics are KafkaTopic resources"


@pytest.mark.parametrize("svc", SERVICES)
def test_dev_services_verify_the_broker_with_the_strimzi_cluster_ca(svc: str) -> None:
    docs = overlay("dev")
    spec = pod_spec(one(docs, "Deployment", svc))
    cafile = Path(config_data(docs, "radcurate-platform")["KAFKA_SSL_CAFILE"])
    (volume,) = [v for v in spec["volumes"] if v["name"] == "kafka-ca"]
    assert volume["secret"]["secretName"] == "radcurate-cluster-ca-cert"
    assert {"key": "ca.crt", "path": cafile.name} in volume["secret"]["items"]
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "kafka-ca"]
    assert mount["mountPath"] == str(cafile.parent) and mount["readOnly"] is True


def test_strimzi_declares_every_topic_and_its_dead_letter_topic() -> None:
    topics = {t["metadata"]["name"]: t for t in find(overlay("dev"), "KafkaTopic")}
    assert set(topics) == set(TOPICS) | {f"{t}.dlq" for t in TOPICS}
    for name, topic in topics.items():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "radcurate"
        spec = topic["spec"]
        assert spec["topicName"] == name
        assert spec["partitions"] >= 1 and spec["replicas"] >= 1
        assert int(spec["config"]["retention.ms"]) > 0
    for t in TOPICS:
        assert topics[f"{t}.dlq"]["spec"]["config"]["retention.ms"] >= topics[t]["spec"]["config"]["retention.ms"]


def test_cloudnative_pg_creates_one_role_and_schema_per_service() -> None:
    docs = overlay("dev")
    cluster = one(docs, "Cluster", "radcurate-pg")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert spec["instances"] >= 1 and spec["storage"]["size"]
    assert spec["enableSuperuserAccess"] is False
    refs = spec["bootstrap"]["initdb"]["postInitApplicationSQLRefs"]["configMapRefs"]
    (ref,) = refs
    sql = one(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
    roles = {r["name"]: r for r in spec["managed"]["roles"]}
    assert set(roles) == set(SERVICES)
    for svc in SERVICES:
        assert roles[svc]["passwordSecret"]["name"] == f"radcurate-pg-{svc}"
        assert roles[svc]["login"] is True and roles[svc]["ensure"] == "present"
        assert f"CREATE ROLE {svc} LOGIN;" in sql
        assert f"CREATE SCHEMA {svc} AUTHORIZATION {svc};" in sql
    statements = [line for line in sql.splitlines() if not line.startswith("--")]
    assert not any("PASSWORD" in line.upper() for line in statements), "passwords come from Secrets"


def test_minio_runs_with_persistent_storage_and_creates_the_buckets() -> None:
    docs = overlay("dev")
    minio = one(docs, "StatefulSet", "minio")
    assert minio["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    job = one(docs, "Job", "minio-buckets")
    script = " ".join(containers(job)[0]["args"])
    assert "PUBLIC_BUCKET" in script and "HOLDOUT_BUCKET" in script


# --- prod --------------------------------------------------------------------------------------


def test_prod_runs_at_least_two_gateways_behind_an_hpa() -> None:
    docs = overlay("prod")
    hpa = one(docs, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gateway"
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in one(docs, "Deployment", "gateway")["spec"], "the HPA owns gateway replicas"


def test_prod_uses_external_endpoints_not_in_cluster_backing_services() -> None:
    docs = overlay("prod")
    for kind in ("Kafka", "KafkaTopic", "Cluster", "StatefulSet"):
        assert not find(docs, kind), f"prod should not run in-cluster {kind}"
    platform = config_data(docs, "radcurate-platform")
    assert platform["KAFKA_BOOTSTRAP"] != "radcurate-kafka-bootstrap:9092"
    assert platform["S3_ENDPOINT"] != "minio:9000"


def test_prod_serves_phi4_reasoning_on_one_gpu_for_the_mapper() -> None:
    docs = overlay("prod")
    vllm = one(docs, "Deployment", "vllm")
    (c,) = pod_spec(vllm)["containers"]
    assert c["image"].startswith("vllm/vllm-openai:v")
    args = c["args"]
    assert args[0] == "microsoft/Phi-4-reasoning"
    assert "--reasoning-parser=deepseek_r1" in args
    assert "--max-model-len=32768" in args
    served = next(a.split("=", 1)[1] for a in args if a.startswith("--served-model-name="))
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 1200
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HF_HOME"].startswith("/models")
    cache = next(v for v in pod_spec(vllm)["volumes"] if v["name"] == "model-cache")
    assert one(docs, "PersistentVolumeClaim", cache["persistentVolumeClaim"]["claimName"])
    assert pod_spec(vllm)["nodeSelector"] and pod_spec(vllm)["tolerations"]
    service = one(docs, "Service", "vllm")
    assert service["spec"]["ports"][0]["port"] == 8000

    mapper = config_data(docs, "mapper-config")
    assert mapper["BACKEND"] == "llm"
    assert mapper["LLM_BASE_URL"] == "http://vllm:8000/v1"
    assert mapper["LLM_MODEL"] == served


def test_prod_extractor_calls_the_openai_api_with_a_key_from_a_secret() -> None:
    docs = overlay("prod")
    extractor = config_data(docs, "extractor-config")
    assert extractor["BACKEND"] == "llm"
    assert extractor["LLM_BASE_URL"] == "https://api.openai.com/v1"
    assert extractor["LLM_MODEL"] == "gpt-4o"
    (app,) = pod_spec(one(docs, "Deployment", "extractor"))["containers"]
    key = next(e for e in app["env"] if e["name"] == "RADCURATE_EXTRACTOR_LLM_API_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": "radcurate-extractor", "key": "LLM_API_KEY"}


@pytest.mark.parametrize(("svc", "topic"), [("extractor", "report-ingested"), ("mapper", "findings-extracted")])
def test_prod_keda_scales_on_consumer_group_lag(svc: str, topic: str) -> None:
    docs = overlay("prod")
    scaled = one(docs, "ScaledObject", svc)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == svc
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= 6
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == f"radcurate-{svc}"
    assert meta["topic"] == topic
    assert int(meta["lagThreshold"]) > 0
    assert meta["bootstrapServers"] == config_data(docs, "radcurate-platform")["KAFKA_BOOTSTRAP"]
    assert (meta["sasl"], meta["tls"]) == ("scram_sha512", "enable"), "the scaler authenticates as the service does"
    auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]} == {
        "username": (f"radcurate-{svc}", "KAFKA_SASL_USERNAME"),
        "password": (f"radcurate-{svc}", "KAFKA_SASL_PASSWORD"),
    }
    assert "replicas" not in one(docs, "Deployment", svc)["spec"], "KEDA owns the replicas"


def test_prod_monitoring_scrapes_every_service_and_ships_the_alerts() -> None:
    docs = overlay("prod")
    (monitor,) = find(docs, "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0] == {"port": "http", "path": "/metrics", "interval": "30s"}
    expressions = {e["key"]: set(e["values"]) for e in monitor["spec"]["selector"]["matchExpressions"]}
    assert expressions["app.kubernetes.io/component"] >= {"service", "llm-server"}
    (rule,) = find(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert all(r["expr"] and r["alert"] for g in rule["spec"]["groups"] for r in g["rules"])
    assert one(docs, "ConfigMap", "radcurate-grafana-dashboard")["metadata"]["labels"]["grafana_dashboard"] == "1"


# --- network policies --------------------------------------------------------------------------


def policies_for(docs: tuple[Doc, ...], labels: dict[str, str], direction: str) -> list[Doc]:
    """NetworkPolicies of the given direction whose podSelector selects a pod with `labels`."""

    def selects(selector: Doc) -> bool:
        if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
            return False
        for expr in selector.get("matchExpressions", []):
            present = expr["key"] in labels
            if expr["operator"] == "In" and not (present and labels[expr["key"]] in expr["values"]):
                return False
            if expr["operator"] == "NotIn" and present and labels[expr["key"]] in expr["values"]:
                return False
        return True

    return [p for p in find(docs, "NetworkPolicy")
            if direction in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"])]


def allowed_ports(policies: list[Doc], direction: str) -> set[int]:
    rules = [r for p in policies for r in p["spec"].get(direction.lower(), [])]
    return {port["port"] for r in rules for port in r.get("ports", [])}


def test_prod_denies_all_traffic_by_default() -> None:
    deny = one(overlay("prod"), "NetworkPolicy", "default-deny-all")
    assert deny["spec"]["podSelector"] == {}
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]


def test_prod_admits_traffic_from_outside_only_to_the_gateway() -> None:
    docs = overlay("prod")
    for policy in find(docs, "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if policy["metadata"]["name"] == "gateway-ingress":
                continue
            assert peers, f"{policy['metadata']['name']} admits ingress from anywhere"
            for peer in peers:
                ns = peer.get("namespaceSelector")
                monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
                assert ns is None or ns == monitoring, policy["metadata"]["name"]
                assert "ipBlock" not in peer


@pytest.mark.parametrize("svc", SERVICES)
def test_prod_lets_each_service_reach_only_what_it_uses(svc: str) -> None:
    docs = overlay("prod")
    labels = pod_spec_labels(one(docs, "Deployment", svc))
    egress = allowed_ports(policies_for(docs, labels, "Egress"), "Egress")
    assert {53, 9092, 5432, 9000} <= egress
    assert (8000 in egress) == (svc == "mapper"), "only the mapper talks to vLLM"
    assert (443 in egress) == (svc == "extractor"), "only the extractor calls the OpenAI API"
    ingress = allowed_ports(policies_for(docs, labels, "Ingress"), "Ingress")
    assert ingress == {8080, 8000}, "metrics (and the gateway's API) on the http port only"


def test_prod_lets_migrations_reach_only_postgres_and_dns() -> None:
    docs = overlay("prod")
    labels = pod_spec_labels(one(docs, "Job", "consensus-migrate"))
    assert allowed_ports(policies_for(docs, labels, "Egress"), "Egress") == {53, 5432}
    assert allowed_ports(policies_for(docs, labels, "Ingress"), "Ingress") == set()
