#include "bitloom/metrics/metrics_http_server.h"

#include <netdb.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <thread>

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "bitloom/core/logging.h"
#include "bitloom/core/status_macros.h"

namespace bitloom::metrics {
namespace {

constexpr char kExpositionContentType[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr char kPlainText[] = "text/plain; charset=utf-8";

// absl::StrCat takes absl::string_view, which is not std::string_view in this abseil build.
std::string Str(std::string_view s) { return std::string(s); }

absl::Status InvalidAddress(std::string_view address, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("metrics listen address \"", Str(address), "\": ", Str(why)));
}

// httplib's default socket options set SO_REUSEPORT, which lets a second process bind a port that is
// already being served and silently split the scrapes between the two. SO_REUSEADDR alone still lets
// a restarted daemon rebind while old connections sit in TIME_WAIT, and makes a taken port an error.
void SetListenSocketOptions(socket_t sock) {
  int yes = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

}  // namespace

absl::StatusOr<ListenAddress> ParseListenAddress(std::string_view address) {
  std::string_view host;
  std::string_view port_text;
  if (address.starts_with('[')) {
    const size_t close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() ||
        address[close + 1] != ':') {
      return InvalidAddress(address, "expected [IPV6]:PORT");
    }
    host = address.substr(1, close - 1);
    port_text = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string_view::npos) return InvalidAddress(address, "expected HOST:PORT");
    host = address.substr(0, colon);
    if (host.find(':') != std::string_view::npos) {
      return InvalidAddress(address, "an IPv6 host must be in brackets, as in [::1]:9090");
    }
    port_text = address.substr(colon + 1);
  }
  int port = -1;
  const auto result = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || result.ec != std::errc() ||
      result.ptr != port_text.data() + port_text.size() || port < 0 || port > 65535) {
    return InvalidAddress(address, "the port must be a number from 0 to 65535");
  }
  ListenAddress parsed;
  parsed.host = host.empty() ? "0.0.0.0" : std::string(host);
  parsed.port = port;
  return parsed;
}

struct MetricsHttpServer::Impl {
  httplib::Server server;
  std::thread listener;
  std::atomic<bool> listener_exited{false};
  int port = 0;
};

MetricsHttpServer::MetricsHttpServer(const MetricsRegistry* registry) : registry_(registry) {}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::SetReadinessCheck(std::function<bool()> ready) {
  std::lock_guard lock(readiness_mu_);
  readiness_ = std::move(ready);
}

int MetricsHttpServer::port() const {
  std::lock_guard lock(mu_);
  return impl_ == nullptr ? 0 : impl_->port;
}

absl::Status MetricsHttpServer::Start(std::string_view listen_address) {
  BITLOOM_ASSIGN_OR_RETURN(const ListenAddress address, ParseListenAddress(listen_address));
  // Resolve first, so that a bad host is reported as what it is rather than as a bind failure.
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* resolved = nullptr;
  if (const int rc = getaddrinfo(address.host.c_str(), nullptr, &hints, &resolved); rc != 0) {
    return InvalidAddress(listen_address,
                          absl::StrCat("cannot resolve host \"", address.host, "\": ",
                                       gai_strerror(rc)));
  }
  freeaddrinfo(resolved);

  std::lock_guard lock(mu_);
  if (impl_ != nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("metrics server already listening on port ", impl_->port));
  }
  auto impl = std::make_unique<Impl>();
  httplib::Server& server = impl->server;
  server.set_socket_options(SetListenSocketOptions);
  // Scrapes and probes are small and rare; two workers suffice and leave the cores to the daemon.
  server.new_task_queue = [] { return new httplib::ThreadPool(2); };
  // Short keep-alive: Stop() waits for idle keep-alive connections to time out.
  server.set_keep_alive_timeout(1);
  server.set_read_timeout(std::chrono::seconds(5));
  server.set_write_timeout(std::chrono::seconds(5));

  server.Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    response.set_content(registry_->Serialize(), kExpositionContentType);
  });
  server.Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ok", kPlainText);
  });
  server.Get("/readyz", [this](const httplib::Request&, httplib::Response& response) {
    std::function<bool()> ready;
    {
      std::lock_guard readiness_lock(readiness_mu_);
      ready = readiness_;
    }
    // Called outside the lock: the check may be slow, and SetReadinessCheck must not wait for it.
    if (ready == nullptr || ready()) {
      response.set_content("ok", kPlainText);
    } else {
      response.status = 503;
      response.set_content("not ready", kPlainText);
    }
  });

  // httplib reports a bind failure only as false; errno still holds bind(2)'s error because the
  // cleanup after it (close, freeaddrinfo) does not fail here.
  errno = 0;
  if (address.port == 0) {
    impl->port = server.bind_to_any_port(address.host);
  } else {
    impl->port = server.bind_to_port(address.host, address.port) ? address.port : -1;
  }
  if (impl->port < 0) {
    const int error = errno;
    const std::string where = Str(listen_address);
    if (error == EADDRINUSE) {
      return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", where,
                                                 ": the port is already in use"));
    }
    if (error == EACCES) {
      return absl::PermissionDeniedError(absl::StrCat(
          "cannot serve metrics on ", where, ": permission denied (ports below 1024 need privileges)"));
    }
    if (error == EADDRNOTAVAIL) {
      return InvalidAddress(listen_address, "the host is not an address of this machine");
    }
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", where, ": ",
                     error != 0 ? std::strerror(error) : "bind failed"));
  }

  Impl* raw = impl.get();
  raw->listener = std::thread([raw] {
    raw->server.listen_after_bind();
    raw->listener_exited.store(true);
  });
  // httplib's stop() does nothing until the accept loop has marked itself running, so a Stop() that
  // raced ahead would leave the thread serving forever. Wait for the loop (it starts at once).
  while (!raw->server.is_running() && !raw->listener_exited.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (raw->listener_exited.load()) {
    raw->listener.join();
    return absl::InternalError(absl::StrCat("metrics server on ", Str(listen_address),
                                            " stopped right after starting"));
  }
  BITLOOM_LOG(INFO) << "metrics: serving /metrics, /healthz, /readyz on " << address.host << ":"
                    << raw->port;
  impl_ = std::move(impl);
  return absl::OkStatus();
}

void MetricsHttpServer::Stop() {
  std::lock_guard lock(mu_);
  if (impl_ == nullptr) return;
  impl_->server.stop();
  impl_->listener.join();
  impl_.reset();
}

}  // namespace bitloom::metrics
