// EngineRunnerFactory: the BlockRunnerFactory quantd uses. It loads the source into the CPU engine
// (engine::DecoderModel, fp32) and hands the pipeline a quant::EngineBlockRunner over it, so the
// blocks a job measures and quantizes are exactly the blocks inference runs. The returned runner
// owns the model; the checkpoint and the pool must outlive it.
#pragma once

#include "block_runner_factory.h"

namespace bitloom::quantd {

BlockRunnerFactory EngineRunnerFactory();

}  // namespace bitloom::quantd
