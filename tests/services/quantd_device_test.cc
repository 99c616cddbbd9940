// quantd --device: the flag's values, the start-up refusal of gpu without one, and the backend each
// resolved device makes. Runs on any machine: what it expects follows from whether this build has
// the CUDA path and a GPU is visible.
#include <gtest/gtest.h>

#include "quant_device.h"

namespace bitloom::quantd {
namespace {

TEST(QuantDevice, ResolvesTheFlag) {
  const bool gpu = internal::GpuBuilt() && internal::GpuVisible();
  auto cpu = ResolveQuantDevice("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ(*cpu, QuantDevice::kCpu);
  auto automatic = ResolveQuantDevice("auto");
  ASSERT_TRUE(automatic.ok());
  EXPECT_EQ(*automatic, gpu ? QuantDevice::kGpu : QuantDevice::kCpu);
  auto explicit_gpu = ResolveQuantDevice("gpu");
  if (gpu) {
    ASSERT_TRUE(explicit_gpu.ok()) << explicit_gpu.status();
    EXPECT_EQ(*explicit_gpu, QuantDevice::kGpu);
  } else {
    EXPECT_EQ(explicit_gpu.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(explicit_gpu.status().message().find("--device=gpu"), std::string::npos);
  }
  for (const char* bad : {"", "GPU", "cuda", "cpu "}) {
    auto r = ResolveQuantDevice(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(QuantDevice, MakesTheBackendOfTheDevice) {
  ThreadPool pool(1);
  auto cpu = CreateQuantBackend(QuantDevice::kCpu, &pool);
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ((*cpu)->Describe(), "cpu");
  auto gpu = CreateQuantBackend(QuantDevice::kGpu, &pool);
  if (internal::GpuBuilt() && internal::GpuVisible()) {
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    EXPECT_EQ((*gpu)->Describe().rfind("gpu: ", 0), 0u) << (*gpu)->Describe();
  } else {
    EXPECT_EQ(gpu.status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

}  // namespace
}  // namespace bitloom::quantd
