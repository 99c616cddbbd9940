#include "bitloom/engine/paged_kv_cache.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "bitloom/engine/pool_allocator.h"

namespace bitloom::engine {
namespace {

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

int KvDtypeBytes(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kF16:
      return 2;
  }
  return 0;
}

absl::string_view KvDtypeName(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kF16:
      return "f16";
  }
  return "unknown";
}

absl::Status KvPageFormat::Validate() const {
  auto positive = [](absl::string_view field, int v) -> absl::Status {
    if (v > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("KV page format: ", field, " = ", v, " must be positive"));
  };
  if (auto s = positive("num_layers", num_layers); !s.ok()) return s;
  if (auto s = positive("num_kv_heads", num_kv_heads); !s.ok()) return s;
  if (auto s = positive("head_dim", head_dim); !s.ok()) return s;
  if (page_size <= 0 || (page_size & (page_size - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV page format: page_size = ", page_size, " is not a power of two"));
  }
  if (KvDtypeBytes(dtype) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV page format: unknown dtype ", static_cast<int>(dtype)));
  }
  return absl::OkStatus();
}

uint64_t KvPageFormat::slot_bytes() const {
  return static_cast<uint64_t>(num_kv_heads) * static_cast<uint64_t>(head_dim) *
         static_cast<uint64_t>(KvDtypeBytes(dtype));
}

uint64_t KvPageFormat::page_bytes() const {
  return static_cast<uint64_t>(page_size) * slot_bytes();
}

absl::StatusOr<KvRegionLayout> LayoutKvRegion(const KvPageFormat& format, uint64_t region_bytes) {
  if (absl::Status s = format.Validate(); !s.ok()) return s;
  const uint64_t arrays = 2 * static_cast<uint64_t>(format.num_layers);
  // Each array gets an equal, aligned share; the pages that fit in a share are the pages of all.
  const uint64_t share = region_bytes / arrays / kPoolAlignment * kPoolAlignment;
  const uint64_t pages =
      std::min<uint64_t>(share / format.page_bytes(), std::numeric_limits<int32_t>::max());
  KvRegionLayout layout;
  layout.num_pages = static_cast<int>(pages);
  layout.array_stride = AlignUp(pages * format.page_bytes(), kPoolAlignment);
  layout.num_layers = format.num_layers;
  return layout;
}

absl::StatusOr<uint64_t> KvRegionBytes(const KvPageFormat& format, int num_pages) {
  if (absl::Status s = format.Validate(); !s.ok()) return s;
  if (num_pages < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV region: num_pages = ", num_pages, " is negative"));
  }
  return 2 * static_cast<uint64_t>(format.num_layers) *
         AlignUp(static_cast<uint64_t>(num_pages) * format.page_bytes(), kPoolAlignment);
}

absl::StatusOr<PagedKvCache> PagedKvCache::Create(const KvPageFormat& format, uint8_t* region_base,
                                                  uint64_t region_bytes, int max_seq_len) {
  absl::StatusOr<KvRegionLayout> layout = LayoutKvRegion(format, region_bytes);
  if (!layout.ok()) return layout.status();
  if (max_seq_len <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache: max_seq_len = ", max_seq_len, " must be positive"));
  }
  if (layout->num_pages == 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache: a region of ", region_bytes, " bytes holds no page (",
                     2 * format.num_layers, " arrays of ", format.page_bytes(), "-byte pages)"));
  }
  return PagedKvCache(format, *layout, region_base, max_seq_len);
}

PagedKvCache::PagedKvCache(const KvPageFormat& format, const KvRegionLayout& layout, uint8_t* base,
                           int max_seq_len)
    : format_(format), layout_(layout), base_(base), max_seq_len_(max_seq_len) {
  max_pages_per_seq_ = PagesFor(max_seq_len);
  free_pages_.reserve(layout_.num_pages);
  for (int32_t page = layout_.num_pages - 1; page >= 0; --page) free_pages_.push_back(page);
}

uint8_t* PagedKvCache::Keys(int layer) const {
  return base_ == nullptr ? nullptr : base_ + KeyOffset(layer);
}

uint8_t* PagedKvCache::Values(int layer) const {
  return base_ == nullptr ? nullptr : base_ + ValueOffset(layer);
}

int PagedKvCache::PagesFor(int64_t tokens) const {
  return static_cast<int>((tokens + format_.page_size - 1) / format_.page_size);
}

absl::Status PagedKvCache::Reserve(SequenceId seq, int new_length) {
  if (new_length < 0 || new_length > max_seq_len_) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache: sequence ", seq, " length ", new_length,
                     " is outside [0, max_seq_len = ", max_seq_len_, "]"));
  }
  auto found = sequences_.find(seq);
  const int length = found == sequences_.end() ? 0 : found->second.length;
  const int have = found == sequences_.end() ? 0 : static_cast<int>(found->second.pages.size());
  if (new_length < length) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache: sequence ", seq, " holds ", length,
                                                   " tokens; Reserve cannot shrink it to ",
                                                   new_length));
  }
  const int need = PagesFor(new_length) - have;
  if (need > pages_free()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache exhausted: sequence ", seq, " needs ", need, " more pages for ",
                     new_length, " tokens; ", pages_free(), " of ", num_pages(), " pages free (",
                     format_.page_size, " tokens per page)"));
  }
  Sequence& sequence = found == sequences_.end() ? sequences_[seq] : found->second;
  if (sequence.pages.capacity() == 0) sequence.pages.reserve(max_pages_per_seq_);
  for (int i = 0; i < need; ++i) {
    sequence.pages.push_back(free_pages_.back());
    free_pages_.pop_back();
  }
  sequence.length = new_length;
  return absl::OkStatus();
}

void PagedKvCache::ReturnPages(absl::Span<const int32_t> pages) {
  for (auto it = pages.rbegin(); it != pages.rend(); ++it) free_pages_.push_back(*it);
}

absl::Status PagedKvCache::Truncate(SequenceId seq, int new_length) {
  auto found = sequences_.find(seq);
  if (found == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("KV cache: no sequence ", seq));
  }
  Sequence& sequence = found->second;
  if (new_length < 0 || new_length > sequence.length) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache: sequence ", seq, " holds ",
                                                   sequence.length, " tokens; cannot truncate to ",
                                                   new_length));
  }
  const size_t keep = static_cast<size_t>(PagesFor(new_length));
  ReturnPages(absl::MakeConstSpan(sequence.pages).subspan(keep));
  sequence.pages.resize(keep);
  sequence.length = new_length;
  return absl::OkStatus();
}

absl::Status PagedKvCache::Release(SequenceId seq) {
  auto found = sequences_.find(seq);
  if (found == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("KV cache: no sequence ", seq));
  }
  ReturnPages(found->second.pages);
  sequences_.erase(found);
  return absl::OkStatus();
}

int PagedKvCache::Length(SequenceId seq) const {
  auto found = sequences_.find(seq);
  return found == sequences_.end() ? 0 : found->second.length;
}

absl::Span<const int32_t> PagedKvCache::Pages(SequenceId seq) const {
  auto found = sequences_.find(seq);
  if (found == sequences_.end()) return {};
  return found->second.pages;
}

absl::Status PagedKvCache::FillBlockTable(SequenceId seq, absl::Span<int32_t> row) const {
  auto found = sequences_.find(seq);
  if (found == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("KV cache: no sequence ", seq));
  }
  const std::vector<int32_t>& pages = found->second.pages;
  if (row.size() < pages.size()) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache: block-table row of ", row.size(),
                                                   " entries for sequence ", seq, " of ",
                                                   pages.size(), " pages"));
  }
  std::copy(pages.begin(), pages.end(), row.begin());
  std::fill(row.begin() + static_cast<ptrdiff_t>(pages.size()), row.end(), 0);
  return absl::OkStatus();
}

absl::Status PagedKvCache::CheckAdmission(int prompt_tokens, int max_new_tokens,
                                          int pages_promised) const {
  const int64_t total = static_cast<int64_t>(prompt_tokens) + max_new_tokens;
  if (prompt_tokens < 0 || max_new_tokens < 0 || total > max_seq_len_) {
    return absl::InvalidArgumentError(
        absl::StrCat("request of ", prompt_tokens, " prompt tokens + ", max_new_tokens,
                     " new tokens exceeds the context of ", max_seq_len_, " tokens"));
  }
  const int need = PagesFor(total);
  const int available = pages_free() - std::max(pages_promised, 0);
  if (need > available) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache: a request of ", prompt_tokens, " + ", max_new_tokens,
                     " tokens needs ", need, " pages; ", std::max(available, 0), " of ",
                     num_pages(), " pages are free (", pages_promised,
                     " promised to running "
                     "sequences)"));
  }
  return absl::OkStatus();
}

}  // namespace bitloom::engine
