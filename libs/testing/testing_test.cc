// The fixtures that need no server: child processes, ports, HTTP readiness and the binary folder.
#include "libs/testing/testing.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mkt::testing {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string TempLog(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  std::string path = std::string(dir != nullptr ? dir : "/tmp") + "/mkt_testing_" + name + "_" +
                     std::to_string(::getpid()) + ".log";
  ::unlink(path.c_str());
  return path;
}

TEST(ChildProcessTest, PassesEnvironmentAndAppendsOutputToTheLog) {
  const std::string log = TempLog("env");
  { std::ofstream(log) << "before\n"; }
  ChildProcess child({"/bin/sh", "-c", "echo out=$MKT_GREETING; echo err >&2; exit 3"},
                     {{"MKT_GREETING", "hello"}}, log);
  const int status = child.Kill(0, absl::Seconds(10));  // signal 0: just wait for the exit
  ASSERT_NE(status, -1);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
  EXPECT_EQ(ReadFile(log), "before\nout=hello\nerr\n");
  ::unlink(log.c_str());
}

TEST(ChildProcessTest, KillReturnsTheWaitStatus) {
  const std::string log = TempLog("kill");
  ChildProcess child({"/bin/sleep", "30"}, {}, log);
  EXPECT_TRUE(child.running());
  const int status = child.Kill(SIGTERM, absl::Seconds(5));
  ASSERT_NE(status, -1);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  EXPECT_FALSE(child.running());
  ::unlink(log.c_str());
}

TEST(ChildProcessTest, KillTimesOutWhenTheSignalIsIgnored) {
  const std::string log = TempLog("ignore");
  ChildProcess child({"/bin/sh", "-c", "trap '' TERM; echo ready; sleep 30"}, {}, log);
  for (int i = 0; i < 200 && ReadFile(log).empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(child.Kill(SIGTERM, absl::Milliseconds(200)), -1);
  EXPECT_TRUE(child.running());
  // The destructor SIGKILLs and reaps it.
  ::unlink(log.c_str());
}

TEST(ChildProcessTest, RunningTurnsFalseAfterExitWithoutLosingTheStatus) {
  const std::string log = TempLog("exit");
  ChildProcess child({"/bin/sh", "-c", "exit 5"}, {}, log);
  for (int i = 0; i < 500 && child.running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(child.running());
  const int status = child.Kill(SIGTERM, absl::Seconds(1));
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 5);
  ::unlink(log.c_str());
}

TEST(FreePortTest, ReturnsABindablePort) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(fd);
}

TEST(FreePortTest, PortsAreDistinctAndOutsideTheEphemeralRange) {
  std::set<int> ports;
  for (int i = 0; i < 50; ++i) {
    const int port = FreePort();
    EXPECT_GE(port, 10000);
    EXPECT_LT(port, 20000);
    EXPECT_TRUE(ports.insert(port).second) << "port " << port << " handed out twice";
  }
}

// A one-connection-at-a-time HTTP server answering every request with `status_line`.
class TinyHttpServer {
 public:
  explicit TinyHttpServer(std::string status_line) : status_line_(std::move(status_line)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    ::listen(fd_, 8);
    thread_ = std::thread([this] {
      while (true) {
        int client = ::accept(fd_, nullptr, nullptr);
        if (client < 0 || stop_) {
          if (client >= 0) ::close(client);
          return;
        }
        char buf[1024];
        [[maybe_unused]] ssize_t n = ::recv(client, buf, sizeof(buf), 0);
        requests_.fetch_add(1);
        const std::string response = status_line_ + "\r\nContent-Length: 0\r\n\r\n";
        n = ::send(client, response.data(), response.size(), MSG_NOSIGNAL);
        ::close(client);
      }
    });
  }
  ~TinyHttpServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  int port() const { return port_; }
  int requests() const { return requests_.load(); }

 private:
  std::string status_line_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

TEST(WaitForHttpTest, TrueWhenTheServerAnswers200) {
  TinyHttpServer server("HTTP/1.1 200 OK");
  EXPECT_TRUE(WaitForHttp(server.port(), "/healthz", absl::Seconds(5)));
}

TEST(WaitForHttpTest, KeepsPollingAndGivesUpOnOtherStatuses) {
  TinyHttpServer server("HTTP/1.1 503 Service Unavailable");
  const auto started = std::chrono::steady_clock::now();
  EXPECT_FALSE(WaitForHttp(server.port(), "/healthz", absl::Milliseconds(300)));
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(300));
  EXPECT_GT(server.requests(), 1);
}

TEST(WaitForHttpTest, FalseWhenNothingListens) {
  EXPECT_FALSE(WaitForHttp(FreePort(), "/", absl::Milliseconds(200)));
}

TEST(BinDirTest, EnvironmentOverridesTheBuildFolder) {
  ::unsetenv("MKT_BIN_DIR");
  EXPECT_EQ(BinDir(), MKT_BIN_DIR);
  ::setenv("MKT_BIN_DIR", "/opt/mkt/bin", 1);
  EXPECT_EQ(BinDir(), "/opt/mkt/bin");
  ::unsetenv("MKT_BIN_DIR");
}

}  // namespace
}  // namespace mkt::testing
