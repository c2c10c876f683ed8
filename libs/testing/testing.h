// Fixtures for integration tests: a fresh PostgreSQL database per test, the real Kafka broker's
// address and fresh topics, free ports, and child processes (services under test).
//
// ./dev test exports MKT_TEST_PG_DSN (a DSN of the test server's maintenance database) and
// MKT_TEST_KAFKA_BOOTSTRAP; without them the fixtures fail the test with a message saying so.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace mkt::testing {

// A database created for one test and dropped (connections terminated) when destroyed.
class TestDatabase {
 public:
  // Creates database "t_<random>"; aborts the test with a clear message when PostgreSQL is not up.
  TestDatabase();
  ~TestDatabase();
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;

  const std::string& name() const { return name_; }
  // A libpq connection string for this database.
  const std::string& dsn() const { return dsn_; }

 private:
  std::string admin_dsn_;
  std::string name_;
  std::string dsn_;
};

// Returns the test broker's bootstrap address (MKT_TEST_KAFKA_BOOTSTRAP).
std::string KafkaBootstrap();

// Creates a new topic named "<prefix>.<random>" with `partitions` partitions and returns its name.
std::string NewTopic(std::string_view prefix, int partitions = 3);

// Returns a TCP port on 127.0.0.1 that was free a moment ago, in 10000-19999 (outside the
// kernel's ephemeral range, so no outgoing connection takes it before the server binds it), and
// handed to no other test process (or earlier call of this one) while this process lives.
int FreePort();

// A program started by a test; killed with SIGKILL on destruction if still running.
class ChildProcess {
 public:
  // Starts `argv[0]` with `argv` and the current environment plus `env`; output goes to
  // `log_path` (appended).
  ChildProcess(std::vector<std::string> argv, std::map<std::string, std::string> env,
               std::string log_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Sends `signal`; then waits for exit (up to `timeout`) and returns the wait status, or -1.
  int Kill(int signal, absl::Duration timeout = absl::Seconds(10));
  bool running();

 private:
  pid_t pid_ = -1;
};

// Returns the directory holding the build's binaries (MKT_BIN_DIR, set by CMake for tests).
std::string BinDir();

// Waits until http://127.0.0.1:<port><path> answers 200 or `timeout` passes; returns whether it
// did.
bool WaitForHttp(int port, std::string_view path, absl::Duration timeout);

// Waits until 127.0.0.1:<port> accepts TCP connections or `timeout` passes; returns whether it did.
bool WaitForPort(int port, absl::Duration timeout);

// Waits until the gRPC server behind `channel` reports SERVING (grpc.health.v1) or `timeout`
// passes; returns whether it did.
bool WaitForGrpcHealth(const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout);

// Returns the last `lines` lines of the file at `path`, for failure messages about a child's log.
std::string Tail(const std::string& path, int lines);

// A clock that moves only when the test says so (expiry, timeouts, backoff, caches).
class ManualClock final : public Clock {
 public:
  explicit ManualClock(absl::Time now = absl::FromUnixSeconds(1'800'000'000)) : now_(now) {}
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }
  void Set(absl::Time t) {
    absl::MutexLock lock(&mu_);
    now_ = t;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mkt::testing
