// A service that cannot start must say why and exit with status 1 by itself, never abort: each
// binary runs as its own process against a fresh database and the real Kafka with everything valid
// except its gRPC address, whose port the test holds. By then its background threads (outbox
// relay, consumers, sweepers, ...) are running; they must be stopped and joined on the way out
// (a joinable std::thread at return calls std::terminate: SIGABRT).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <ostream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/testing/testing.h"

namespace mkt {
namespace {

using ::testing::HasSubstr;

// A TCP port on 127.0.0.1 with a listening socket on it for as long as this object lives.
class TakenPort {
 public:
  TakenPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        ::listen(fd_, 16) == 0 &&
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port_ = ntohs(addr.sin_port);
    } else {
      error_ = std::strerror(errno);
    }
  }
  ~TakenPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  TakenPort(const TakenPort&) = delete;
  TakenPort& operator=(const TakenPort&) = delete;

  int port() const { return port_; }
  const std::string& error() const { return error_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::string error_ = "cannot create a socket";
};

std::string Addr(int port) { return absl::StrCat("127.0.0.1:", port); }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// One binary under test: its environment prefix and what it needs besides its database, Kafka and
// the gRPC address. Backends it calls point at a port nobody listens on (they are dialled lazily).
struct ServiceCase {
  const char* name;
  const char* binary;  // under the build folder
  const char* prefix;  // of its environment variables
  std::map<std::string, std::string> (*settings)(const std::string& unused_address);
};

void PrintTo(const ServiceCase& service, std::ostream* os) { *os << service.name; }

const ServiceCase kServices[] = {
    {"Gateway", "services/gateway/mkt-gateway", "MKT_GATEWAY_",
     [](const std::string& unused) -> std::map<std::string, std::string> {
       return {{"HTTP_ADDRESS", Addr(testing::FreePort())},
               {"TOKEN_KEY", "startup-failure-token-key-0123456789"},
               {"CHANNELS_TARGET", unused},
               {"CAMPAIGNS_TARGET", unused},
               {"SEGMENTS_TARGET", unused},
               {"REWARDS_TARGET", unused}};
     }},
    {"Campaigns", "services/campaigns/mkt-campaigns", "MKT_CAMPAIGNS_",
     [](const std::string& unused) -> std::map<std::string, std::string> {
       return {{"METRICS_ADDRESS", Addr(testing::FreePort())},
               {"REFERENCE_SOURCE", "services"},
               {"SEGMENTS_ADDRESS", unused},
               {"REWARDS_ADDRESS", unused},
               {"SCHEDULER_INTERVAL_MS", "200"},
               {"BUSINESS_EVENTS_TOPIC", "startup-failure.events." + RandomHex(4)},
               {"ASSET_GROWTH_GROUP", "startup-failure-" + RandomHex(4)}};
     }},
    {"Events", "services/events/mkt-events", "MKT_EVENTS_",
     [](const std::string& unused) -> std::map<std::string, std::string> {
       const std::string run = RandomHex(4);
       return {{"METRICS_ADDRESS", Addr(testing::FreePort())},
               {"REWARDS_ADDRESS", unused},
               {"EVENTS_TOPIC", "startup-failure.events." + run},
               {"CAMPAIGN_CHANGES_TOPIC", "startup-failure.changes." + run},
               {"DEAD_LETTER_TOPIC", "startup-failure.dead." + run},
               {"CONSUMER_GROUP", "startup-failure-" + run}};
     }},
    {"Segments", "services/segments/mkt-segments", "MKT_SEGMENTS_",
     [](const std::string&) -> std::map<std::string, std::string> {
       const std::string run = RandomHex(4);
       return {{"METRICS_ADDRESS", Addr(testing::FreePort())},
               {"PROFILES_TOPIC", "startup-failure.profiles." + run},
               {"BUSINESS_EVENTS_TOPIC", "startup-failure.events." + run},
               {"DEAD_LETTER_TOPIC", "startup-failure.dead." + run},
               {"REPLICA_ID", "startup-failure-" + run}};
     }},
    {"Rewards", "services/rewards/mkt-rewards", "MKT_REWARDS_",
     [](const std::string&) -> std::map<std::string, std::string> {
       return {{"METRICS_ADDRESS", Addr(testing::FreePort())}};
     }},
    {"Channels", "services/channels/mkt-channels", "MKT_CHANNELS_",
     [](const std::string&) -> std::map<std::string, std::string> {
       return {{"METRICS_ADDRESS", Addr(testing::FreePort())}, {"SECRET_KEY", RandomHex(32)}};
     }},
};

class StartupFailureE2eTest : public ::testing::TestWithParam<ServiceCase> {};

TEST_P(StartupFailureE2eTest, ExitsWithStatus1WhenItsGrpcPortIsTaken) {
  const ServiceCase& service = GetParam();
  testing::TestDatabase database;
  const TakenPort taken;
  ASSERT_NE(taken.port(), 0) << "cannot hold a port: " << taken.error();
  const std::string grpc_address = Addr(taken.port());

  const std::string prefix = service.prefix;
  std::map<std::string, std::string> env;
  for (const auto& [key, value] : service.settings(Addr(testing::FreePort()))) {
    env[prefix + key] = value;
  }
  env[prefix + "PG_DSN"] = database.dsn();
  env[prefix + "KAFKA_BOOTSTRAP"] = testing::KafkaBootstrap();
  env[prefix + "GRPC_ADDRESS"] = grpc_address;
  const std::string log =
      ::testing::TempDir() + "startup_failure_" + service.name + "_" + RandomHex(4) + ".log";
  testing::ChildProcess process({testing::BinDir() + "/" + service.binary}, env, log);

  // Signal 0 sends nothing: this only waits for the process to exit by itself.
  const int status = process.Kill(0, absl::Seconds(20));
  ASSERT_NE(status, -1) << service.binary << " still runs 20 s after start; its log:\n"
                        << testing::Tail(log, 40);
  const bool exited = WIFEXITED(status);
  ASSERT_TRUE(exited) << service.binary << " was killed by signal "
                      << (WIFSIGNALED(status) ? WTERMSIG(status) : 0) << " ("
                      << (WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "?")
                      << "); its log:\n"
                      << testing::Tail(log, 40);
  EXPECT_EQ(WEXITSTATUS(status), 1) << testing::Tail(log, 40);
  EXPECT_THAT(ReadFile(log), HasSubstr("cannot listen for gRPC on " + grpc_address))
      << testing::Tail(log, 40);
}

INSTANTIATE_TEST_SUITE_P(Services, StartupFailureE2eTest, ::testing::ValuesIn(kServices),
                         [](const ::testing::TestParamInfo<ServiceCase>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace mkt
