#include "services/rewards/campaign_budgets.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "libs/auth/crypto.h"
#include "libs/core/status.h"
#include "libs/kafka/outbox.h"
#include "libs/log/format.h"
#include "services/rewards/pg_ledger_store.h"
#include "spdlog/spdlog.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::campaigns::v1;

// Request ids are at most 64 characters (ledger_service.cc kMaxRequestIdLength).
constexpr size_t kMaxRequestIdLength = 64;
// What a campaign's budget account and its cap may hold (the ledger's largest amount).
constexpr int64_t kMaxCapFen = 1'000'000'000'000'000;

// Serialises the read of what is funded and the top-up per campaign, across replicas. The
// two-int form with class 34 (this decision's number) keeps these keys apart from the ledger's
// batch-id locks (class 6) and the migrations' single-key lock.
constexpr char kLockCampaignBudget[] =
    "SELECT pg_advisory_xact_lock(34, hashtext($1 || ':' || $2))";

// A published version moves the end to its window's end, until the campaign is known to have
// ended: a published change read after that (a replay) moves nothing.
constexpr char kRecordPublishedEnd[] =
    "INSERT INTO campaign_budget_ends (org_id, campaign_id, ends_at) "
    "VALUES ($1, $2, 'epoch'::timestamptz + $3::bigint * interval '1 microsecond') "
    "ON CONFLICT (org_id, campaign_id) DO UPDATE SET ends_at = EXCLUDED.ends_at, "
    "updated_at = now() WHERE NOT campaign_budget_ends.ended";
// An ENDED or ARCHIVED change: the earliest end heard of since the campaign ended.
constexpr char kRecordEnded[] =
    "INSERT INTO campaign_budget_ends (org_id, campaign_id, ends_at, ended) "
    "VALUES ($1, $2, 'epoch'::timestamptz + $3::bigint * interval '1 microsecond', true) "
    "ON CONFLICT (org_id, campaign_id) DO UPDATE SET ends_at = CASE "
    "WHEN campaign_budget_ends.ended "
    "THEN LEAST(campaign_budget_ends.ends_at, EXCLUDED.ends_at) ELSE EXCLUDED.ends_at END, "
    "ended = true, updated_at = now()";
// Campaigns that ended before the cutoff, within a year of it, and whose budget holds something
// unreserved. The year bounds what each run reads (through the index on ends_at) as ended
// campaigns accumulate: money coming back to a budget later than that stays in it.
constexpr char kSelectReleasable[] =
    "SELECT e.org_id, e.campaign_id FROM campaign_budget_ends e "
    "JOIN accounts a ON a.org_id = e.org_id AND a.asset = $2 AND a.asset_ref = '' "
    "AND a.owner_kind = $3 AND a.owner_id = e.campaign_id "
    "WHERE e.ends_at <= 'epoch'::timestamptz + $1::bigint * interval '1 microsecond' "
    "AND e.ends_at > 'epoch'::timestamptz + $1::bigint * interval '1 microsecond' "
    "- interval '366 days' "
    "AND a.credits_posted - a.debits_posted - a.debits_pending > 0 "
    "ORDER BY e.ends_at, e.org_id, e.campaign_id LIMIT $4";

bool Published(cpb::CampaignState state) {
  return state == cpb::SCHEDULED || state == cpb::ONLINE || state == cpb::PAUSED;
}

bool Ended(cpb::CampaignState state) { return state == cpb::ENDED || state == cpb::ARCHIVED; }

// "<prefix><campaign>:<amount>", or the prefix and a digest of that when it is too long.
std::string RequestIdFor(const char* prefix, const std::string& campaign_id, int64_t amount) {
  std::string id = absl::StrCat(prefix, campaign_id, ":", amount);
  if (id.size() <= kMaxRequestIdLength) return id;
  return prefix + auth::Sha256Hex(id).substr(0, 48);
}

}  // namespace

std::string BudgetCapRequestId(const std::string& campaign_id, int64_t cap_fen) {
  return RequestIdFor("budget-cap:", campaign_id, cap_fen);
}

std::string BudgetReleaseRequestId(const std::string& campaign_id, int64_t released_before) {
  return RequestIdFor("budget-release:", campaign_id, released_before);
}

absl::Status CampaignBudgets::HandleChange(const kafka::IncomingMessage& message) {
  MKT_ASSIGN_OR_RETURN(const auto envelope, kafka::ParseEnvelope(message));
  cpb::CampaignChanged change;
  if (!envelope.payload().UnpackTo(&change)) {
    return InvalidArgument("payload", "not a marketing.campaigns.v1.CampaignChanged");
  }
  return Apply(change).status();
}

absl::StatusOr<int64_t> CampaignBudgets::Apply(const cpb::CampaignChanged& change) {
  const int64_t cap = change.config().budget_cap_fen();
  if (cap <= 0 || !(Published(change.state()) || Ended(change.state()))) return 0;
  if (change.campaign_id().empty() || change.org_id().empty()) {
    return InvalidArgument("campaign_id", "a campaign change names its campaign and org");
  }
  MKT_RETURN_IF_ERROR(RecordEnd(change));
  if (!Published(change.state())) return 0;
  if (change.config().has_end_time() &&
      absl::FromUnixSeconds(change.config().end_time().seconds()) <= clock_.Now()) {
    return 0;
  }
  if (cap > kMaxCapFen) {
    return InvalidArgument("config.budget_cap_fen",
                           absl::StrCat("a budget cap is at most ", kMaxCapFen, " fen"));
  }
  MKT_ASSIGN_OR_RETURN(int64_t funded, FundToCap(change.org_id(), change.campaign_id(), cap));
  if (funded > 0) {
    spdlog::info("budget of campaign {} ({}) funded with {} fen up to its cap of {} fen",
                 change.campaign_id(), change.org_id(), funded, cap);
  }
  return funded;
}

absl::Status CampaignBudgets::RecordEnd(const cpb::CampaignChanged& change) {
  const cpb::CampaignConfig& config = change.config();
  std::optional<absl::Time> end;
  if (config.has_end_time()) end = absl::FromUnixSeconds(config.end_time().seconds());
  const char* statement = kRecordPublishedEnd;
  if (Ended(change.state())) {
    statement = kRecordEnded;
    const absl::Time changed = change.has_changed_at()
                                   ? absl::FromUnixSeconds(change.changed_at().seconds())
                                   : clock_.Now();
    end = end ? std::min(*end, changed) : changed;
  }
  if (!end) return absl::OkStatus();  // published without an end: nothing to release yet
  std::lock_guard<std::mutex> lock(mu_);
  return pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    tx.exec_params(statement, change.org_id(), change.campaign_id(), absl::ToUnixMicros(*end));
    return absl::OkStatus();
  });
}

absl::StatusOr<CampaignBudgets::ReleaseRun> CampaignBudgets::ReleaseEnded(absl::Duration delay,
                                                                          int limit) {
  std::vector<std::pair<std::string, std::string>> due;
  {
    std::lock_guard<std::mutex> lock(mu_);
    MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
      due.clear();
      for (const pqxx::row& row : tx.exec_params(
               kSelectReleasable, absl::ToUnixMicros(clock_.Now() - delay),
               static_cast<int>(pb::BUDGET_FEN), static_cast<int>(pb::CAMPAIGN), limit)) {
        due.emplace_back(row[0].as<std::string>(), row[1].as<std::string>());
      }
      return absl::OkStatus();
    }));
  }
  ReleaseRun run;
  for (const auto& [org_id, campaign_id] : due) {
    absl::StatusOr<int64_t> released = Release(org_id, campaign_id);
    if (!released.ok()) {
      ++run.failed;
      spdlog::warn("releasing the budget of ended campaign {} ({}) failed (tried again later): {}",
                   campaign_id, org_id, released.status());
      continue;
    }
    if (*released == 0) continue;
    ++run.campaigns;
    run.released += *released;
    spdlog::info("budget of ended campaign {} ({}): {} fen unspent released to the org",
                 campaign_id, org_id, *released);
  }
  return run;
}

absl::StatusOr<int64_t> CampaignBudgets::Release(const std::string& org_id,
                                                 const std::string& campaign_id) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t released = 0;
  // As in FundToCap, the lock is held until the release has committed.
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    released = 0;
    tx.exec_params(kLockCampaignBudget, org_id, campaign_id);
    const BudgetFlows flows = BudgetFlowsIn(tx, CampaignBudgetAccount(org_id, campaign_id));
    if (flows.available <= 0) return absl::OkStatus();
    MKT_ASSIGN_OR_RETURN(pb::Transfer transfer,
                         ledger_.ReleaseBudget(BudgetReleaseRequestId(campaign_id, flows.released),
                                               org_id, campaign_id, flows.available));
    released = transfer.amount();
    return absl::OkStatus();
  }));
  return released;
}

absl::StatusOr<int64_t> CampaignBudgets::FundToCap(const std::string& org_id,
                                                   const std::string& campaign_id,
                                                   int64_t cap_fen) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t topped_up = 0;
  // The lock is held until this transaction ends, after the top-up has committed (through the
  // ledger's group commit, on another connection).
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    topped_up = 0;
    tx.exec_params(kLockCampaignBudget, org_id, campaign_id);
    const int64_t funded = BudgetFlowsIn(tx, CampaignBudgetAccount(org_id, campaign_id)).funded;
    if (funded >= cap_fen) return absl::OkStatus();
    pb::FundRequest fund;
    fund.set_request_id(BudgetCapRequestId(campaign_id, cap_fen));
    fund.set_org_id(org_id);
    fund.set_asset(pb::BUDGET_FEN);
    fund.set_owner_id(campaign_id);
    fund.set_amount(cap_fen - funded);
    MKT_ASSIGN_OR_RETURN(pb::FundResponse response, ledger_.Fund(fund));
    topped_up = response.transfer().amount();
    return absl::OkStatus();
  }));
  return topped_up;
}

}  // namespace mkt::rewards
