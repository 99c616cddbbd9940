// MetricsHttpServer: the plain-HTTP side port of a daemon: /metrics, /healthz and /readyz.
//
//   GET /metrics  200, the registry's exposition, Content-Type: text/plain; version=0.0.4; charset=utf-8
//   GET /healthz  200 "ok" while the process serves HTTP at all (liveness)
//   GET /readyz   200 "ok" when the readiness check passes (or none is set), else 503 "not ready"
//   anything else 404
// The server does not own the registry, which must outlive it. It runs its own small thread pool
// (two workers) so a slow scrape never touches the daemon's gRPC threads. Start, Stop and
// SetReadinessCheck are thread-safe; Stop is idempotent and the destructor calls it.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bitloom/metrics/metrics_registry.h"

namespace bitloom::metrics {

struct ListenAddress {
  std::string host;  // without brackets for IPv6; "0.0.0.0" when the address was ":PORT"
  int port = 0;      // 0: let the kernel pick
};

// Parses "HOST:PORT", "[IPV6]:PORT" or ":PORT" (all interfaces). INVALID_ARGUMENT quoting `address`.
absl::StatusOr<ListenAddress> ParseListenAddress(std::string_view address);

class MetricsHttpServer {
 public:
  explicit MetricsHttpServer(const MetricsRegistry* registry);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // Binds `listen_address` (see ParseListenAddress; port 0 picks a free port) and serves on a
  // background thread; returns once the socket is listening, so a client may connect immediately.
  // INVALID_ARGUMENT for an unparseable or unresolvable address, UNAVAILABLE when the port is already
  // in use, PERMISSION_DENIED for a privileged port, FAILED_PRECONDITION when already started.
  absl::Status Start(std::string_view listen_address);

  // Closes the listening socket and waits for in-flight requests. Safe to call at any time, twice,
  // or before Start. After Stop, Start may be called again.
  void Stop();

  // The bound port (the kernel's choice when started on port 0); 0 when not running.
  int port() const;

  // `ready` decides /readyz; it runs on a server thread for every probe, so it must be thread-safe
  // and quick. Null means always ready.
  void SetReadinessCheck(std::function<bool()> ready);

 private:
  struct Impl;  // keeps httplib.h out of this header
  const MetricsRegistry* registry_;
  mutable std::mutex mu_;       // serialises Start/Stop; guards impl_
  std::unique_ptr<Impl> impl_;  // non-null while started
  // A separate lock: /readyz handlers take it, and Stop waits for handlers while holding mu_.
  mutable std::mutex readiness_mu_;
  std::function<bool()> readiness_;  // guarded by readiness_mu_
};

}  // namespace bitloom::metrics
