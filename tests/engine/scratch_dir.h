// ScratchDir: a fresh directory under the system temp directory for one test, removed with the
// object (with everything in it).
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace bitloom::engine::testing {

class ScratchDir {
 public:
  // prefix names the directory, e.g. "gpu_decoder_test" -> /tmp/gpu_decoder_test.XXXXXX.
  explicit ScratchDir(const std::string& prefix) {
    std::string templ = (std::filesystem::temp_directory_path() / (prefix + ".XXXXXX")).string();
    EXPECT_NE(::mkdtemp(templ.data()), nullptr);
    path_ = templ;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  std::string Join(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace bitloom::engine::testing
