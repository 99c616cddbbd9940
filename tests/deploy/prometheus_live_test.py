"""Runs a real Prometheus (Debian's) with the shipped deploy/prometheus/prometheus.yml and rules against
a live quantd and inferd on loopback, and checks through its HTTP API that: both targets are up; the key
series are ingested; the rules loaded and evaluate without error; every dashboard and rule expression is
valid PromQL that Prometheus evaluates; gRPC health for each daemon's service name answers SERVING (what
the Kubernetes probes ask); and that stopping inferd takes up to 0 and puts BitloomDaemonDown in pending.

The config is the shipped file with only these changes: the two targets point at the daemons' loopback
metrics ports, and the scrape/evaluation intervals are 1 s so the test is quick; the rules are the
shipped files unchanged apart from their group interval.

Usage: prometheus_live_test.py QUANTD INFERD   (exits 77 without prometheus, promtool or PyYAML)
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

SKIPPED = 77
try:
    import yaml
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port, path, **params):
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:  # 400/422: a bad expression; the body says why
        return json.load(error)


def query(port, expression):
    body = api(port, "query", query=expression)
    if body.get("status") != "success":
        raise ValueError(body.get("error"))
    return body["data"]["result"]


def wait_for(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, ValueError, KeyError) as error:
            last = error
        time.sleep(0.5)
    fail(f"timed out after {timeout} s waiting for {what} (last: {last})")
    return None


def grafana_to_promql(expression):
    """A dashboard query as Grafana would send it, for the variables our dashboards use."""
    match = re.fullmatch(r"label_values\((.*),\s*\w+\)", expression.strip())
    if match:
        return match.group(1)
    return (expression.replace("$__rate_interval", "1m").replace("$__range", "1h")
            .replace("$instance", ".*").replace("$model", ".*"))


def health(address, service):
    """grpc.health.v1.Health/Check without generated stubs: field 1 (service) in, field 1 (status) out."""
    import grpc
    name = service.encode()
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        reply = check(b"\x0a" + bytes([len(name)]) + name, timeout=5)
    return {b"\x08\x01": "SERVING", b"\x08\x02": "NOT_SERVING"}.get(reply, reply.hex())


def write_config(work, ports):
    with open(common.PROMETHEUS_CONFIG) as f:
        config = yaml.safe_load(f)
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    replaced = 0
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            new = []
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                if host == "localhost" and port in ports:
                    new.append(f"127.0.0.1:{ports[port]}")
                    replaced += 1
                else:
                    new.append(target)
            static["targets"] = new
    if replaced != 2 or sorted(j["job_name"] for j in config["scrape_configs"]) != ["inferd", "quantd"]:
        fail(f"the shipped config should have jobs inferd and quantd on localhost:9091/9092: {config['scrape_configs']}")
    rules_dir = os.path.join(work, "rules")
    os.makedirs(rules_dir)
    for path in common.RULE_FILES:
        with open(path) as f:
            rules = yaml.safe_load(f)
        for group in rules["groups"]:
            group.pop("interval", None)
        with open(os.path.join(rules_dir, os.path.basename(path)), "w") as f:
            yaml.safe_dump(rules, f)
    path = os.path.join(work, "prometheus.yml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def main():
    quantd_binary, inferd_binary = sys.argv[1:3]
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        print("skipping: prometheus/promtool not installed (Debian package 'prometheus', scripts/install-deps.sh)")
        return SKIPPED
    print(subprocess.run([prometheus, "--version"], capture_output=True, text=True).stdout.splitlines()[0])

    store = tempfile.mkdtemp(prefix="store-")
    quantd = Daemon(quantd_binary, "--store_path=" + store)
    inferd = Daemon(inferd_binary, "--store_path=" + store, "--vram_budget=64MiB")
    work = tempfile.mkdtemp(prefix="prometheus-")
    config = write_config(work, {"9091": inferd.metrics_port, "9092": quantd.metrics_port})
    checked = subprocess.run([promtool, "check", "config", config], capture_output=True, text=True)
    if checked.returncode != 0:
        fail(f"promtool check config (templated): {checked.stdout}{checked.stderr}")
    web_port = free_port()
    log_path = os.path.join(work, "prometheus.log")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={work}/data",
             f"--web.listen-address=127.0.0.1:{web_port}"], stdout=log, stderr=log)
    inferd_stopped = False
    try:
        up = wait_for("both targets up", lambda: (lambda r: r if r == {"quantd": "1", "inferd": "1"} else None)(
            {s["metric"]["job"]: s["value"][1] for s in query(web_port, "up")}), 90)
        if up:
            print("ok   targets up:", up)

        grpc_checked = True
        for daemon, service in ((inferd, "bitloom.v1.InferenceService"), (quantd, "bitloom.v1.QuantizationService")):
            try:
                status = health(daemon.address, service)
                (print if status == "SERVING" else fail)(f"{'ok   ' if status == 'SERVING' else ''}gRPC health {service}: {status}")
            except ImportError:
                print("note: python3-grpcio missing; gRPC health check not exercised")
                grpc_checked = False
                break

        key_series = {
            'bitloom_inferd_build_info{job="inferd"}': None,
            'bitloom_quantd_build_info{job="quantd"}': None,
            'bitloom_inferd_pool_capacity_bytes{job="inferd"}': 64 * 2**20,
            'sum(bitloom_inferd_pool_bytes{job="inferd"})': 64 * 2**20,
            'bitloom_inferd_models_loaded{job="inferd"}': 0,
            'bitloom_quantd_store_artifacts{job="quantd"}': 0,
            'bitloom_inferd_process_resident_memory_bytes{job="inferd"}': None,
            'bitloom_quantd_process_start_time_seconds{job="quantd"}': None,
        }
        if grpc_checked:  # the health check above is a recorded RPC
            key_series['sum(bitloom_inferd_grpc_requests_total{job="inferd", method="/grpc.health.v1.Health/Check"})'] = None
        for expression, expected in key_series.items():
            result = wait_for(expression, lambda e=expression: query(web_port, e), 30)
            if result is None:
                continue
            value = float(result[0]["value"][1])
            if expected is not None and value != expected:
                fail(f"{expression} = {value}, expected {expected}")
            else:
                print(f"ok   {expression} = {value:g}")

        def rules_evaluated():
            groups = api(web_port, "rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            if sorted(g["name"] for g in groups) != ["bitloom.alerts", "bitloom.recording"]:
                raise ValueError(f"groups {[g['name'] for g in groups]}")
            if any(r["lastEvaluation"].startswith("0001") for r in rules):
                return None
            return rules
        rules = wait_for("every rule evaluated once", rules_evaluated, 60) or []
        bad = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"]
        if bad:
            fail(f"rules with errors: {bad}")
        elif rules:
            print(f"ok   {len(rules)} rules loaded from the shipped files, all evaluate with health ok")
        active = [a for a in api(web_port, "alerts")["data"]["alerts"]]
        if active:
            fail(f"alerts active against two healthy idle daemons: {[(a['labels']['alertname'], a['state']) for a in active]}")
        else:
            print("ok   no alert active against two healthy idle daemons")

        expressions = list(common.dashboard_expressions()) + list(common.rule_expressions())
        errors = 0
        for where, expression in expressions:
            try:
                query(web_port, grafana_to_promql(expression))
            except ValueError as error:
                fail(f"{where}: Prometheus rejects the query: {error}")
                errors += 1
        if not errors:
            print(f"ok   all {len(expressions)} dashboard and rule expressions evaluate in Prometheus")

        status = inferd.terminate()
        inferd_stopped = True
        if status != 0:
            fail(f"inferd exited with {status}")
        if wait_for('up{job="inferd"} == 0', lambda: query(web_port, 'up{job="inferd"} == 0'), 30):
            print("ok   inferd stopped: up{job=\"inferd\"} is 0")
        pending = wait_for("BitloomDaemonDown pending for inferd", lambda: [
            a for a in api(web_port, "alerts")["data"]["alerts"]
            if a["labels"]["alertname"] == "BitloomDaemonDown" and a["labels"]["job"] == "inferd"], 30)
        if pending:
            print(f"ok   BitloomDaemonDown is {pending[0]['state']} for inferd (fires after its 'for: 2m')")
    finally:
        server.terminate()
        server.wait(timeout=30)
        daemons = [("quantd", quantd)] + ([] if inferd_stopped else [("inferd", inferd)])
        for name, daemon in daemons:
            status = daemon.terminate()
            if status != 0:
                fail(f"{name} exited with {status}:\n{daemon.log()}")
        if failures:
            with open(log_path, errors="replace") as f:
                print("prometheus log (tail):\n" + f.read()[-3000:])
    print(f"{len(failures)} failure(s)" if failures else "Prometheus with the shipped configuration and rules works")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
