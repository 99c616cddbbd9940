// BlockRunner: what QuantizationPipeline needs from a model implementation, and nothing more.
//
// A decoder is a chain of blocks over a residual stream of width hidden_size. The pipeline feeds
// calibration hidden states through the blocks one at a time, substituting its own (dequantized)
// weights, and needs to see the input of every linear layer to build Hessians. Linear layers are
// grouped into *input sites*: the tensors of one site read the same activation (q/k/v the attention
// input, gate/up the MLP input; o_proj and down_proj their own), so they share a Hessian and a
// rotation.
//
// The engine implements this over its CPU block forward (see docs/QUANTIZATION.md, "What the engine
// provides"), libs/quant/cuda over the shared GPU kernels (GpuBlockRunner, which can also hand the
// sites' inputs over in device memory: RunBlockOnDevice); the tests implement a toy block. Implementations must be deterministic (same inputs,
// same bits) and safe to call from one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bitloom/kernels/hadamard.h"

namespace bitloom::quant {

struct LinearSite {
  std::string name;  // stable within a block, e.g. "attn_in", "mlp_in", "o_in", "down_in"
  int64_t dim = 0;   // width of the activation the site's tensors read (their in_features)
  std::vector<std::string> tensors;  // full tensor names, e.g. "layers.3.attn.q_proj.weight"
};

// fp32 weights by full tensor name, row-major [out, in].
using WeightMap = std::map<std::string, std::vector<float>>;

// A substitute in its site's rotated space: the weight is W = W'·R (each row rotated back by Rᵀ),
// W' [out, in] row-major (a quantized tensor dequantized as the codec stores it) and R the site's
// rotation, which the caller keeps alive for the call. A runner that rotates on the device applies
// R to the site's input instead (W·x = W'·(R·x)), so the host never rotates the weight back.
struct RotatedWeight {
  std::vector<float> rotated;                         // W'
  const kernels::HadamardRotation* rotation = nullptr;  // R, n = in
};
using RotatedWeightMap = std::map<std::string, RotatedWeight>;

// The model's output layer after the last block: the final RMSNorm (kernels::RmsNormF32's
// conventions) and the head, so the pipeline can price a change of the last block's output by what
// it does to the next-token distribution (docs/QUANTIZATION.md, section 5). Views into the runner's
// model, valid while the runner lives.
struct OutputLayer {
  absl::Span<const float> norm_weight;  // [hidden]
  float norm_eps = 1e-6f;
  float norm_weight_offset = 0.0f;      // 1 for Gemma's x·(1 + w)
  absl::Span<const float> head;         // [vocab, hidden] row-major (the embedding when tied)
  int64_t vocab = 0;
};

// Called for every site during RunBlock with the site's inputs, x [rows, site.dim] (rows = tokens),
// once or, when a runner processes the rows in chunks, once per chunk in row order: the rows of all
// calls together are the site's inputs.
using CaptureFn =
    std::function<absl::Status(const LinearSite& site, absl::Span<const float> x, int64_t rows)>;

// The device form of CaptureFn, for runners whose forward runs on a GPU: x [rows, site.dim] fp32,
// row-major, in the memory of the current CUDA device, ready in stream order on `stream` (a
// cudaStream_t). The callee queues its work on `stream` and returns; x stays valid for that work
// (the runner overwrites it only with later work on the same stream). Called like CaptureFn.
using DeviceCaptureFn = std::function<absl::Status(const LinearSite& site, const float* x,
                                                   int64_t rows, void* stream)>;

class BlockRunner {
 public:
  virtual ~BlockRunner() = default;

  virtual int num_layers() const = 0;
  virtual int64_t hidden_size() const = 0;
  // The quantizable linear layers of block `layer`, grouped by input site, in a fixed order.
  virtual std::vector<LinearSite> Sites(int layer) const = 0;
  // The stored fp32 weight and its shape [out, in].
  virtual absl::StatusOr<std::vector<float>> ReadWeight(const std::string& name, int64_t* rows,
                                                        int64_t* cols) const = 0;
  // Token embeddings of `tokens` ([sequences · seq_len] ids, sequence-major) → hidden [tokens,
  // hidden].
  virtual absl::StatusOr<std::vector<float>> Embed(absl::Span<const int32_t> tokens) const = 0;
  // Runs block `layer` on hidden [sequences · seq_len, hidden] (each sequence starting at position
  // 0, causal within itself) with the linear weights in `weights` (every tensor of Sites(layer);
  // other parameters such as norms come from the model) and returns the block's output hidden
  // states. `capture` (may be empty) sees every site's input.
  virtual absl::StatusOr<std::vector<float>> RunBlock(int layer, const WeightMap& weights,
                                                      absl::Span<const float> hidden,
                                                      int64_t sequences, int64_t seq_len,
                                                      const CaptureFn& capture) const = 0;

  // RunBlock with the block's stored weights (ReadWeight's) for every tensor `substitutes` lacks:
  // the pipeline substitutes only what it changed, so a runner that keeps the stored weights
  // where its forward reads them (GpuBlockRunner keeps them on the device) copies nothing else.
  // The default reads the missing weights and calls RunBlock.
  virtual absl::StatusOr<std::vector<float>> RunBlockSubstituted(int layer,
                                                                 const WeightMap& substitutes,
                                                                 absl::Span<const float> hidden,
                                                                 int64_t sequences, int64_t seq_len,
                                                                 const CaptureFn& capture) const;
  // Blocks [first, end) in order with their stored weights, each block's output the next one's
  // input; returns the last one's output (hidden itself when first == end). A GPU runner keeps a
  // batch that fits one device pass on the device from the first block to the last. The default
  // calls RunBlockSubstituted per block.
  virtual absl::StatusOr<std::vector<float>> RunStoredBlocks(int first, int end,
                                                             absl::Span<const float> hidden,
                                                             int64_t sequences,
                                                             int64_t seq_len) const;

  // The output layer that reads the last block's output, or nullopt when there is none to price
  // by (a runner over the first blocks of a model only, a toy without a head): the pipeline then
  // prices by the relative change of the last block's output. A final logit soft-cap is not part
  // of it (its slope is at most 1 and is taken as 1).
  virtual std::optional<OutputLayer> output_layer() const { return std::nullopt; }

  // Whether RunBlockRotated is implemented (a runner that rotates activations on the GPU).
  virtual bool AcceptsRotatedWeights() const { return false; }
  // RunBlockSubstituted with substitutes in rotated space (RotatedWeight), no capture, the output
  // in *out (resized to hidden's size; a buffer of that size is reused as it is, so a caller that
  // alternates two buffers allocates and touches no new memory per block; it must not hold
  // `hidden`). Equal to rotating each substitute back with Rᵀ and calling RunBlockSubstituted, up
  // to the roundings of the other order. UNIMPLEMENTED unless AcceptsRotatedWeights().
  virtual absl::Status RunBlockRotated(int /*layer*/, const RotatedWeightMap& /*substitutes*/,
                                       absl::Span<const float> /*hidden*/, int64_t /*sequences*/,
                                       int64_t /*seq_len*/, std::vector<float>* /*out*/) const {
    return absl::UnimplementedError("RunBlockRotated: this runner takes unrotated weights only");
  }

  // Whether RunBlockOnDevice is implemented (a GPU runner).
  virtual bool CapturesOnDevice() const { return false; }
  // RunBlockSubstituted (stored weights for what `weights` lacks) with the sites' inputs handed
  // over in device memory, so that a GPU Hessian accumulator reads them where they are. The output
  // goes to *out, or nowhere when out is null (a pass run only for its captures). UNIMPLEMENTED
  // unless CapturesOnDevice().
  virtual absl::Status RunBlockOnDevice(int /*layer*/, const WeightMap& /*weights*/,
                                        absl::Span<const float> /*hidden*/, int64_t /*sequences*/,
                                        int64_t /*seq_len*/, const DeviceCaptureFn& /*capture*/,
                                        std::vector<float>* /*out*/) const {
    return absl::UnimplementedError("RunBlockOnDevice: this runner captures on the host only");
  }
};

}  // namespace bitloom::quant
