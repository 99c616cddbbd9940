// GenerateReactor: the server-streaming side of Generate and Chat, fed by a ModelScheduler.
//
// The scheduler thread hands over messages as they are produced (RequestObserver); the reactor keeps
// them in a queue and writes them one at a time, as the callback API requires, then finishes the call
// with OK after the last one, or with the error the scheduler reports. A slow client therefore never
// blocks the scheduler: its messages queue here. OnCancel (client cancel, deadline, broken connection)
// finishes the call at once and makes Cancelled() true, so the scheduler drops the request and frees its
// KV slot at its next step.
//
// Lifetime: the object is shared by gRPC (until OnDone) and the scheduler (until its terminal
// callback); it holds a reference to itself that OnDone releases, so whichever lets go last frees it.
// Thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>

#include "bitloom/v1/inference.grpc.pb.h"
#include "request_observer.h"

namespace bitloom::inferd {

class GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                              public RequestObserver {
 public:
  // The reactor to return to gRPC, and the observer to hand to the scheduler, are the same object.
  static std::shared_ptr<GenerateReactor> Create();

  // Ends the call with `status` before anything was written (a rejected request).
  void Reject(const grpc::Status& status);

  // RequestObserver.
  bool Cancelled() const override { return cancelled_.load(std::memory_order_acquire); }
  void OnResponse(v1::GenerateResponse response, bool last) override;
  void OnScores(engine::TokenScores scores) override;  // not used by generation: an internal error
  void OnFailed(absl::Status status) override;

  // grpc::ServerWriteReactor.
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  GenerateReactor() = default;
  // Starts the next write, or the Finish, if nothing is in flight. Called with mu_ held; returns
  // the action to take once mu_ is released (gRPC may run reactions inline).
  enum class Action { kNone, kWrite, kFinish };
  Action NextActionLocked();
  void Act(Action action);
  void EndWith(const grpc::Status& status);

  std::mutex mu_;
  std::deque<v1::GenerateResponse> pending_;  // guarded by mu_
  v1::GenerateResponse in_flight_;            // written by the thread that started the write
  bool writing_ = false;                      // guarded by mu_
  bool end_requested_ = false;                // guarded by mu_: finish once pending_ is written
  bool finished_ = false;                     // guarded by mu_: Finish() has been called
  grpc::Status final_status_;                 // guarded by mu_
  std::atomic<bool> cancelled_{false};
  std::shared_ptr<GenerateReactor> self_;     // released by OnDone
};

}  // namespace bitloom::inferd
