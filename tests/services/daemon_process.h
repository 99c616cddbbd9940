// DaemonProcess: runs quantd or inferd as a child process on ephemeral loopback ports, for the
// integration tests. The daemon reports its bound ports through --ready_file; Start() waits for it.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace bitloom::testing {

class DaemonProcess {
 public:
  // `binary` is the daemon's path; `args` are extra flags; `env` extra environment variables.
  DaemonProcess(std::string binary, std::vector<std::string> args,
                std::map<std::string, std::string> env = {});
  ~DaemonProcess();  // SIGKILLs a daemon still running

  // Starts the daemon with --listen_address/--metrics_address on 127.0.0.1:0 and waits until it
  // serves (or exits, or `timeout` passes).
  absl::Status Start(absl::Duration timeout = absl::Seconds(20));
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  std::string grpc_address() const;

  // Sends SIGTERM and waits for the exit status (-1 when killed by a signal or timed out).
  int Terminate(absl::Duration timeout = absl::Seconds(30));
  // Waits for the process to exit by itself; its exit status, or -1.
  int WaitForExit(absl::Duration timeout);
  // What the daemon wrote to stderr so far.
  std::string Log() const;

 private:
  std::string binary_;
  std::vector<std::string> args_;
  std::map<std::string, std::string> env_;
  std::string dir_;
  pid_t pid_ = -1;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
};

// A fresh empty directory under the test's temp dir.
std::string MakeTempDir(const std::string& prefix);

// GET http://127.0.0.1:port/path; the body, or an error with the status.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

}  // namespace bitloom::testing
