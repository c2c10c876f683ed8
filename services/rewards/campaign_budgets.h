// Campaign budgets funded from the campaigns' own caps (decision 034). The rewards service reads
// mkt.campaign-changes.v1 and, for every published version (SCHEDULED, ONLINE, PAUSED), funds the
// campaign's BUDGET_FEN account in the campaign's org until the FUND transfers into it add up to
// the version's budget_cap_fen. Raising the cap in an approved edit funds the difference; lowering
// it takes nothing back; money an operator funded by hand (Ledger.Fund) counts towards the cap.
//
// Each top-up is Ledger.Fund with request id "budget-cap:<campaign>:<cap>", so a replayed change
// never funds twice. The read of what is funded and the top-up run under a transaction-scoped
// advisory lock on the campaign, so two replicas handling changes of the same campaign (a
// consumer-group rebalance) cannot both top up from the same total.
//
// Decision 035: it also records, from the same changes, when each campaign with a cap ends (its
// window's end, or when an operator ended it), and ReleaseEnded gives what an ended campaign's
// budget still holds unreserved back to the org's funding account (RELEASE transfers), once the
// campaign ended longer ago than the release delay.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "libs/kafka/kafka.h"
#include "libs/pg/pool.h"
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "services/rewards/ledger_service.h"

namespace mkt::rewards {

class CampaignBudgets {
 public:
  // `pool` must not be the ledger's: a top-up holds one of its connections (with the lock) while
  // the ledger's group commit needs one of its own. One connection is enough; calls on one
  // instance take turns.
  CampaignBudgets(pg::Pool& pool, LedgerService& ledger, const Clock& clock = SystemClock())
      : pool_(pool), ledger_(ledger), clock_(clock) {}

  // The handler of mkt.campaign-changes.v1 (a kafka::Consumer Handler). A message that is not a
  // CampaignChanged, or names no campaign or org, is refused INVALID_ARGUMENT (dead-lettered).
  absl::Status HandleChange(const kafka::IncomingMessage& message);

  // What a change means for the budget. A change with a cap records when the campaign ends (a
  // published version's window end; an ENDED or ARCHIVED change's time, if earlier). It funds
  // nothing unless the version is published and its window has not ended (an old change read
  // again, e.g. by a new consumer group reading the topic from its start, does not fund a
  // campaign that is over). Returns the fen funded now (0 when the budget already holds the cap).
  absl::StatusOr<int64_t> Apply(const ::marketing::campaigns::v1::CampaignChanged& change);

  // Funds the campaign's budget up to `cap_fen`; returns the fen funded now.
  absl::StatusOr<int64_t> FundToCap(const std::string& org_id, const std::string& campaign_id,
                                    int64_t cap_fen);

  struct ReleaseRun {
    int campaigns = 0;     // budgets that released something
    int64_t released = 0;  // fen, in all
    int failed = 0;        // budgets whose release failed (tried again on the next run)
  };
  // Releases, for up to `limit` campaigns that ended before now - `delay`, what their budgets hold
  // and no participation has reserved. A hold released later (a participation that failed) or a
  // charge reversed later puts fen back in the budget; the next run releases them too.
  absl::StatusOr<ReleaseRun> ReleaseEnded(absl::Duration delay, int limit);

  // Releases what the campaign's budget holds unreserved; returns the fen released now.
  absl::StatusOr<int64_t> Release(const std::string& org_id, const std::string& campaign_id);

 private:
  // Records when the campaign of an ENDED/ARCHIVED change, or of a published one with a window
  // end, ends.
  absl::Status RecordEnd(const ::marketing::campaigns::v1::CampaignChanged& change);

  pg::Pool& pool_;
  LedgerService& ledger_;
  const Clock& clock_;
  std::mutex mu_;  // one top-up at a time per instance, so one connection of `pool_` suffices
};

// "budget-cap:<campaign>:<cap>", or a digest of it when that is longer than a request id may be.
std::string BudgetCapRequestId(const std::string& campaign_id, int64_t cap_fen);
// "budget-release:<campaign>:<fen released before>", or a digest of it when that is too long.
std::string BudgetReleaseRequestId(const std::string& campaign_id, int64_t released_before);

}  // namespace mkt::rewards
