#include "generate_reactor.h"

#include <utility>

#include "bitloom/service/grpc_status.h"

namespace bitloom::inferd {

std::shared_ptr<GenerateReactor> GenerateReactor::Create() {
  std::shared_ptr<GenerateReactor> reactor(new GenerateReactor());
  reactor->self_ = reactor;
  return reactor;
}

void GenerateReactor::Reject(const grpc::Status& status) { EndWith(status); }

void GenerateReactor::OnResponse(v1::GenerateResponse response, bool last) {
  Action action;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || end_requested_) return;
    pending_.push_back(std::move(response));
    if (last) {
      end_requested_ = true;
      final_status_ = grpc::Status::OK;
    }
    action = NextActionLocked();
  }
  Act(action);
}

void GenerateReactor::OnScores(engine::TokenScores /*scores*/) {
  EndWith(grpc::Status(grpc::StatusCode::INTERNAL, "a generation stream received scores"));
}

void GenerateReactor::OnFailed(absl::Status status) { EndWith(service::ToGrpcStatus(status)); }

void GenerateReactor::EndWith(const grpc::Status& status) {
  Action action;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || end_requested_) return;
    end_requested_ = true;
    final_status_ = status;
    action = NextActionLocked();
  }
  Act(action);
}

GenerateReactor::Action GenerateReactor::NextActionLocked() {
  if (writing_ || finished_) return Action::kNone;
  if (!pending_.empty()) {
    in_flight_ = std::move(pending_.front());
    pending_.pop_front();
    writing_ = true;
    return Action::kWrite;
  }
  if (end_requested_) {
    finished_ = true;
    return Action::kFinish;
  }
  return Action::kNone;
}

void GenerateReactor::Act(Action action) {
  if (action == Action::kWrite) {
    StartWrite(&in_flight_);
  } else if (action == Action::kFinish) {
    grpc::Status status;
    {
      std::lock_guard<std::mutex> lock(mu_);
      status = final_status_;
    }
    Finish(status);
  }
}

void GenerateReactor::OnWriteDone(bool ok) {
  Action action;
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      // The stream is broken (the client went away): nothing more can be written.
      cancelled_.store(true, std::memory_order_release);
      pending_.clear();
      if (!end_requested_) {
        end_requested_ = true;
        final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      }
    }
    action = NextActionLocked();
  }
  Act(action);
}

void GenerateReactor::OnCancel() {
  cancelled_.store(true, std::memory_order_release);
  Action action;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.clear();
    if (!end_requested_) {
      end_requested_ = true;
      final_status_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
    }
    action = NextActionLocked();
  }
  Act(action);
}

void GenerateReactor::OnDone() {
  cancelled_.store(true, std::memory_order_release);
  std::shared_ptr<GenerateReactor> self;
  {
    std::lock_guard<std::mutex> lock(mu_);
    self = std::move(self_);
  }
  // `self` may be the last reference: the object is destroyed when it goes out of scope here.
}

}  // namespace bitloom::inferd
