#include "gpu_sequence_engine.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "bitloom/core/logging.h"

namespace bitloom::inferd {

GpuSequenceEngine::GpuSequenceEngine(std::unique_ptr<engine::GpuDecoderModel> model, int slots,
                                     bool sample_on_device)
    : model_(std::move(model)), sample_on_device_(sample_on_device), ids_(slots, 0), open_(slots, false) {
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

absl::StatusOr<std::vector<engine::SequenceId>> GpuSequenceEngine::ModelIds(absl::Span<const int> seqs) const {
  std::vector<engine::SequenceId> ids;
  ids.reserve(seqs.size());
  for (int seq : seqs) {
    if (!Open(seq)) return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not open"));
    ids.push_back(ids_[seq]);
  }
  return ids;
}

absl::StatusOr<std::vector<float>> GpuSequenceEngine::Decode(absl::Span<const int> seqs,
                                                             absl::Span<const int32_t> tokens) {
  absl::StatusOr<std::vector<engine::SequenceId>> ids = ModelIds(seqs);
  if (!ids.ok()) return ids.status();
  return model_->DecodeStep(*ids, tokens);
}

namespace {

bool HasPenalty(const engine::GenerationParams& p) {
  return p.EffectiveRepetitionPenalty() != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
}

kernels::cuda::SamplingRowParams DeviceRow(const engine::GenerationParams& p) {
  kernels::cuda::SamplingRowParams row;
  row.temperature = p.temperature;
  row.top_k = static_cast<int32_t>(p.top_k);
  row.top_p = p.top_p;
  row.min_p = p.min_p;
  row.repetition_penalty = p.repetition_penalty;
  row.presence_penalty = p.presence_penalty;
  row.frequency_penalty = p.frequency_penalty;
  return row;
}

}  // namespace

absl::StatusOr<SequenceEngine::SampledStep> GpuSequenceEngine::DecodeAndSample(absl::Span<const int> seqs,
                                                                               absl::Span<const int32_t> tokens,
                                                                               absl::Span<const SamplingRow> rows) {
  if (rows.size() != seqs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("DecodeAndSample: ", seqs.size(), " sequences but ", rows.size(), " sampling rows"));
  }
  absl::StatusOr<std::vector<engine::SequenceId>> ids = ModelIds(seqs);
  if (!ids.ok()) return ids.status();
  bool on_device = sample_on_device_;
  for (size_t i = 0; on_device && i < rows.size(); ++i) {
    on_device = !HasPenalty(rows[i].sampler->params()) || model_->HasTokenCounts((*ids)[i]);
  }
  if (!on_device) return SequenceEngine::DecodeAndSample(seqs, tokens, rows);

  std::vector<kernels::cuda::SamplingRowParams> device_rows;
  std::vector<double> uniforms;
  device_rows.reserve(rows.size());
  uniforms.reserve(rows.size());
  for (const SamplingRow& row : rows) {
    const engine::GenerationParams& params = row.sampler->params();
    device_rows.push_back(DeviceRow(params));
    // The draw Sampler::Sample would make, from the same generator (none when greedy).
    uniforms.push_back(params.temperature != 0.0f ? row.sampler->DrawUniform() : 0.0);
  }
  absl::StatusOr<std::vector<int32_t>> sampled = model_->DecodeAndSample(*ids, tokens, device_rows, uniforms);
  if (!sampled.ok()) return sampled.status();
  SampledStep step;
  step.tokens = *std::move(sampled);
  step.logits.resize(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!rows[i].want_logits) continue;
    absl::StatusOr<std::vector<float>> logits = model_->ReadLogits(static_cast<int>(i));
    if (!logits.ok()) return logits.status();
    step.logits[i] = *std::move(logits);
  }
  return step;
}

}  // namespace bitloom::inferd
