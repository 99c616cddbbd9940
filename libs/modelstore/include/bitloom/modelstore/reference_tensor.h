// The unquantized reference layout of a tensor, shared by every writer of fp16 artifacts (`bitloom
// import`) and by quantd for the tensors a job leaves unquantized: vectors (norms, biases) are
// CODEC_F32, because they are tiny and numerically delicate (Gemma's norm weights are small offsets
// from 1); matrices are CODEC_F16, the precision the quantizer treats as the reference.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "bitloom/v1/manifest.pb.h"

namespace bitloom::modelstore {

// Fills `entry` (name, shape, codec, bits_per_weight) and `bytes` (the blob, docs/FORMAT.md) for
// `values`, row-major in `shape`. `bytes` is reused to avoid a fresh allocation per tensor.
void EncodeReferenceTensor(const std::string& name, absl::Span<const uint64_t> shape,
                           absl::Span<const float> values, v1::TensorEntry* entry,
                           std::vector<uint8_t>* bytes);

}  // namespace bitloom::modelstore
