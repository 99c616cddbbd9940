"""Starts quantd and inferd as real processes on loopback ports for the Python tests."""

import json
import os
import signal
import subprocess
import tempfile
import time


class Daemon:
    """One daemon process; the ports come from its --ready_file."""

    def __init__(self, binary, *flags, env=None):
        self.dir = tempfile.mkdtemp(prefix="daemon-")
        self.ready_file = os.path.join(self.dir, "ready.json")
        self.log_path = os.path.join(self.dir, "stderr.log")
        # --device=cpu: the tests expect the CPU engine, also on a machine with a GPU.
        args = [binary, "--listen_address=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                "--device=cpu", "--ready_file=" + self.ready_file, *flags]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(args, stderr=log, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if os.path.exists(self.ready_file):
                with open(self.ready_file) as f:
                    ports = json.load(f)
                self.grpc_port = ports["grpc_port"]
                self.metrics_port = ports["metrics_port"]
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"{binary} exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.02)
        self.process.kill()
        raise RuntimeError(f"{binary} did not become ready:\n{self.log()}")

    @property
    def address(self):
        return f"127.0.0.1:{self.grpc_port}"

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def terminate(self, timeout=30):
        """Sends SIGTERM and returns the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
