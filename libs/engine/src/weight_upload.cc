#include "bitloom/engine/weight_upload.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/kernels/cuda/cuda_status.h"

namespace bitloom::engine {
namespace {

using Blobs = std::vector<absl::Span<const uint8_t>>;

absl::Status CudaCall(cudaError_t err, const char* what) {
  return kernels::cuda::CudaStatus(err, what, __FILE__, __LINE__);
}

// The fast path. Page-locks the part of the artifact's mapping that holds the blobs and copies each
// blob from it. Returns false, having copied nothing, when the platform refuses the registration.
absl::StatusOr<bool> CopyFromRegisteredMapping(const WeightUploadPlan& plan, const Blobs& blobs,
                                               uint8_t* dst, cudaStream_t stream) {
  int device = 0;
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  int read_only_supported = 0;
  if (cudaDeviceGetAttribute(&read_only_supported, cudaDevAttrHostRegisterReadOnlySupported,
                             device) != cudaSuccess ||
      read_only_supported == 0) {
    cudaGetLastError();
    return false;
  }
  // The reader's spans point into one mapping of the whole file, so a blob's address minus its file
  // offset is the mapping's first byte, which mmap placed on a page boundary.
  const uint8_t* mapping = nullptr;
  uint64_t first = UINT64_MAX, end = 0;
  for (size_t i = 0; i < blobs.size(); ++i) {
    if (blobs[i].empty()) continue;
    const WeightPlacement& p = plan.tensors()[i];
    if (mapping == nullptr) mapping = blobs[i].data() - p.file_offset;
    first = std::min(first, p.file_offset);
    end = std::max(end, p.file_offset + p.bytes);
  }
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  first = first / page * page;
  end = (end + page - 1) / page * page;  // the last page is mapped whole even past the file's end
  void* registered = const_cast<uint8_t*>(mapping + first);
  if (cudaHostRegister(registered, end - first, cudaHostRegisterReadOnly) != cudaSuccess) {
    cudaGetLastError();  // not sticky; clear it so later calls do not report it
    return false;
  }
  absl::Status status;
  for (size_t i = 0; i < blobs.size() && status.ok(); ++i) {
    if (blobs[i].empty()) continue;
    status = CudaCall(cudaMemcpyAsync(dst + plan.tensors()[i].offset, blobs[i].data(),
                                      blobs[i].size(), cudaMemcpyHostToDevice, stream),
                      "cudaMemcpyAsync (registered mapping)");
  }
  // Unregister only once nothing is reading the pages, whatever happened above.
  const absl::Status synced = CudaCall(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  const absl::Status unregistered = CudaCall(cudaHostUnregister(registered), "cudaHostUnregister");
  BITLOOM_RETURN_IF_ERROR(status);
  BITLOOM_RETURN_IF_ERROR(synced);
  BITLOOM_RETURN_IF_ERROR(unregistered);
  return true;
}

// Two pinned buffers and the events that say when each is free again. The destructor waits for the
// stream first, so an early error return never frees a buffer a copy still reads.
class StagingBuffers {
 public:
  explicit StagingBuffers(cudaStream_t stream) : stream_(stream) {}
  ~StagingBuffers() {
    cudaStreamSynchronize(stream_);
    for (int i = 0; i < 2; ++i) {
      if (buffer_[i] != nullptr) cudaFreeHost(buffer_[i]);
      if (done_[i] != nullptr) cudaEventDestroy(done_[i]);
    }
  }
  StagingBuffers(const StagingBuffers&) = delete;
  StagingBuffers& operator=(const StagingBuffers&) = delete;

  absl::Status Allocate(uint64_t bytes) {
    for (int i = 0; i < 2; ++i) {
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&buffer_[i]), bytes));
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&done_[i], cudaEventDisableTiming));
    }
    return absl::OkStatus();
  }
  uint8_t* buffer(int i) const { return buffer_[i]; }
  cudaEvent_t done(int i) const { return done_[i]; }

 private:
  cudaStream_t stream_;
  uint8_t* buffer_[2] = {nullptr, nullptr};
  cudaEvent_t done_[2] = {nullptr, nullptr};
};

absl::Status CopyThroughStaging(const WeightUploadPlan& plan, const Blobs& blobs, uint8_t* dst,
                                cudaStream_t stream, uint64_t chunk_bytes) {
  const uint64_t chunk = std::min(chunk_bytes, plan.blob_bytes());
  StagingBuffers staging(stream);
  BITLOOM_RETURN_IF_ERROR(staging.Allocate(chunk));
  bool in_flight[2] = {false, false};
  int slot = 0;
  for (size_t i = 0; i < blobs.size(); ++i) {
    const absl::Span<const uint8_t> blob = blobs[i];
    uint8_t* out = dst + plan.tensors()[i].offset;
    for (uint64_t pos = 0; pos < blob.size(); pos += chunk) {
      const uint64_t n = std::min<uint64_t>(chunk, blob.size() - pos);
      if (in_flight[slot]) BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(staging.done(slot)));
      std::memcpy(staging.buffer(slot), blob.data() + pos, n);
      BITLOOM_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(out + pos, staging.buffer(slot), n, cudaMemcpyHostToDevice, stream));
      BITLOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(staging.done(slot), stream));
      in_flight[slot] = true;
      slot ^= 1;
    }
  }
  BITLOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<WeightUploadStats> UploadWeights(const modelstore::ArtifactReader& reader,
                                                const WeightUploadPlan& plan,
                                                uint8_t* device_region, uint64_t region_bytes,
                                                cudaStream_t stream,
                                                const WeightUploadOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (region_bytes < plan.region_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat("weight upload: region of ", region_bytes,
                                                   " bytes for ", plan.region_bytes(),
                                                   " bytes of weights from ", reader.path()));
  }
  if (options.staging_chunk_bytes == 0) {
    return absl::InvalidArgumentError("weight upload: staging_chunk_bytes must be positive");
  }
  BITLOOM_ASSIGN_OR_RETURN(const Blobs blobs, PlannedBlobs(reader, plan));
  WeightUploadStats stats;
  stats.bytes = plan.blob_bytes();
  stats.num_tensors = static_cast<int>(blobs.size());
  if (stats.bytes > 0) {
    if (options.allow_host_register) {
      BITLOOM_ASSIGN_OR_RETURN(stats.host_registered,
                               CopyFromRegisteredMapping(plan, blobs, device_region, stream));
    }
    if (!stats.host_registered) {
      BITLOOM_RETURN_IF_ERROR(
          CopyThroughStaging(plan, blobs, device_region, stream, options.staging_chunk_bytes));
    }
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace bitloom::engine
