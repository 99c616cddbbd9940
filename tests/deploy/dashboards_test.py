"""Checks deploy/grafana (dashboard JSON and provisioning files) and that every metric the dashboards
and the Prometheus rules use is a metric the daemons export: listed in docs/METRICS.md (or, until its
issue lands, in tests/deploy/pending_metrics.txt), and present in the /metrics of a live quantd and inferd
when it is one that exists from startup (an unlabeled family; labeled families appear with their first
series, so for those docs/METRICS.md is the reference and the output says so).

Usage: dashboards_test.py QUANTD INFERD   (exits 77 without PyYAML)
"""

import json
import os
import re
import sys
import tempfile
import urllib.request

SKIPPED = 77

try:
    import yaml  # noqa: F401  (deploy_common needs it)
except ImportError:
    print("skipping: PyYAML missing (Debian python3-yaml, installed by scripts/install-deps.sh)")
    sys.exit(SKIPPED)

import deploy_common as common

sys.path.insert(0, os.path.join(common.ROOT, "tests/services"))
from daemons import Daemon  # noqa: E402

failures = []


def fail(message):
    failures.append(message)
    print("FAIL:", message)


def check_dashboards():
    uids = set()
    for path in common.DASHBOARDS:
        name = os.path.basename(path)
        with open(path) as f:
            dashboard = json.load(f)
        if not dashboard.get("uid") or dashboard["uid"] in uids:
            fail(f"{name}: missing or duplicate uid")
        uids.add(dashboard.get("uid"))
        if dashboard.get("id") is not None:
            fail(f"{name}: a provisioned dashboard must not carry a database id")
        variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
        if variables.get("datasource", {}).get("type") != "datasource":
            fail(f"{name}: needs a 'datasource' variable of type datasource")
        ids, titles = set(), []
        for panel in common.panels(dashboard):
            if panel.get("id") in ids:
                fail(f"{name}: duplicate panel id {panel.get('id')}")
            ids.add(panel.get("id"))
            grid = panel.get("gridPos", {})
            if not all(k in grid for k in "hwxy") or grid["x"] + grid["w"] > 24:
                fail(f"{name}: panel '{panel.get('title')}' has a bad gridPos {grid}")
            if panel["type"] == "row":
                continue
            titles.append(panel["title"])
            if panel.get("datasource", {}).get("uid") != "${datasource}":
                fail(f"{name}: panel '{panel['title']}' must use the ${{datasource}} variable")
            if not panel.get("targets") or not all(t.get("expr") for t in panel["targets"]):
                fail(f"{name}: panel '{panel['title']}' has no query")
            for target in panel.get("targets", []):
                used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__range", "__interval"}
                if used - set(variables):
                    fail(f"{name}: panel '{panel['title']}' uses undefined variables {used - set(variables)}")
        print(f"ok   {name}: uid {dashboard['uid']}, {len(titles)} panels: {', '.join(titles)}")
    if uids != {"bitloom-inferd", "bitloom-quantd"}:
        fail(f"expected the inferd and quantd dashboards, got {sorted(uids)}")

    import yaml
    base = os.path.join(common.ROOT, "deploy/grafana/provisioning")
    with open(os.path.join(base, "dashboards/bitloom.yaml")) as f:
        providers = yaml.safe_load(f)["providers"]
    if not providers or providers[0]["type"] != "file" or not providers[0]["options"]["path"]:
        fail("provisioning/dashboards/bitloom.yaml: needs a file provider with a path")
    with open(os.path.join(base, "datasources/bitloom-prometheus.yaml")) as f:
        sources = yaml.safe_load(f)["datasources"]
    if [s["type"] for s in sources] != ["prometheus"]:
        fail("provisioning/datasources: expected one Prometheus data source")
    print("ok   provisioning: dashboards file provider and a Prometheus data source")


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    samples = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))
    return types, samples


def main():
    quantd_binary, inferd_binary = sys.argv[1:3]
    check_dashboards()

    documented = common.documented_metrics()
    pending = common.pending_metrics()
    known = set(documented) | set(pending)
    used = {}
    for where, expression in list(common.dashboard_expressions()) + list(common.rule_expressions()):
        for name in common.metric_names(expression, known):
            used.setdefault(name, []).append(where)
    print(f"{len(used)} metrics used by {len(common.DASHBOARDS)} dashboards and {len(common.RULE_FILES)} rule files")

    store = tempfile.mkdtemp(prefix="store-")
    daemons = {"quantd": Daemon(quantd_binary, "--store_path=" + store),
               "inferd": Daemon(inferd_binary, "--store_path=" + store, "--vram_budget=64MiB")}
    try:
        live = {name: scrape(d.metrics_port) for name, d in daemons.items()}
    finally:
        for name, daemon in daemons.items():
            status = daemon.terminate()
            if status != 0:
                fail(f"{name} exited with {status}:\n{daemon.log()}")

    notes = []
    for name in sorted(used):
        daemon = "quantd" if name.startswith("bitloom_quantd_") else "inferd" if name.startswith("bitloom_inferd_") else None
        if daemon is None:
            fail(f"{name}: not a metric of either daemon (used by {used[name][0]})")
            continue
        types, samples = live[daemon]
        exported = name in types or any(s == name or s.startswith(name + "_") and s[len(name):] in
                                        ("_bucket", "_sum", "_count") for s in samples)
        if name in documented:
            kind, labels = documented[name]
            if name in types and types[name] != kind:
                fail(f"{name}: docs/METRICS.md says {kind}, live /metrics says {types[name]}")
            if exported:
                print(f"ok   {name}: in docs/METRICS.md and exported live ({types.get(name, kind)})")
            elif not labels:
                fail(f"{name}: documented without labels, so it must be exported from startup, but the live "
                     f"{daemon} /metrics lacks it (used by {used[name][0]})")
            else:
                notes.append(f"note {name}: in docs/METRICS.md; labeled ({labels}) with no series yet on an "
                             "idle daemon, so absent live: docs/METRICS.md is the reference")
            if name in pending:
                notes.append(f"note {name}: now in docs/METRICS.md; delete it from tests/deploy/pending_metrics.txt")
        elif name in pending:
            kind, labels, issue = pending[name]
            state = "exported live" if exported else "not exported yet"
            notes.append(f"PENDING {name} ({kind}{', labels ' + labels if labels else ''}): not in docs/METRICS.md, "
                         f"{state}; lands with issue {issue}")
        else:
            fail(f"{name}: used by {', '.join(used[name][:3])} but neither in docs/METRICS.md nor pending")
    for note in notes:
        print(note)
    print(f"{len(failures)} failure(s)" if failures else "every metric used is documented or pending, and exported where it must be")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
