#include "libs/metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace mkt::metrics {
namespace {

std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

TEST(MetricsTest, ConcurrentRecordsOfManyMethodsAreAllCounted) {
  OperationMetrics ops("mkt_unit_concurrent", "concurrent calls");
  constexpr int kThreads = 4;
  constexpr int kEach = 5000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&ops] {
      for (int i = 0; i < kEach; ++i) ops.Record("M" + std::to_string(i % 3), "", 0.001);
    });
  }
  for (auto& t : threads) t.join();
  const std::string text = SerializeText();
  // 20,000 records over three methods: each thread gives M0 and M1 1,667 and M2 1,666.
  EXPECT_NE(text.find("mkt_unit_concurrent_total{method=\"M0\"} 6668"), std::string::npos) << text;
  EXPECT_NE(text.find("mkt_unit_concurrent_total{method=\"M1\"} 6668"), std::string::npos) << text;
  EXPECT_NE(text.find("mkt_unit_concurrent_latency_seconds_count{method=\"M2\"} 6664"),
            std::string::npos)
      << text;
}

TEST(MetricsTest, OperationMetricsAppearInTextAndOnExposer) {
  OperationMetrics ops("mkt_unit_rpc", "unit calls");
  ops.Record("Grant", "", 0.002);
  ops.Record("Grant", "INTERNAL", 0.004);
  std::string text = SerializeText();
  EXPECT_NE(text.find("mkt_unit_rpc_total{method=\"Grant\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("mkt_unit_rpc_errors_total{code=\"INTERNAL\",method=\"Grant\"} 1"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("mkt_unit_rpc_latency_seconds_count{method=\"Grant\"} 2"), std::string::npos);

  int port = FreePort();
  ASSERT_TRUE(StartExposer("127.0.0.1:" + std::to_string(port)).ok());
  std::string resp = HttpGet(port, "/metrics");
  EXPECT_NE(resp.find("200 OK"), std::string::npos);
  EXPECT_NE(resp.find("mkt_unit_rpc_total"), std::string::npos);
}

}  // namespace
}  // namespace mkt::metrics
