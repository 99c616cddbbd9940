// Helpers for the golden tests: locating the fixture models and the pinned Python venv, and reading
// the binary record stream tests/formats/gguf_golden.py writes.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace bitloom::formats::testing {

inline std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

inline std::string Home() { return EnvOr("HOME", "/root"); }

// The fixture model `file` in the cache (scripts/fetch-models.sh), or "" when absent.
inline std::string ModelPath(const std::string& file) {
  const std::string path =
      EnvOr("BITLOOM_MODEL_CACHE", Home() + "/.cache/bitloom/models") + "/" + file;
  return access(path.c_str(), R_OK) == 0 ? path : "";
}

// The venv python made by scripts/python-env.sh, or "" when absent.
inline std::string VenvPython() {
  const std::string python = EnvOr("BITLOOM_VENV", Home() + "/.cache/bitloom/venv") + "/bin/python";
  return access(python.c_str(), X_OK) == 0 ? python : "";
}

// A child process whose stdout is read as gguf_golden.py records.
class GoldenStream {
 public:
  explicit GoldenStream(const std::string& args) {
    const std::string cmd = VenvPython() + " " + BITLOOM_SOURCE_DIR "/tests/formats/gguf_golden.py " + args;
    pipe_ = popen(cmd.c_str(), "r");
  }
  ~GoldenStream() { Close(); }
  bool ok() const { return pipe_ != nullptr; }

  // The next header line without its newline; "" at end of stream or on error.
  std::string ReadLine() {
    std::string line;
    for (int c; (c = std::fgetc(pipe_)) != EOF && c != '\n';) line.push_back(static_cast<char>(c));
    return line;
  }
  bool Read(void* dst, size_t bytes) { return std::fread(dst, 1, bytes, pipe_) == bytes; }
  bool ReadFloats(std::vector<float>* v, size_t n) {
    v->resize(n);
    return Read(v->data(), n * sizeof(float));
  }
  // The child's exit status (3: the gguf package is missing).
  int Close() {
    if (pipe_ == nullptr) return status_;
    const int st = pclose(pipe_);
    pipe_ = nullptr;
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return status_;
  }

 private:
  FILE* pipe_ = nullptr;
  int status_ = -1;
};

}  // namespace bitloom::formats::testing
