// gpu_bench_util: helpers shared by the GPU benches in bench/ (private to them; one .cu per
// executable includes it). DeviceMemory owns one cudaMalloc (the benches allocate; the kernels
// never do); Median is the upper median of a sample (v[n/2] after sorting, 0 when empty).
// TimeLaunches captures `launches` calls of launch(i) into a CUDA graph, replays it 3 times to warm
// up and then `iters` times, each replay timed with cudaEvents; seconds = median replay / launches.
// With GraphFallback::kStream a failed capture falls back to plain stream launches (`how` says
// "graph" or "stream"); with kFail it is an error. MeasureCopyBandwidth is the bandwidth
// reference: cudaMemcpyAsync D2D of kCopyBytes (1 GiB), 2 warm-up copies then the median of 10,
// GB/s = 2·bytes / time (bytes read + bytes written), 1 GB = 1e9 bytes; PrintCopyBandwidthJson
// prints that figure and its convention as JSON fields, PrintJsonRows the rows of a JSON array,
// PrintDeviceJson the object's opening and the device fields. IterationsFlag, StringFlag, HasFlag
// and ExitCode are the kernel benches' command line: --iters N, --name value, boolean flags, and a
// status turned into the process's exit code (naming the bench on failure).
#ifndef BITLOOM_BENCH_GPU_BENCH_UTIL_CUH_
#define BITLOOM_BENCH_GPU_BENCH_UTIL_CUH_

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bitloom/kernels/cuda/cuda_status.h"

namespace bitloom::bench {

inline constexpr int64_t kCopyBytes = 1ll << 30;

// RAII device allocation of at least 16 bytes (so an empty buffer is still a valid pointer).
class DeviceMemory {
 public:
  DeviceMemory() = default;
  ~DeviceMemory() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  absl::Status Allocate(int64_t bytes) {
    BITLOOM_CUDA_RETURN_IF_ERROR(
        cudaMalloc(&ptr_, static_cast<size_t>(std::max<int64_t>(bytes, 16))));
    return absl::OkStatus();
  }
  template <typename T = void>
  T* get() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
};

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

enum class GraphFallback { kStream, kFail };

// Median seconds per launch, timed as described atop the file.
inline absl::Status TimeLaunches(cudaStream_t stream, int iters, int launches,
                                 const std::function<absl::Status(int)>& launch,
                                 GraphFallback fallback, double* seconds, std::string* how) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  bool use_graph = false;
  if (fallback == GraphFallback::kFail) {
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    absl::Status launched = absl::OkStatus();
    for (int i = 0; i < launches && launched.ok(); ++i) launched.Update(launch(i));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamEndCapture(stream, &graph));
    if (!launched.ok()) {
      cudaGraphDestroy(graph);
      return launched;
    }
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaGraphInstantiate(&exec, graph, 0));
    use_graph = true;
  } else {
    use_graph = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
    if (use_graph) {
      bool launched = true;
      for (int i = 0; i < launches && launched; ++i) launched = launch(i).ok();
      const cudaError_t end = cudaStreamEndCapture(stream, &graph);
      use_graph =
          launched && end == cudaSuccess && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
      cudaGetLastError();  // a failed capture leaves an error behind; the fallback starts clean
    }
  }
  cudaEvent_t start, stop;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  auto run_once = [&]() -> absl::Status {
    if (use_graph) {
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec, stream));
      return absl::OkStatus();
    }
    for (int i = 0; i < launches; ++i) {
      if (absl::Status s = launch(i); !s.ok()) return s;
    }
    return absl::OkStatus();
  };
  for (int w = 0; w < 3; ++w) {
    if (absl::Status s = run_once(); !s.ok()) return s;
  }
  std::vector<double> times;
  for (int it = 0; it < iters; ++it) {
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(start, stream));
    if (absl::Status s = run_once(); !s.ok()) return s;
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop, stream));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
    float ms = 0.0f;
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms * 1e-3 / launches);
  }
  *seconds = Median(times);
  if (how != nullptr) *how = use_graph ? "graph" : "stream";
  if (exec != nullptr) cudaGraphExecDestroy(exec);
  if (graph != nullptr) cudaGraphDestroy(graph);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return absl::OkStatus();
}

// D2D copy bandwidth in GB/s as described atop the file; `fill_source` writes the source's
// `bytes` once before the copies.
inline absl::Status MeasureCopyBandwidth(
    cudaStream_t stream, const std::function<absl::Status(void*, int64_t)>& fill_source,
    double* gbps) {
  DeviceMemory src, dst;
  if (absl::Status s = src.Allocate(kCopyBytes); !s.ok()) return s;
  if (absl::Status s = dst.Allocate(kCopyBytes); !s.ok()) return s;
  if (absl::Status s = fill_source(src.get(), kCopyBytes); !s.ok()) return s;
  cudaEvent_t start, stop;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  std::vector<double> times;
  for (int it = 0; it < 12; ++it) {
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(start, stream));
    BITLOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(dst.get(), src.get(), kCopyBytes, cudaMemcpyDeviceToDevice, stream));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop, stream));
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
    float ms = 0.0f;
    BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start, stop));
    if (it >= 2) times.push_back(ms * 1e-3);  // two warm-up copies
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  *gbps = 2.0 * static_cast<double>(kCopyBytes) / Median(times) / 1e9;
  return absl::OkStatus();
}

// The "copy_bandwidth_gbps" and "copy_convention" fields, each line ending in a comma.
inline void PrintCopyBandwidthJson(double gbps) {
  std::printf("  \"copy_bandwidth_gbps\": %.1f,\n", gbps);
  std::printf(
      "  \"copy_convention\": \"cudaMemcpyAsync D2D of %lld bytes, GB/s = 2*bytes/time (read + "
      "write), median of 10 after 2 warm-up, 1 GB = 1e9 B\",\n",
      static_cast<long long>(kCopyBytes));
}

// The rows of a JSON array, one per line, indented 4, comma-separated.
inline void PrintJsonRows(const std::vector<std::string>& rows) {
  for (size_t i = 0; i < rows.size(); ++i)
    std::printf("    %s%s\n", rows[i].c_str(), i + 1 < rows.size() ? "," : "");
}

inline void PrintDeviceJson(const cudaDeviceProp& prop, int sm) {
  std::printf("{\n  \"device\": \"%s\",\n  \"sm\": %d,\n  \"multiprocessors\": %d,\n", prop.name,
              sm, prop.multiProcessorCount);
}

inline int IterationsFlag(int argc, char** argv, int default_iters) {
  int iters = default_iters;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--iters") == 0) iters = std::atoi(argv[i + 1]);
  }
  return std::max(iters, 1);
}

// The value after `flag` (--only X), or "" when absent.
inline const char* StringFlag(int argc, char** argv, const char* flag) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], flag) == 0) return argv[i + 1];
  }
  return "";
}

inline bool HasFlag(int argc, char** argv, const char* flag) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], flag) == 0) return true;
  }
  return false;
}

inline int ExitCode(const char* bench, const absl::Status& status) {
  if (status.ok()) return 0;
  std::fprintf(stderr, "%s: %s\n", bench, status.ToString().c_str());
  return 1;
}

}  // namespace bitloom::bench

#endif  // BITLOOM_BENCH_GPU_BENCH_UTIL_CUH_
