// Locating and loading the real fixture models for engine tests; every failure to do so is a skip
// with the reason, never a failure, because CI machines without the cache must stay green.
#pragma once

#include <memory>
#include <string>

#include "bitloom/core/thread_pool.h"
#include "bitloom/engine/decoder_model.h"

namespace bitloom::engine::testing {

// $BITLOOM_MODEL_CACHE or ~/.cache/bitloom/models.
std::string ModelCacheDir();

// Loads `gguf_file` from the cache into a DecoderModel. On failure returns null and sets *skip_reason
// (model absent, formats library not built or OpenCheckpoint unimplemented), or *error for a real error.
std::unique_ptr<DecoderModel> LoadCachedModel(const std::string& gguf_file, ThreadPool* pool,
                                              std::string* skip_reason, std::string* error);

}  // namespace bitloom::engine::testing
