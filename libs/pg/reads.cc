#include "libs/pg/reads.h"

#include "libs/core/status.h"

namespace mkt::pg {

absl::Status WithReads(Pool& pool, const std::function<absl::Status(pqxx::nontransaction&)>& body) {
  absl::Status last;
  for (int attempt = 0; attempt < 2; ++attempt) {
    MKT_ASSIGN_OR_RETURN(Lease lease, pool.Acquire());
    try {
      pqxx::nontransaction reads(*lease);
      return body(reads);
    } catch (const pqxx::broken_connection& e) {
      // The lease drops the broken connection; the next attempt opens a fresh one.
      last = StatusFromException(e);
    } catch (const std::exception& e) {
      return StatusFromException(e);
    } catch (...) {
      return Internal("the read body threw a non-standard exception");
    }
  }
  return last;
}

absl::Status WithStatement(Pool& pool,
                           const std::function<absl::Status(pqxx::nontransaction&)>& body) {
  MKT_ASSIGN_OR_RETURN(Lease lease, pool.Acquire());
  try {
    pqxx::nontransaction statements(*lease);
    return body(statements);
  } catch (const std::exception& e) {
    return StatusFromException(e);
  } catch (...) {
    return Internal("the statement body threw a non-standard exception");
  }
}

}  // namespace mkt::pg
