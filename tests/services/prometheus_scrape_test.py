"""Starts both daemons and a real Prometheus server on loopback that scrapes them, and waits until
Prometheus reports both targets up and has ingested their metrics.

Usage: prometheus_scrape_test.py QUANTD INFERD   (exits 77, "skipped", when prometheus is absent)
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from daemons import Daemon

SKIPPED = 77


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(port, expression):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    return body["data"]["result"]


def main():
    quantd_binary, inferd_binary = sys.argv[1:3]
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        print("prometheus not installed (Debian package 'prometheus'); skipping")
        return SKIPPED

    store = tempfile.mkdtemp(prefix="store-")
    daemons = [Daemon(quantd_binary, "--store_path=" + store),
               Daemon(inferd_binary, "--store_path=" + store, "--vram_budget=64MiB")]
    work = tempfile.mkdtemp(prefix="prometheus-")
    config = os.path.join(work, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n"
                f"  - job_name: quantd\n    static_configs:\n"
                f"      - targets: ['127.0.0.1:{daemons[0].metrics_port}']\n"
                f"  - job_name: inferd\n    static_configs:\n"
                f"      - targets: ['127.0.0.1:{daemons[1].metrics_port}']\n")
    web_port = free_port()
    log = open(os.path.join(work, "prometheus.log"), "wb")
    server = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={work}/data",
         f"--web.listen-address=127.0.0.1:{web_port}"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 90
        up = {}
        while time.monotonic() < deadline:
            try:
                up = {r["metric"]["job"]: r["value"][1] for r in query(web_port, "up")}
                ingested = query(web_port, "bitloom_quantd_build_info or bitloom_inferd_build_info")
                if up == {"quantd": "1", "inferd": "1"} and len(ingested) == 2:
                    print("prometheus scraped both daemons: up =", up)
                    break
            except OSError:
                pass  # Prometheus is still starting
            time.sleep(0.5)
        else:
            with open(os.path.join(work, "prometheus.log"), errors="replace") as f:
                print(f.read()[-4000:])
            print(f"FAIL: targets not up within 90 s: {up}")
            return 1
        pool = query(web_port, "bitloom_inferd_pool_capacity_bytes")
        if not pool or float(pool[0]["value"][1]) != 64 * 2**20:
            print(f"FAIL: unexpected pool capacity series: {pool}")
            return 1
    finally:
        server.terminate()
        server.wait(timeout=30)
        for daemon in daemons:
            status = daemon.terminate()
            if status != 0:
                print(f"FAIL: daemon exited with {status}:\n{daemon.log()}")
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
