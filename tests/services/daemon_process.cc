#include "daemon_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace bitloom::testing {

std::string MakeTempDir(const std::string& prefix) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string pattern = absl::StrCat(base ? base : "/tmp", "/", prefix, "-XXXXXX");
  char* made = ::mkdtemp(pattern.data());
  return made ? std::string(made) : std::string();
}

DaemonProcess::DaemonProcess(std::string binary, std::vector<std::string> args,
                             std::map<std::string, std::string> env)
    : binary_(std::move(binary)), args_(std::move(args)), env_(std::move(env)) {}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

std::string DaemonProcess::grpc_address() const { return absl::StrCat("127.0.0.1:", grpc_port_); }

absl::Status DaemonProcess::Start(absl::Duration timeout) {
  dir_ = MakeTempDir("daemon");
  const std::string ready = dir_ + "/ready.json";
  std::vector<std::string> argv_strings = {binary_, "--listen_address=127.0.0.1:0",
                                           "--metrics_address=127.0.0.1:0",
                                           "--ready_file=" + ready};
  argv_strings.insert(argv_strings.end(), args_.begin(), args_.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  for (const auto& [key, value] : env_) env_strings.push_back(key + "=" + value);
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const std::string log = dir_ + "/stderr.log";
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int rc = ::posix_spawn(&pid_, binary_.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    pid_ = -1;
    return absl::InternalError(absl::StrCat("posix_spawn ", binary_, " failed: ", rc));
  }

  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    std::ifstream in(ready);
    if (in) {
      nlohmann::json doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
      if (doc.is_object() && doc.contains("grpc_port")) {
        grpc_port_ = doc["grpc_port"].get<int>();
        metrics_port_ = doc["metrics_port"].get<int>();
        return absl::OkStatus();
      }
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::FailedPreconditionError(
          absl::StrCat(binary_, " exited with status ", WEXITSTATUS(status), ":\n", Log()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat(binary_, " did not become ready:\n", Log()));
}

int DaemonProcess::WaitForExit(absl::Duration timeout) {
  if (pid_ <= 0) return -1;
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

int DaemonProcess::Terminate(absl::Duration timeout) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  return WaitForExit(timeout);
}

std::string DaemonProcess::Log() const {
  std::ifstream in(dir_ + "/stderr.log");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5);
  client.set_read_timeout(10);
  auto response = client.Get(path.c_str());
  if (!response) return absl::UnavailableError(absl::StrCat("GET ", path, " failed"));
  if (response->status != 200) {
    return absl::UnknownError(absl::StrCat("GET ", path, ": HTTP ", response->status));
  }
  return response->body;
}

}  // namespace bitloom::testing
