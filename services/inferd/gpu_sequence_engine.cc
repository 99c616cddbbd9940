#include "gpu_sequence_engine.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/core/logging.h"

namespace bitloom::inferd {

GpuSequenceEngine::GpuSequenceEngine(std::unique_ptr<engine::GpuDecoderModel> model, int slots)
    : model_(std::move(model)), ids_(slots, 0), open_(slots, false) {
  for (int i = 0; i < slots; ++i) free_slots_.push_back(slots - 1 - i);  // slot 0 is taken first
}

bool GpuSequenceEngine::Open(int seq) const {
  return seq >= 0 && seq < static_cast<int>(open_.size()) && open_[seq];
}

absl::StatusOr<int> GpuSequenceEngine::AddSequence() {
  if (free_slots_.empty()) {
    return absl::ResourceExhaustedError(absl::StrCat("all ", slots(), " KV slots are taken"));
  }
  absl::StatusOr<engine::SequenceId> id = model_->AddSequence();
  if (!id.ok()) return id.status();
  const int seq = free_slots_.back();
  free_slots_.pop_back();
  ids_[seq] = *id;
  open_[seq] = true;
  return seq;
}

void GpuSequenceEngine::ReleaseSequence(int seq) {
  if (!Open(seq)) return;
  if (absl::Status s = model_->Release(ids_[seq]); !s.ok()) {
    BITLOOM_LOG(ERROR) << "releasing KV sequence " << ids_[seq] << ": " << s;
  }
  open_[seq] = false;
  free_slots_.push_back(seq);
}

int GpuSequenceEngine::Length(int seq) const { return Open(seq) ? model_->Length(ids_[seq]) : 0; }

absl::StatusOr<std::vector<float>> GpuSequenceEngine::Prefill(int seq, absl::Span<const int32_t> tokens,
                                                              Logits which) {
  if (!Open(seq)) return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not open"));
  if (which != Logits::kAll) {
    absl::StatusOr<std::vector<float>> logits = model_->Prefill(ids_[seq], tokens);
    if (logits.ok() && which == Logits::kNone) logits->clear();
    return logits;
  }
  std::vector<float> all;
  all.reserve(tokens.size() * static_cast<size_t>(vocab_size()));
  for (size_t i = 0; i < tokens.size(); ++i) {
    absl::StatusOr<std::vector<float>> row = model_->Prefill(ids_[seq], tokens.subspan(i, 1));
    if (!row.ok()) return row.status();
    all.insert(all.end(), row->begin(), row->end());
  }
  return all;
}

absl::StatusOr<std::vector<float>> GpuSequenceEngine::Decode(absl::Span<const int> seqs,
                                                             absl::Span<const int32_t> tokens) {
  std::vector<engine::SequenceId> ids;
  ids.reserve(seqs.size());
  for (int seq : seqs) {
    if (!Open(seq)) return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not open"));
    ids.push_back(ids_[seq]);
  }
  return model_->DecodeStep(ids, tokens);
}

}  // namespace bitloom::inferd
