// RequestObserver: how the model scheduler hands results back to the transport (a gRPC reactor).
//
// The scheduler thread calls these; they must not block (a reactor queues the message and returns).
// Exactly one terminal call ends a request: OnResponse(..., last = true), OnScores, or OnFailed.
// Cancelled() is polled before every step, so a client cancel or deadline frees the request's KV
// slot within one forward pass. Implementations are shared (shared_ptr) between the transport and
// the scheduler, so either may outlive the other. Thread-safe.
#pragma once

#include "absl/status/status.h"
#include "bitloom/engine/scoring.h"
#include "bitloom/v1/inference.pb.h"

namespace bitloom::inferd {

class RequestObserver {
 public:
  virtual ~RequestObserver() = default;

  // True once the client has gone (cancelled, deadline passed, connection lost).
  virtual bool Cancelled() const = 0;
  // Generation output: one message per step with new text and tokens; the last one carries
  // finish_reason and usage.
  virtual void OnResponse(v1::GenerateResponse response, bool last) = 0;
  // Scoring output.
  virtual void OnScores(engine::TokenScores scores) = 0;
  // The request ended without (further) output: CANCELLED after a client cancel, UNAVAILABLE when
  // the model went away before the request started, or an engine error.
  virtual void OnFailed(absl::Status status) = 0;
};

}  // namespace bitloom::inferd
