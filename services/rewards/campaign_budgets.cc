#include "services/rewards/campaign_budgets.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "libs/auth/crypto.h"
#include "libs/core/status.h"
#include "libs/kafka/outbox.h"
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

bool Published(cpb::CampaignState state) {
  return state == cpb::SCHEDULED || state == cpb::ONLINE || state == cpb::PAUSED;
}

}  // namespace

std::string BudgetCapRequestId(const std::string& campaign_id, int64_t cap_fen) {
  std::string id = absl::StrCat("budget-cap:", campaign_id, ":", cap_fen);
  if (id.size() <= kMaxRequestIdLength) return id;
  return "budget-cap:" + auth::Sha256Hex(id).substr(0, 48);
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
  if (!Published(change.state()) || cap <= 0) return 0;
  if (change.config().has_end_time() &&
      absl::FromUnixSeconds(change.config().end_time().seconds()) <= clock_.Now()) {
    return 0;
  }
  if (change.campaign_id().empty() || change.org_id().empty()) {
    return InvalidArgument("campaign_id", "a campaign change names its campaign and org");
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
    const int64_t funded = SumFundedIn(tx, CampaignBudgetAccount(org_id, campaign_id));
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
