"""Render the Helm chart with a real `helm` and check the result offline, without a cluster.

`render` runs `helm template`; `schema_problems` validates every rendered object against the
Kubernetes JSON schemas bundled with PyPI `kubernetes-validate` (strict: unknown fields are
errors). Custom resources have no bundled schema: only the kinds on `CRD_ALLOWLIST` pass,
any other kind without a schema is a problem. `chart_metric_names` lists the metrics the
alert rules and the dashboard query, to compare with what the daemon exposes.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "streamstop"
HELM_SCRIPT = REPO / "scripts" / "helm.sh"
# Two supported Kubernetes minors, both bundled by kubernetes-validate.
KUBE_VERSIONS = ("1.30.0", "1.33.0")
# Custom resources the chart may render; validated by the tests' behaviour checks instead.
CRD_ALLOWLIST = frozenset(
    {
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("keda.sh/v1alpha1", "TriggerAuthentication"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    }
)
_METRIC = re.compile(r"\bstreamstop_[a-z0-9_]+\b")

Manifest = dict[str, Any]


class RenderError(Exception):
    """`helm template` refused the values; the message is helm's stderr."""


def build_helm() -> Path:
    """The pinned helm binary, built by scripts/helm.sh on first use (takes minutes)."""
    done = subprocess.run(
        [str(HELM_SCRIPT)], capture_output=True, text=True, check=False, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/helm.sh failed:\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


def _values_args(values_files: Sequence[Path], set_json: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["--values", str(path)]
    for key, value in set_json.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def _helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, check=False, timeout=120
    )


def lint(
    helm: Path, values_files: Sequence[Path], kube_version: str
) -> subprocess.CompletedProcess[str]:
    """`helm lint --strict` of the chart with these values files."""
    values = _values_args(values_files, {})
    return _helm(helm, "lint", "--strict", "--kube-version", kube_version, str(CHART), *values)


def render(
    helm: Path,
    values_files: Sequence[Path] = (),
    set_json: Mapping[str, Any] | None = None,
    kube_version: str = KUBE_VERSIONS[-1],
) -> list[Manifest]:
    """Every object `helm template` renders, parsed; raises RenderError when helm refuses.

    `set_json` maps value paths to values passed with `--set-json`, so numbers keep their type.
    """
    values = _values_args(values_files, set_json or {})
    release = ["streamstop", str(CHART), "--namespace", "streaming"]
    done = _helm(helm, "template", *release, "--kube-version", kube_version, *values)
    if done.returncode != 0:
        raise RenderError(done.stderr.strip())
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def schema_problems(objects: Iterable[Manifest], kube_version: str) -> list[str]:
    """One line per object that fails its Kubernetes schema (strict) or has none."""
    problems: list[str] = []
    for obj in objects:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        name = f"{kind}/{obj.get('metadata', {}).get('name')}"
        if (api_version, kind) in CRD_ALLOWLIST:
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{name}: no schema for {api_version} {kind} in {kube_version}")
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(part) for part in exc.path)
            problems.append(f"{name}: {path}: {exc.message}")
    return problems


def find(objects: Iterable[Manifest], kind: str) -> list[Manifest]:
    """The rendered objects of one kind."""
    return [obj for obj in objects if obj.get("kind") == kind]


def one(objects: Iterable[Manifest], kind: str) -> Manifest:
    """The single rendered object of a kind; fails when there are none or several."""
    found = find(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def alert_rules(objects: Iterable[Manifest]) -> list[dict[str, Any]]:
    """Every alerting rule of the rendered PrometheusRules."""
    return [
        rule
        for prometheus_rule in find(objects, "PrometheusRule")
        for group in prometheus_rule["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def dashboard_expressions(objects: Iterable[Manifest]) -> list[str]:
    """The PromQL of every dashboard panel target and variable rendered in a ConfigMap."""
    expressions: list[str] = []
    for config_map in find(objects, "ConfigMap"):
        for name, text in config_map.get("data", {}).items():
            if name.endswith(".json"):
                dashboard = json.loads(text)
                expressions += [
                    target["expr"]
                    for panel in dashboard["panels"]
                    for target in panel.get("targets", [])
                ]
                expressions += [
                    variable["definition"]
                    for variable in dashboard["templating"]["list"]
                    if variable["type"] == "query"
                ]
    return expressions


def chart_metric_names(objects: Iterable[Manifest]) -> set[str]:
    """Metric names (as scraped, e.g. `_total`, `_bucket`) the alerts and dashboard query."""
    objects = list(objects)
    expressions = [rule["expr"] for rule in alert_rules(objects)]
    expressions += dashboard_expressions(objects)
    return {name for expr in expressions for name in _METRIC.findall(expr)}
