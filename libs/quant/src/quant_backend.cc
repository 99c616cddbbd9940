#include "bitloom/quant/quant_backend.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace bitloom::quant {
namespace {

class CpuSiteHessian final : public SiteHessian {
 public:
  CpuSiteHessian(int64_t dim, ThreadPool* pool) : acc_(dim), pool_(pool) {}
  int64_t dim() const override { return acc_.dim(); }
  int64_t rows() const override { return acc_.rows(); }
  absl::Status Add(absl::Span<const float> x, int64_t rows) override {
    return acc_.Add(x, rows, pool_);
  }
  absl::StatusOr<HessianAccumulator> ToHost() override { return acc_; }
  const HessianAccumulator& accumulator() const { return acc_; }

 private:
  HessianAccumulator acc_;
  ThreadPool* pool_;
};

// The rotated mean Hessian (undamped, for the losses) and its factor.
struct CpuSiteFactor final : public SiteFactor {
  int64_t dim() const override { return factor.dim; }
  std::vector<double> h;
  HessianFactor factor;
};

absl::StatusOr<const CpuSiteFactor*> AsCpu(const SiteFactor& factor) {
  const auto* cpu = dynamic_cast<const CpuSiteFactor*>(&factor);
  if (cpu == nullptr)
    return absl::InvalidArgumentError("CpuQuantBackend: factor of another backend");
  return cpu;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SiteHessian>> CpuQuantBackend::NewHessian(int64_t dim) {
  if (dim <= 0) return absl::InvalidArgumentError(absl::StrCat("Hessian of dim ", dim));
  return std::make_unique<CpuSiteHessian>(dim, pool_);
}

absl::StatusOr<std::unique_ptr<SiteFactor>> CpuQuantBackend::Factor(
    SiteHessian& hessian, const kernels::HadamardRotation& rotation,
    const DampingOptions& damping) {
  const auto* cpu = dynamic_cast<const CpuSiteHessian*>(&hessian);
  if (cpu == nullptr)
    return absl::InvalidArgumentError("CpuQuantBackend: Hessian of another backend");
  auto out = std::make_unique<CpuSiteFactor>();
  out->h = cpu->accumulator().Mean();
  if (absl::Status st = RotateHessian(rotation, &out->h, pool_); !st.ok()) return st;
  auto factor = FactorHessian(out->h, hessian.dim(), damping, pool_);
  if (!factor.ok()) return factor.status();
  out->factor = std::move(*factor);
  return out;
}

absl::StatusOr<QuantizedWeight> CpuQuantBackend::Quantize(absl::Span<const float> w, int64_t rows,
                                                          int64_t cols, const SiteFactor& factor,
                                                          const ScalarQuantizerOptions& options) {
  auto cpu = AsCpu(factor);
  if (!cpu.ok()) return cpu.status();
  return QuantizeLdlq(w, rows, cols, (*cpu)->h, (*cpu)->factor, options, pool_);
}

absl::StatusOr<std::vector<QuantizedWeight>> CpuQuantBackend::Measure(
    absl::Span<const float> w, int64_t rows, int64_t cols, const SiteFactor& factor,
    absl::Span<const int> bits, const ScalarQuantizerOptions& options, int blob_bits) {
  auto cpu = AsCpu(factor);
  if (!cpu.ok()) return cpu.status();
  if (static_cast<int64_t>(w.size()) != rows * cols ||
      (*cpu)->h.size() != static_cast<size_t>(cols * cols)) {
    return absl::InvalidArgumentError(absl::StrCat("CpuQuantBackend::Measure: ", w.size(),
                                                   " weights for shape [", rows, ", ", cols,
                                                   "] and a Hessian of dim ", factor.dim()));
  }
  ScalarQuantizerOptions qo = options;
  qo.output_energy = OutputEnergy(w, rows, cols, (*cpu)->h, pool_);
  std::vector<QuantizedWeight> out;
  bool kept = false;
  for (int k : bits) {
    qo.bits = k;
    auto q = QuantizeLdlq(w, rows, cols, (*cpu)->h, (*cpu)->factor, qo, pool_);
    if (!q.ok()) return q.status();
    if (k == blob_bits && !kept) {
      kept = true;
    } else {
      q->blob = {};
    }
    out.push_back(std::move(*q));
  }
  return out;
}

}  // namespace bitloom::quant
