// safetensors parsing (docs/SAFETENSORS.md). nlohmann::json parses the header without exceptions
// (allow_exceptions = false) and every access checks the JSON type first, so no exception can
// escape; a try/catch still guards the parse as a last line, because no exception may cross the
// library boundary.
#include "bitloom/formats/safetensors_file.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "bitloom/core/dtype.h"
#include "bitloom/core/status_macros.h"
#include "nlohmann/json.hpp"

namespace bitloom::formats {

uint64_t SafetensorsDtypeSize(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  BITLOOM_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::Open(path));
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile(std::move(mapped)));
  absl::Status s;
  try {
    s = f->Parse();
  } catch (const std::exception& e) {
    s = absl::InvalidArgumentError(absl::StrCat("safetensors file ", path, ": ", e.what()));
  }
  if (!s.ok()) return s;
  return f;
}

absl::Status SafetensorsFile::Parse() {
  auto invalid = [&](absl::string_view msg) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors file ", file_.path(), ": ", msg));
  };
  if (file_.size() < 8) return invalid(absl::StrCat("file of ", file_.size(), " bytes has no header"));
  uint64_t header_len;
  std::memcpy(&header_len, file_.bytes().data(), 8);
  if (header_len > kMaxHeaderBytes || header_len > file_.size() - 8) {
    return invalid(absl::StrCat("header length ", header_len, " exceeds the file (", file_.size(),
                                " bytes) or the limit of ", kMaxHeaderBytes));
  }
  const char* json_begin = reinterpret_cast<const char*>(file_.bytes().data() + 8);
  const nlohmann::json header =
      nlohmann::json::parse(json_begin, json_begin + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return invalid("header is not valid JSON");
  if (!header.is_object()) return invalid("header is not a JSON object");
  const uint64_t data_begin = 8 + header_len;
  const uint64_t data_size = file_.size() - data_begin;

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return invalid("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return invalid(absl::StrCat("__metadata__ '", m.key(), "' is not a string"));
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string what = absl::StrCat("tensor '", name, "'");
    if (!v.is_object()) return invalid(absl::StrCat(what, " entry is not an object"));
    const auto dtype = v.find("dtype");
    const auto shape = v.find("shape");
    const auto offsets = v.find("data_offsets");
    if (dtype == v.end() || !dtype->is_string()) return invalid(absl::StrCat(what, " has no string dtype"));
    if (shape == v.end() || !shape->is_array()) return invalid(absl::StrCat(what, " has no shape array"));
    if (offsets == v.end() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
      return invalid(absl::StrCat(what, " data_offsets is not [begin, end] of unsigned integers"));
    }
    SafetensorsTensor t;
    t.name = name;
    t.dtype = dtype->get<std::string>();
    const uint64_t esize = SafetensorsDtypeSize(t.dtype);
    if (esize == 0) return invalid(absl::StrCat(what, " has unknown dtype '", t.dtype, "'"));
    t.num_elements = 1;
    for (const nlohmann::json& d : *shape) {
      if (!d.is_number_unsigned()) return invalid(absl::StrCat(what, " shape has a non-integer"));
      const uint64_t n = d.get<uint64_t>();
      if (n != 0 && t.num_elements > std::numeric_limits<uint64_t>::max() / n) {
        return invalid(absl::StrCat(what, " element count overflows"));
      }
      t.num_elements *= n;
      t.shape.push_back(n);
    }
    const uint64_t begin = (*offsets)[0].get<uint64_t>(), end = (*offsets)[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return invalid(absl::StrCat(what, " data_offsets [", begin, ", ", end,
                                  ") lie outside the data section of ", data_size, " bytes"));
    }
    if (t.num_elements > std::numeric_limits<uint64_t>::max() / esize ||
        t.num_elements * esize != end - begin) {
      return invalid(absl::StrCat(what, " has ", end - begin, " bytes but its shape and dtype ",
                                  t.dtype, " need ", t.num_elements, " x ", esize));
    }
    t.file_offset = data_begin + begin;
    t.size_bytes = end - begin;
    ranges.emplace_back(begin, end);
    index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return invalid(absl::StrCat("tensor data ranges overlap at byte ", ranges[i].first));
    }
  }
  return absl::OkStatus();
}

const SafetensorsTensor* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<absl::Span<const uint8_t>> SafetensorsFile::Bytes(const SafetensorsTensor& t) const {
  return file_.View(t.file_offset, t.size_bytes);
}

absl::Status SafetensorsFile::ReadF32(const SafetensorsTensor& t, absl::Span<float> out) const {
  if (out.size() != t.num_elements) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' has ", t.num_elements,
                                                   " values, output holds ", out.size()));
  }
  BITLOOM_ASSIGN_OR_RETURN(auto bytes, Bytes(t));
  const uint8_t* p = bytes.data();
  if (t.dtype == "F32") {
    std::memcpy(out.data(), p, bytes.size());
  } else if (t.dtype == "F16" || t.dtype == "BF16") {
    const bool f16 = t.dtype == "F16";
    for (size_t i = 0; i < out.size(); ++i) {
      const uint16_t h = static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8));
      out[i] = f16 ? F16ToF32(h) : Bf16ToF32(h);
    }
  } else {
    return absl::UnimplementedError(absl::StrCat("safetensors file ", file_.path(), ": tensor '",
                                                 t.name, "' has dtype ", t.dtype,
                                                 " (readable: F32, F16, BF16)"));
  }
  return absl::OkStatus();
}

}  // namespace bitloom::formats
