// The weight bytes one decode step reads, from an artifact's manifest: the number that turns a
// memory bandwidth into the decode speed limit of `bitloom bench` (limit tokens/s per sequence =
// bandwidth / bytes per token, for any batch that fits in one step's weight pass).
//
// Counted: every blob of the decoder (the quantized linears, the norms, biases), the output head
// and the final norm, as stored (a quantized blob's codes, scales and padding). The embedding is
// read one row per token, so only a row counts — unless the head is tied to it, when the whole
// matrix is the head. Pure function, thread-safe.
#pragma once

#include <cstdint>

#include "bitloom/v1/manifest.pb.h"

namespace bitloom::tools {

struct DecodeWeightBytes {
  uint64_t decoder_linears = 0;  // the seven linear weights of every layer
  uint64_t head = 0;             // lm_head, or the tied embedding
  uint64_t norms_and_other = 0;  // norms, biases, anything else but the embedding
  uint64_t embedding_row = 0;    // one row of the embedding
  uint64_t total() const { return decoder_linears + head + norms_and_other + embedding_row; }
};

DecodeWeightBytes DecodeBytesPerToken(const v1::ArtifactManifest& manifest);

}  // namespace bitloom::tools
