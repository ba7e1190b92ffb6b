"""Render alerts.yaml (PrometheusRule) from rules.yml, the single source of the alert rules.

Run after editing rules.yml:  python deploy/prometheus/render.py
tests/unit/test_deploy_prometheus.py fails while the two disagree.
"""

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
HEADER = (
    "# Generated from rules.yml (the single source) by render.py; do not edit by hand.\n"
    "# The `release: prometheus` label is what kube-prometheus-stack's ruleSelector matches by default.\n"
)


class _Dumper(yaml.SafeDumper):
    """Keeps multi-line PromQL as readable block scalars."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(rules_text: str) -> str:
    """Return the PrometheusRule manifest whose spec.groups equal the rule file's groups."""
    groups = yaml.safe_load(rules_text)["groups"]
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "radcurate",
            "labels": {"app.kubernetes.io/part-of": "radcurate", "release": "prometheus"},
        },
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, width=100)


if __name__ == "__main__":
    (HERE / "alerts.yaml").write_text(render((HERE / "rules.yml").read_text()))
