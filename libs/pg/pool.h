// PostgreSQL access over libpqxx: a bounded connection pool, a transaction helper that retries
// serialization failures and deadlocks, and the mapping of libpqxx exceptions to absl::Status.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <pqxx/pqxx>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mkt::pg {

struct PoolOptions {
  // libpq connection string, e.g. "host=127.0.0.1 port=25432 dbname=channels user=postgres".
  std::string dsn;
  int size = 8;
  // How long Acquire() waits for a free connection before answering UNAVAILABLE.
  absl::Duration acquire_timeout = absl::Seconds(5);
  // Session settings applied to every connection as it opens (name, value), e.g.
  // {"synchronous_commit", "off"} for a pool whose writes may be lost in a database crash.
  std::vector<std::pair<std::string, std::string>> session_settings;
};

class Pool;

// A connection borrowed from a Pool; returned on destruction (dropped if it broke).
class Lease {
 public:
  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&&) = delete;
  ~Lease();
  pqxx::connection& operator*() { return *conn_; }
  pqxx::connection* operator->() { return conn_.get(); }

 private:
  friend class Pool;
  Lease(Pool* pool, std::unique_ptr<pqxx::connection> conn) : pool_(pool), conn_(std::move(conn)) {}
  Pool* pool_;
  std::unique_ptr<pqxx::connection> conn_;
};

class Pool {
 public:
  // Opens the first connection right away so an unreachable database fails start-up with a
  // clear error; the others open on demand.
  static absl::StatusOr<std::unique_ptr<Pool>> Connect(const PoolOptions& options);

  // Borrows a connection, opening one if fewer than `size` exist; UNAVAILABLE after the timeout.
  absl::StatusOr<Lease> Acquire();

  const PoolOptions& options() const { return options_; }

 private:
  friend class Lease;
  explicit Pool(PoolOptions options) : options_(std::move(options)) {}
  void Return(std::unique_ptr<pqxx::connection> conn);

  PoolOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;
  int open_ = 0;
};

enum class Isolation { kReadCommitted, kRepeatableRead, kSerializable };

struct TxOptions {
  Isolation isolation = Isolation::kReadCommitted;
  // Attempts in all, for serialization failures, deadlocks and connections lost before commit.
  int max_attempts = 5;
};

// Runs `body` in a transaction on a pooled connection and commits when it returns OK; rolls
// back and returns its status otherwise. Retries the whole body (with a short jittered backoff)
// on serialization failures and deadlocks. libpqxx exceptions become statuses (see below).
absl::Status WithTransaction(Pool& pool, const std::function<absl::Status(pqxx::work&)>& body,
                             const TxOptions& options = {});

// Maps a libpqxx (or std) exception to a status: unique violation → ALREADY_EXISTS,
// check/foreign-key violation → FAILED_PRECONDITION, serialization failure/deadlock → ABORTED,
// broken connection → UNAVAILABLE, in-doubt commit → UNKNOWN, anything else → INTERNAL.
// The message says what failed without leaking SQL parameters.
absl::Status StatusFromException(const std::exception& e);

}  // namespace mkt::pg
