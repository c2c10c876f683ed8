// Statements that need no explicit transaction: each runs on its own (autocommit), so it costs one
// round trip instead of three (BEGIN, the statement, COMMIT). For hot read paths (the wallet)
// whose statements need not see one snapshot together, and for hot writes that are one statement
// (a data-modifying WITH makes several changes one statement, atomic and durable at its end).
#pragma once

#include <functional>
#include <pqxx/pqxx>

#include "absl/status/status.h"
#include "libs/pg/pool.h"

namespace mkt::pg {

// Runs `body` on a pooled connection without a transaction. A connection lost before `body`
// finished is retried once on a fresh connection (reads are safe to repeat); libpqxx exceptions
// become statuses as in WithTransaction. `body` must only read.
absl::Status WithReads(Pool& pool, const std::function<absl::Status(pqxx::nontransaction&)>& body);

// Runs `body` on a pooled connection without a transaction, for writes of one statement each
// (every statement commits on its own). Not retried: a connection lost during a write leaves its
// outcome unknown (UNAVAILABLE), which the caller resolves like any in-doubt commit.
absl::Status WithStatement(Pool& pool,
                           const std::function<absl::Status(pqxx::nontransaction&)>& body);

}  // namespace mkt::pg
