// `bitloom bench ARTIFACT [--store_path=DIR] [--json_out=FILE] [--batches=1,4,16]
// [--prefill=512,2048] [--steps=N] [--decode_context=N] [--inferd=ADDR --clients=N] [--skip_gpu]`:
// decode and prefill speed of an artifact on the GPU against the memory-bandwidth limit, and the
// latency of a running inferd under concurrent streaming clients. Prints one JSON object to stdout
// (and to --json_out):
//
//   artifact, bits_per_weight, head_bits_per_weight, config {layers, hidden, vocab, ...}
//   gpu: device, copy_bandwidth_gbps, bytes_per_token {total, decoder_linears, head, ...},
//        limit_tokens_per_s_batch1, load_seconds,
//        decode [{batch, limit_tokens_per_s, forward {median_step_ms, tokens_per_s,
//                 fraction_of_limit, ...}, with_sampling {...},
//                 kernel_timeline {step_span_us, kernel_time_us, gaps_us, overlap_us,
//                 kernels [{name, start_us, duration_us, gap_us}]} with --kernel_timeline_steps}],
//        prefill [{tokens, median_ms, tokens_per_s, last_logits_finite, last_logits_rms}]
//        (bench_gpu.h has the method), or {"skipped": reason} with --skip_gpu
//   latency (with --inferd): clients, requests, ttft_ms {p50, p90, p99, max, mean},
//        itl_ms {...}, tokens_per_second (bench_latency.h)
//
// The GPU part needs a CUDA build and a GPU and says so otherwise. The latency part talks to inferd
// over gRPC only (any inferd, CPU or GPU); the model is --model_id (default: the artifact's name),
// loaded from inferd's own store with --context_length and --max_batch_size when not loaded yet.
#pragma once

#include <string>

namespace bitloom::tools {

// `inferd_address` empty: no latency part. Returns the process exit status: 0 on success, 1 on an
// error, 2 on a usage error.
int RunBench(const std::string& artifact_name, const std::string& inferd_address);

}  // namespace bitloom::tools
