// Builders for small synthetic GGUF and safetensors files, written to a per-test temporary directory.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace bitloom::formats::testing {

// A fresh directory under TEST_TMPDIR (or /tmp), removed by the destructor.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/bitloom_formats_XXXXXX";
    path_ = mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& bytes) const {
    const std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }

 private:
  std::string path_;
};

// Little-endian byte string builder.
class Bytes {
 public:
  template <typename T>
  Bytes& Put(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    s_.append(b, sizeof(T));
    return *this;
  }
  Bytes& Str(const std::string& v) {
    Put<uint64_t>(v.size());
    s_ += v;
    return *this;
  }
  Bytes& Raw(const std::string& v) {
    s_ += v;
    return *this;
  }
  size_t size() const { return s_.size(); }
  const std::string& str() const { return s_; }

 private:
  std::string s_;
};

// A GGUF file: metadata entries are appended pre-encoded (key, type, value), tensors as F32 data.
class GgufBuilder {
 public:
  GgufBuilder& Kv(const std::string& key, uint32_t type, const Bytes& value) {
    kv_.Str(key).Put<uint32_t>(type).Raw(value.str());
    ++kv_count_;
    return *this;
  }
  GgufBuilder& KvU32(const std::string& key, uint32_t v) { return Kv(key, 4, Bytes().Put(v)); }
  GgufBuilder& KvF32(const std::string& key, float v) { return Kv(key, 6, Bytes().Put(v)); }
  GgufBuilder& KvBool(const std::string& key, bool v) { return Kv(key, 7, Bytes().Put<uint8_t>(v)); }
  GgufBuilder& KvStr(const std::string& key, const std::string& v) { return Kv(key, 8, Bytes().Str(v)); }
  GgufBuilder& KvStrArray(const std::string& key, const std::vector<std::string>& v) {
    Bytes b;
    b.Put<uint32_t>(8).Put<uint64_t>(v.size());
    for (const auto& s : v) b.Str(s);
    return Kv(key, 9, b);
  }
  GgufBuilder& KvI32Array(const std::string& key, const std::vector<int32_t>& v) {
    Bytes b;
    b.Put<uint32_t>(5).Put<uint64_t>(v.size());
    for (int32_t x : v) b.Put(x);
    return Kv(key, 9, b);
  }
  // An F32 tensor; `ne` in GGML order (innermost first).
  GgufBuilder& TensorF32(const std::string& name, std::vector<uint64_t> ne, std::vector<float> data) {
    tensors_.push_back({name, std::move(ne), 0, std::string(reinterpret_cast<const char*>(data.data()),
                                                            data.size() * sizeof(float))});
    return *this;
  }
  // A tensor of any ggml type with its raw bytes.
  GgufBuilder& TensorRaw(const std::string& name, std::vector<uint64_t> ne, uint32_t type, std::string raw) {
    tensors_.push_back({name, std::move(ne), type, std::move(raw)});
    return *this;
  }

  std::string Build(uint32_t version = 3, uint64_t alignment = 32) const {
    Bytes b;
    b.Raw("GGUF").Put<uint32_t>(version).Put<uint64_t>(tensors_.size()).Put<uint64_t>(kv_count_);
    b.Raw(kv_.str());
    uint64_t offset = 0;
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors_) {
      b.Str(t.name).Put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
      for (uint64_t d : t.ne) b.Put(d);
      b.Put<uint32_t>(t.type).Put<uint64_t>(offset);
      offsets.push_back(offset);
      offset += (t.data.size() + alignment - 1) / alignment * alignment;
    }
    std::string out = b.str();
    out.resize((out.size() + alignment - 1) / alignment * alignment, '\0');
    for (size_t i = 0; i < tensors_.size(); ++i) {
      std::string data = tensors_[i].data;
      if (i + 1 < tensors_.size()) data.resize((data.size() + alignment - 1) / alignment * alignment, '\0');
      out += data;
    }
    return out;
  }

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    std::string data;
  };
  Bytes kv_;
  uint64_t kv_count_ = 0;
  std::vector<Tensor> tensors_;
};

}  // namespace bitloom::formats::testing
