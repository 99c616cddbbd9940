// Re-labels a library error with the request field it came from, so that a client reads
// "artifact_name: ..." rather than the library's generic "name: ...".
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace bitloom::service {

inline absl::Status ForField(absl::string_view field, const absl::Status& status) {
  if (status.ok()) return status;
  absl::string_view message = status.message();
  if (absl::StartsWith(message, "name: ")) message.remove_prefix(6);
  return absl::Status(status.code(), absl::StrCat(field, ": ", message));
}

}  // namespace bitloom::service
