"""Shared by the deploy tests: where the shipped files are, which metrics they use, and what
docs/METRICS.md and tests/deploy/pending_metrics.txt say about them."""

import glob
import json
import os
import re

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DASHBOARDS = sorted(glob.glob(os.path.join(ROOT, "deploy/grafana/dashboards/*.json")))
RULE_FILES = sorted(glob.glob(os.path.join(ROOT, "deploy/prometheus/rules/*.rules.yml")))
PROMETHEUS_CONFIG = os.path.join(ROOT, "deploy/prometheus/prometheus.yml")
METRIC_NAME = re.compile(r"\bbitloom_[a-z0-9_]*[a-z0-9]\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def dashboard_expressions():
    """(where, PromQL) for every target, template variable and annotation of every dashboard."""
    for path in DASHBOARDS:
        with open(path) as f:
            dashboard = json.load(f)
        name = os.path.basename(path)
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                yield f"{name}: panel '{panel['title']}' {target['refId']}", target["expr"]
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
                yield f"{name}: variable {variable['name']}", query
        for annotation in dashboard.get("annotations", {}).get("list", []):
            if "expr" in annotation:
                yield f"{name}: annotation {annotation['name']}", annotation["expr"]


def rule_expressions():
    for path in RULE_FILES:
        with open(path) as f:
            rules = yaml.safe_load(f)
        for group in rules["groups"]:
            for rule in group["rules"]:
                name = rule.get("record") or rule.get("alert")
                yield f"{os.path.basename(path)}: {name}", rule["expr"]


def documented_metrics():
    """{name: (type, labels)} from the tables of docs/METRICS.md; <prefix> expands to both daemons."""
    metrics = {}
    with open(os.path.join(ROOT, "docs/METRICS.md")) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 3 or not re.fullmatch(r"`[<>a-z0-9_]+`", cells[0]):
                continue
            name, kind, labels = cells[0].strip("`"), cells[1], cells[2]
            for full in ([name.replace("<prefix>", p) for p in ("bitloom_quantd", "bitloom_inferd")]
                         if "<prefix>" in name else [name]):
                metrics[full] = (kind, labels)
    return metrics


def pending_metrics():
    """{name: (type, labels, issue)} from tests/deploy/pending_metrics.txt."""
    pending = {}
    with open(os.path.join(HERE, "pending_metrics.txt")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, kind, labels, issue = line.split()
                pending[name] = (kind, "" if labels == "-" else labels, issue)
    return pending


def metric_names(expression, known):
    """Metric families an expression reads: histogram series map to their family."""
    names = set()
    for name in METRIC_NAME.findall(expression):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in known:
                name = name[: -len(suffix)]
                break
        names.add(name)
    return names
