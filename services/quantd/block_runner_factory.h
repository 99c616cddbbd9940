// BlockRunnerFactory: the one seam between the job service and the model code. A quantization job
// opens its source as a formats::Checkpoint and asks the factory for the quant::BlockRunner that
// runs that model's decoder blocks; everything else (calibration, the pipeline, the artifact) is
// the job's. quantd's main() picks the implementation: EngineRunnerFactory (libs/quant's
// EngineBlockRunner over the CPU engine); a GPU engine would be another factory.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bitloom/core/thread_pool.h"
#include "bitloom/formats/checkpoint.h"
#include "bitloom/quant/block_runner.h"

namespace bitloom::quantd {

struct BlockRunnerFactory {
  // OK when this factory can run the checkpoint's architecture; INVALID_ARGUMENT otherwise (the
  // message names the architecture). CreateJob calls it before queueing, so an unsupported model
  // is refused at once rather than failing later.
  std::function<absl::Status(const formats::Checkpoint& checkpoint)> supports;
  // The runner for `checkpoint`, which (like `pool`, may be null) outlives it.
  std::function<absl::StatusOr<std::unique_ptr<quant::BlockRunner>>(
      const formats::Checkpoint& checkpoint, ThreadPool* pool)>
      create;
};

}  // namespace bitloom::quantd
