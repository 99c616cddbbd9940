#include "bitloom/quant/quantization_pipeline.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bitloom/kernels/hadamard.h"
#include "bitloom/kernels/scalar_codec.h"
#include "bitloom/quant/bit_allocation.h"
#include "bitloom/quant/scalar_quantizer.h"
#include "output_fisher.h"
#include "pipeline_checkpoint.h"

namespace bitloom::quant {
namespace {

using internal::ByteReader;
using internal::ByteWriter;

// Share of the job's progress bar: measuring runs LDLQ once per candidate width, quantizing once.
constexpr double kMeasureShare = 0.75;
// Sensitivity probe (docs/QUANTIZATION.md, section 5): the model's output is measured with a tensor
// at every candidate width below kProbeBits and at kProbeBits itself; wider candidates are priced
// with the gain measured at kProbeBits. kProbeTokens: about how many calibration tokens a probe
// runs on.
constexpr int kProbeBits = 3;
constexpr int64_t kProbeTokens = 512;
// Bumped whenever what a measure checkpoint holds changes meaning, so old checkpoints are refused.
// 4: no hidden states in any checkpoint (a resumed run replays the finished blocks' forwards).
// 5: losses priced at the model's output, widths below kProbeBits by their own probes.
// 6: the model's output change measured through the head's Fisher information (OutputFisher).
constexpr uint64_t kMeasureFormat = 6;

// The widths the sensitivity probe runs at, ascending: every candidate below kProbeBits, and
// kProbeBits (also when it is not a candidate).
std::vector<int> ProbeWidths(absl::Span<const int> candidates) {
  std::vector<int> widths = {kProbeBits};
  for (int k : candidates) {
    if (k < kProbeBits) widths.push_back(k);
  }
  std::sort(widths.begin(), widths.end());
  widths.erase(std::unique(widths.begin(), widths.end()), widths.end());
  return widths;
}

// The probe width whose gain prices a candidate of width k: k itself up to kProbeBits (every such
// candidate is probed), kProbeBits above.
int GainWidth(int k) { return std::min(k, kProbeBits); }

// Mean over tokens of ‖out_t − ref_t‖² / ‖ref_t‖²: each token's relative change, so that a few
// tokens with very large residual norms (the "massive activations" of attention-sink tokens) do not
// swamp the rest, as they would in a ratio of sums. Every token's stream is normalised before the
// head anyway, which is what makes the per-token ratio the relevant one.
double MeanRelativeChange(absl::Span<const float> out, absl::Span<const float> ref, int64_t width) {
  const int64_t tokens = static_cast<int64_t>(ref.size()) / width;
  double total = 0.0;
  for (int64_t t = 0; t < tokens; ++t) {
    double moved = 0.0, norm = 0.0;
    for (int64_t i = t * width; i < (t + 1) * width; ++i) {
      const double d = static_cast<double>(out[i]) - ref[i];
      moved += d * d;
      norm += static_cast<double>(ref[i]) * ref[i];
    }
    if (norm > 0.0) total += moved / norm;
  }
  return tokens > 0 ? total / static_cast<double>(tokens) : 0.0;
}

uint64_t Mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool Cancelled(const std::atomic<bool>* cancel) {
  return cancel != nullptr && cancel->load(std::memory_order_relaxed);
}

absl::Status CancelledError() { return absl::CancelledError("quantization cancelled"); }

// An emitted tensor's weights as the quantization pass substitutes them into the next forward:
// dequantized in rotated space, with the rotation that takes them back (the same calls that made
// them first).
struct RestoredWeight {
  std::vector<float> rotated;
  kernels::HadamardRotation rotation;
  int64_t rows = 0;
};

absl::StatusOr<RestoredWeight> DequantizedWeight(const v1::TensorEntry& entry,
                                                 absl::Span<const uint8_t> blob,
                                                 ThreadPool* pool) {
  const auto seed_param = entry.params().find(kernels::kScalarParamRotationSeed);
  uint64_t seed = 0;
  if (entry.shape_size() != 2 || seed_param == entry.params().end() ||
      !absl::SimpleAtoi(seed_param->second, &seed)) {
    return absl::DataLossError(absl::StrCat("quantize checkpoint: tensor ", entry.name(),
                                            " lacks its shape or rotation seed"));
  }
  const auto rows = static_cast<int64_t>(entry.shape(0));
  const auto cols = static_cast<int64_t>(entry.shape(1));
  auto layout = kernels::MakeScalarCodecLayout(rows, cols,
                                               static_cast<int>(entry.bits_per_weight()),
                                               static_cast<int>(entry.group_size()));
  if (!layout.ok()) return layout.status();
  auto rotation = kernels::HadamardRotation::Create(cols, seed);
  if (!rotation.ok()) return rotation.status();
  std::vector<float> back(static_cast<size_t>(rows * cols));
  if (absl::Status s = kernels::DequantizeScalarCodec(*layout, blob, back.data(), pool); !s.ok()) {
    return s;
  }
  return RestoredWeight{std::move(back), *std::move(rotation), rows};
}

// What one site needs to quantize its tensors: the rotation and the factored rotated Hessian.
struct SiteState {
  kernels::HadamardRotation rotation;
  std::unique_ptr<SiteFactor> factor;  // null for round-to-nearest
};

}  // namespace

uint64_t QuantizationPipeline::SiteSeed(uint64_t seed, int layer, int site_index) {
  return Mix(Mix(Mix(seed) ^ static_cast<uint64_t>(layer)) ^ static_cast<uint64_t>(site_index));
}

QuantizationPipeline::QuantizationPipeline(const BlockRunner& runner, PipelineOptions options,
                                           ThreadPool* pool, QuantBackend* backend)
    : runner_(runner),
      options_(std::move(options)),
      pool_(pool),
      own_backend_(backend == nullptr ? std::make_unique<CpuQuantBackend>(pool) : nullptr),
      backend_(backend == nullptr ? own_backend_.get() : backend) {}

absl::StatusOr<PipelineResult> QuantizationPipeline::Run(absl::Span<const int32_t> calibration,
                                                         int64_t sequences, int64_t seq_len,
                                                         const TensorSink& sink,
                                                         const ProgressFn& progress,
                                                         const std::atomic<bool>* cancel) {
  const PipelineOptions& o = options_;
  const int layers = runner_.num_layers();
  const int64_t hidden_size = runner_.hidden_size();
  if (sequences <= 0 || seq_len <= 0 ||
      static_cast<int64_t>(calibration.size()) != sequences * seq_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "calibration: ", calibration.size(), " tokens for ", sequences, " sequences of ", seq_len));
  }
  if (o.candidate_bits.empty()) return absl::InvalidArgumentError("candidate_bits: empty");
  const bool uniform = o.method != PipelineOptions::Method::kVariableLdlq;
  if (uniform &&
      (o.uniform_bits < kernels::kScalarMinBits || o.uniform_bits > kernels::kScalarMaxBits)) {
    return absl::InvalidArgumentError(
        absl::StrCat("uniform_bits: ", o.uniform_bits, " outside [1, 8]"));
  }
  for (int k : o.candidate_bits) {
    if (k < kernels::kScalarMinBits || k > kernels::kScalarMaxBits) {
      return absl::InvalidArgumentError(absl::StrCat("candidate_bits: ", k, " outside [1, 8]"));
    }
  }
  if (!o.checkpoint_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.checkpoint_dir, ec);
    if (ec)
      return absl::InternalError(
          absl::StrCat("checkpoint_dir ", o.checkpoint_dir, ": ", ec.message()));
  }

  // Fingerprint of everything the output depends on, so checkpoints are never mixed across jobs.
  ByteWriter fpw;
  fpw.U64(kMeasureFormat);
  fpw.U64(static_cast<uint64_t>(o.method));
  fpw.U64(static_cast<uint64_t>(o.uniform_bits));
  fpw.F64(o.target_bits_per_weight);
  fpw.F64(o.tolerance);
  for (int k : o.candidate_bits) fpw.U64(static_cast<uint64_t>(k));
  fpw.U64(static_cast<uint64_t>(o.group_size));
  for (int g : o.extra_group_sizes) fpw.U64(static_cast<uint64_t>(g));
  fpw.U64(o.seed);
  fpw.F64(o.damping.relative_damp);
  fpw.F64(o.damping.growth);
  fpw.U64(static_cast<uint64_t>(o.damping.max_attempts));
  fpw.U64(static_cast<uint64_t>(layers));
  fpw.U64(static_cast<uint64_t>(hidden_size));
  fpw.U64(static_cast<uint64_t>(sequences));
  fpw.Bytes(calibration.data(), calibration.size() * sizeof(int32_t));
  const uint64_t fingerprint = internal::Fnv1a64(fpw.data().data(), fpw.data().size());

  PipelineResult result;
  PipelineTimings& timings = result.timings;
  // Dequantized substitutes go to the runner in rotated space when it rotates on the device (the
  // host then never applies Rᵀ to a weight); a resume replays them the same way.
  const bool rotated_substitutes = runner_.AcceptsRotatedWeights();
  auto report = [&](PipelineProgress::Stage stage, int layer, const std::string& tensor,
                    double fraction) {
    if (progress) progress({stage, layer, layers, tensor, fraction});
  };
  auto ckpt_path = [&](const char* stage, int layer) {
    return absl::StrCat(o.checkpoint_dir, "/", stage, "_", layer, ".ckpt");
  };
  // Reads a checkpoint when checkpointing is on and every earlier block was restored too.
  auto try_restore = [&](const char* stage, int layer,
                         bool* resuming) -> absl::StatusOr<std::string> {
    if (o.checkpoint_dir.empty() || !*resuming) return absl::NotFoundError("");
    auto data = internal::ReadCheckpointFile(ckpt_path(stage, layer), fingerprint);
    if (absl::IsFailedPrecondition(data.status())) return data.status();
    if (!data.ok()) *resuming = false;
    return data;
  };
  const auto read_block_weights =
      [&](int layer, WeightMap* weights,
          std::map<std::string, std::pair<int64_t, int64_t>>* shapes) -> absl::Status {
    for (const LinearSite& site : runner_.Sites(layer)) {
      for (const std::string& name : site.tensors) {
        int64_t rows = 0, cols = 0;
        auto w = runner_.ReadWeight(name, &rows, &cols);
        if (!w.ok()) return w.status();
        if (cols != site.dim || static_cast<int64_t>(w->size()) != rows * cols) {
          return absl::FailedPreconditionError(absl::StrCat(name, ": shape [", rows, ", ", cols,
                                                            "] but site ", site.name, " has width ",
                                                            site.dim));
        }
        (*weights)[name] = std::move(*w);
        (*shapes)[name] = {rows, cols};
      }
    }
    return absl::OkStatus();
  };
  // Blocks [first, end) with their stored weights on `x`. A GPU runner takes them in one call (a
  // batch that fits one device pass never leaves the device); otherwise block by block, so that a
  // cancellation is seen between blocks.
  const auto run_stored = [&](int first, int end, std::vector<float>* x, int64_t seqs,
                              int64_t len) -> absl::Status {
    const int step = runner_.CapturesOnDevice() ? std::max(end - first, 1) : 1;
    for (int r = first; r < end; r += step) {
      if (Cancelled(cancel)) return CancelledError();
      auto out = runner_.RunStoredBlocks(r, std::min(r + step, end), *x, seqs, len);
      if (!out.ok()) return out.status();
      *x = std::move(*out);
    }
    return absl::OkStatus();
  };
  // Runs block `layer` with its stored weights, accumulating one Hessian per site; returns the
  // per-site state.
  const auto site_states = [&](int layer, const std::vector<LinearSite>& sites,
                               absl::Span<const float> hidden,
                               std::vector<float>* out) -> absl::StatusOr<std::vector<SiteState>> {
    std::vector<std::unique_ptr<SiteHessian>> acc;
    std::map<std::string, size_t> index;
    for (size_t s = 0; s < sites.size(); ++s) {
      auto hessian = backend_->NewHessian(sites[s].dim);
      if (!hessian.ok()) return hessian.status();
      acc.push_back(std::move(*hessian));
      index[sites[s].name] = s;
    }
    auto find = [&](const LinearSite& site) -> absl::StatusOr<SiteHessian*> {
      auto it = index.find(site.name);
      if (it == index.end())
        return absl::InternalError(absl::StrCat("capture of unknown site ", site.name));
      return acc[it->second].get();
    };
    // A GPU runner and a GPU backend: the inputs go from the forward to the Hessians without
    // leaving the device. Otherwise through host memory.
    bool on_device = runner_.CapturesOnDevice();
    for (const auto& a : acc) on_device = on_device && a->AcceptsDeviceRows();
    const Clock::time_point forward_t0 = Clock::now();
    if (on_device) {
      DeviceCaptureFn capture = [&](const LinearSite& site, const float* x, int64_t rows,
                                    void* stream) -> absl::Status {
        auto h = find(site);
        if (!h.ok()) return h.status();
        return (*h)->AddOnDevice(x, rows, stream);
      };
      if (absl::Status st = runner_.RunBlockOnDevice(layer, {}, hidden, sequences, seq_len,
                                                     capture, out);
          !st.ok())
        return st;
    } else {
      CaptureFn capture = [&](const LinearSite& site, absl::Span<const float> x,
                              int64_t rows) -> absl::Status {
        auto h = find(site);
        if (!h.ok()) return h.status();
        return (*h)->Add(x, rows);
      };
      auto o_hidden = runner_.RunBlockSubstituted(layer, {}, hidden, sequences, seq_len, capture);
      if (!o_hidden.ok()) return o_hidden.status();
      if (out != nullptr) *out = std::move(*o_hidden);
    }
    timings.capture_forward += Since(forward_t0);
    const Clock::time_point factor_t0 = Clock::now();
    std::vector<SiteState> states;
    for (size_t s = 0; s < sites.size(); ++s) {
      auto rot = kernels::HadamardRotation::Create(sites[s].dim,
                                                   SiteSeed(o.seed, layer, static_cast<int>(s)));
      if (!rot.ok()) return rot.status();
      auto factor = backend_->Factor(*acc[s], *rot, o.damping);
      if (!factor.ok()) return factor.status();
      acc[s].reset();  // the Hessian's memory (dim² fp64, on the GPU too) is not needed any more
      states.push_back({std::move(*rot), std::move(*factor)});
    }
    timings.factor += Since(factor_t0);
    return states;
  };

  const Clock::time_point embed_t0 = Clock::now();
  auto embedded = runner_.Embed(calibration);
  timings.embed += Since(embed_t0);
  if (!embedded.ok()) return embedded.status();

  // ---- Stage 1: measurement (full precision), variable method only.
  std::vector<AllocationItem> items;
  const std::vector<int> probe_widths = ProbeWidths(o.candidate_bits);
  if (!uniform) {
    std::vector<float> hidden = *embedded;
    // Checkpoints hold no hidden states (4 GB per block at Llama-3-8B shapes and 128 x 2048 tokens):
    // `hidden` is the output of block `ready` (-1: the embeddings), and before a block is computed
    // the restored blocks before it are replayed with their own weights, the same deterministic
    // forward an uninterrupted run made.
    int ready = -1;
    bool resuming = true;
    // The block's output; swapped with `hidden` after each block, so the two buffers alternate and
    // a runner that writes in place of a buffer of the right size allocates nothing.
    std::vector<float> next;
    // The probe prefix (see below) and the Fisher information of the model's output on it, built
    // before the first block that is measured (not restored) from the full-precision model's last
    // output on the prefix, the same computation in a fresh and in a resumed run.
    const int64_t probe_seqs = std::clamp<int64_t>(kProbeTokens / seq_len, 1, sequences);
    const int64_t probe_seq_len = std::min(seq_len, kProbeTokens);
    std::optional<internal::OutputFisher> fisher;
    const internal::MatmulFn matmul = [this](const kernels::MatmulF32Params& p) {
      return backend_->Matmul(p);
    };
    const auto build_fisher = [&]() -> absl::Status {
      const std::optional<OutputLayer> output = runner_.output_layer();
      if (!output) return absl::OkStatus();
      const Clock::time_point t0 = Clock::now();
      std::vector<int32_t> prefix;
      for (int64_t q = 0; q < probe_seqs; ++q) {
        const auto row = calibration.begin() + static_cast<std::ptrdiff_t>(q * seq_len);
        prefix.insert(prefix.end(), row, row + static_cast<std::ptrdiff_t>(probe_seq_len));
      }
      auto last = runner_.Embed(prefix);
      if (!last.ok()) return last.status();
      if (absl::Status st = run_stored(0, layers, &*last, probe_seqs, probe_seq_len); !st.ok())
        return st;
      auto built = internal::OutputFisher::Build(*output, *last, hidden_size, matmul, pool_);
      if (!built.ok()) return built.status();
      fisher = std::move(*built);
      timings.output_fisher += Since(t0);
      return absl::OkStatus();
    };
    for (int layer = 0; layer < layers; ++layer) {
      if (Cancelled(cancel)) return CancelledError();
      const double f0 = kMeasureShare * layer / layers;
      report(PipelineProgress::Stage::kMeasure, layer, "", f0);
      auto restored = try_restore("measure", layer, &resuming);
      if (absl::IsFailedPrecondition(restored.status())) return restored.status();
      if (restored.ok()) {
        ByteReader r(*restored);
        uint64_t count = 0;
        r.U64(&count);
        for (uint64_t t = 0; t < count && r.ok(); ++t) {
          AllocationItem it;
          uint64_t cands = 0;
          r.Str(&it.name);
          r.U64(&it.num_weights);
          r.U64(&cands);
          for (uint64_t c = 0; c < cands && r.ok(); ++c) {
            AllocationCandidate cand;
            uint64_t bits = 0, group = 0;
            r.U64(&bits);
            r.U64(&group);
            r.F64(&cand.loss);
            r.U64(&cand.stored_bits);
            cand.bits = static_cast<int>(bits);
            cand.group_size = static_cast<int>(group);
            it.candidates.push_back(cand);
          }
          items.push_back(std::move(it));
        }
        if (!r.ok() || !r.at_end())
          return absl::DataLossError(absl::StrCat("measure checkpoint ", layer, " is malformed"));
        ++result.resumed_measure_blocks;
        continue;
      }
      if (!fisher) {
        if (absl::Status st = build_fisher(); !st.ok()) return st;
      }
      if (ready + 1 < layer) {
        const Clock::time_point t0 = Clock::now();
        if (absl::Status st = run_stored(ready + 1, layer, &hidden, sequences, seq_len); !st.ok())
          return st;
        timings.forward += Since(t0);
      }
      const std::vector<LinearSite> sites = runner_.Sites(layer);
      WeightMap weights;
      std::map<std::string, std::pair<int64_t, int64_t>> shapes;
      const Clock::time_point read_t0 = Clock::now();
      if (absl::Status st = read_block_weights(layer, &weights, &shapes); !st.ok()) return st;
      timings.weights_host += Since(read_t0);
      auto states = site_states(layer, sites, hidden, &next);
      if (!states.ok()) return states.status();
      const size_t first_item = items.size();
      // The sensitivity probe (docs/QUANTIZATION.md, section 5) runs on about kProbeTokens
      // calibration tokens: whole rows when they are shorter, else the first kProbeTokens tokens of
      // the first row (a causal block computes a prefix of a row as it would the whole row).
      // `batch` collects the block outputs the probe needs: first the full-precision one, then one
      // per (tensor, probe width) with that tensor quantized; the rest of the model then runs on
      // all of them at once.
      std::vector<float> probe_in;
      for (int64_t q = 0; q < probe_seqs; ++q) {
        const auto row = hidden.begin() + static_cast<std::ptrdiff_t>(q * seq_len * hidden_size);
        probe_in.insert(probe_in.end(), row,
                        row + static_cast<std::ptrdiff_t>(probe_seq_len * hidden_size));
      }
      const size_t probe_len = probe_in.size();
      std::vector<float> batch, probe_out;
      {
        const Clock::time_point t0 = Clock::now();
        auto reference =
            runner_.RunBlockSubstituted(layer, {}, probe_in, probe_seqs, probe_seq_len, {});
        if (!reference.ok()) return reference.status();
        batch = std::move(*reference);
        timings.probe += Since(t0);
      }
      struct Probe {
        size_t item;
        int bits;
        double relative;  // relative proxy loss of the tensor at `bits`
      };
      std::vector<Probe> probes;
      for (size_t s = 0; s < sites.size(); ++s) {
        const SiteState& st = (*states)[s];
        for (const std::string& name : sites[s].tensors) {
          if (Cancelled(cancel)) return CancelledError();
          report(PipelineProgress::Stage::kMeasure, layer, name, f0);
          const auto [rows, cols] = shapes[name];
          Clock::time_point t0 = Clock::now();
          // The probes substitute the quantized tensor alone: the runner keeps the stored weights.
          std::vector<float> wr = std::move(weights[name]);
          st.rotation.Apply(wr.data(), rows, pool_);
          timings.weights_host += Since(t0);
          t0 = Clock::now();
          AllocationItem it;
          it.name = name;
          it.num_weights = static_cast<uint64_t>(rows * cols);
          ScalarQuantizerOptions qo;
          qo.group_size = o.group_size;
          // Every probe width in a call of its own, which keeps its blob for the probe; the other
          // candidate widths together.
          std::map<int, QuantizedWeight> at_width;
          std::vector<int> unprobed;
          for (int k : o.candidate_bits) {
            if (!std::binary_search(probe_widths.begin(), probe_widths.end(), k))
              unprobed.push_back(k);
          }
          if (!unprobed.empty()) {
            auto measured = backend_->Measure(wr, rows, cols, *st.factor, unprobed, qo, -1);
            if (!measured.ok()) return measured.status();
            for (size_t c = 0; c < unprobed.size(); ++c)
              at_width[unprobed[c]] = std::move((*measured)[c]);
          }
          for (int k : probe_widths) {
            const int one[] = {k};
            auto measured = backend_->Measure(wr, rows, cols, *st.factor, one, qo, k);
            if (!measured.ok()) return measured.status();
            at_width[k] = std::move((*measured)[0]);
          }
          // Relative proxy losses for now; converted into perturbations of the model's output once
          // the probes have run.
          for (int k : o.candidate_bits) {
            const QuantizedWeight& q = at_width.at(k);
            it.candidates.push_back({k, o.group_size, std::max(0.0, q.proxy_loss),
                                     static_cast<uint64_t>(q.layout.total_bytes) * 8});
          }
          // The same widths at the other candidate group sizes: finer groups cost 16 bits of scale
          // per group and buy accuracy, a trade the allocator weighs like any other.
          for (int g : o.extra_group_sizes) {
            ScalarQuantizerOptions qg = qo;
            qg.group_size = g;
            auto more = backend_->Measure(wr, rows, cols, *st.factor, o.candidate_bits, qg, -1);
            if (!more.ok()) return more.status();
            for (size_t c = 0; c < o.candidate_bits.size(); ++c) {
              const QuantizedWeight& q = (*more)[c];
              it.candidates.push_back({o.candidate_bits[c], g, std::max(0.0, q.proxy_loss),
                                       static_cast<uint64_t>(q.layout.total_bytes) * 8});
            }
          }
          timings.measure_ldlq += Since(t0);
          // This block's output on the probe prefix with the tensor at each probe width,
          // dequantized and rotated back in place of its full-precision self.
          for (int k : probe_widths) {
            if (Cancelled(cancel)) return CancelledError();
            t0 = Clock::now();
            const QuantizedWeight& probe = at_width.at(k);
            std::vector<float> back(rows * cols);
            if (absl::Status ds =
                    kernels::DequantizeScalarCodec(probe.layout, probe.blob, back.data(), pool_);
                !ds.ok())
              return ds;
            WeightMap substitute;
            RotatedWeightMap rotated_substitute;
            if (rotated_substitutes) {
              rotated_substitute[name] = {std::move(back), &st.rotation};
            } else {
              st.rotation.ApplyTranspose(back.data(), rows, pool_);
              substitute[name] = std::move(back);
            }
            timings.weights_host += Since(t0);
            t0 = Clock::now();
            if (rotated_substitutes) {
              if (absl::Status ran = runner_.RunBlockRotated(layer, rotated_substitute, probe_in,
                                                             probe_seqs, probe_seq_len, &probe_out);
                  !ran.ok())
                return ran;
            } else {
              auto out = runner_.RunBlockSubstituted(layer, substitute, probe_in, probe_seqs,
                                                     probe_seq_len, {});
              if (!out.ok()) return out.status();
              probe_out = std::move(*out);
            }
            batch.insert(batch.end(), probe_out.begin(), probe_out.end());
            probes.push_back({items.size(), k, std::max(0.0, probe.proxy_loss)});
            timings.probe += Since(t0);
          }
          items.push_back(std::move(it));
        }
      }
      // Sensitivity: the rest of the model, in full precision, on every probe's output at once,
      // then how far each probe moved the model's output from the full-precision run: the mean
      // KL divergence of the next-token distribution to second order (OutputFisher), or, for a
      // runner without an output layer, the mean per-token relative squared change of the last
      // block's output. Divided by the tensor's relative proxy loss at that width, it is the gain
      // that converts a relative proxy loss into a perturbation of the model's output, the common
      // currency the allocator sums. Widths below kProbeBits are priced by their own probes
      // (errors that large are not in the linear regime), wider ones by the gain at kProbeBits.
      {
        const int64_t batch_seqs = probe_seqs * static_cast<int64_t>(1 + probes.size());
        const Clock::time_point t0 = Clock::now();
        if (absl::Status st = run_stored(layer + 1, layers, &batch, batch_seqs, probe_seq_len);
            !st.ok())
          return st;
        timings.probe_rest += Since(t0);
        const absl::Span<const float> reference(batch.data(), probe_len);
        const absl::Span<const float> all_moved(batch.data() + probe_len, probes.size() * probe_len);
        std::vector<double> moved_by(probes.size());
        if (fisher) {
          const Clock::time_point fisher_t0 = Clock::now();
          auto divergence = fisher->MeanDivergence(
              reference, all_moved, static_cast<int64_t>(probes.size()), matmul, pool_);
          if (!divergence.ok()) return divergence.status();
          moved_by = std::move(*divergence);
          timings.output_fisher += Since(fisher_t0);
        } else {
          for (size_t p = 0; p < probes.size(); ++p) {
            moved_by[p] = MeanRelativeChange(all_moved.subspan(p * probe_len, probe_len), reference,
                                             hidden_size);
          }
        }
        std::map<std::pair<size_t, int>, double> gain;
        for (size_t p = 0; p < probes.size(); ++p) {
          const double moved = moved_by[p];
          gain[{probes[p].item, probes[p].bits}] =
              probes[p].relative > 0.0 ? moved / probes[p].relative : 0.0;
        }
        for (size_t t = first_item; t < items.size(); ++t) {
          for (AllocationCandidate& c : items[t].candidates)
            c.loss *= gain.at({t, GainWidth(c.bits)});
        }
      }
      hidden.swap(next);
      ready = layer;
      if (!o.checkpoint_dir.empty()) {
        const Clock::time_point t0 = Clock::now();
        ByteWriter w;
        w.U64(items.size() - first_item);
        for (size_t t = first_item; t < items.size(); ++t) {
          w.Str(items[t].name);
          w.U64(items[t].num_weights);
          w.U64(items[t].candidates.size());
          for (const AllocationCandidate& c : items[t].candidates) {
            w.U64(static_cast<uint64_t>(c.bits));
            w.U64(static_cast<uint64_t>(c.group_size));
            w.F64(c.loss);
            w.U64(c.stored_bits);
          }
        }
        if (absl::Status st =
                internal::WriteCheckpointFile(ckpt_path("measure", layer), fingerprint, w.data());
            !st.ok()) {
          return st;
        }
        timings.checkpoints += Since(t0);
      }
    }
  }

  // ---- Stage 2: allocation (variable method only; uniform methods use uniform_bits throughout).
  std::map<std::string, int> chosen_bits, chosen_group;
  if (!uniform) {
    if (Cancelled(cancel)) return CancelledError();
    report(PipelineProgress::Stage::kAllocate, layers, "", kMeasureShare);
    AllocationOptions ao;
    ao.target_bits_per_weight = o.target_bits_per_weight;
    ao.tolerance = o.tolerance;
    const Clock::time_point t0 = Clock::now();
    auto alloc = AllocateBits(items, ao);
    if (!alloc.ok()) return alloc.status();
    timings.allocate += Since(t0);
    for (size_t t = 0; t < items.size(); ++t) {
      chosen_bits[items[t].name] = items[t].candidates[alloc->choice[t]].bits;
      chosen_group[items[t].name] = items[t].candidates[alloc->choice[t]].group_size;
    }
  }
  const auto bits_of = [&](const std::string& name) {
    return uniform ? o.uniform_bits : chosen_bits.at(name);
  };
  // Shares of the progress bar: uniform jobs have no measurement stage.
  const double quantize_from = uniform ? 0.0 : kMeasureShare;
  uint64_t quantized_weights = 0;

  // ---- Stage 3: quantization, each block fed by the quantized blocks before it.
  const bool rtn = o.method == PipelineOptions::Method::kUniformRtn;
  // As in stage 1, `hidden` is the output of quantized block `ready`; restored blocks wait in
  // `pending` until a block that must be computed needs their outputs.
  std::vector<float> hidden = std::move(*embedded);
  std::vector<float> next;  // alternates with `hidden`, as in stage 1
  // hidden = block `layer`'s output with the quantized weights (rotated ones when the runner takes
  // them, else the unrotated map).
  const auto forward = [&](int layer, const WeightMap& weights,
                           const RotatedWeightMap& rotated) -> absl::Status {
    if (rotated_substitutes) {
      if (absl::Status st = runner_.RunBlockRotated(layer, rotated, hidden, sequences, seq_len, &next);
          !st.ok())
        return st;
    } else {
      auto out = runner_.RunBlock(layer, weights, hidden, sequences, seq_len, {});
      if (!out.ok()) return out.status();
      next = std::move(*out);
    }
    hidden.swap(next);
    return absl::OkStatus();
  };
  int ready = -1;
  std::vector<std::vector<std::pair<v1::TensorEntry, std::vector<uint8_t>>>> pending;
  bool resuming = true;
  for (int layer = 0; layer < layers; ++layer) {
    if (Cancelled(cancel)) return CancelledError();
    const double f0 = quantize_from + (1.0 - quantize_from) * layer / layers;
    report(PipelineProgress::Stage::kQuantize, layer, "", f0);
    std::vector<std::pair<v1::TensorEntry, std::vector<uint8_t>>> outputs;
    auto restored = try_restore("quantize", layer, &resuming);
    if (absl::IsFailedPrecondition(restored.status())) return restored.status();
    if (restored.ok()) {
      ByteReader r(*restored);
      uint64_t count = 0;
      r.U64(&count);
      for (uint64_t t = 0; t < count && r.ok(); ++t) {
        std::string entry_bytes, blob;
        r.Str(&entry_bytes);
        r.Str(&blob);
        v1::TensorEntry entry;
        if (!entry.ParseFromString(entry_bytes))
          return absl::DataLossError("quantize checkpoint: bad tensor entry");
        outputs.emplace_back(std::move(entry), std::vector<uint8_t>(blob.begin(), blob.end()));
      }
      if (!r.ok() || !r.at_end())
        return absl::DataLossError(absl::StrCat("quantize checkpoint ", layer, " is malformed"));
      ++result.resumed_quantize_blocks;
      if (!rtn) pending.push_back(outputs);
    } else {
      // Replay the restored blocks (RTN runs no forward: nothing to replay).
      for (size_t p = 0; p < pending.size(); ++p) {
        if (Cancelled(cancel)) return CancelledError();
        const int r = ready + 1 + static_cast<int>(p);
        // As the first run substituted them (rotated on the device or rotated back here).
        std::vector<RestoredWeight> replay_weights;
        for (const auto& [entry, blob] : pending[p]) {
          auto w = DequantizedWeight(entry, blob, pool_);
          if (!w.ok()) return w.status();
          replay_weights.push_back(*std::move(w));
        }
        WeightMap restored_weights;
        RotatedWeightMap restored_rotated;
        for (size_t t = 0; t < replay_weights.size(); ++t) {
          RestoredWeight& w = replay_weights[t];
          const std::string& name = pending[p][t].first.name();
          if (rotated_substitutes) {
            restored_rotated[name] = {std::move(w.rotated), &w.rotation};
          } else {
            w.rotation.ApplyTranspose(w.rotated.data(), w.rows, pool_);
            restored_weights[name] = std::move(w.rotated);
          }
        }
        const Clock::time_point t0 = Clock::now();
        if (absl::Status st = forward(r, restored_weights, restored_rotated); !st.ok()) return st;
        timings.forward += Since(t0);
      }
      ready += static_cast<int>(pending.size());
      pending.clear();
      const std::vector<LinearSite> sites = runner_.Sites(layer);
      WeightMap weights;
      std::map<std::string, std::pair<int64_t, int64_t>> shapes;
      const Clock::time_point read_t0 = Clock::now();
      if (absl::Status st = read_block_weights(layer, &weights, &shapes); !st.ok()) return st;
      timings.weights_host += Since(read_t0);
      // LDLQ: Hessians from this block's inputs on the quantized path (the block's own weights
      // still fp). RTN needs neither Hessians nor the forward: only the rotations.
      absl::StatusOr<std::vector<SiteState>> states;
      if (rtn) {
        states.emplace();
        for (size_t s = 0; s < sites.size(); ++s) {
          auto rot = kernels::HadamardRotation::Create(
              sites[s].dim, SiteSeed(o.seed, layer, static_cast<int>(s)));
          if (!rot.ok()) return rot.status();
          states->push_back({std::move(*rot), nullptr});
        }
      } else {
        states = site_states(layer, sites, hidden, nullptr);
      }
      if (!states.ok()) return states.status();
      WeightMap dequantized;
      RotatedWeightMap dequantized_rotated;
      for (size_t s = 0; s < sites.size(); ++s) {
        const SiteState& st = (*states)[s];
        for (const std::string& name : sites[s].tensors) {
          if (Cancelled(cancel)) return CancelledError();
          report(PipelineProgress::Stage::kQuantize, layer, name, f0);
          const auto [rows, cols] = shapes[name];
          Clock::time_point t0 = Clock::now();
          std::vector<float> wr = std::move(weights[name]);
          st.rotation.Apply(wr.data(), rows, pool_);
          timings.weights_host += Since(t0);
          t0 = Clock::now();
          ScalarQuantizerOptions qo;
          qo.bits = bits_of(name);
          qo.group_size = uniform ? o.group_size : chosen_group.at(name);
          auto q = rtn ? QuantizeRtn(wr, rows, cols, {}, qo, pool_)
                       : backend_->Quantize(wr, rows, cols, *st.factor, qo);
          if (!q.ok()) return q.status();
          timings.quantize_ldlq += Since(t0);
          t0 = Clock::now();
          if (!rtn) {
            std::vector<float> back(rows * cols);
            if (absl::Status ds =
                    kernels::DequantizeScalarCodec(q->layout, q->blob, back.data(), pool_);
                !ds.ok())
              return ds;
            if (rotated_substitutes) {
              dequantized_rotated[name] = {std::move(back), &st.rotation};
            } else {
              st.rotation.ApplyTranspose(back.data(), rows, pool_);
              dequantized[name] = std::move(back);
            }
          }
          timings.weights_host += Since(t0);
          v1::TensorEntry entry;
          entry.set_name(name);
          entry.set_codec(v1::CODEC_HADAMARD_SCALAR);
          entry.add_shape(static_cast<uint64_t>(rows));
          entry.add_shape(static_cast<uint64_t>(cols));
          entry.set_bits_per_weight(static_cast<float>(qo.bits));
          entry.set_group_size(static_cast<uint32_t>(qo.group_size));
          if (!rtn) entry.set_measured_error(q->proxy_loss);
          (*entry.mutable_params())[kernels::kScalarParamRotation] = st.rotation.Describe();
          (*entry.mutable_params())[kernels::kScalarParamRotationSeed] =
              absl::StrCat(st.rotation.seed());
          outputs.emplace_back(std::move(entry), std::move(q->blob));
        }
      }
      if (!rtn) {
        const Clock::time_point t0 = Clock::now();
        if (absl::Status st = forward(layer, dequantized, dequantized_rotated); !st.ok()) return st;
        timings.forward += Since(t0);
      }
      ready = layer;
      if (!o.checkpoint_dir.empty()) {
        const Clock::time_point t0 = Clock::now();
        ByteWriter w;
        w.U64(outputs.size());
        for (const auto& [entry, blob] : outputs) {
          w.Str(entry.SerializeAsString());
          w.Bytes(blob.data(), blob.size());
        }
        if (absl::Status st =
                internal::WriteCheckpointFile(ckpt_path("quantize", layer), fingerprint, w.data());
            !st.ok()) {
          return st;
        }
        timings.checkpoints += Since(t0);
      }
    }
    for (const auto& [entry, blob] : outputs) {
      result.stored_bytes += blob.size();
      if (entry.shape_size() == 2) quantized_weights += entry.shape(0) * entry.shape(1);
      if (absl::Status st = sink(entry, blob); !st.ok()) return st;
    }
  }
  if (quantized_weights > 0) {
    result.bits_per_weight = 8.0 * static_cast<double>(result.stored_bytes) /
                             static_cast<double>(quantized_weights);
  }
  report(PipelineProgress::Stage::kDone, layers, "", 1.0);
  return result;
}

}  // namespace bitloom::quant
