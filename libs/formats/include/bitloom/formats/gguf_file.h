// GgufFile: a parsed, memory-mapped GGUF (version 2 or 3) file: metadata, tensor table and tensor
// data, under GGUF's own names and in GGML's dimension order. docs/GGUF.md specifies the format.
//
// Open() maps the file and validates everything that later reads rely on: every count, string
// length, array size, tensor dimension, type, offset and size is checked against the file, so a
// truncated or hostile file is an error, never a crash or a huge allocation. Metadata strings and
// scalar arrays are views into the mapping (the file owns them; they live as long as the GgufFile).
// Immutable after Open(), so thread-safe for concurrent readers. Checkpoint (checkpoint.h) builds the
// model-level view on top of this class; tools and tests that need raw GGUF access use it directly.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "bitloom/core/mapped_file.h"
#include "bitloom/formats/gguf_blocks.h"

namespace bitloom::formats {

// gguf_metadata_value_type ids.
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

absl::string_view GgufValueTypeName(GgufValueType type);

class GgufValue;

// A metadata array. Exactly one of the storage members is used, by element type: `raw` for numbers
// and bools (little-endian elements, `size` of them), `strings` for strings, `arrays` for arrays.
struct GgufArray {
  GgufValueType element_type = GgufValueType::kUint8;
  uint64_t size = 0;
  absl::Span<const uint8_t> raw;
  std::vector<absl::string_view> strings;
  std::vector<GgufValue> arrays;
};

// One metadata value. Scalars keep their GGUF type; the accessors convert where that is lossless.
class GgufValue {
 public:
  using Storage = std::variant<uint64_t, int64_t, double, bool, absl::string_view, GgufArray>;

  GgufValue() = default;
  GgufValue(GgufValueType type, Storage storage) : type_(type), storage_(std::move(storage)) {}

  GgufValueType type() const { return type_; }
  bool is_array() const { return type_ == GgufValueType::kArray; }

  // Any integer type whose value is non-negative (and, for AsInt, fits int64).
  absl::StatusOr<uint64_t> AsUint() const;
  absl::StatusOr<int64_t> AsInt() const;
  // Float types, and integers (converted).
  absl::StatusOr<double> AsDouble() const;
  absl::StatusOr<bool> AsBool() const;
  absl::StatusOr<absl::string_view> AsString() const;
  absl::StatusOr<const GgufArray*> AsArray() const;

  // Element-wise conversions of an array value; INVALID_ARGUMENT when the element type does not fit.
  absl::StatusOr<std::vector<absl::string_view>> AsStringArray() const;
  absl::StatusOr<std::vector<int64_t>> AsIntArray() const;
  absl::StatusOr<std::vector<double>> AsDoubleArray() const;

 private:
  GgufValueType type_ = GgufValueType::kUint8;
  Storage storage_ = uint64_t{0};
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  // GGML order: ne[0] is the innermost (contiguous) dimension, the row length.
  std::vector<uint64_t> ne;
  // Absolute byte offset of the data in the file, and its size.
  uint64_t file_offset = 0;
  uint64_t size_bytes = 0;
  uint64_t num_elements = 0;

  uint64_t row_length() const { return ne.empty() ? 1 : ne[0]; }
  uint64_t num_rows() const { return row_length() == 0 ? 0 : num_elements / row_length(); }
  uint64_t row_bytes() const { return num_rows() == 0 ? 0 : size_bytes / num_rows(); }
};

class GgufFile {
 public:
  // Largest accepted metadata nesting depth (an array of arrays is depth 2).
  static constexpr int kMaxArrayDepth = 8;
  // Largest accepted number of dimensions, as in GGML.
  static constexpr uint32_t kMaxDims = 4;
  // Default general.alignment.
  static constexpr uint64_t kDefaultAlignment = 32;

  // NOT_FOUND when the file does not exist; INVALID_ARGUMENT naming the field and the limit when it
  // is not a valid GGUF v2/v3 file; UNIMPLEMENTED for v1 and big-endian files.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);

  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return file_.path(); }
  uint64_t file_size() const { return file_.size(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // Absolute offset of the tensor data section (tensor offsets in the file are relative to it).
  uint64_t data_offset() const { return data_offset_; }

  // Keys in file order.
  const std::vector<std::string>& metadata_keys() const { return keys_; }
  // nullptr when absent.
  const GgufValue* Find(absl::string_view key) const;
  // Typed look-ups: NOT_FOUND when absent, INVALID_ARGUMENT (naming the key) on a type mismatch.
  absl::StatusOr<uint64_t> GetUint(absl::string_view key) const;
  absl::StatusOr<double> GetDouble(absl::string_view key) const;
  absl::StatusOr<bool> GetBool(absl::string_view key) const;
  absl::StatusOr<absl::string_view> GetString(absl::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const GgufTensorInfo* FindTensor(absl::string_view name) const;

  // The tensor's bytes, a view into the mapping.
  absl::StatusOr<absl::Span<const uint8_t>> TensorBytes(const GgufTensorInfo& tensor) const;
  // Dequantizes rows [row_begin, row_begin + num_rows) (a row is ne[0] values) into `out`, whose size
  // must be num_rows * ne[0].
  absl::Status DequantizeRows(const GgufTensorInfo& tensor, uint64_t row_begin, uint64_t num_rows,
                              absl::Span<float> out) const;
  // The whole tensor as fp32, in GGML order (row-major with ne[0] innermost).
  absl::StatusOr<std::vector<float>> DequantizeF32(const GgufTensorInfo& tensor) const;

 private:
  explicit GgufFile(MappedFile file) : file_(std::move(file)) {}
  absl::Status Parse();

  MappedFile file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::string> keys_;
  absl::flat_hash_map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
};

}  // namespace bitloom::formats
