"""The Helm chart, rendered by a real helm and checked offline: what an operator relies on.

Every values file in helm/streamstop/ci/ must lint (`--strict`) and render objects that
pass the Kubernetes schemas of two versions; the remaining tests assert behaviour: config
rollouts, autoscaling exclusivity, where secrets live, probes, hardening, the daemon
accepting the rendered config, and alerts and dashboard using metrics the daemon exposes.
"""

from __future__ import annotations

import base64
import json
import re
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_validate import (
    CHART,
    CRD_ALLOWLIST,
    KUBE_VERSIONS,
    REPO,
    Manifest,
    RenderError,
    alert_rules,
    build_helm,
    find,
    lint,
    one,
    render,
    schema_problems,
)
from markdown import anchors
from tlscerts import TestCa

from streamstop.config import Settings, load_settings

CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
DEFAULT = CHART / "ci" / "default-values.yaml"
KEDA = CHART / "ci" / "keda-values.yaml"
HPA = CHART / "ci" / "hpa-values.yaml"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
INLINE_TOKEN = "inline-T0ken-for-chart-tests"
# Secret keys the chart owns: the daemon reads them from mounted files, never from values.
SECRET_KEYS = {
    "api": {"token", "token_file"},
    "kafka": {
        "sasl_password",
        "sasl_password_file",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_key_password",
        "ssl_key_password_file",
        "oauth_client_secret",
        "oauth_client_secret_file",
    },
}
MTLS = CHART / "ci" / "mtls-values.yaml"
OAUTH = CHART / "ci" / "oauth-values.yaml"
# Files the pod mounts, replaced by stand-ins when the daemon loads the rendered config.
CA_FILE_KEYS = (("api", "ca_file"), ("kafka", "ssl_cafile"))


@pytest.fixture(scope="session")
def helm() -> Path:
    """The pinned helm binary; building it is part of the test, never a reason to skip."""
    return build_helm()


def _container(objects: list[Manifest]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = one(objects, "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert len(containers) == 1
    return containers[0]


def _pod_spec(objects: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def _toml(objects: list[Manifest]) -> str:
    texts: list[str] = [
        obj["data"]["streamstop.toml"]
        for obj in find(objects, "ConfigMap")
        if "streamstop.toml" in obj["data"]
    ]
    (text,) = texts
    return text


def _checksum(objects: list[Manifest]) -> str:
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    checksum: str = annotations["checksum/config"]
    return checksum


def _refuses(helm: Path, set_json: dict[str, Any], values: tuple[Path, ...] = (DEFAULT,)) -> str:
    with pytest.raises(RenderError) as refused:
        render(helm, values, set_json)
    return str(refused.value)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", CI_VALUES, ids=lambda path: path.name)
def test_chart_lints_strictly(helm: Path, values: Path, kube_version: str) -> None:
    done = lint(helm, [values], kube_version)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", CI_VALUES, ids=lambda path: path.name)
def test_every_rendered_object_matches_its_kubernetes_schema(
    helm: Path, values: Path, kube_version: str
) -> None:
    objects = render(helm, [values], kube_version=kube_version)
    assert schema_problems(objects, kube_version) == []


def test_validation_reports_unknown_fields_and_kinds_without_schema(helm: Path) -> None:
    deployment = one(render(helm, [DEFAULT]), "Deployment")
    deployment["spec"]["replicass"] = 2
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    problems = schema_problems([deployment, unknown], KUBE_VERSIONS[0])
    assert len(problems) == 2
    assert "replicass" in problems[0]
    assert "no schema" in problems[1]


def test_all_on_renders_every_allowlisted_custom_resource(helm: Path) -> None:
    objects = render(helm, [ALL_ON])
    custom = {(obj["apiVersion"], obj["kind"]) for obj in objects if "/" in obj["apiVersion"]}
    assert {pair for pair in custom if pair in CRD_ALLOWLIST} == CRD_ALLOWLIST


def test_config_checksum_follows_config_values_only(helm: Path) -> None:
    base = _checksum(render(helm, [DEFAULT]))
    changed_config = _checksum(render(helm, [DEFAULT], {"config.batch.max_wait_ms": 750}))
    changed_pod = _checksum(render(helm, [DEFAULT], {"podLabels": {"team": "messaging"}}))
    assert changed_config != base
    assert changed_pod == base


def test_keda_owns_replicas_with_a_lag_trigger_matching_the_daemon(helm: Path) -> None:
    values = yaml.safe_load(KEDA.read_text())
    kafka = values["config"]["kafka"]
    objects = render(helm, [KEDA])
    assert find(objects, "HorizontalPodAutoscaler") == []
    assert "replicas" not in one(objects, "Deployment")["spec"]
    scaled = one(objects, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"]
    assert scaled["minReplicaCount"] == values["keda"]["minReplicaCount"] >= 1
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"] == {
        "bootstrapServers": kafka["bootstrap_servers"],
        "consumerGroup": "streamstop",
        "topic": "message-cancel-requests",
        "lagThreshold": str(values["keda"]["lagThreshold"]),
        "offsetResetPolicy": kafka["auto_offset_reset"],
        "sasl": "scram_sha512",
        "tls": "enable",
    }
    auth = one(objects, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "streamstop-kafka", "key": "password"}
    ]
    (username,) = auth["spec"]["env"]
    env = {item["name"]: item.get("value") for item in _container(objects)["env"]}
    assert env[username["name"]] == kafka["sasl_username"]


def test_keda_without_sasl_needs_no_trigger_authentication(helm: Path) -> None:
    objects = render(helm, [DEFAULT], {"keda.enabled": True})
    assert find(objects, "TriggerAuthentication") == []
    assert "authenticationRef" not in one(objects, "ScaledObject")["spec"]["triggers"][0]


def test_hpa_owns_replicas(helm: Path) -> None:
    objects = render(helm, [HPA])
    assert one(objects, "HorizontalPodAutoscaler")["spec"]["maxReplicas"] == 6
    assert "replicas" not in one(objects, "Deployment")["spec"]
    assert find(objects, "ScaledObject") == []


def test_fixed_replicas_without_autoscaling(helm: Path) -> None:
    objects = render(helm, [DEFAULT], {"replicaCount": 3})
    assert one(objects, "Deployment")["spec"]["replicas"] == 3


def test_hpa_and_keda_together_refuse_to_render(helm: Path) -> None:
    refusal = _refuses(helm, {"autoscaling.enabled": True, "keda.enabled": True})
    assert "mutually exclusive" in refusal


def test_existing_secret_is_mounted_and_no_secret_is_made(helm: Path) -> None:
    objects = render(helm, [DEFAULT])
    assert find(objects, "Secret") == []
    volumes = {volume["name"]: volume for volume in _pod_spec(objects)["volumes"]}
    (source,) = volumes["secrets"]["projected"]["sources"]
    assert source["secret"] == {
        "name": "streamstop-api",
        "items": [{"key": "token", "path": "api-token"}],
    }


def test_inline_token_becomes_a_secret_mounted_where_token_file_points(helm: Path) -> None:
    objects = render(helm, (), {"apiToken.value": INLINE_TOKEN})
    secret = one(objects, "Secret")
    assert base64.b64decode(secret["data"]["api-token"]).decode() == INLINE_TOKEN
    token_file = Path(tomllib.loads(_toml(objects))["api"]["token_file"])
    mounts = {mount["name"]: mount["mountPath"] for mount in _container(objects)["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in _pod_spec(objects)["volumes"]}
    (source,) = volumes["secrets"]["projected"]["sources"]
    assert source["secret"]["name"] == secret["metadata"]["name"]
    assert Path(mounts["secrets"]) / source["secret"]["items"][0]["path"] == token_file
    assert all(INLINE_TOKEN not in json.dumps(obj) for obj in objects if obj is not secret)


@pytest.mark.parametrize(
    ("set_json", "reason"),
    [
        ({}, "token is required"),
        ({"apiToken.value": INLINE_TOKEN, "apiToken.existingSecret": "s"}, "not both"),
    ],
    ids=["no-token", "both"],
)
def test_token_source_must_be_exactly_one(
    helm: Path, set_json: dict[str, Any], reason: str
) -> None:
    assert reason in _refuses(helm, set_json, values=())


def test_sasl_password_is_mounted_and_named_by_its_file_key(helm: Path) -> None:
    objects = render(helm, [HPA])
    secret = one(objects, "Secret")
    assert set(secret["data"]) == {"api-token", "sasl-password"}
    config = tomllib.loads(_toml(objects))
    assert config["kafka"]["sasl_password_file"].endswith("/sasl-password")
    assert "sasl_password" not in config["kafka"]


def test_sasl_without_a_password_refuses_to_render(helm: Path) -> None:
    refusal = _refuses(
        helm,
        {"config.kafka.security_protocol": "SASL_SSL", "config.kafka.sasl_username": "u"},
    )
    assert "kafkaSasl" in refusal


def _mounted_files(objects: list[Manifest]) -> dict[Path, tuple[str, str]]:
    """Where each Secret key lands in the pod: path -> (Secret name, key)."""
    mounts = {mount["name"]: mount["mountPath"] for mount in _container(objects)["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in _pod_spec(objects)["volumes"]}
    files: dict[Path, tuple[str, str]] = {}
    for source in volumes["secrets"]["projected"]["sources"]:
        for item in source["secret"]["items"]:
            path = Path(mounts["secrets"]) / item["path"]
            files[path] = (source["secret"]["name"], item["key"])
    return files


def _trigger_auth(objects: list[Manifest]) -> dict[str, tuple[str, str]]:
    """KEDA parameter -> (Secret, key) or ("env", container variable's value)."""
    auth = one(objects, "TriggerAuthentication")["spec"]
    env = {item["name"]: item.get("value") for item in _container(objects)["env"]}
    given = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["secretTargetRef"]}
    for ref in auth.get("env", []):
        assert ref["containerName"] == _container(objects)["name"]
        given[ref["parameter"]] = ("env", env[ref["name"]])
    return given


def test_mutual_tls_mounts_the_cluster_ca_and_user_certificate_for_pods_and_keda(
    helm: Path,
) -> None:
    values = yaml.safe_load(MTLS.read_text())
    objects = render(helm, [MTLS])
    kafka = tomllib.loads(_toml(objects))["kafka"]
    files = _mounted_files(objects)
    ca, client = values["kafkaTls"]["caSecret"], values["kafkaTls"]["clientSecret"]

    assert files[Path(kafka["ssl_cafile"])] == (ca, "ca.crt")
    assert files[Path(kafka["ssl_certfile"])] == (client, "user.crt")
    assert files[Path(kafka["ssl_keyfile"])] == (client, "user.key")
    assert "ssl_key_password_file" not in kafka
    (trigger,) = one(objects, "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["tls"] == "enable"
    assert "sasl" not in trigger["metadata"]
    assert _trigger_auth(objects) == {
        "ca": (ca, "ca.crt"),
        "cert": (client, "user.crt"),
        "key": (client, "user.key"),
    }
    assert find(objects, "Secret") == []


def test_oauthbearer_mounts_the_client_secret_and_keda_asks_the_same_endpoint(
    helm: Path, tmp_path: Path, tls_dir: Path
) -> None:
    values = yaml.safe_load(OAUTH.read_text())
    config = values["config"]["kafka"]
    objects = render(helm, [OAUTH])
    kafka = tomllib.loads(_toml(objects))["kafka"]
    files = _mounted_files(objects)
    tls = values["kafkaTls"]["clientSecret"]

    assert files[Path(kafka["oauth_client_secret_file"])] == ("streamstop-oauth", "client-secret")
    assert files[Path(kafka["ssl_key_password_file"])] == (tls, "key-password")
    assert "sasl_password_file" not in kafka
    (trigger,) = one(objects, "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["sasl"] == "oauthbearer"
    assert _trigger_auth(objects) == {
        "password": ("streamstop-oauth", "client-secret"),
        "ca": ("kafka-ca", "ca.crt"),
        "cert": (tls, "tls.crt"),
        "key": (tls, "tls.key"),
        "keyPassword": (tls, "key-password"),
        "username": ("env", config["oauth_client_id"]),
        "oauthTokenEndpointUri": ("env", config["oauth_token_url"]),
        "scopes": ("env", "kafka,profile"),
    }
    # The variables KEDA reads must not change what the daemon reads.
    settings = _daemon_settings(objects, tmp_path, tls_dir)
    container_env = {item["name"]: item["value"] for item in _container(objects)["env"]}
    overridden = load_settings(
        str(tmp_path / "streamstop.toml"),
        {**container_env, **_stand_in_env(settings)},
    )
    assert overridden.kafka == settings.kafka


def _stand_in_env(settings: Settings) -> dict[str, str]:
    kafka = settings.kafka
    files = {
        "api__token_file": settings.api.token_file,
        "kafka__oauth_client_secret_file": kafka.oauth_client_secret_file,
        "kafka__ssl_cafile": kafka.ssl_cafile,
        "kafka__ssl_certfile": kafka.ssl_certfile,
        "kafka__ssl_keyfile": kafka.ssl_keyfile,
        "kafka__ssl_key_password_file": kafka.ssl_key_password_file,
    }
    return {f"STREAMSTOP_{key.upper()}": str(value) for key, value in files.items() if value}


@pytest.mark.parametrize(
    ("set_json", "reason"),
    [
        (
            {
                "config.kafka.security_protocol": "SASL_SSL",
                "config.kafka.sasl_mechanism": "OAUTHBEARER",
            },
            "needs kafkaOAuth.existingSecret",
        ),
        (
            {
                "config.kafka.security_protocol": "SASL_SSL",
                "config.kafka.sasl_mechanism": "OAUTHBEARER",
                "kafkaOAuth.existingSecret": "oauth",
            },
            "needs config.kafka.oauth_token_url and config.kafka.oauth_client_id",
        ),
        ({"kafkaTls.clientSecret": "user"}, "uses no TLS: use SSL or SASL_SSL"),
        (
            {
                "config.kafka.security_protocol": "SSL",
                "config.kafka.ssl_cafile": "/etc/ca.crt",
                "kafkaTls.caSecret": "ca",
            },
            "set kafkaTls.caSecret or config.kafka.ssl_cafile, not both",
        ),
    ],
    ids=["oauth-without-secret", "oauth-without-endpoint", "tls-files-without-tls", "two-cas"],
)
def test_kafka_security_values_that_cannot_work_refuse_to_render(
    helm: Path, set_json: dict[str, Any], reason: str
) -> None:
    assert reason in _refuses(helm, set_json)


def _secured_cluster_examples() -> list[tuple[str, dict[str, Any]]]:
    """The values examples of docs/operations.md, "Connecting to a secured cluster", each
    with the heading it stands under."""
    docs = (REPO / "docs" / "operations.md").read_text()
    section = docs.split("## Connecting to a secured cluster\n", 1)[1].split("\n## ", 1)[0]
    examples: list[tuple[str, dict[str, Any]]] = []
    for part in section.split("\n### ")[1:]:
        heading = part.splitlines()[0]
        for block in re.findall(r"^```yaml\n(.*?)^```$", part, re.MULTILINE | re.DOTALL):
            values = yaml.safe_load(block)
            if "config" in values:
                examples.append((heading, values))
    return examples


@pytest.mark.parametrize("example", _secured_cluster_examples(), ids=lambda example: example[0])
def test_each_secured_cluster_example_in_the_docs_renders_and_loads(
    helm: Path, tmp_path: Path, tls_dir: Path, example: tuple[str, dict[str, Any]]
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(example[1]))

    objects = render(helm, [DEFAULT, values], {"keda.enabled": True})
    settings = _daemon_settings(objects, tmp_path, tls_dir)

    assert settings.kafka.security_protocol == example[1]["config"]["kafka"]["security_protocol"]
    assert one(objects, "TriggerAuthentication")["spec"]["secretTargetRef"]


def test_probes_and_restricted_security_context(helm: Path) -> None:
    objects = render(helm, [DEFAULT])
    container, pod = _container(objects), _pod_spec(objects)
    (port,) = container["ports"]
    assert port["containerPort"] == 9090
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    tmp = next(mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert pod["enableServiceLinks"] is False
    assert container["resources"]["requests"]


def test_config_file_is_mounted_where_streamstop_config_points(helm: Path) -> None:
    objects = render(helm, [DEFAULT])
    container = _container(objects)
    env = {item["name"]: item.get("value") for item in container["env"]}
    config_path = Path(env["STREAMSTOP_CONFIG"])
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == config_path.parent]
    volume = next(v for v in _pod_spec(objects)["volumes"] if v["name"] == mount["name"])
    config_map = one(objects, "ConfigMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_path.name in config_map["data"]


def test_grace_period_outlasts_the_shutdown_drain(helm: Path) -> None:
    objects = render(helm, [DEFAULT])
    shutdown = tomllib.loads(_toml(objects))["lifecycle"]["shutdown_timeout_s"]
    assert _pod_spec(objects)["terminationGracePeriodSeconds"] > shutdown
    refusal = _refuses(helm, {"config.lifecycle.shutdown_timeout_s": 35})
    assert "terminationGracePeriodSeconds" in refusal


def test_metrics_port_follows_http_port_everywhere(helm: Path) -> None:
    objects = render(helm, [ALL_ON])
    (port,) = _container(objects)["ports"]
    assert port["containerPort"] == 9100
    assert one(objects, "Service")["spec"]["ports"][0]["targetPort"] == port["name"]
    assert one(objects, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize(
    "set_json",
    [
        {"keda.minReplicaCount": 0},
        {"config.batch.max_size": 10001},
        {"config.kafka.auto_offset_reset": "middle"},
        {"config.api.token": INLINE_TOKEN},
        {"config.delivery.guarantee": "exactly_twice"},
        {"config.delivery.transactional_id_prefix": "has space"},
        {"config.api.url": "http://api.example/stop"},
        {"config.api.proxy_url": "https://proxy.example:3128"},
        {"kedaa": {"enabled": True}},
    ],
    ids=lambda set_json: next(iter(set_json)),
)
def test_values_schema_rejects_bad_values(helm: Path, set_json: dict[str, Any]) -> None:
    refusal = _refuses(helm, set_json)
    assert "schema" in refusal
    assert INLINE_TOKEN not in refusal


def _daemon_settings(objects: list[Manifest], tmp_path: Path, tls_dir: Path) -> Settings:
    """Load the rendered streamstop.toml as the daemon does, mounted files stood in for.

    The *_file keys point into the pod's secret mount; env overrides point them at stand-ins
    here (the test CA and client certificate for TLS files).
    """
    config = tmp_path / "streamstop.toml"
    config.write_text(_toml(objects))
    token = tmp_path / "api-token"
    token.write_text("t0ken\n")
    env = {"STREAMSTOP_API__TOKEN_FILE": str(token)}
    kafka = tomllib.loads(config.read_text())["kafka"]
    encrypted = "ssl_key_password_file" in kafka
    client = "client-protected" if encrypted else "client"
    stand_ins = {
        "sasl_password_file": _stand_in(tmp_path / "sasl-password", "passw0rd"),
        "oauth_client_secret_file": _stand_in(tmp_path / "oauth", "s3cret"),
        "ssl_cafile": tls_dir / "ca.crt",
        "ssl_certfile": tls_dir / f"{client}.crt",
        "ssl_keyfile": tls_dir / f"{client}.key",
        "ssl_key_password_file": tls_dir / "client-protected.password",
    }
    for key, path in stand_ins.items():
        if kafka.get(key):
            env[f"STREAMSTOP_KAFKA__{key.upper()}"] = str(path)
    # The API's CA bundle is checked when loading: a stand-in for the one the pod mounts.
    if tomllib.loads(config.read_text())["api"].get("ca_file"):
        env["STREAMSTOP_API__CA_FILE"] = str(TestCa(tmp_path, "stand-in").ca_file)
    return load_settings(str(config), env)


def assert_daemon_reads(
    config: dict[str, Any], objects: list[Manifest], settings: Settings
) -> None:
    """Every `config` value of the values file reaches the daemon's settings as written
    (mounted files, stood in for when loading, as rendered)."""
    rendered = tomllib.loads(_toml(objects))
    for section, keys in config.items():
        for key, value in keys.items():
            if (section, key) in CA_FILE_KEYS:
                assert rendered[section][key] == value, f"{section}.{key}"
                continue
            assert getattr(getattr(settings, section), key) == value, f"{section}.{key}"


def _stand_in(path: Path, content: str) -> Path:
    path.write_text(content + "\n")
    return path


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda path: path.name)
def test_daemon_accepts_the_rendered_config(
    helm: Path, values: Path, tmp_path: Path, tls_dir: Path
) -> None:
    objects = render(helm, [values])
    settings = _daemon_settings(objects, tmp_path, tls_dir)
    assert settings.api_token() == "t0ken"
    assert_daemon_reads(yaml.safe_load(values.read_text()).get("config", {}), objects, settings)


def test_config_values_cover_every_daemon_key() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    for section, model in Settings.model_fields.items():
        assert model.annotation is not None
        daemon_keys = set(model.annotation.model_fields) - SECRET_KEYS.get(section, set())
        assert set(values[section]) == daemon_keys, section
    assert set(values) == set(Settings.model_fields)


def _value_paths(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted value paths, descending only where the schema describes properties."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        sub = schema["properties"][key]
        if isinstance(value, dict) and "properties" in sub:
            yield from _value_paths(value, sub, f"{path}.")
        else:
            yield path


def test_readme_lists_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    readme = (CHART / "README.md").read_text()
    missing = [p for p in _value_paths(values, schema) if f"`{p}`" not in readme]
    assert missing == []


def test_every_alert_links_to_its_runbook_section(helm: Path) -> None:
    docs = (REPO / "docs" / "operations.md").read_text()
    headings = anchors(docs)
    rules = alert_rules(render(helm, [ALL_ON]))
    assert {rule["alert"] for rule in rules} == {
        "StreamstopConsumerLagGrowing",
        "StreamstopConfigError",
        "StreamstopFailedResults",
        "StreamstopNoProgress",
        "StreamstopNotReady",
        "StreamstopOffsetReset",
        "StreamstopKafkaUnavailable",
    }
    for rule in rules:
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page.endswith("docs/operations.md")
        assert anchor == rule["alert"].lower()
        assert anchor in headings, f"docs/operations.md has no section for {rule['alert']}"


def test_grafana_dashboard_is_off_by_default_and_labelled_for_the_sidecar(helm: Path) -> None:
    assert all("dashboard" not in obj["metadata"]["name"] for obj in render(helm, [DEFAULT]))
    (dashboard,) = [
        obj for obj in find(render(helm, [ALL_ON]), "ConfigMap") if "streamstop.json" in obj["data"]
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["streamstop.json"])["uid"] == "streamstop"


def _values_in_the_docs() -> list[tuple[str, str]]:
    """(page, YAML) of each values file in docs/: blocks opening `# streamstop-values.yaml`."""
    fenced = re.compile(r"^( *)```yaml\n(\1# streamstop-values\.yaml\n.*?)^\1```", re.M | re.S)
    return [
        (page.name, textwrap.dedent(match[1]))
        for page in sorted((REPO / "docs").glob("*.md"))
        for match in fenced.findall(page.read_text())
    ]


DOCS_VALUES = _values_in_the_docs()


def test_the_cluster_guide_shows_a_values_file() -> None:
    assert "cluster.md" in [page for page, _ in DOCS_VALUES]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize(("page", "text"), DOCS_VALUES, ids=[page for page, _ in DOCS_VALUES])
def test_values_shown_in_the_docs_install_as_written(
    helm: Path, tmp_path: Path, tls_dir: Path, page: str, text: str, kube_version: str
) -> None:
    values = tmp_path / "streamstop-values.yaml"
    values.write_text(text)

    linted = lint(helm, [values], kube_version)
    objects = render(helm, [values], kube_version=kube_version)

    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert schema_problems(objects, kube_version) == []
    image = yaml.safe_load(text).get("image", {})
    if "repository" in image:
        assert _container(objects)["image"] == f"{image['repository']}:{image['tag']}"
    settings = _daemon_settings(objects, tmp_path, tls_dir)
    assert_daemon_reads(yaml.safe_load(text).get("config", {}), objects, settings)
