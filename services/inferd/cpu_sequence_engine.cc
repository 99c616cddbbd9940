#include "cpu_sequence_engine.h"

#include <numeric>

#include "absl/strings/str_cat.h"

namespace bitloom::inferd {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::vector<int32_t> Positions(int start, size_t count) {
  std::vector<int32_t> positions(count);
  std::iota(positions.begin(), positions.end(), start);
  return positions;
}

engine::DecoderModel::Logits ToModel(SequenceEngine::Logits which) {
  switch (which) {
    case SequenceEngine::Logits::kAll:
      return engine::DecoderModel::Logits::kAll;
    case SequenceEngine::Logits::kLast:
      return engine::DecoderModel::Logits::kLast;
    case SequenceEngine::Logits::kNone:
      break;
  }
  return engine::DecoderModel::Logits::kNone;
}

}  // namespace

CpuSequenceEngine::CpuSequenceEngine(const engine::DecoderModel* model, int slots, int context_length,
                                     int page_tokens)
    : model_(model), page_tokens_(page_tokens), pages_per_slot_(CeilDiv(context_length, page_tokens)) {
  caches_.reserve(slots);
  for (int i = 0; i < slots; ++i) {
    caches_.push_back(model_->NewKvCache(context_length));
    free_slots_.push_back(slots - 1 - i);  // slot 0 is taken first
  }
  open_.assign(slots, false);
}

bool CpuSequenceEngine::Open(int seq) const {
  return seq >= 0 && seq < static_cast<int>(open_.size()) && open_[seq];
}

absl::StatusOr<int> CpuSequenceEngine::AddSequence() {
  if (free_slots_.empty()) {
    return absl::ResourceExhaustedError(absl::StrCat("all ", slots(), " KV slots are taken"));
  }
  const int seq = free_slots_.back();
  free_slots_.pop_back();
  open_[seq] = true;
  return seq;
}

void CpuSequenceEngine::ReleaseSequence(int seq) {
  if (!Open(seq)) return;
  caches_[seq].Clear();
  open_[seq] = false;
  free_slots_.push_back(seq);
}

int CpuSequenceEngine::Length(int seq) const { return Open(seq) ? caches_[seq].length() : 0; }

absl::StatusOr<std::vector<float>> CpuSequenceEngine::Prefill(int seq, absl::Span<const int32_t> tokens,
                                                              Logits which) {
  if (!Open(seq)) return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not open"));
  engine::KvCache& cache = caches_[seq];
  return model_->Forward(tokens, Positions(cache.length(), tokens.size()), cache, ToModel(which));
}

absl::StatusOr<std::vector<float>> CpuSequenceEngine::Decode(absl::Span<const int> seqs,
                                                             absl::Span<const int32_t> tokens) {
  if (seqs.size() != tokens.size() || seqs.empty()) {
    return absl::InvalidArgumentError("Decode: one token per sequence, at least one sequence");
  }
  std::vector<float> logits;
  logits.reserve(seqs.size() * static_cast<size_t>(vocab_size()));
  for (size_t i = 0; i < seqs.size(); ++i) {
    absl::StatusOr<std::vector<float>> row = Prefill(seqs[i], tokens.subspan(i, 1), Logits::kLast);
    if (!row.ok()) return row.status();
    logits.insert(logits.end(), row->begin(), row->end());
  }
  return logits;
}

int64_t CpuSequenceEngine::used_pages() const {
  int64_t used = 0;
  for (size_t i = 0; i < caches_.size(); ++i) {
    if (open_[i]) used += CeilDiv(caches_[i].length(), page_tokens_);
  }
  return used;
}

}  // namespace bitloom::inferd
