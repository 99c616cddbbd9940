#include "bitloom/service/env_flags.h"

#include <cstdlib>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace bitloom::service {

std::string EnvVarForFlag(const std::string& prefix, const std::string& flag_name) {
  return absl::StrCat(prefix, "_", absl::AsciiStrToUpper(flag_name));
}

absl::Status ApplyEnvironmentToFlags(const std::string& prefix,
                                     const std::vector<std::string>& flag_names) {
  for (const std::string& name : flag_names) {
    const std::string var = EnvVarForFlag(prefix, name);
    const char* value = std::getenv(var.c_str());
    if (value == nullptr) continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) return absl::InternalError(absl::StrCat("no flag named --", name));
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("environment variable ", var, "='", value, "': ", error));
    }
  }
  return absl::OkStatus();
}

}  // namespace bitloom::service
