// Daemon flags that can also be set from the environment, for Kubernetes.
//
// A flag `--store_path` of quantd reads BITLOOM_QUANTD_STORE_PATH when it is not given on the
// command line: the environment is applied first, then the command line overrides it. An invalid
// value in the environment is an error that names the variable.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace bitloom::service {

// The environment variable for `flag_name` under `prefix` ("BITLOOM_QUANTD").
std::string EnvVarForFlag(const std::string& prefix, const std::string& flag_name);

// Sets each flag in `flag_names` from its environment variable, when that is set.
absl::Status ApplyEnvironmentToFlags(const std::string& prefix,
                                     const std::vector<std::string>& flag_names);

}  // namespace bitloom::service
