// L2 prefetch of device ranges (see l2_prefetch.h).
//
// Layout: the ranges are cut into 128-byte lines, numbered in range order; thread t of the grid
// (kBlocks blocks of kThreads) issues `prefetch.global.L2` for lines t, t + grid, t + 2·grid, ... of
// each range, so the whole grid walks every range front to back together and the first lines a
// reader wants are asked for first. A prefetch only names an address: the thread does not wait for
// the line and the kernel ends as soon as every request is issued. Lines are 128-byte aligned down,
// so a range's first and last partial lines are fetched whole (harmless: L2 holds whole lines).

#include "absl/strings/str_cat.h"
#include "bitloom/kernels/cuda/cuda_status.h"
#include "bitloom/kernels/cuda/l2_prefetch.h"

namespace bitloom::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBlocks = 132;  // one per SM of an H100/H200; any count is correct
constexpr int64_t kLineBytes = 128;

struct L2PrefetchArgs {
  uintptr_t first_line[kMaxL2PrefetchRanges];  // address of the range's first line
  int64_t lines[kMaxL2PrefetchRanges];
  int count = 0;
};

__global__ void __launch_bounds__(kThreads) L2PrefetchKernel(L2PrefetchArgs a) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  for (int r = 0; r < a.count; ++r) {
    for (int64_t line = t; line < a.lines[r]; line += stride) {
      const uintptr_t address = a.first_line[r] + static_cast<uintptr_t>(line * kLineBytes);
      asm volatile("prefetch.global.L2 [%0];" ::"l"(address));
    }
  }
}

}  // namespace

absl::Status LaunchL2Prefetch(absl::Span<const L2PrefetchRange> ranges, cudaStream_t stream) {
  if (ranges.size() > static_cast<size_t>(kMaxL2PrefetchRanges)) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchL2Prefetch: ", ranges.size(),
                                                   " ranges, at most kMaxL2PrefetchRanges = ",
                                                   kMaxL2PrefetchRanges));
  }
  L2PrefetchArgs a;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const L2PrefetchRange& r = ranges[i];
    if (r.bytes < 0 || (r.bytes > 0 && r.data == nullptr)) {
      return absl::InvalidArgumentError(absl::StrCat("LaunchL2Prefetch: range ", i, ": ", r.bytes,
                                                     " bytes at ", r.data == nullptr ? "null" : "an address",
                                                     " (bytes must be >= 0, data non-null when > 0)"));
    }
    if (r.bytes == 0) continue;
    const uintptr_t begin = reinterpret_cast<uintptr_t>(r.data);
    const uintptr_t first = begin / kLineBytes * kLineBytes;
    const uintptr_t end = begin + static_cast<uintptr_t>(r.bytes);
    a.first_line[a.count] = first;
    a.lines[a.count] = static_cast<int64_t>((end - first + kLineBytes - 1) / kLineBytes);
    ++a.count;
  }
  if (a.count == 0) return absl::OkStatus();
  L2PrefetchKernel<<<kBlocks, kThreads, 0, stream>>>(a);
  return CudaStatus(cudaGetLastError(), "L2PrefetchKernel", __FILE__, __LINE__);
}

}  // namespace bitloom::kernels::cuda
