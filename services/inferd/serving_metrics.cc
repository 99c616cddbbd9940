#include "serving_metrics.h"

#include "bitloom/core/status_macros.h"
#include "bitloom/metrics/histogram.h"

namespace bitloom::inferd {

absl::StatusOr<std::unique_ptr<ServingMetrics>> ServingMetrics::Register(
    metrics::MetricsRegistry& registry) {
  std::unique_ptr<ServingMetrics> m(new ServingMetrics());
  // Latency buckets span a fast GPU (a few ms per token) to the CPU engine on a large model (seconds).
  BITLOOM_ASSIGN_OR_RETURN(
      m->ttft_, registry.AddHistogram("bitloom_inferd_time_to_first_token_seconds",
                                      "Seconds from a generation request's arrival to its first token.",
                                      {"model"}, metrics::ExponentialBuckets(0.005, 2, 14)));
  BITLOOM_ASSIGN_OR_RETURN(
      m->itl_, registry.AddHistogram("bitloom_inferd_inter_token_latency_seconds",
                                     "Seconds between consecutive tokens of one generation.", {"model"},
                                     metrics::ExponentialBuckets(0.001, 2, 14)));
  BITLOOM_ASSIGN_OR_RETURN(m->generated_, registry.AddCounter("bitloom_inferd_generated_tokens_total",
                                                              "Tokens generated.", {"model"}));
  BITLOOM_ASSIGN_OR_RETURN(
      m->prompt_, registry.AddCounter("bitloom_inferd_prompt_tokens_total",
                                      "Prompt tokens prefilled (generation and scoring).", {"model"}));
  BITLOOM_ASSIGN_OR_RETURN(
      metrics::HistogramFamily * batch,
      registry.AddHistogram("bitloom_inferd_batch_size", "Sequences advanced by one scheduler step.", {},
                            {1, 2, 4, 8, 16, 32, 64, 128, 256}));
  m->batch_size_ = &batch->WithLabels({});
  BITLOOM_ASSIGN_OR_RETURN(
      metrics::HistogramFamily * load,
      registry.AddHistogram("bitloom_inferd_model_load_seconds",
                            "Seconds LoadModel took to map, decode and place a model.", {},
                            metrics::ExponentialBuckets(0.1, 2, 12)));
  m->load_seconds_ = &load->WithLabels({});
  return m;
}

ModelMetrics ServingMetrics::ForModel(const std::string& model_id) const {
  return ModelMetrics{.time_to_first_token = &ttft_->WithLabels({model_id}),
                      .inter_token_latency = &itl_->WithLabels({model_id}),
                      .generated_tokens = &generated_->WithLabels({model_id}),
                      .prompt_tokens = &prompt_->WithLabels({model_id}),
                      .batch_size = batch_size_};
}

}  // namespace bitloom::inferd
