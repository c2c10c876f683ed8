// Statements of hot paths run as prepared statements (decision 017): PostgreSQL parses, analyses
// and plans them once per connection instead of on every call. libpqxx 6.4 registers a statement
// with the connection object and prepares it on the server the first time it runs there (again
// after a reconnect); a definition registered again under the same name costs a map lookup.
#pragma once

#include <pqxx/pqxx>
#include <utility>

namespace mkt::pg {

// A statement of a hot path: its name, unique within the process, and its SQL.
struct Prepared {
  const char* name;
  const char* sql;
};

// Runs `statement` with `args` in `tx` as a prepared statement of `tx`'s connection.
template <typename... Args>
pqxx::result ExecPrepared(pqxx::transaction_base& tx, const Prepared& statement, Args&&... args) {
  tx.conn().prepare(statement.name, statement.sql);
  return tx.exec_prepared(statement.name, std::forward<Args>(args)...);
}

}  // namespace mkt::pg
