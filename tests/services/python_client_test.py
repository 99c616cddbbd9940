"""A Python grpcio client of both daemons, with stubs generated from proto/ at test time: proof that a
client in another language works against the published API, health checking and reflection.

Usage: python_client_test.py PROTO_DIR QUANTD INFERD
"""

import os
import sys
import tempfile
import unittest

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_tools import protoc

from daemons import Daemon

PROTO_DIR, QUANTD, INFERD = sys.argv[1:4]


def generate_stubs():
    out = tempfile.mkdtemp(prefix="bitloom-py-")
    protos = [os.path.join("bitloom", "v1", name)
              for name in ("manifest.proto", "quantization.proto", "inference.proto")]
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", *protos])
    if rc != 0:
        raise RuntimeError(f"protoc failed with {rc}")
    sys.path.insert(0, out)


generate_stubs()
from bitloom.v1 import inference_pb2, inference_pb2_grpc  # noqa: E402
from bitloom.v1 import quantization_pb2, quantization_pb2_grpc  # noqa: E402


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.store = tempfile.mkdtemp(prefix="store-")
        cls.quantd = Daemon(QUANTD, "--store_path=" + cls.store)
        cls.inferd = Daemon(INFERD, "--store_path=" + cls.store, "--vram_budget=64MiB")
        cls.quant = quantization_pb2_grpc.QuantizationServiceStub(
            grpc.insecure_channel(cls.quantd.address))
        cls.infer = inference_pb2_grpc.InferenceServiceStub(
            grpc.insecure_channel(cls.inferd.address))

    @classmethod
    def tearDownClass(cls):
        for daemon in (cls.quantd, cls.inferd):
            daemon.kill()

    def test_health_is_serving(self):
        for daemon, service in ((self.quantd, "bitloom.v1.QuantizationService"),
                                (self.inferd, "bitloom.v1.InferenceService")):
            stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(daemon.address))
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            self.assertEqual(response.status, health_pb2.HealthCheckResponse.SERVING)

    def test_reflection_lists_services_and_describes_them(self):
        stub = reflection_pb2_grpc.ServerReflectionStub(grpc.insecure_channel(self.inferd.address))
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="bitloom.v1.InferenceService")]
        responses = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
        names = {s.name for s in responses[0].list_services_response.service}
        self.assertIn("bitloom.v1.InferenceService", names)
        self.assertTrue(responses[1].file_descriptor_response.file_descriptor_proto)

    def test_store_rpcs(self):
        response = self.quant.ListArtifacts(quantization_pb2.ListArtifactsRequest(), timeout=10)
        self.assertEqual(len(response.artifacts), 0)
        with self.assertRaises(grpc.RpcError) as caught:
            self.quant.DescribeArtifact(
                quantization_pb2.DescribeArtifactRequest(name="../escape"), timeout=10)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("name", caught.exception.details())

    def test_errors_name_the_field_and_limit(self):
        request = quantization_pb2.CreateJobRequest(artifact_name="x", target_bits_per_weight=0.5)
        request.gguf.path = "/models/m.gguf"
        with self.assertRaises(grpc.RpcError) as caught:
            self.quant.CreateJob(request, timeout=10)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("target_bits_per_weight", caught.exception.details())
        with self.assertRaises(grpc.RpcError) as caught:
            self.infer.LoadModel(inference_pb2.LoadModelRequest(artifact_name="absent"), timeout=10)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_server_info(self):
        info = self.infer.GetServerInfo(inference_pb2.GetServerInfoRequest(), timeout=10)
        self.assertEqual(info.pool_bytes, 64 << 20)
        self.assertTrue(info.version)
        self.assertEqual(info.devices[0].kind, "cpu")

    def test_zz_sigterm_exits_zero(self):
        # Runs last (alphabetical order): the daemons are gone afterwards.
        self.assertEqual(self.quantd.terminate(), 0)
        self.assertEqual(self.inferd.terminate(), 0)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
