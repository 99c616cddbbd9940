// The Bitloom version every daemon reports (build_info metric, GetServerInfo, logs).
#pragma once

namespace bitloom::service {

inline constexpr char kVersion[] = BITLOOM_VERSION;

}  // namespace bitloom::service
