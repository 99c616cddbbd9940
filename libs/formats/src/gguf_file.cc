// GGUF parsing (docs/GGUF.md). The parser walks the header, the key/value section and the tensor
// table with a bounds-checked ByteReader. Counts read from the file are never trusted for an
// allocation before they have been checked against the bytes that remain (each element needs at
// least a known number of bytes), so a hostile count fails fast instead of allocating.
#include "bitloom/formats/gguf_file.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/formats/gguf_dequant.h"
#include "byte_reader.h"

namespace bitloom::formats {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
// Smallest encodings, used to bound counts before allocating: a string is a uint64 length plus its
// bytes; a key/value pair a non-empty key, a uint32 type and at least one value byte; an array a type
// and a count; a tensor-table entry a name length, at least one name byte, n_dims, one dim, a type
// and an offset.
constexpr uint64_t kMinStringBytes = 8;
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinArrayBytes = 4 + 8;
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;
// Largest accepted general.alignment: GGUF writers use 32; anything past a huge page is hostile.
constexpr uint64_t kMaxAlignment = uint64_t{1} << 21;
// Bound on the total number of array values that become GgufValue objects (arrays of arrays), which
// cost far more memory than their encoding.
constexpr uint64_t kMaxNestedValues = uint64_t{1} << 20;

uint64_t ScalarSize(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool: return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16: return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32: return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64: return 8;
    case GgufValueType::kString:
    case GgufValueType::kArray: return 0;
  }
  return 0;
}

bool IsKnownType(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kFloat64); }

class MetadataParser {
 public:
  MetadataParser(ByteReader* r, const std::string& key) : r_(r), key_(key) {}

  absl::StatusOr<GgufValue> Value(GgufValueType type, int depth) {
    switch (type) {
      case GgufValueType::kUint8: return Scalar<uint8_t>(type);
      case GgufValueType::kInt8: return Scalar<int8_t>(type);
      case GgufValueType::kUint16: return Scalar<uint16_t>(type);
      case GgufValueType::kInt16: return Scalar<int16_t>(type);
      case GgufValueType::kUint32: return Scalar<uint32_t>(type);
      case GgufValueType::kInt32: return Scalar<int32_t>(type);
      case GgufValueType::kUint64: return Scalar<uint64_t>(type);
      case GgufValueType::kInt64: return Scalar<int64_t>(type);
      case GgufValueType::kFloat32: {
        BITLOOM_ASSIGN_OR_RETURN(float v, r_->Read<float>(Where("float32")));
        return GgufValue(type, static_cast<double>(v));
      }
      case GgufValueType::kFloat64: {
        BITLOOM_ASSIGN_OR_RETURN(double v, r_->Read<double>(Where("float64")));
        return GgufValue(type, v);
      }
      case GgufValueType::kBool: {
        BITLOOM_ASSIGN_OR_RETURN(uint8_t v, r_->Read<uint8_t>(Where("bool")));
        if (v > 1) return Invalid(absl::StrCat("bool value ", v, " is not 0 or 1"));
        return GgufValue(type, v == 1);
      }
      case GgufValueType::kString: {
        BITLOOM_ASSIGN_OR_RETURN(absl::string_view s, ReadString(r_, Where("string")));
        return GgufValue(type, s);
      }
      case GgufValueType::kArray: return Array(depth);
    }
    return Invalid(absl::StrCat("unknown value type ", static_cast<uint32_t>(type)));
  }

  static absl::StatusOr<absl::string_view> ReadString(ByteReader* r, const std::string& what) {
    BITLOOM_ASSIGN_OR_RETURN(uint64_t len, r->Read<uint64_t>(absl::StrCat(what, " length")));
    return r->String(len, what);
  }

 private:
  std::string Where(absl::string_view what) const {
    return absl::StrCat(what, " of metadata key '", key_, "'");
  }
  absl::Status Invalid(absl::string_view msg) const {
    return absl::InvalidArgumentError(
        absl::StrCat("metadata key '", key_, "' at offset ", r_->offset(), ": ", msg));
  }

  template <typename T>
  absl::StatusOr<GgufValue> Scalar(GgufValueType type) {
    BITLOOM_ASSIGN_OR_RETURN(T v, r_->Read<T>(Where(GgufValueTypeName(type))));
    if constexpr (std::is_signed_v<T>) {
      return GgufValue(type, static_cast<int64_t>(v));
    } else {
      return GgufValue(type, static_cast<uint64_t>(v));
    }
  }

  absl::StatusOr<GgufValue> Array(int depth) {
    if (depth >= GgufFile::kMaxArrayDepth) {
      return Invalid(absl::StrCat("arrays nested deeper than ", GgufFile::kMaxArrayDepth));
    }
    BITLOOM_ASSIGN_OR_RETURN(uint32_t et, r_->Read<uint32_t>(Where("array element type")));
    if (!IsKnownType(et)) return Invalid(absl::StrCat("unknown array element type ", et));
    BITLOOM_ASSIGN_OR_RETURN(uint64_t count, r_->Read<uint64_t>(Where("array length")));
    GgufArray a;
    a.element_type = static_cast<GgufValueType>(et);
    a.size = count;
    const uint64_t scalar = ScalarSize(a.element_type);
    const uint64_t min_each = scalar != 0                            ? scalar
                              : a.element_type == GgufValueType::kString ? kMinStringBytes
                                                                         : kMinArrayBytes;
    if (count > r_->remaining() / min_each) {
      return Invalid(absl::StrCat("array of ", count, " ", GgufValueTypeName(a.element_type),
                                  " elements needs at least ", min_each, " bytes each but only ",
                                  r_->remaining(), " bytes remain"));
    }
    if (scalar != 0) {
      BITLOOM_ASSIGN_OR_RETURN(a.raw, r_->Bytes(count * scalar, Where("array data")));
      if (a.element_type == GgufValueType::kBool) {
        for (uint8_t b : a.raw) {
          if (b > 1) return Invalid(absl::StrCat("bool array element ", b, " is not 0 or 1"));
        }
      }
    } else if (a.element_type == GgufValueType::kString) {
      a.strings.reserve(count);
      for (uint64_t i = 0; i < count; ++i) {
        BITLOOM_ASSIGN_OR_RETURN(absl::string_view s,
                                 ReadString(r_, Where(absl::StrCat("string element ", i))));
        a.strings.push_back(s);
      }
    } else {
      nested_values_ += count;
      if (nested_values_ > kMaxNestedValues) {
        return Invalid(absl::StrCat("more than ", kMaxNestedValues, " nested array values"));
      }
      a.arrays.reserve(count);
      for (uint64_t i = 0; i < count; ++i) {
        BITLOOM_ASSIGN_OR_RETURN(GgufValue v, Value(GgufValueType::kArray, depth + 1));
        a.arrays.push_back(std::move(v));
      }
    }
    return GgufValue(GgufValueType::kArray, std::move(a));
  }

  ByteReader* r_;
  const std::string& key_;
  uint64_t nested_values_ = 0;
};

absl::Status TypeMismatch(absl::string_view want, GgufValueType got) {
  return absl::InvalidArgumentError(
      absl::StrCat("expected ", want, ", found ", GgufValueTypeName(got)));
}

template <typename T>
T LoadLe(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

absl::Status WithKey(absl::Status s, absl::string_view key) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("metadata key '", key, "': ", s.message()));
}

}  // namespace

absl::string_view GgufValueTypeName(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8: return "uint8";
    case GgufValueType::kInt8: return "int8";
    case GgufValueType::kUint16: return "uint16";
    case GgufValueType::kInt16: return "int16";
    case GgufValueType::kUint32: return "uint32";
    case GgufValueType::kInt32: return "int32";
    case GgufValueType::kFloat32: return "float32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kUint64: return "uint64";
    case GgufValueType::kInt64: return "int64";
    case GgufValueType::kFloat64: return "float64";
  }
  return "unknown";
}

absl::StatusOr<uint64_t> GgufValue::AsUint() const {
  if (const auto* u = std::get_if<uint64_t>(&storage_)) return *u;
  if (const auto* i = std::get_if<int64_t>(&storage_)) {
    if (*i < 0) return absl::InvalidArgumentError(absl::StrCat("negative value ", *i));
    return static_cast<uint64_t>(*i);
  }
  return TypeMismatch("an unsigned integer", type_);
}

absl::StatusOr<int64_t> GgufValue::AsInt() const {
  if (const auto* i = std::get_if<int64_t>(&storage_)) return *i;
  if (const auto* u = std::get_if<uint64_t>(&storage_)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat("value ", *u, " does not fit int64"));
    }
    return static_cast<int64_t>(*u);
  }
  return TypeMismatch("an integer", type_);
}

absl::StatusOr<double> GgufValue::AsDouble() const {
  if (const auto* d = std::get_if<double>(&storage_)) return *d;
  if (const auto* u = std::get_if<uint64_t>(&storage_)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&storage_)) return static_cast<double>(*i);
  return TypeMismatch("a number", type_);
}

absl::StatusOr<bool> GgufValue::AsBool() const {
  if (const auto* b = std::get_if<bool>(&storage_)) return *b;
  return TypeMismatch("a bool", type_);
}

absl::StatusOr<absl::string_view> GgufValue::AsString() const {
  if (const auto* s = std::get_if<absl::string_view>(&storage_)) return *s;
  return TypeMismatch("a string", type_);
}

absl::StatusOr<const GgufArray*> GgufValue::AsArray() const {
  if (const auto* a = std::get_if<GgufArray>(&storage_)) return a;
  return TypeMismatch("an array", type_);
}

absl::StatusOr<std::vector<absl::string_view>> GgufValue::AsStringArray() const {
  BITLOOM_ASSIGN_OR_RETURN(const GgufArray* a, AsArray());
  if (a->element_type != GgufValueType::kString) {
    return TypeMismatch("an array of string", a->element_type);
  }
  return a->strings;
}

absl::StatusOr<std::vector<int64_t>> GgufValue::AsIntArray() const {
  BITLOOM_ASSIGN_OR_RETURN(const GgufArray* a, AsArray());
  std::vector<int64_t> out;
  out.reserve(a->size);
  const uint8_t* p = a->raw.data();
  for (uint64_t i = 0; i < a->size; ++i) {
    switch (a->element_type) {
      case GgufValueType::kUint8: out.push_back(p[i]); break;
      case GgufValueType::kInt8: out.push_back(LoadLe<int8_t>(p + i)); break;
      case GgufValueType::kUint16: out.push_back(LoadLe<uint16_t>(p + 2 * i)); break;
      case GgufValueType::kInt16: out.push_back(LoadLe<int16_t>(p + 2 * i)); break;
      case GgufValueType::kUint32: out.push_back(LoadLe<uint32_t>(p + 4 * i)); break;
      case GgufValueType::kInt32: out.push_back(LoadLe<int32_t>(p + 4 * i)); break;
      case GgufValueType::kInt64: out.push_back(LoadLe<int64_t>(p + 8 * i)); break;
      case GgufValueType::kUint64: {
        const uint64_t v = LoadLe<uint64_t>(p + 8 * i);
        if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return absl::InvalidArgumentError(absl::StrCat("array value ", v, " does not fit int64"));
        }
        out.push_back(static_cast<int64_t>(v));
        break;
      }
      default: return TypeMismatch("an array of integers", a->element_type);
    }
  }
  return out;
}

absl::StatusOr<std::vector<double>> GgufValue::AsDoubleArray() const {
  BITLOOM_ASSIGN_OR_RETURN(const GgufArray* a, AsArray());
  std::vector<double> out;
  out.reserve(a->size);
  const uint8_t* p = a->raw.data();
  if (a->element_type == GgufValueType::kFloat32) {
    for (uint64_t i = 0; i < a->size; ++i) out.push_back(LoadLe<float>(p + 4 * i));
    return out;
  }
  if (a->element_type == GgufValueType::kFloat64) {
    for (uint64_t i = 0; i < a->size; ++i) out.push_back(LoadLe<double>(p + 8 * i));
    return out;
  }
  BITLOOM_ASSIGN_OR_RETURN(std::vector<int64_t> ints, AsIntArray());
  for (int64_t v : ints) out.push_back(static_cast<double>(v));
  return out;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  BITLOOM_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::Open(path));
  std::unique_ptr<GgufFile> file(new GgufFile(std::move(mapped)));
  BITLOOM_RETURN_IF_ERROR(file->Parse());
  return file;
}

absl::Status GgufFile::Parse() {
  const std::string label = absl::StrCat("GGUF file ", file_.path());
  ByteReader r(file_.bytes(), label);
  auto invalid = [&](absl::string_view msg) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": ", msg));
  };

  BITLOOM_ASSIGN_OR_RETURN(uint32_t magic, r.Read<uint32_t>("magic"));
  if (magic != kGgufMagic) return invalid("not a GGUF file (bad magic)");
  BITLOOM_ASSIGN_OR_RETURN(version_, r.Read<uint32_t>("version"));
  if (version_ == 1) {
    return absl::UnimplementedError(absl::StrCat(label, ": GGUF version 1 is not supported (2, 3 are)"));
  }
  if (version_ != 2 && version_ != 3) {
    // A big-endian writer (allowed since v3) stores the version byte-swapped.
    if (version_ == 0x02000000u || version_ == 0x03000000u) {
      return absl::UnimplementedError(absl::StrCat(label, ": big-endian GGUF is not supported"));
    }
    return invalid(absl::StrCat("unsupported GGUF version ", version_, " (supported: 2, 3)"));
  }
  BITLOOM_ASSIGN_OR_RETURN(uint64_t tensor_count, r.Read<uint64_t>("tensor count"));
  BITLOOM_ASSIGN_OR_RETURN(uint64_t kv_count, r.Read<uint64_t>("metadata key/value count"));
  if (kv_count > r.remaining() / kMinKvBytes) {
    return invalid(absl::StrCat("metadata count ", kv_count, " exceeds what the remaining ",
                                r.remaining(), " bytes can hold"));
  }

  keys_.reserve(kv_count);
  for (uint64_t i = 0; i < kv_count; ++i) {
    BITLOOM_ASSIGN_OR_RETURN(absl::string_view key_view,
                             MetadataParser::ReadString(&r, absl::StrCat("metadata key ", i)));
    std::string key(key_view);
    if (key.empty()) return invalid(absl::StrCat("metadata key ", i, " is empty"));
    BITLOOM_ASSIGN_OR_RETURN(uint32_t type,
                             r.Read<uint32_t>(absl::StrCat("type of metadata key '", key, "'")));
    if (!IsKnownType(type)) {
      return invalid(absl::StrCat("metadata key '", key, "' has unknown value type ", type));
    }
    MetadataParser parser(&r, key);
    BITLOOM_ASSIGN_OR_RETURN(GgufValue value, parser.Value(static_cast<GgufValueType>(type), 0));
    if (metadata_.contains(key)) return invalid(absl::StrCat("duplicate metadata key '", key, "'"));
    metadata_.emplace(key, std::move(value));
    keys_.push_back(std::move(key));
  }

  if (const GgufValue* a = Find("general.alignment")) {
    auto v = a->AsUint();
    if (!v.ok()) return invalid(absl::StrCat("general.alignment: ", v.status().message()));
    if (*v == 0 || (*v & (*v - 1)) != 0 || *v > kMaxAlignment) {
      return invalid(absl::StrCat("general.alignment ", *v, " is not a power of two in [1, ",
                                  kMaxAlignment, "]"));
    }
    alignment_ = *v;
  }

  if (tensor_count > r.remaining() / kMinTensorInfoBytes) {
    return invalid(absl::StrCat("tensor count ", tensor_count, " exceeds what the remaining ",
                                r.remaining(), " bytes can hold"));
  }
  tensors_.reserve(tensor_count);
  std::vector<uint64_t> relative_offsets;
  relative_offsets.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensorInfo t;
    BITLOOM_ASSIGN_OR_RETURN(absl::string_view name,
                             MetadataParser::ReadString(&r, absl::StrCat("name of tensor ", i)));
    t.name = std::string(name);
    if (t.name.empty()) return invalid(absl::StrCat("tensor ", i, " has an empty name"));
    const std::string what = absl::StrCat("tensor '", t.name, "'");
    BITLOOM_ASSIGN_OR_RETURN(uint32_t n_dims, r.Read<uint32_t>(absl::StrCat(what, " n_dims")));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return invalid(absl::StrCat(what, " has ", n_dims, " dimensions (allowed: 1..", kMaxDims, ")"));
    }
    t.num_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      BITLOOM_ASSIGN_OR_RETURN(uint64_t ne, r.Read<uint64_t>(absl::StrCat(what, " dimension")));
      if (ne != 0 && t.num_elements > std::numeric_limits<uint64_t>::max() / ne) {
        return invalid(absl::StrCat(what, " element count overflows"));
      }
      t.num_elements *= ne;
      t.ne.push_back(ne);
    }
    BITLOOM_ASSIGN_OR_RETURN(uint32_t type, r.Read<uint32_t>(absl::StrCat(what, " type")));
    t.type = static_cast<GgmlType>(type);
    const GgmlTypeTraits traits = GetGgmlTypeTraits(t.type);
    if (traits.block_size == 0) return invalid(absl::StrCat(what, " has unknown ggml type id ", type));
    if (t.ne[0] % traits.block_size != 0) {
      return invalid(absl::StrCat(what, " row length ", t.ne[0], " is not a multiple of the ",
                                  traits.name, " block size ", traits.block_size));
    }
    if (absl::Status s = GgmlByteSize(t.type, t.num_elements, &t.size_bytes); !s.ok()) {
      return invalid(absl::StrCat(what, ": ", s.message()));
    }
    BITLOOM_ASSIGN_OR_RETURN(uint64_t offset, r.Read<uint64_t>(absl::StrCat(what, " offset")));
    if (offset % alignment_ != 0) {
      return invalid(absl::StrCat(what, " offset ", offset, " is not a multiple of the alignment ",
                                  alignment_));
    }
    if (tensor_index_.contains(t.name)) return invalid(absl::StrCat("duplicate tensor '", t.name, "'"));
    tensor_index_.emplace(t.name, tensors_.size());
    relative_offsets.push_back(offset);
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment after the tensor table.
  const uint64_t table_end = r.offset();
  data_offset_ = (table_end + alignment_ - 1) / alignment_ * alignment_;
  if (tensor_count > 0 && data_offset_ > file_.size()) {
    return invalid(absl::StrCat("data section at ", data_offset_, " starts past the end of the file (",
                                file_.size(), " bytes)"));
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    GgufTensorInfo& t = tensors_[i];
    const uint64_t avail = file_.size() - data_offset_;
    if (relative_offsets[i] > avail || t.size_bytes > avail - relative_offsets[i]) {
      return invalid(absl::StrCat("tensor '", t.name, "' data [", relative_offsets[i], ", +",
                                  t.size_bytes, ") lies outside the data section of ", avail,
                                  " bytes"));
    }
    t.file_offset = data_offset_ + relative_offsets[i];
  }
  return absl::OkStatus();
}

const GgufValue* GgufFile::Find(absl::string_view key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

absl::StatusOr<uint64_t> GgufFile::GetUint(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("metadata key '", key, "' is missing"));
  auto r = v->AsUint();
  if (!r.ok()) return WithKey(r.status(), key);
  return *r;
}

absl::StatusOr<double> GgufFile::GetDouble(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("metadata key '", key, "' is missing"));
  auto r = v->AsDouble();
  if (!r.ok()) return WithKey(r.status(), key);
  return *r;
}

absl::StatusOr<bool> GgufFile::GetBool(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("metadata key '", key, "' is missing"));
  auto r = v->AsBool();
  if (!r.ok()) return WithKey(r.status(), key);
  return *r;
}

absl::StatusOr<absl::string_view> GgufFile::GetString(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("metadata key '", key, "' is missing"));
  auto r = v->AsString();
  if (!r.ok()) return WithKey(r.status(), key);
  return *r;
}

const GgufTensorInfo* GgufFile::FindTensor(absl::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<absl::Span<const uint8_t>> GgufFile::TensorBytes(const GgufTensorInfo& tensor) const {
  return file_.View(tensor.file_offset, tensor.size_bytes);
}

absl::Status GgufFile::DequantizeRows(const GgufTensorInfo& tensor, uint64_t row_begin,
                                      uint64_t num_rows, absl::Span<float> out) const {
  const uint64_t rows = tensor.num_rows();
  if (row_begin > rows || num_rows > rows - row_begin) {
    return absl::OutOfRangeError(absl::StrCat("rows [", row_begin, ", +", num_rows, ") of tensor '",
                                              tensor.name, "' with ", rows, " rows"));
  }
  if (out.size() != num_rows * tensor.row_length()) {
    return absl::InvalidArgumentError(absl::StrCat("output of ", out.size(), " floats for ", num_rows,
                                                   " rows of ", tensor.row_length()));
  }
  const uint64_t row_bytes = tensor.row_bytes();
  BITLOOM_ASSIGN_OR_RETURN(auto bytes, file_.View(tensor.file_offset + row_begin * row_bytes,
                                                  num_rows * row_bytes));
  return DequantizeGguf(tensor.type, bytes, out);
}

absl::StatusOr<std::vector<float>> GgufFile::DequantizeF32(const GgufTensorInfo& tensor) const {
  if (!GetGgmlTypeTraits(tensor.type).can_dequantize) {
    return absl::UnimplementedError(absl::StrCat("tensor '", tensor.name, "': cannot dequantize type ",
                                                 GetGgmlTypeTraits(tensor.type).name));
  }
  std::vector<float> out(tensor.num_elements);
  BITLOOM_RETURN_IF_ERROR(DequantizeRows(tensor, 0, tensor.num_rows(), absl::MakeSpan(out)));
  return out;
}

}  // namespace bitloom::formats
