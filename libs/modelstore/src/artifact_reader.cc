#include "bitloom/modelstore/artifact_reader.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bitloom/core/status_macros.h"
#include "bitloom/modelstore/codec_layout.h"

namespace bitloom::modelstore {

absl::StatusOr<std::unique_ptr<ArtifactReader>> ArtifactReader::Open(const std::string& path,
                                                                     ReaderOptions options) {
  std::unique_ptr<ArtifactReader> reader(new ArtifactReader());
  BITLOOM_ASSIGN_OR_RETURN(reader->file_, MappedFile::Open(path));
  BITLOOM_RETURN_IF_ERROR(reader->VerifyHeader());
  BITLOOM_RETURN_IF_ERROR(reader->LoadManifest());
  BITLOOM_RETURN_IF_ERROR(reader->VerifyTensorTable());
  if (options.verify_checksums) BITLOOM_RETURN_IF_ERROR(reader->VerifyChecksums());
  return reader;
}

absl::Status ArtifactReader::Corrupt(absl::string_view what) const {
  return absl::DataLossError(absl::StrCat(file_.path(), ": ", what));
}

absl::Status ArtifactReader::VerifyHeader() {
  absl::StatusOr<FileHeader> decoded = DecodeHeader(file_.bytes());
  if (!decoded.ok()) return Corrupt(decoded.status().message());
  const FileHeader& h = *decoded;

  // The checksum passed, so inconsistent versions are a writer bug or deliberate; still corruption.
  if (h.format_version == 0 || h.min_reader_version == 0 ||
      h.min_reader_version > h.format_version) {
    return Corrupt(absl::StrCat("invalid versions: format_version ", h.format_version,
                                ", min_reader_version ", h.min_reader_version));
  }
  if (h.min_reader_version > kReaderVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(file_.path(), ": artifact format needs reader version ", h.min_reader_version,
                     ", this reader supports ", kReaderVersion));
  }
  if (h.file_size != file_.size()) {
    return Corrupt(absl::StrCat("file is ", file_.size(), " bytes, header says ", h.file_size));
  }
  if (h.data_offset < kHeaderSize || h.data_offset % kBlobAlignment != 0) {
    return Corrupt(absl::StrCat("data_offset ", h.data_offset, " is not a multiple of ",
                                kBlobAlignment, " past the ", kHeaderSize, "-byte header"));
  }
  if (h.manifest_offset < h.data_offset) {
    return Corrupt(absl::StrCat("manifest_offset ", h.manifest_offset,
                                " is before the data region at ", h.data_offset));
  }
  // Overflow-safe form of manifest_offset + manifest_size == file_size: the manifest ends the file.
  if (h.manifest_offset > h.file_size || h.manifest_size != h.file_size - h.manifest_offset) {
    return Corrupt(absl::StrCat("manifest at offset ", h.manifest_offset, " of ", h.manifest_size,
                                " bytes does not end the ", h.file_size, "-byte file"));
  }
  if (h.manifest_size > kMaxManifestSize) {
    return Corrupt(absl::StrCat("manifest is ", h.manifest_size, " bytes, more than the limit of ",
                                kMaxManifestSize));
  }
  header_ = h;
  return absl::OkStatus();
}

absl::Status ArtifactReader::LoadManifest() {
  // Bounds were checked against the real size in VerifyHeader; View() re-checks them anyway.
  absl::StatusOr<absl::Span<const uint8_t>> bytes =
      file_.View(header_.manifest_offset, header_.manifest_size);
  if (!bytes.ok()) return Corrupt(bytes.status().message());
  const uint64_t actual = Xxh3(*bytes);
  if (actual != header_.manifest_xxh3) {
    return Corrupt(absl::StrCat("manifest checksum mismatch at offset ", header_.manifest_offset,
                                ": stored ", absl::Hex(header_.manifest_xxh3, absl::kZeroPad16),
                                ", computed ", absl::Hex(actual, absl::kZeroPad16)));
  }
  if (!manifest_.ParseFromArray(bytes->data(), static_cast<int>(bytes->size()))) {
    return Corrupt(absl::StrCat("manifest at offset ", header_.manifest_offset, " (",
                                header_.manifest_size,
                                " bytes) does not parse as bitloom.v1.ArtifactManifest"));
  }
  return absl::OkStatus();
}

absl::Status ArtifactReader::VerifyTensorTable() {
  const uint64_t data_begin = header_.data_offset;
  const uint64_t data_end = header_.manifest_offset;
  const int n = manifest_.tensors_size();
  index_.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const v1::TensorEntry& t = manifest_.tensors(i);
    if (t.name().empty()) return Corrupt(absl::StrCat("tensor #", i, " has an empty name"));
    const std::string where = absl::StrCat("tensor '", t.name(), "'");
    if (!index_.emplace(t.name(), i).second) return Corrupt(absl::StrCat("duplicate ", where));
    if (t.offset() % kBlobAlignment != 0) {
      return Corrupt(
          absl::StrCat(where, ": offset ", t.offset(), " is not ", kBlobAlignment, "-aligned"));
    }
    // Overflow-safe form of data_begin <= offset && offset + size <= data_end.
    if (t.offset() < data_begin || t.offset() > data_end || t.size() > data_end - t.offset()) {
      return Corrupt(absl::StrCat(where, ": blob [", t.offset(), ", +", t.size(),
                                  ") is outside the data region [", data_begin, ", ", data_end,
                                  ")"));
    }
    absl::StatusOr<uint64_t> expected =
        ExpectedBlobSize(t.codec(), absl::MakeConstSpan(t.shape().data(), t.shape().size()));
    if (expected.ok()) {
      if (*expected != t.size()) {
        return Corrupt(absl::StrCat(
            where, ": size ", t.size(), " does not match ", CodecName(t.codec()), " shape [",
            absl::StrJoin(t.shape(), ", "), "], which needs ", *expected, " bytes"));
      }
    } else if (!absl::IsUnimplemented(expected.status())) {
      // Codecs without a fixed layout here (quantized or newer than this reader) are checked by
      // their kernels; unspecified codecs and impossible shapes are corrupt.
      return Corrupt(absl::StrCat(where, ": ", expected.status().message()));
    }
  }

  // Overlap: sort by (offset, size) and compare neighbours. Empty blobs overlap nothing.
  std::vector<int> order(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  std::sort(order.begin(), order.end(), [this](int a, int b) {
    const v1::TensorEntry& x = manifest_.tensors(a);
    const v1::TensorEntry& y = manifest_.tensors(b);
    return x.offset() != y.offset() ? x.offset() < y.offset() : x.size() < y.size();
  });
  for (size_t k = 1; k < order.size(); ++k) {
    const v1::TensorEntry& prev = manifest_.tensors(order[k - 1]);
    const v1::TensorEntry& next = manifest_.tensors(order[k]);
    if (prev.size() != 0 && next.size() != 0 && next.offset() < prev.offset() + prev.size()) {
      return Corrupt(absl::StrCat("tensor '", next.name(), "' at offset ", next.offset(),
                                  " overlaps tensor '", prev.name(), "' [", prev.offset(), ", +",
                                  prev.size(), ")"));
    }
  }
  return absl::OkStatus();
}

const v1::TensorEntry* ArtifactReader::FindTensor(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &manifest_.tensors(it->second);
}

absl::StatusOr<absl::Span<const uint8_t>> ArtifactReader::TensorBytes(
    absl::string_view name) const {
  const v1::TensorEntry* t = FindTensor(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat(file_.path(), ": no tensor named '", name, "'"));
  }
  absl::StatusOr<absl::Span<const uint8_t>> bytes = file_.View(t->offset(), t->size());
  if (!bytes.ok()) return Corrupt(bytes.status().message());  // unreachable after VerifyTensorTable
  return bytes;
}

absl::Status ArtifactReader::VerifyChecksums() const {
  for (const v1::TensorEntry& t : manifest_.tensors()) {
    absl::StatusOr<absl::Span<const uint8_t>> bytes = file_.View(t.offset(), t.size());
    if (!bytes.ok()) return Corrupt(bytes.status().message());
    const uint64_t actual = Xxh3(*bytes);
    if (actual != t.xxh3()) {
      return Corrupt(absl::StrCat("tensor '", t.name(), "': checksum mismatch in blob [",
                                  t.offset(), ", +", t.size(), "): stored ",
                                  absl::Hex(t.xxh3(), absl::kZeroPad16), ", computed ",
                                  absl::Hex(actual, absl::kZeroPad16)));
    }
  }
  return absl::OkStatus();
}

}  // namespace bitloom::modelstore
