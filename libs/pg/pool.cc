#include "libs/pg/pool.h"

#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "libs/core/status.h"

namespace mkt::pg {
namespace {

namespace pb = ::marketing::common::v1;

// What a DSN says about where the database is, with the password kept apart so that it can be
// scrubbed from driver messages and never shown.
struct DsnParts {
  std::string where;  // "host:port/dbname"
  std::string password;
};

std::string Option(const PQconninfoOption* options, std::string_view keyword) {
  for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (keyword == o->keyword && o->val != nullptr) return o->val;
  }
  return "";
}

DsnParts DescribeDsn(const std::string& dsn) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(dsn.c_str(), &error);
  if (options == nullptr) {
    // libpq's parse error may quote pieces of the string, password included: say nothing more.
    PQfreemem(error);
    return {"<malformed connection string>", ""};
  }
  std::string host = Option(options, "host");
  if (host.empty()) host = Option(options, "hostaddr");
  if (host.empty()) host = "localhost";
  std::string port = Option(options, "port");
  if (port.empty()) port = "5432";
  std::string dbname = Option(options, "dbname");
  if (dbname.empty()) dbname = Option(options, "user");
  DsnParts parts{absl::StrCat(host, ":", port, "/", dbname), Option(options, "password")};
  PQconninfoFree(options);
  return parts;
}

std::string Scrub(std::string text, const std::string& password) {
  if (!password.empty()) absl::StrReplaceAll({{password, "***"}}, &text);
  return text;
}

// The first line of a driver message, without libpq's "ERROR:  " prefix. Later lines (DETAIL,
// the query) may quote the values of parameters, which can be customer data.
std::string FirstLine(absl::string_view message) {
  message = message.substr(0, message.find('\n'));
  absl::ConsumePrefix(&message, "ERROR:");
  absl::ConsumePrefix(&message, "FATAL:");
  return std::string(absl::StripAsciiWhitespace(message));
}

absl::StatusOr<std::unique_ptr<pqxx::connection>> OpenConnection(const PoolOptions& options) {
  const std::string& dsn = options.dsn;
  try {
    auto conn = std::make_unique<pqxx::connection>(dsn);
    for (const auto& [name, value] : options.session_settings) {
      pqxx::nontransaction set(*conn);
      set.exec("SELECT set_config(" + set.quote(name) + ", " + set.quote(value) + ", false)");
    }
    // A silent reconnect would drop session state (advisory locks, SET) behind the caller's
    // back; a broken connection should stay broken so the pool drops it.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    conn->inhibit_reactivation(true);
#pragma GCC diagnostic pop
    return conn;
  } catch (const std::exception& e) {
    DsnParts parts = DescribeDsn(dsn);
    return Unavailable(absl::StrCat("cannot connect to PostgreSQL at ", parts.where, ": ",
                                    Scrub(FirstLine(e.what()), parts.password)));
  }
}

const std::string* SqlState(const std::exception& e) {
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) return &sql->sqlstate();
  return nullptr;
}

bool HasSqlState(const std::exception& e, std::string_view state) {
  const std::string* s = SqlState(e);
  return s != nullptr && *s == state;
}

// In libpqxx 6.4 serialization_failure and deadlock_detected derive from transaction_rollback,
// not from sql_error, and carry no SQLSTATE; other paths report the same conditions as a plain
// sql_error with the SQLSTATE set. Both shapes are recognised.
bool IsSerializationFailure(const std::exception& e) {
  return dynamic_cast<const pqxx::serialization_failure*>(&e) != nullptr || HasSqlState(e, "40001");
}

bool IsDeadlock(const std::exception& e) {
  return dynamic_cast<const pqxx::deadlock_detected*>(&e) != nullptr || HasSqlState(e, "40P01");
}

bool IsBrokenConnection(const std::exception& e) {
  if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) return true;
  const std::string* s = SqlState(e);
  // Class 08 is connection exceptions; 57P01..57P03 are the server shutting the session down.
  return s != nullptr && (s->starts_with("08") || s->starts_with("57P"));
}

std::string_view IsolationSql(Isolation isolation) {
  switch (isolation) {
    case Isolation::kRepeatableRead:
      return "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ";
    case Isolation::kSerializable:
      return "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE";
    case Isolation::kReadCommitted:
      break;
  }
  return "";
}

// A few milliseconds, doubling per attempt, with jitter so that the transactions that just
// collided do not collide again in lockstep.
absl::Duration Backoff(int attempt) {
  thread_local std::mt19937 rng{std::random_device{}()};
  const double base_ms = 2.0 * (1 << std::min(attempt, 5));
  std::uniform_real_distribution<double> jitter(0.5, 1.5);
  return absl::Milliseconds(base_ms * jitter(rng));
}

}  // namespace

Lease::Lease(Lease&& other) noexcept : pool_(other.pool_), conn_(std::move(other.conn_)) {
  other.pool_ = nullptr;
}

Lease::~Lease() {
  if (pool_ != nullptr && conn_ != nullptr) pool_->Return(std::move(conn_));
}

absl::StatusOr<std::unique_ptr<Pool>> Pool::Connect(const PoolOptions& options) {
  if (options.size < 1) return InvalidArgument("size", "a PostgreSQL pool needs size >= 1");
  MKT_ASSIGN_OR_RETURN(std::unique_ptr<pqxx::connection> first, OpenConnection(options));
  std::unique_ptr<Pool> pool(new Pool(options));
  pool->idle_.push_back(std::move(first));
  pool->open_ = 1;
  return pool;
}

absl::StatusOr<Lease> Pool::Acquire() {
  std::unique_lock<std::mutex> lock(mu_);
  const auto deadline =
      std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(options_.acquire_timeout);
  while (true) {
    if (!idle_.empty()) {
      std::unique_ptr<pqxx::connection> conn = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(conn));
    }
    if (open_ < options_.size) {
      ++open_;  // reserve the slot, then connect without holding the lock
      lock.unlock();
      absl::StatusOr<std::unique_ptr<pqxx::connection>> conn = OpenConnection(options_);
      if (!conn.ok()) {
        lock.lock();
        --open_;
        cv_.notify_one();
        return conn.status();
      }
      return Lease(this, *std::move(conn));
    }
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
        open_ >= options_.size) {
      return Unavailable(absl::StrCat("all ", options_.size,
                                      " connections of the PostgreSQL pool are in use; waited ",
                                      absl::FormatDuration(options_.acquire_timeout)));
    }
  }
}

void Pool::Return(std::unique_ptr<pqxx::connection> conn) {
  std::unique_ptr<pqxx::connection> broken;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (conn->is_open()) {
      idle_.push_back(std::move(conn));
    } else {
      broken = std::move(conn);  // closed outside the lock
      --open_;
    }
  }
  cv_.notify_one();
}

absl::Status WithTransaction(Pool& pool, const std::function<absl::Status(pqxx::work&)>& body,
                             const TxOptions& options) {
  const int max_attempts = std::max(1, options.max_attempts);
  absl::Status last;
  for (int attempt = 1; attempt <= max_attempts; ++attempt) {
    if (attempt > 1) std::this_thread::sleep_for(absl::ToChronoNanoseconds(Backoff(attempt - 1)));
    MKT_ASSIGN_OR_RETURN(Lease lease, pool.Acquire());
    bool committing = false;
    try {
      pqxx::work tx(*lease);
      if (std::string_view sql = IsolationSql(options.isolation); !sql.empty()) {
        tx.exec(std::string(sql));
      }
      absl::Status status = body(tx);
      if (!status.ok()) {
        try {
          tx.abort();
        } catch (const std::exception&) {
          // The transaction is gone either way; the body's status is the news.
        }
        return status;
      }
      committing = true;
      tx.commit();
      return absl::OkStatus();
    } catch (const pqxx::in_doubt_error& e) {
      return StatusFromException(e);
    } catch (const std::exception& e) {
      // The lease is dropped (and a broken connection with it) before the next attempt.
      if (committing && IsBrokenConnection(e)) {
        return Error(absl::StatusCode::kUnknown, pb::INTERNAL,
                     absl::StrCat("the commit outcome is unknown (connection lost while "
                                  "committing): ",
                                  FirstLine(e.what())));
      }
      last = StatusFromException(e);
      const bool retryable =
          IsSerializationFailure(e) || IsDeadlock(e) || (IsBrokenConnection(e) && !committing);
      if (!retryable) return last;
    } catch (...) {
      return Internal("the transaction body threw a non-standard exception");
    }
  }
  return Error(last.code(), ReasonOf(last),
               absl::StrCat(last.message(), " (gave up after ", max_attempts, " attempts)"));
}

absl::Status StatusFromException(const std::exception& e) {
  const std::string message = FirstLine(e.what());
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr) {
    return Error(absl::StatusCode::kUnknown, pb::INTERNAL,
                 absl::StrCat("the commit outcome is unknown (connection lost while committing): ",
                              message));
  }
  if (IsSerializationFailure(e) || IsDeadlock(e)) {
    return Error(absl::StatusCode::kAborted, pb::CONFLICT,
                 absl::StrCat("transaction aborted by a concurrent one: ", message));
  }
  if (dynamic_cast<const pqxx::statement_completion_unknown*>(&e) != nullptr) {
    return Error(absl::StatusCode::kUnknown, pb::INTERNAL,
                 absl::StrCat("the statement's outcome is unknown: ", message));
  }
  if (IsBrokenConnection(e)) {
    return Error(absl::StatusCode::kUnavailable, pb::DEPENDENCY_UNAVAILABLE,
                 absl::StrCat("lost the connection to PostgreSQL: ", message));
  }
  if (const std::string* state = SqlState(e)) {
    if (*state == "23505") {
      return Error(absl::StatusCode::kAlreadyExists, pb::ALREADY_EXISTS, message);
    }
    if (*state == "23503" || *state == "23514" || *state == "23502" || *state == "23001") {
      return Error(absl::StatusCode::kFailedPrecondition, pb::CONFLICT, message);
    }
    if (*state == "57014") {
      return Error(absl::StatusCode::kDeadlineExceeded, pb::DEADLINE_EXCEEDED,
                   absl::StrCat("statement canceled: ", message));
    }
    return Error(absl::StatusCode::kInternal, pb::INTERNAL,
                 state->empty() ? absl::StrCat("PostgreSQL error: ", message)
                                : absl::StrCat("PostgreSQL error ", *state, ": ", message));
  }
  return Error(absl::StatusCode::kInternal, pb::INTERNAL,
               absl::StrCat("PostgreSQL access failed: ", message));
}

}  // namespace mkt::pg

// libpqxx 6.4 leaks the PGresult of a statement whose connection the server closed: it asks for
// the client encoding before taking ownership of the result, and that throws broken_connection.
// A few KB per lost connection is harmless, but LeakSanitizer would fail every sanitized binary
// (tests included) that survives a database restart, so that one leak is declared known.
extern "C" const char* __lsan_default_suppressions() { return "leak:PQmakeEmptyPGresult\n"; }
