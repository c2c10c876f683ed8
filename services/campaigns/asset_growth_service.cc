#include "services/campaigns/asset_growth_service.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "libs/auth/crypto.h"
#include "libs/core/status.h"
#include "libs/kafka/outbox.h"
#include "libs/log/log.h"
#include "libs/tenancy/tenancy.h"
#include "marketing/common/v1/envelope.pb.h"
#include "spdlog/spdlog.h"

namespace mkt::campaigns {
namespace {

namespace common = ::marketing::common::v1;
namespace epb = ::marketing::events::v1;

absl::Time TimeOf(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

// The times a balance report may carry: none before 2000, none more than a day ahead (clock
// skew between the core systems and us).
const absl::Time kEarliestReportTime =
    absl::FromCivil(absl::CivilDay(2000, 1, 1), absl::UTCTimeZone());
constexpr absl::Duration kReportTimeSkew = absl::Hours(24);

bool IsTimeField(const std::string& field) {
  return field == "occurred_at" || field == "attributes.as_of_date";
}

}  // namespace

std::string TierRequestId(const std::string& participation_id, int tier) {
  return "g:" + auth::Sha256Hex(participation_id + "\ntier\n" + std::to_string(tier)).substr(0, 40);
}

absl::Status CheckReportTime(absl::Time t, absl::Time now, std::string_view field) {
  if (t < kEarliestReportTime || t > now + kReportTimeSkew) {
    return InvalidArgument(
        field, std::string(field) + " " +
                   absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone()) +
                   " is outside the time a balance can be reported (2000-01-01 to a day from now)");
  }
  return absl::OkStatus();
}

absl::StatusOr<BalanceReport> BalanceReportOf(const epb::BusinessEvent& event, absl::Time now) {
  if (event.has_occurred_at()) {
    // Checked first, and refused even where as_of_date is given: a corrupt clock upstream would
    // otherwise overflow the stored timestamp (and stall the consumer) or win every later report.
    const google::protobuf::Timestamp& ts = event.occurred_at();
    if (ts.nanos() < 0 || ts.nanos() > 999'999'999 ||
        ts.seconds() < absl::ToUnixSeconds(kEarliestReportTime) ||
        ts.seconds() > absl::ToUnixSeconds(now + kReportTimeSkew)) {
      return InvalidArgument(
          "occurred_at", "occurred_at (" + std::to_string(ts.seconds()) + " s, " +
                             std::to_string(ts.nanos()) +
                             " ns) is outside the time a balance can be reported (2000-01-01 to "
                             "a day from now, nanos 0..999999999)");
    }
  }
  if (event.customer_id().empty()) {
    return InvalidArgument("customer_id", "an asset_balance event names its customer");
  }
  if (!tenancy::IsValidOrgId(event.org_id())) {
    return InvalidArgument("org_id",
                           "an asset_balance event names the customer's org, such as bank-a");
  }
  BalanceReport report;
  report.customer_org_id = event.org_id();
  report.customer_id = event.customer_id();
  report.event_key = event.source() + ":" + event.source_event_id();
  auto balance = event.attributes().find("balance_fen");
  if (balance == event.attributes().end() ||
      !absl::SimpleAtoi(balance->second, &report.balance_fen)) {
    return InvalidArgument("attributes.balance_fen",
                           "an asset_balance event carries balance_fen, an integer amount of fen");
  }
  report.as_of = event.has_occurred_at() ? TimeOf(event.occurred_at()) : absl::UnixEpoch();
  report.day = ChinaDay(report.as_of);
  auto as_of = event.attributes().find("as_of_date");
  if (as_of != event.attributes().end() && !as_of->second.empty()) {
    if (!ParseAsOfDay(as_of->second, &report.day)) {
      return InvalidArgument("attributes.as_of_date",
                             "as_of_date is neither YYYY-MM-DD nor an RFC 3339 timestamp");
    }
    absl::Time t;
    std::string err;
    // A timestamp is more precise than the event's occurrence for ordering reports of a day.
    if (as_of->second.size() > 10 && absl::ParseTime(absl::RFC3339_full, as_of->second, &t, &err)) {
      MKT_RETURN_IF_ERROR(CheckReportTime(t, now, "attributes.as_of_date"));
      report.as_of = t;
    }
    if (report.day < ChinaDay(kEarliestReportTime) ||
        report.day > ChinaDay(now + kReportTimeSkew)) {
      return InvalidArgument("attributes.as_of_date",
                             "as_of_date " + as_of->second +
                                 " is outside the days a balance can be reported (2000-01-01 to "
                                 "a day from now)");
    }
  }
  return report;
}

AssetGrowthService::AssetGrowthService(PgCampaignStore& campaigns, PgAssetGrowthStore& store,
                                       const BenefitCatalog& benefits, RewardIssuer& issuer,
                                       const Clock& clock, AssetGrowthOptions options)
    : campaigns_(campaigns),
      store_(store),
      benefits_(benefits),
      issuer_(issuer),
      clock_(clock),
      options_(options),
      cache_(campaigns, clock, options.campaign_cache_ttl) {}

absl::Status AssetGrowthService::HandleMessage(const kafka::IncomingMessage& message) {
  absl::StatusOr<common::Envelope> envelope = kafka::ParseEnvelope(message);
  // What is not a business event is the events service's to dead-letter, not ours.
  if (!envelope.ok() || envelope->type() != kBusinessEventEnvelopeType) return absl::OkStatus();
  epb::BusinessEvent event;
  if (!envelope->payload().UnpackTo(&event)) return absl::OkStatus();
  if (event.event_type() != kAssetBalanceEventType) return absl::OkStatus();
  return ApplyBalanceEvent(event);
}

absl::Status AssetGrowthService::ApplyBalanceEvent(const epb::BusinessEvent& event) {
  absl::StatusOr<BalanceReport> report = BalanceReportOf(event, clock_.Now());
  if (!report.ok() && IsTimeField(FieldOf(report.status()))) {
    // An impossible time is refused (dead-lettered, for an operator to see), not skipped: it
    // says the source's clock or encoding is broken, and its other reports are suspect too.
    spdlog::warn("asset growth: refusing asset_balance event {}:{}: {}", event.source(),
                 event.source_event_id(), report.status());
    return report.status();
  }
  if (!report.ok()) {
    spdlog::warn("asset growth: skipping asset_balance event {}:{}: {}", event.source(),
                 event.source_event_id(), report.status());
    return absl::OkStatus();
  }
  MKT_RETURN_IF_ERROR(store_.RecordBalance(*report).status());
  // Evaluated even when the report changed nothing: a crash after recording the balance and
  // before evaluating is caught up by the replay of the same message.
  return EvaluateCustomer(report->customer_org_id, report->customer_id);
}

absl::Status AssetGrowthService::EvaluateCustomer(const std::string& customer_org_id,
                                                  const std::string& customer_id) {
  MKT_ASSIGN_OR_RETURN(
      std::vector<Enrolment> enrolments,
      store_.EnrolmentsOf(customer_org_id, customer_id, clock_.Now() - options_.grace));
  for (const Enrolment& e : enrolments) {
    MKT_RETURN_IF_ERROR(Evaluate(e).status());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> AssetGrowthService::Evaluate(const Enrolment& e) {
  std::vector<int> out;
  MKT_ASSIGN_OR_RETURN(std::shared_ptr<const pb::Campaign> campaign, cache_.Get(e.campaign_id));
  // A paused campaign grants nothing until it resumes (the sweep catches up); an ended one (also
  // archived since) still gets its final evaluation within the grace period, measured up to its
  // end.
  const bool ended =
      campaign && (campaign->state() == pb::ENDED || campaign->state() == pb::ARCHIVED);
  if (!campaign || (campaign->state() != pb::ONLINE && !ended)) return out;
  const pb::CampaignConfig& live = campaign->live();
  if (live.type() != pb::ASSET_GROWTH_TASK) return out;
  absl::Time window_end = live.has_end_time() ? TimeOf(live.end_time()) : e.window_end;
  // Ended early by an operator: the enrolment's window was cut at the end (the live window was
  // not), so growth after the end grants nothing.
  if (ended) window_end = std::min(window_end, e.window_end);
  const absl::CivilDay to = std::min(ChinaDay(clock_.Now()), LastDayBefore(window_end));
  if (to < e.enrolled_on) return out;
  MKT_ASSIGN_OR_RETURN(std::vector<DayBalance> balances,
                       store_.DailyBalances(e.customer_org_id, e.customer_id, e.enrolled_on, to));
  const int64_t average = AverageDailyBalance(balances, e.enrolled_on, to);
  const int64_t growth = average - e.baseline_fen;
  std::vector<TierGrant> reached;
  for (int tier : TiersToGrant(live.growth_tiers(), growth, e.tiers_marked)) {
    TierGrant g;
    g.participation_id = e.participation_id;
    g.tier = tier;
    g.campaign_id = e.campaign_id;
    g.customer_id = e.customer_id;
    g.org_id = campaign->org_id();
    g.request_id = TierRequestId(e.participation_id, tier);
    g.config = live.growth_tiers(tier);
    reached.push_back(std::move(g));
  }
  if (average == e.average_fen && growth == e.growth_fen && reached.empty() &&
      e.evaluated_through == absl::FormatCivilTime(to)) {
    return out;  // nothing new to record
  }
  MKT_ASSIGN_OR_RETURN(
      std::vector<TierGrant> marked,
      store_.RecordEvaluation(e, average, growth, absl::FormatCivilTime(to), reached));
  for (const TierGrant& g : marked) {
    out.push_back(g.tier);
    spdlog::info("asset growth: {} of {} reached tier {} (growth {} fen)", e.customer_id,
                 e.campaign_id, g.tier, growth);
    if (absl::StatusOr<bool> issued = Issue(g); !issued.ok()) {
      spdlog::warn("asset growth: tier {} of {} left pending (retried): {}", g.tier,
                   g.participation_id, issued.status());
    }
  }
  return out;
}

absl::StatusOr<bool> AssetGrowthService::Issue(const TierGrant& g) {
  IssueRequest issue;
  issue.request_id = g.request_id;
  issue.org_id = g.org_id;
  issue.campaign_id = g.campaign_id;
  issue.customer_id = g.customer_id;
  issue.participation_id = g.participation_id;
  for (const pb::RewardItem& item : g.config.rewards()) {
    RewardGrant grant;
    grant.kind = item.kind();
    grant.benefit_template_id = item.benefit_template_id();
    grant.quantity = item.quantity() > 0 ? item.quantity() : 1;
    if (item.points_valid_days() > 0) grant.points_valid_days = item.points_valid_days();
    if (options_.charge_budget) {
      // Never grant uncharged: the grant stays PENDING until the unit cost can be read.
      absl::StatusOr<BenefitInfo> info = benefits_.Lookup(item.benefit_template_id());
      if (!info.ok()) {
        return Error(absl::StatusCode::kUnavailable, common::DEPENDENCY_UNAVAILABLE,
                     "cannot read the unit cost of benefit template " + item.benefit_template_id() +
                         ": " + std::string(info.status().message()));
      }
      grant.cost_fen = info->unit_cost_fen * grant.quantity;
    }
    issue.rewards.push_back(std::move(grant));
  }
  absl::Status issued = issuer_.Issue(issue);
  if (issued.ok()) {
    MKT_RETURN_IF_ERROR(store_.SettleGrant(g, true, ""));
    return true;
  }
  const common::ErrorReason reason = ReasonOf(issued);
  if (!IsBusinessRefusal(reason)) return issued;
  spdlog::warn("asset growth: tier {} of {} refused by the rewards service: {}", g.tier,
               g.participation_id, issued);
  MKT_RETURN_IF_ERROR(store_.SettleGrant(g, false, ReasonName(reason)));
  return true;
}

absl::StatusOr<int> AssetGrowthService::Sweep(int page) {
  const absl::Time now = clock_.Now();
  std::string after;
  for (;;) {
    MKT_ASSIGN_OR_RETURN(std::vector<Enrolment> enrolments,
                         store_.ActiveEnrolments(now - options_.grace, after, page));
    for (const Enrolment& e : enrolments) {
      if (absl::StatusOr<std::vector<int>> done = Evaluate(e); !done.ok()) {
        spdlog::warn("asset growth: evaluating {} failed (retried): {}", e.participation_id,
                     done.status());
      }
    }
    if (enrolments.size() < static_cast<size_t>(page)) break;
    after = enrolments.back().participation_id;
  }
  MKT_ASSIGN_OR_RETURN(std::vector<TierGrant> pending,
                       store_.PendingGrants(now - options_.retry_after, 200));
  int settled = 0;
  for (const TierGrant& g : pending) {
    absl::StatusOr<bool> issued = Issue(g);
    if (issued.ok()) {
      ++settled;
    } else {
      spdlog::warn("asset growth: tier {} of {} still pending: {}", g.tier, g.participation_id,
                   issued.status());
    }
  }
  return settled;
}

}  // namespace mkt::campaigns
