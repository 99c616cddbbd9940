#include "bitloom/metrics/metrics_http_server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

namespace bitloom::metrics {
namespace {

using ::testing::HasSubstr;

class MetricsHttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CounterFamily* family = *registry_.AddCounter("test_requests_total", "Test requests.", {"m"});
    family->WithLabels({"x"}).Increment(3);
  }

  httplib::Client Client(int port) {
    httplib::Client client("127.0.0.1", port);
    client.set_connection_timeout(std::chrono::seconds(5));
    client.set_read_timeout(std::chrono::seconds(5));
    return client;
  }

  MetricsRegistry registry_;
};

// Whether a plain socket (no SO_REUSEADDR / SO_REUSEPORT) can bind 127.0.0.1:port.
bool CanBind(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

TEST_F(MetricsHttpServerTest, ServesMetrics) {
  MetricsHttpServer server(&registry_);
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  ASSERT_GT(server.port(), 0);
  httplib::Client client = Client(server.port());
  httplib::Result result = client.Get("/metrics");
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(result->body, registry_.Serialize());
  EXPECT_THAT(result->body, HasSubstr("test_requests_total{m=\"x\"} 3\n"));
}

TEST_F(MetricsHttpServerTest, GzipWhenAskedAndHead) {
  MetricsHttpServer server(&registry_);
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  httplib::Client client = Client(server.port());
  // Prometheus asks for gzip; the exposition compresses well.
  client.set_decompress(false);
  httplib::Result gzipped = client.Get("/metrics", {{"Accept-Encoding", "gzip"}});
  ASSERT_TRUE(gzipped);
  EXPECT_EQ(gzipped->status, 200);
  EXPECT_EQ(gzipped->get_header_value("Content-Encoding"), "gzip");
  httplib::Result head = client.Head("/metrics");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->body, "");
}

TEST_F(MetricsHttpServerTest, HealthReadinessAndNotFound) {
  MetricsHttpServer server(&registry_);
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  httplib::Client client = Client(server.port());

  httplib::Result health = client.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok");

  // No readiness check set: ready.
  httplib::Result ready = client.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);

  std::atomic<bool> is_ready{false};
  server.SetReadinessCheck([&] { return is_ready.load(); });
  ready = client.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
  is_ready = true;
  ready = client.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(ready->body, "ok");

  httplib::Result missing = client.Get("/nothing-here");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  httplib::Result post = client.Post("/metrics", "", "text/plain");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 404);
}

TEST_F(MetricsHttpServerTest, StopFreesThePortAndIsIdempotent) {
  MetricsHttpServer server(&registry_);
  server.Stop();  // before Start: a no-op
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  const int port = server.port();
  {
    // A keep-alive connection must not hold Stop up for long.
    httplib::Client client = Client(port);
    client.set_keep_alive(true);
    ASSERT_TRUE(client.Get("/metrics"));
  }
  server.Stop();
  server.Stop();
  EXPECT_EQ(server.port(), 0);
  EXPECT_FALSE(Client(port).Get("/healthz"));
  EXPECT_TRUE(CanBind(port));
  // And the server can be started again on the same port.
  ASSERT_TRUE(server.Start("127.0.0.1:" + std::to_string(port)).ok());
  EXPECT_EQ(server.port(), port);
  EXPECT_TRUE(Client(port).Get("/healthz"));
}

TEST_F(MetricsHttpServerTest, PortInUseIsAClearError) {
  MetricsHttpServer first(&registry_);
  ASSERT_TRUE(first.Start("127.0.0.1:0").ok());
  MetricsHttpServer second(&registry_);
  const std::string address = "127.0.0.1:" + std::to_string(first.port());
  absl::Status status = second.Start(address);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr(address));
  EXPECT_THAT(status.message(), HasSubstr("already in use"));
  // The first server still answers.
  EXPECT_TRUE(Client(first.port()).Get("/healthz"));
}

TEST_F(MetricsHttpServerTest, StopWithAnOpenKeepAliveConnection) {
  MetricsHttpServer server(&registry_);
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  httplib::Client client = Client(server.port());
  client.set_keep_alive(true);
  ASSERT_TRUE(client.Get("/metrics"));
  // The client's connection is still open: Stop must neither hang nor crash. (It may wait for the
  // one-second keep-alive timeout; that is what the short timeout in Start is for.)
  server.Stop();
  EXPECT_EQ(server.port(), 0);
}

TEST_F(MetricsHttpServerTest, StartTwiceFails) {
  MetricsHttpServer server(&registry_);
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  EXPECT_EQ(server.Start("127.0.0.1:0").code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(MetricsHttpServerTest, BadAddressesAreInvalidArgument) {
  MetricsHttpServer server(&registry_);
  for (const char* address :
       {"", "9090", "127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:65536",
        "127.0.0.1:-1", "::1:9090", "[::1]9090", "no-such-host.invalid:9090"}) {
    absl::Status status = server.Start(address);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << address << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr("\"" + std::string(address) + "\"")) << address;
  }
  EXPECT_EQ(server.port(), 0);
}

TEST(ParseListenAddressTest, Forms) {
  absl::StatusOr<ListenAddress> parsed = ParseListenAddress("0.0.0.0:9090");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->host, "0.0.0.0");
  EXPECT_EQ(parsed->port, 9090);
  parsed = ParseListenAddress(":9091");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->host, "0.0.0.0");
  EXPECT_EQ(parsed->port, 9091);
  parsed = ParseListenAddress("[::1]:0");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->host, "::1");
  EXPECT_EQ(parsed->port, 0);
  parsed = ParseListenAddress("localhost:80");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->host, "localhost");
}

TEST_F(MetricsHttpServerTest, DestructorStops) {
  int port = 0;
  {
    MetricsHttpServer server(&registry_);
    ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
    port = server.port();
  }
  EXPECT_TRUE(CanBind(port));
}

}  // namespace
}  // namespace bitloom::metrics
