#include "bitloom/metrics/counter.h"

#include "bitloom/core/logging.h"

namespace bitloom::metrics {

void Counter::ReportRejected(double delta) {
  // Once per counter: a caller that passes a bad delta usually does so on every request, and the log
  // must stay readable.
  if (!reported_rejection_.exchange(true, std::memory_order_relaxed)) {
    BITLOOM_LOG(ERROR) << "metrics: counter increment by " << delta
                       << " ignored (counters only go up); further rejections are not logged";
  }
}

}  // namespace bitloom::metrics
