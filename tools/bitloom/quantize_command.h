// `bitloom quantize SOURCE NAME --bits=B [...]`: submits a quantization job to quantd, follows it
// with a live progress line on stderr (stage, layer i/n, percent, elapsed, remaining), and prints the
// finished job as JSON on stdout. Ctrl-C asks whether to cancel the job or detach from it (the job
// keeps running in quantd); with stdin not a terminal it detaches without asking.
//
// Flags (defined in quantize_command.cc): --bits, --head_bits, --calibration=FILE[,FILE...],
// --rows, --tokens_per_row, --seed; --overwrite is the CLI's shared flag.
#pragma once

#include <string>
#include <vector>

namespace bitloom::tools {

// `source` is a Hugging Face directory or a .gguf file (made absolute: quantd resolves paths on its
// own host, normally this one). Returns the process exit status: 0 when the job succeeded or the
// user detached, 1 on an error or a failed or cancelled job, 2 on a usage error.
int RunQuantize(const std::string& source, const std::string& artifact_name,
                const std::string& quantd_address);

}  // namespace bitloom::tools
