// Reads that need no transaction: each statement runs on its own (autocommit), so a read costs
// one round trip instead of three (BEGIN, the statement, COMMIT). For hot read paths (the
// wallet) whose statements need not see one snapshot together.
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

}  // namespace mkt::pg
