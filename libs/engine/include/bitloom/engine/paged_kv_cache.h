// PagedKvCache: the manager of one model's paged KV cache region in the VRAM pool (docs/ENGINE.md,
// "The paged KV cache"), in the layout every GPU kernel reads:
//
//   region = K_0 | V_0 | K_1 | V_1 | ... | K_{L-1} | V_{L-1}     each array array_stride bytes
//   apart K_l, V_l : [num_pages][page_size][num_kv_heads][head_dim] of the page format's dtype
//   (fp16)
//
// Token position t of a sequence lives in page block_table[t / page_size], slot t % page_size, of
// every layer's K and V. The region's size fixes num_pages (KvRegionLayout); pages are handed out
// from a free list, lowest id first from a fresh cache and always in the same order for the same
// calls, and each sequence keeps its block table (int32 page ids) that grows a page at a time as
// Reserve() lengthens it. Release() returns all of a sequence's pages at once. Failures leave the
// cache unchanged: a sequence that cannot grow keeps its pages and length.
//
// This class only does accounting and addresses: it never touches the region's bytes, so it runs
// the same over device memory, host memory or no memory at all (a null base, for tests). Not
// thread-safe: the scheduler thread owns it; copy the counters out for the metrics.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace bitloom::engine {

// The element type of K and V. Only fp16 today; an 8-bit type would add per-page scales to the
// format and a case here, leaving the page geometry and the manager as they are.
enum class KvDtype : int {
  kF16 = 0,
};

// Bytes per element: 2 for kF16.
int KvDtypeBytes(KvDtype dtype);
absl::string_view KvDtypeName(KvDtype dtype);

struct KvPageFormat {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int page_size = 16;  // tokens per page; a power of two
  KvDtype dtype = KvDtype::kF16;

  // INVALID_ARGUMENT naming the field when a dimension is not positive or page_size is not a power
  // of two.
  absl::Status Validate() const;
  // Bytes of one page of one layer's K (or V) array: page_size · num_kv_heads · head_dim · dtype.
  uint64_t page_bytes() const;
  // Bytes between consecutive slots of a page: num_kv_heads · head_dim · dtype.
  uint64_t slot_bytes() const;
};

// Where the 2·num_layers arrays lie in a region of a given size.
struct KvRegionLayout {
  int num_pages = 0;
  // Bytes from one array's start to the next: num_pages · page_bytes rounded up to 256, so every
  // array starts as aligned as the region.
  uint64_t array_stride = 0;
  int num_layers = 0;

  uint64_t key_offset(int layer) const { return static_cast<uint64_t>(2 * layer) * array_stride; }
  uint64_t value_offset(int layer) const {
    return static_cast<uint64_t>(2 * layer + 1) * array_stride;
  }
  // Bytes of the region the arrays use (the rest of the region is slack below one page per array).
  uint64_t used_bytes() const { return static_cast<uint64_t>(2 * num_layers) * array_stride; }
};

// The most pages `region_bytes` hold in the layout above (capped at INT32_MAX, the block tables'
// type). INVALID_ARGUMENT for a bad format.
absl::StatusOr<KvRegionLayout> LayoutKvRegion(const KvPageFormat& format, uint64_t region_bytes);
// The region size that holds exactly `num_pages` pages (for sizing a model's KV region).
absl::StatusOr<uint64_t> KvRegionBytes(const KvPageFormat& format, int num_pages);

using SequenceId = uint64_t;

class PagedKvCache {
 public:
  // A manager of the region [region_base, region_base + region_bytes) (region_base may be null: no
  // pointers then, offsets only). `max_seq_len` is the longest sequence in tokens; it fixes the
  // width of a block-table row, max_pages_per_seq = ceil(max_seq_len / page_size). INVALID_ARGUMENT
  // for a bad format or max_seq_len; RESOURCE_EXHAUSTED when the region holds no page at all.
  static absl::StatusOr<PagedKvCache> Create(const KvPageFormat& format, uint8_t* region_base,
                                             uint64_t region_bytes, int max_seq_len);

  const KvPageFormat& format() const { return format_; }
  const KvRegionLayout& layout() const { return layout_; }
  int num_pages() const { return layout_.num_pages; }
  int pages_free() const { return static_cast<int>(free_pages_.size()); }
  int pages_used() const { return num_pages() - pages_free(); }
  int max_seq_len() const { return max_seq_len_; }
  int max_pages_per_seq() const { return max_pages_per_seq_; }
  int num_sequences() const { return static_cast<int>(sequences_.size()); }

  // Layer `layer`'s K and V arrays: offsets in the region, and pointers (null without a base).
  uint64_t KeyOffset(int layer) const { return layout_.key_offset(layer); }
  uint64_t ValueOffset(int layer) const { return layout_.value_offset(layer); }
  uint8_t* Keys(int layer) const;
  uint8_t* Values(int layer) const;

  // Pages that hold `tokens` tokens: ceil(tokens / page_size).
  int PagesFor(int64_t tokens) const;

  // Makes `seq` hold `new_length` tokens, creating it when new, assigning pages as needed.
  // INVALID_ARGUMENT when new_length exceeds max_seq_len or is below the current length (sequences
  // grow; Truncate or Release to shrink); RESOURCE_EXHAUSTED, naming the pages needed and free,
  // when the free list is too short. The cache is unchanged on error (a new sequence is not
  // created).
  absl::Status Reserve(SequenceId seq, int new_length);
  // Shortens `seq` to `new_length` tokens (<= its length), returning the pages no longer needed.
  // NOT_FOUND for an unknown sequence, INVALID_ARGUMENT for a longer length.
  absl::Status Truncate(SequenceId seq, int new_length);
  // Forgets `seq` and returns all its pages. NOT_FOUND for an unknown sequence.
  absl::Status Release(SequenceId seq);

  bool Contains(SequenceId seq) const { return sequences_.contains(seq); }
  // Tokens held by `seq` (0 for an unknown sequence).
  int Length(SequenceId seq) const;
  // The block table of `seq`: its page ids, position order (empty for an unknown sequence).
  absl::Span<const int32_t> Pages(SequenceId seq) const;
  // Writes `seq`'s page ids to the front of `row` and 0 (a valid page, never read past the length)
  // to the rest: one row of a batch's [batch][max_pages_per_seq] table. NOT_FOUND for an unknown
  // sequence, INVALID_ARGUMENT when `row` is shorter than its pages.
  absl::Status FillBlockTable(SequenceId seq, absl::Span<int32_t> row) const;

  // Whether a new request of `prompt_tokens` + up to `max_new_tokens` fits now, counting
  // `pages_promised` pages as already taken (pages the scheduler has promised to running sequences
  // but not yet reserved). INVALID_ARGUMENT when the total exceeds max_seq_len (it never fits),
  // RESOURCE_EXHAUSTED when the pages are not free now.
  absl::Status CheckAdmission(int prompt_tokens, int max_new_tokens, int pages_promised = 0) const;
  bool CanAdmit(int prompt_tokens, int max_new_tokens, int pages_promised = 0) const {
    return CheckAdmission(prompt_tokens, max_new_tokens, pages_promised).ok();
  }

 private:
  struct Sequence {
    int length = 0;
    std::vector<int32_t> pages;
  };

  PagedKvCache(const KvPageFormat& format, const KvRegionLayout& layout, uint8_t* base,
               int max_seq_len);
  // Pushes `pages` back on the free list so the first of them is handed out next.
  void ReturnPages(absl::Span<const int32_t> pages);

  KvPageFormat format_;
  KvRegionLayout layout_;
  uint8_t* base_;
  int max_seq_len_;
  int max_pages_per_seq_;
  // A stack: back() is the next page handed out.
  std::vector<int32_t> free_pages_;
  absl::flat_hash_map<SequenceId, Sequence> sequences_;
};

}  // namespace bitloom::engine
