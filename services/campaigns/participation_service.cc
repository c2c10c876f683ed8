#include "services/campaigns/participation_service.h"

#include <algorithm>
#include <limits>

#include "absl/cleanup/cleanup.h"
#include "absl/time/civil_time.h"
#include "libs/auth/crypto.h"
#include "libs/core/bloom_filter.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/log/log.h"
#include "libs/metrics/metrics.h"
#include "libs/tenancy/tenancy.h"
#include "services/campaigns/asset_growth.h"
#include "services/campaigns/lottery.h"
#include "spdlog/spdlog.h"

namespace mkt::campaigns {
namespace {

using ::marketing::common::v1::ErrorReason;
namespace common = ::marketing::common::v1;

constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();

absl::Status Refuse(ErrorReason reason, const std::string& message) {
  return Error(absl::StatusCode::kFailedPrecondition, reason, message);
}

bool IsKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

absl::Status CheckKey(const std::string& value, const char* field, size_t max) {
  if (value.empty() || value.size() > max || !std::all_of(value.begin(), value.end(), IsKeyChar)) {
    return InvalidArgument(field, std::string(field) + " must be 1 to " + std::to_string(max) +
                                      " characters of letters, digits, '.', '_', ':' and '-'");
  }
  return absl::OkStatus();
}

absl::Time TimeOf(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

google::protobuf::Timestamp Proto(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t micros = absl::ToUnixMicros(t);
  ts.set_seconds(micros / 1000000);
  ts.set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
  return ts;
}

bool OffersChannel(const pb::CampaignConfig& config, const std::string& channel) {
  for (const auto& c : config.channels()) {
    if (c.channel() == channel) return true;
  }
  return false;
}

const pb::ChannelContent* ContentFor(const pb::CampaignConfig& config, const std::string& channel) {
  for (const auto& c : config.channels()) {
    if (c.channel() == channel) return &c.content();
  }
  return nullptr;
}

int64_t Cap(int64_t limit) { return limit > 0 ? limit : kNoLimit; }

bool Participatory(pb::CampaignType type) {
  return type == pb::COUPON_CLAIM || type == pb::LOTTERY || type == pb::POINTS_EXCHANGE ||
         type == pb::ASSET_GROWTH_TASK;
}

std::string RefusalMessage(ErrorReason reason, const pb::Participation& p) {
  switch (reason) {
    case common::STOCK_EXHAUSTED:
      return "the campaign's rewards are all given out";
    case common::BUDGET_EXHAUSTED:
      return "the campaign's budget is used up";
    case common::INSUFFICIENT_BALANCE:
      return p.points_spent() > 0 ? "the customer does not have enough points"
                                  : "the customer has no lottery chances left";
    case common::ACCOUNT_NOT_FOUND:
      return "the campaign's stock or budget is not funded yet";
    default:
      return "the rewards ledger refused the grant";
  }
}

// What a request asked for, beside its key: a replay must ask for the same.
std::string RequestHash(const pb::ParticipateRequest& r) {
  return auth::Sha256Hex(r.customer_id() + "\n" + r.customer_org_id() + "\n" + r.channel() + "\n" +
                         r.item_id());
}

absl::Status KeyReused() {
  return Error(absl::StatusCode::kFailedPrecondition, common::IDEMPOTENCY_KEY_REUSED,
               "idempotency_key was used for a different participation request");
}

// What an unknown campaign and one the customer's org is not covered by both answer: another
// bank's campaign must not be told apart from one that does not exist (decision 009).
absl::Status UnknownCampaign(const std::string& id) {
  return NotFound("campaign " + id + " does not exist");
}

const absl::TimeZone& ChinaTime() {
  static const absl::TimeZone kChina = absl::FixedTimeZone(8 * 3600);
  return kChina;
}

// "2026-11-30 10:00:00 +08:00"
std::string InWords(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S %Ez", t, ChinaTime());
}

// Why the campaign's window is not open at `now`, in words; "" when it is open.
std::string OutsideWindow(const pb::CampaignConfig& live, absl::Time now) {
  if (live.has_start_time() && now < TimeOf(live.start_time())) {
    return "the campaign starts at " + InWords(TimeOf(live.start_time()));
  }
  if (live.has_end_time() && now >= TimeOf(live.end_time())) {
    return "the campaign ended at " + InWords(TimeOf(live.end_time()));
  }
  return "";
}

// Recovery sweep attempts by outcome: completed (granted, no prize or refused for good),
// deferred (still PENDING, tried again later), stuck (deferred past the attempts after which an
// operator should look).
void CountRecovery(const char* outcome) {
  static auto& family = prometheus::BuildCounter()
                            .Name("mkt_campaigns_participation_recoveries_total")
                            .Help("recovery sweep attempts on PENDING participations by outcome")
                            .Register(metrics::Registry());
  family.Add({{"outcome", outcome}}).Increment();
}

}  // namespace

std::string DayKey(absl::Time t) { return absl::FormatCivilTime(absl::ToCivilDay(t, ChinaTime())); }

std::string WeekKey(absl::Time t) {
  const absl::CivilDay day = absl::ToCivilDay(t, ChinaTime());
  return absl::FormatCivilTime(absl::PrevWeekday(day + 1, absl::Weekday::monday));
}

absl::StatusOr<pb::Participation> AnswerFor(const pb::Participation& p) {
  if (p.status() != pb::PARTICIPATION_REJECTED) return p;
  common::ErrorReason reason = common::ERROR_REASON_UNSPECIFIED;
  if (!common::ErrorReason_Parse(p.reason(), &reason)) reason = common::CONFLICT;
  return Refuse(reason, RefusalMessage(reason, p));
}

// ---- CampaignCache -----------------------------------------------------------------------------

absl::StatusOr<std::shared_ptr<const pb::Campaign>> CampaignCache::Get(const std::string& id) {
  const absl::Time now = clock_.Now();
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(id);
    if (it != entries_.end() && now - it->second.loaded < ttl_) return it->second.campaign;
  }
  std::shared_ptr<const pb::Campaign> loaded;
  absl::StatusOr<pb::Campaign> campaign = store_.GetCampaign(id);
  if (campaign.ok()) {
    loaded = std::make_shared<const pb::Campaign>(*std::move(campaign));
  } else if (campaign.status().code() != absl::StatusCode::kNotFound) {
    return campaign.status();
  }
  absl::MutexLock lock(&mu_);
  // Unknown ids are remembered too (as null), so a flood of bogus ids reads the database once
  // per id and TTL; the map is cleared when it grows past reason.
  if (entries_.size() > 100000) entries_.clear();
  entries_[id] = Entry{loaded, now};
  return loaded;
}

std::shared_ptr<const pb::Campaign> CampaignCache::Peek(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : it->second.campaign;
}

absl::StatusOr<std::shared_ptr<const std::vector<pb::Campaign>>> CampaignCache::Online() {
  const absl::Time now = clock_.Now();
  {
    absl::MutexLock lock(&mu_);
    if (online_ && now - online_loaded_ < ttl_) return online_;
  }
  auto all = std::make_shared<std::vector<pb::Campaign>>();
  CampaignFilter filter{.subtree_org = tenancy::kFederation, .states = {"ONLINE"}, .limit = 500};
  for (;;) {
    MKT_ASSIGN_OR_RETURN(std::vector<pb::Campaign> page, store_.ListCampaigns(filter));
    for (auto& c : page) all->push_back(std::move(c));
    if (page.size() < static_cast<size_t>(filter.limit)) break;
    filter.after_id = all->back().id();
  }
  absl::MutexLock lock(&mu_);
  online_ = all;
  online_loaded_ = now;
  return online_;
}

// ---- ParticipationService ----------------------------------------------------------------------

ParticipationService::ParticipationService(PgCampaignStore& campaigns, PgParticipationStore& store,
                                           AudienceMembership& audience,
                                           const BenefitCatalog& benefits, RewardIssuer& issuer,
                                           const Clock& clock, ParticipationOptions options)
    : campaigns_(campaigns),
      store_(store),
      audience_(audience),
      benefits_(benefits),
      issuer_(issuer),
      clock_(clock),
      options_(options),
      cache_(campaigns, clock, options.campaign_cache_ttl),
      customer_limiter_(options.customer_rate_per_s, options.customer_burst),
      campaign_limiter_(options.campaign_rate_per_s, options.campaign_burst, 100000),
      sold_out_(options.sold_out_ttl),
      growth_(store.pool()) {}

absl::Status ParticipationService::Screen(const pb::ParticipateRequest& r) {
  MKT_RETURN_IF_ERROR(CheckKey(r.campaign_id(), "campaign_id", 64));
  MKT_RETURN_IF_ERROR(CheckKey(r.customer_id(), "customer_id", 64));
  if (!tenancy::IsValidOrgId(r.customer_org_id())) {
    return InvalidArgument("customer_org_id", "customer_org_id must be an org id such as bank-a");
  }
  MKT_RETURN_IF_ERROR(CheckKey(r.channel(), "channel", 32));
  if (r.idempotency_key().empty() || r.idempotency_key().size() > 128 ||
      PrintableUtf8Length(r.idempotency_key()) < 0) {
    return InvalidArgument("idempotency_key",
                           "idempotency_key must be 1 to 128 bytes of printable text");
  }
  if (!r.item_id().empty()) MKT_RETURN_IF_ERROR(CheckKey(r.item_id(), "item_id", 64));
  const absl::Time now = clock_.Now();
  if (sold_out_.Check(r.campaign_id(), r.idempotency_key(), now) ==
      SoldOutBoard::Verdict::kSoldOut) {
    // Only a customer the campaign is for may learn that it sold out; anyone else is told it
    // does not exist. A marked campaign was read by this process (its org never changes); one
    // no longer cached goes on to the worker, which reads it.
    if (std::shared_ptr<const pb::Campaign> c = cache_.Peek(r.campaign_id()); c != nullptr) {
      if (!tenancy::Covers(c->org_id(), r.customer_org_id())) {
        return UnknownCampaign(r.campaign_id());
      }
      return Refuse(common::STOCK_EXHAUSTED, "the campaign's rewards are all given out");
    }
  }
  if (!customer_limiter_.Allow(r.customer_id(), now)) {
    return Error(absl::StatusCode::kResourceExhausted, common::RATE_LIMITED,
                 "too many requests from this customer; retry in a moment");
  }
  if (!campaign_limiter_.Allow(r.campaign_id(), now)) {
    return Error(absl::StatusCode::kResourceExhausted, common::RATE_LIMITED,
                 "too many requests for this campaign; retry in a moment");
  }
  return absl::OkStatus();
}

absl::Status ParticipationService::CheckOpen(const pb::Campaign& c, const std::string& customer_org,
                                             const std::string& channel, absl::Time now) const {
  // Tenancy first: every later refusal (its state, its window) would tell another bank's
  // customer that the campaign exists.
  if (!tenancy::Covers(c.org_id(), customer_org)) return UnknownCampaign(c.id());
  if (c.state() != pb::ONLINE) {
    return Refuse(common::CAMPAIGN_NOT_ACTIVE,
                  "the campaign is " + pb::CampaignState_Name(c.state()) + ", not online");
  }
  const pb::CampaignConfig& live = c.live();
  if (const std::string outside = OutsideWindow(live, now); !outside.empty()) {
    return Refuse(common::CAMPAIGN_NOT_ACTIVE, outside);
  }
  if (!OffersChannel(live, channel)) {
    return Refuse(common::NOT_ELIGIBLE, "the campaign is not offered on channel " + channel);
  }
  if (!Participatory(live.type())) {
    return Refuse(common::NOT_ELIGIBLE, "a " + pb::CampaignType_Name(live.type()) +
                                            " campaign is not joined through participation");
  }
  return absl::OkStatus();
}

absl::StatusOr<pb::Participation> ParticipationService::ReplayOrRefuse(
    const pb::ParticipateRequest& r, const pb::Campaign& campaign, absl::Status refusal,
    bool* replayed) {
  // A participation stored under the key was reserved while the campaign was open to the
  // customer, so its replay gets that participation whatever the campaign is now (paused, ended,
  // the customer out of the audience). A PENDING one is a grant whose outcome is unknown (the
  // caller was told to retry with the same key): it is completed as the recovery sweep would
  // complete it, never refused while the sweep later grants it.
  MKT_ASSIGN_OR_RETURN(auto stored, store_.Get(r.campaign_id(), r.idempotency_key()));
  if (!stored) return refusal;
  if (stored->request_hash != RequestHash(r)) return KeyReused();
  *replayed = true;
  if (stored->participation.status() != pb::PARTICIPATION_PENDING) {
    return AnswerFor(stored->participation);
  }
  return Complete(std::move(stored->participation), campaign);
}

absl::StatusOr<pb::Participation> ParticipationService::Participate(const pb::ParticipateRequest& r,
                                                                    bool* replayed) {
  bool unused = false;
  if (replayed == nullptr) replayed = &unused;
  *replayed = false;
  const absl::Time now = clock_.Now();
  // Counted from here while this participation may store a new key (see SoldOutBoard::Board).
  const SoldOutBoard::Verdict verdict = sold_out_.Enter(r.campaign_id(), r.idempotency_key(), now);
  absl::Cleanup leave = [&] {
    if (verdict == SoldOutBoard::Verdict::kOpen) sold_out_.Leave(r.campaign_id());
  };
  MKT_ASSIGN_OR_RETURN(std::shared_ptr<const pb::Campaign> campaign, cache_.Get(r.campaign_id()));
  // Before anything that could tell another bank's customer the campaign exists (sold out, its
  // state, its window): such a customer never had a participation in it to replay.
  if (!campaign || !tenancy::Covers(campaign->org_id(), r.customer_org_id())) {
    return UnknownCampaign(r.campaign_id());
  }
  if (verdict != SoldOutBoard::Verdict::kOpen) {
    // Sold out, and this key may have a stored participation: answer with it (completing a
    // PENDING one), else refuse without a reservation.
    return ReplayOrRefuse(
        r, *campaign, Refuse(common::STOCK_EXHAUSTED, "the campaign's rewards are all given out"),
        replayed);
  }
  const pb::CampaignConfig& live = campaign->live();
  if (absl::Status open = CheckOpen(*campaign, r.customer_org_id(), r.channel(), now); !open.ok()) {
    return ReplayOrRefuse(r, *campaign, std::move(open), replayed);
  }
  MKT_ASSIGN_OR_RETURN(bool member,
                       audience_.InAudience(campaign->org_id(), r.customer_id(), live.audience()));
  if (!member) {
    return ReplayOrRefuse(
        r, *campaign,
        Refuse(common::NOT_ELIGIBLE, "the customer is not in the campaign's audience"), replayed);
  }

  Reservation rsv;
  pb::Participation& p = rsv.participation;
  p.set_id("par_" + RandomHex(10));
  p.set_campaign_id(campaign->id());
  p.set_org_id(campaign->org_id());
  p.set_campaign_type(live.type());
  p.set_campaign_version(campaign->live_version());
  p.set_customer_id(r.customer_id());
  p.set_customer_org_id(r.customer_org_id());
  p.set_channel(r.channel());
  p.set_idempotency_key(r.idempotency_key());
  p.set_status(pb::PARTICIPATION_PENDING);
  p.set_ledger_request_id(
      "p:" + auth::Sha256Hex(campaign->id() + "\n" + r.idempotency_key()).substr(0, 40));
  *p.mutable_created_at() = Proto(now);
  *p.mutable_updated_at() = Proto(now);
  rsv.request_hash = RequestHash(r);

  const pb::ParticipationLimits& limits = live.limits();
  const std::string cust = "c:" + r.customer_id();
  const std::string day = DayKey(now);
  // A customer enrols in an asset-growth task once, whatever the limits say.
  rsv.counters.push_back(
      {cust + ":all", live.type() == pb::ASSET_GROWTH_TASK ? 1 : Cap(limits.per_customer_total())});
  if (limits.per_customer_daily() > 0) {
    rsv.counters.push_back({cust + ":d:" + day, limits.per_customer_daily()});
  }
  if (limits.per_customer_weekly() > 0) {
    rsv.counters.push_back({cust + ":w:" + WeekKey(now), limits.per_customer_weekly()});
  }
  if (limits.per_org_total() > 0) {
    rsv.counters.push_back({"o:" + r.customer_org_id() + ":all", limits.per_org_total()});
  }
  if (limits.global_total() > 0) rsv.counters.push_back({"g:all", limits.global_total()});
  if (!live.exclusion_group().empty()) {
    rsv.exclusion_org = campaign->org_id();
    rsv.exclusion_group = live.exclusion_group();
  }

  if (live.type() == pb::LOTTERY) {
    rsv.lottery = true;
    const PrizeTable table = BuildPrizeTable(live);
    const int64_t value = SecureUniform(kDrawRange);
    const int drawn = SelectPrize(table, value);
    pb::DrawRecord* draw = p.mutable_draw();
    draw->set_table_version(campaign->live_version());
    draw->set_random_value(value);
    draw->set_drawn_prize(drawn);
    if (limits.free_draws_per_day() > 0) {
      rsv.free_draw =
          CounterTake{"free:" + r.customer_id() + ":d:" + day, limits.free_draws_per_day()};
    }
    rsv.chances_per_draw = limits.chances_per_draw() > 0 ? limits.chances_per_draw() : 1;
    std::vector<int> candidates;
    if (drawn >= 0) {
      candidates.push_back(drawn);
      if (table.fallback >= 0 && table.fallback != drawn) candidates.push_back(table.fallback);
    }
    for (int i : candidates) {
      const pb::Prize& prize = table.prizes[i];
      std::vector<CounterTake> counters;
      const std::string key = "prize:" + std::to_string(i);
      if (prize.stock() > 0) counters.push_back({key + ":all", prize.stock()});
      if (prize.daily_release_cap() > 0) {
        counters.push_back({key + ":d:" + day, prize.daily_release_cap()});
      }
      pb::GrantedReward reward;
      reward.set_benefit_template_id(prize.benefit_template_id());
      reward.set_kind(prize.kind());
      reward.set_quantity(prize.quantity() > 0 ? prize.quantity() : 1);
      reward.set_prize_name(prize.name());
      rsv.prize_candidates.push_back(i);
      rsv.prize_counters.push_back(std::move(counters));
      rsv.prize_rewards.push_back({reward});
    }
  } else if (live.type() == pb::ASSET_GROWTH_TASK) {
    if (!r.item_id().empty()) {
      return InvalidArgument("item_id", "an asset-growth task has no items to choose");
    }
    // The baseline is fixed now, from the balances known now; a replay answers with the stored
    // enrolment (and its baseline), not a new one.
    const absl::CivilDay today = ChinaDay(now);
    const int days = EffectiveBaselineDays(live.baseline_days());
    MKT_ASSIGN_OR_RETURN(
        std::vector<DayBalance> balances,
        growth_.DailyBalances(r.customer_org_id(), r.customer_id(), today - days, today - 1));
    pb::AssetGrowthProgress* progress = p.mutable_asset_growth();
    progress->set_enrolled_on(absl::FormatCivilTime(today));
    progress->set_baseline_days(days);
    progress->set_baseline_fen(BaselineAt(balances, today, days));
  } else {
    bool found = r.item_id().empty();
    for (const auto& item : live.rewards()) {
      if (!r.item_id().empty() && item.benefit_template_id() != r.item_id()) continue;
      found = true;
      pb::GrantedReward* reward = p.add_rewards();
      reward->set_benefit_template_id(item.benefit_template_id());
      reward->set_kind(item.kind());
      reward->set_quantity(item.quantity() > 0 ? item.quantity() : 1);
      if (live.type() == pb::POINTS_EXCHANGE) {
        p.set_points_spent(item.price_points());
        // One item per exchange: the first match (or the only item).
        break;
      }
    }
    if (!found) {
      return InvalidArgument("item_id", "the campaign has no item " + r.item_id());
    }
    if (live.type() == pb::POINTS_EXCHANGE && live.rewards_size() > 1 && r.item_id().empty()) {
      return InvalidArgument("item_id", "item_id is required: the campaign offers several items");
    }
  }

  MKT_ASSIGN_OR_RETURN(ReserveResult reserved, store_.Reserve(rsv));
  if (reserved.replay) {
    if (reserved.stored_request_hash != rsv.request_hash) {
      return KeyReused();
    }
    *replayed = true;
    if (reserved.participation.status() != pb::PARTICIPATION_PENDING) {
      return AnswerFor(reserved.participation);
    }
  } else {
    sold_out_.RememberStored(p.campaign_id(), p.idempotency_key());
  }
  return Complete(std::move(reserved.participation), *campaign);
}

absl::StatusOr<IssueRequest> ParticipationService::IssueFor(const pb::Participation& p,
                                                            const pb::Campaign& campaign) {
  // The version the participation was made under: an approved edit since (another points
  // validity, say) must not change a retry, which the rewards service would answer
  // IDEMPOTENCY_KEY_REUSED under the same ids although the first attempt may have granted.
  const pb::CampaignConfig* config = &campaign.live();
  pb::CampaignConfig made_under;
  if (p.campaign_version() != campaign.live_version()) {
    absl::StatusOr<pb::CampaignConfig> version =
        store_.VersionConfig(campaign.id(), p.campaign_version());
    if (!version.ok()) {
      return Error(absl::StatusCode::kUnavailable, common::DEPENDENCY_UNAVAILABLE,
                   "cannot read version " + std::to_string(p.campaign_version()) +
                       " of the campaign (" + std::string(version.status().message()) +
                       "); retry with the same idempotency key");
    }
    made_under = *std::move(version);
    config = &made_under;
  }
  IssueRequest issue;
  issue.request_id = p.ledger_request_id();
  issue.org_id = campaign.org_id();
  issue.campaign_id = campaign.id();
  issue.customer_id = p.customer_id();
  issue.participation_id = p.id();
  issue.spend_points = p.points_spent();
  issue.spend_chances = p.chances_spent();
  for (const auto& reward : p.rewards()) {
    RewardGrant grant;
    grant.kind = reward.kind();
    grant.benefit_template_id = reward.benefit_template_id();
    grant.quantity = reward.quantity();
    if (options_.charge_budget) {
      // Never grant uncharged: without the unit cost the participation stays PENDING and a
      // replay or the recovery sweep prices it once the rewards service answers again.
      absl::StatusOr<BenefitInfo> info = benefits_.Lookup(reward.benefit_template_id());
      if (!info.ok()) {
        return Error(
            absl::StatusCode::kUnavailable, common::DEPENDENCY_UNAVAILABLE,
            "cannot read the unit cost of benefit template " + reward.benefit_template_id() + " (" +
                std::string(info.status().message()) + "); retry with the same idempotency key");
      }
      grant.cost_fen = info->unit_cost_fen * reward.quantity();
    }
    for (const auto& item : config->rewards()) {
      if (item.benefit_template_id() == reward.benefit_template_id() &&
          item.points_valid_days() > 0) {
        grant.points_valid_days = item.points_valid_days();
      }
    }
    for (const auto& prize : config->prizes()) {
      if (prize.name() == reward.prize_name() && prize.points_valid_days() > 0) {
        grant.points_valid_days = prize.points_valid_days();
      }
    }
    issue.rewards.push_back(std::move(grant));
  }
  return issue;
}

absl::StatusOr<pb::Participation> ParticipationService::Complete(pb::Participation p,
                                                                 const pb::Campaign& campaign) {
  if (p.campaign_type() == pb::ASSET_GROWTH_TASK) {
    // Enrolment grants nothing now: the tiers are granted as the balances grow.
    p.set_status(pb::ENROLLED);
    *p.mutable_updated_at() = Proto(clock_.Now());
    const absl::Time window_end = campaign.live().has_end_time()
                                      ? TimeOf(campaign.live().end_time())
                                      : absl::InfiniteFuture();
    MKT_ASSIGN_OR_RETURN(pb::Participation stored, store_.Finish(p, window_end));
    return AnswerFor(stored);
  }
  MKT_ASSIGN_OR_RETURN(IssueRequest issue, IssueFor(p, campaign));
  absl::Status issued = issuer_.Issue(issue);
  const ErrorReason reason = issued.ok() ? common::ERROR_REASON_UNSPECIFIED : ReasonOf(issued);
  if (reason == common::IDEMPOTENCY_KEY_REUSED) {
    // The ids are derived from this participation's own key, so no other participation sends
    // them: the rewards service holding other content under them means an earlier attempt of
    // this one sent a different grant (the service's configuration changed in between), which
    // may have gone through. Rejecting would give the counters back while the customer may hold
    // the reward, so it stays PENDING until an operator settles it.
    spdlog::error(
        "participation {} (campaign {}, request {}): the rewards service holds this grant's ids "
        "with other content ({}); it stays PENDING until an operator settles it",
        p.id(), p.campaign_id(), p.ledger_request_id(), issued.message());
    return Error(absl::StatusCode::kInternal, common::INTERNAL,
                 "the grant of this participation could not be confirmed and needs an operator");
  }
  if (!issued.ok() && !IsBusinessRefusal(reason)) {
    // Outcome unknown (the ledger is down or slow): the participation stays PENDING; a replay
    // or the recovery sweep issues the same request id again.
    return Error(
        issued.code() == absl::StatusCode::kDeadlineExceeded ? absl::StatusCode::kDeadlineExceeded
                                                             : absl::StatusCode::kUnavailable,
        issued.code() == absl::StatusCode::kDeadlineExceeded ? common::DEADLINE_EXCEEDED
                                                             : common::DEPENDENCY_UNAVAILABLE,
        "the rewards ledger did not confirm the grant; retry with the same "
        "idempotency key");
  }
  if (issued.ok()) {
    p.set_status(p.rewards_size() == 0 && p.campaign_type() == pb::LOTTERY ? pb::NO_PRIZE
                                                                           : pb::GRANTED);
  } else {
    p.set_status(pb::PARTICIPATION_REJECTED);
    p.set_reason(ReasonName(reason));
    if (reason == common::STOCK_EXHAUSTED && p.campaign_type() == pb::COUPON_CLAIM) {
      MarkSoldOut(p.campaign_id());
    }
  }
  *p.mutable_updated_at() = Proto(clock_.Now());
  MKT_ASSIGN_OR_RETURN(pb::Participation stored, store_.Finish(p));
  return AnswerFor(stored);
}

absl::StatusOr<pb::SoldOutBoard> ParticipationService::GetSoldOutBoard(
    const pb::GetSoldOutBoardRequest& r) {
  MKT_RETURN_IF_ERROR(CheckKey(r.campaign_id(), "campaign_id", 64));
  pb::SoldOutBoard out;
  out.set_campaign_id(r.campaign_id());
  const absl::Time now = clock_.Now();
  std::optional<SoldOutBoard::Standing> board = sold_out_.Board(r.campaign_id(), now);
  if (!board) return out;
  // A copy must know whose campaign it is, to refuse only that org's customers (a campaign
  // marked here was read by this process; one no longer cached is not handed out).
  std::shared_ptr<const pb::Campaign> campaign = cache_.Peek(r.campaign_id());
  if (campaign == nullptr) return out;
  out.set_org_id(campaign->org_id());
  BloomFilter filter = BloomFilter::ForKeys(board->keys.size(), kBoardFalsePositiveRate);
  for (const std::string& key : board->keys) filter.Add(key);
  out.set_sold_out(true);
  out.set_valid_ms(absl::ToInt64Milliseconds(board->until - now));
  out.set_filter(filter.bytes());
  out.set_filter_hashes(filter.hashes());
  return out;
}

void ParticipationService::MarkSoldOut(const std::string& campaign_id) {
  if (!sold_out_.BeginMark(campaign_id, clock_.Now())) return;
  // One more than the board can hold tells that they do not all fit.
  const size_t room = sold_out_.Room();
  absl::StatusOr<std::vector<std::string>> keys =
      store_.StoredKeys(campaign_id, static_cast<int64_t>(room) + 1);
  if (!keys.ok()) {
    spdlog::warn(
        "campaign {} sold out; its stored keys could not be read ({}): every claim's key "
        "is looked up until the mark expires",
        campaign_id, keys.status().ToString());
    sold_out_.Mark(campaign_id, clock_.Now(), {}, false);
    return;
  }
  const bool complete = keys->size() <= room;
  sold_out_.Mark(campaign_id, clock_.Now(), *std::move(keys), complete);
}

absl::StatusOr<pb::Participation> ParticipationService::GetParticipation(
    const pb::GetParticipationRequest& r) {
  MKT_RETURN_IF_ERROR(CheckKey(r.campaign_id(), "campaign_id", 64));
  MKT_ASSIGN_OR_RETURN(auto stored, store_.Get(r.campaign_id(), r.idempotency_key()));
  if (!stored) return NotFound("no participation with this idempotency key");
  return stored->participation;
}

absl::Duration ParticipationService::RecoveryDelay(int attempts) {
  const absl::Duration max = absl::Hours(1);
  absl::Duration delay = absl::Seconds(30);
  for (int i = 1; i < attempts && delay < max; ++i) delay *= 2;
  return std::min(delay, max);
}

absl::StatusOr<int> ParticipationService::RecoverPending(absl::Duration older_than, int limit) {
  const absl::Time now = clock_.Now();
  MKT_ASSIGN_OR_RETURN(std::vector<PgParticipationStore::StalePending> stale,
                       store_.ListStalePending(now - older_than, now, limit));
  int done = 0;
  for (auto& [p, attempts] : stale) {
    const std::string id = p.id();
    const std::string campaign_id = p.campaign_id();
    absl::Status failure;
    MKT_ASSIGN_OR_RETURN(std::shared_ptr<const pb::Campaign> campaign, cache_.Get(campaign_id));
    if (!campaign) {
      failure = UnknownCampaign(campaign_id);
    } else {
      absl::StatusOr<pb::Participation> completed = Complete(std::move(p), *campaign);
      // A business refusal was recorded (REJECTED): done too.
      if (completed.ok() || IsBusinessRefusal(ReasonOf(completed.status()))) {
        ++done;
        CountRecovery("completed");
        continue;
      }
      failure = completed.status();
    }
    // Still PENDING. Oldest first alone would retry the ones that cannot complete (a hold voided
    // by its timeout, a grant the rewards service holds with other content, a reward that cannot
    // be priced) at the head of every sweep, and once `limit` of them existed the newer ones
    // behind them would never be recovered: it waits, longer after each attempt.
    const absl::Time next = now + RecoveryDelay(attempts + 1);
    MKT_ASSIGN_OR_RETURN(const int tried, store_.DeferRecovery(id, next));
    if (tried >= kRecoveryAttemptsBeforeOperator) {
      CountRecovery("stuck");
      spdlog::error(
          "participation {} of campaign {} is still PENDING after {} recovery attempts ({}); it "
          "is tried again at {}, and an operator should settle it",
          id, campaign_id, tried, failure.ToString(), InWords(next));
    } else if (tried > 0) {
      CountRecovery("deferred");
      spdlog::warn(
          "participation {} of campaign {} is still PENDING after recovery attempt {} ({}); "
          "next attempt at {}",
          id, campaign_id, tried, failure.ToString(), InWords(next));
    }
  }
  return done;
}

absl::StatusOr<pb::DrawStats> ParticipationService::GetDrawStats(const pb::GetDrawStatsRequest& r) {
  MKT_RETURN_IF_ERROR(CheckKey(r.campaign_id(), "campaign_id", 64));
  MKT_ASSIGN_OR_RETURN(std::shared_ptr<const pb::Campaign> campaign, cache_.Get(r.campaign_id()));
  if (!campaign) return NotFound("campaign " + r.campaign_id() + " does not exist");
  MKT_ASSIGN_OR_RETURN(pb::DrawStats stats,
                       store_.DrawStats(r.campaign_id(), campaign->live().prizes_size()));
  stats.set_org_id(campaign->org_id());
  stats.set_campaign_id(campaign->id());
  return stats;
}

absl::StatusOr<pb::ListEligibleResponse> ParticipationService::ListEligible(
    const pb::ListEligibleRequest& r) {
  MKT_RETURN_IF_ERROR(CheckKey(r.customer_id(), "customer_id", 64));
  if (!tenancy::IsValidOrgId(r.customer_org_id())) {
    return InvalidArgument("customer_org_id", "customer_org_id must be an org id such as bank-a");
  }
  MKT_RETURN_IF_ERROR(CheckKey(r.channel(), "channel", 32));
  const absl::Time now = clock_.Now();
  MKT_ASSIGN_OR_RETURN(auto online, cache_.Online());

  std::vector<const pb::Campaign*> here;
  std::vector<std::string> ids;
  // Online campaigns of the channel outside their window (it starts later after an approved
  // edit, or it ended and the scheduler has not ended it yet): explained as not active, with
  // when, as participation.proto promises for every online campaign of the channel not open.
  absl::flat_hash_map<std::string, std::string> not_active;
  for (const auto& c : *online) {
    // Other banks' campaigns are not even explained: their existence is theirs.
    if (!tenancy::Covers(c.org_id(), r.customer_org_id())) continue;
    if (!OffersChannel(c.live(), r.channel()) || !Participatory(c.live().type())) continue;
    if (absl::Status open = CheckOpen(c, r.customer_org_id(), r.channel(), now); !open.ok()) {
      if (!r.explain() || ReasonOf(open) != common::CAMPAIGN_NOT_ACTIVE) continue;
      not_active[c.id()] = std::string(open.message());
    }
    here.push_back(&c);
    ids.push_back(c.id());
  }
  const std::string cust = "c:" + r.customer_id();
  const std::string day = DayKey(now);
  const std::vector<std::string> keys = {cust + ":all",
                                         cust + ":d:" + day,
                                         cust + ":w:" + WeekKey(now),
                                         "free:" + r.customer_id() + ":d:" + day,
                                         "g:all",
                                         "o:" + r.customer_org_id() + ":all"};
  MKT_ASSIGN_OR_RETURN(std::vector<CounterValue> counters, store_.ReadCounters(ids, keys));
  MKT_ASSIGN_OR_RETURN(auto claims, store_.ReadExclusionClaims(r.customer_id()));
  std::vector<std::string> growth_ids;
  for (const pb::Campaign* c : here) {
    if (c->live().type() == pb::ASSET_GROWTH_TASK) growth_ids.push_back(c->id());
  }
  MKT_ASSIGN_OR_RETURN(std::vector<Enrolment> enrolments,
                       growth_.EnrolmentsIn(r.customer_org_id(), r.customer_id(), growth_ids));
  auto count = [&](const std::string& id, const std::string& key) -> int64_t {
    for (const auto& v : counters) {
      if (v.campaign_id == id && v.counter == key) return v.n;
    }
    return 0;
  };

  std::vector<pb::EligibleCampaign> open, closed;
  for (const pb::Campaign* c : here) {
    const pb::CampaignConfig& live = c->live();
    const pb::ParticipationLimits& limits = live.limits();
    pb::EligibleCampaign e;
    e.set_campaign_id(c->id());
    e.set_org_id(c->org_id());
    e.set_type(live.type());
    e.set_priority(live.priority());
    if (live.has_end_time()) *e.mutable_end_time() = live.end_time();
    if (const auto* content = ContentFor(live, r.channel())) *e.mutable_content() = *content;
    for (const auto& item : live.rewards()) *e.add_items() = item;
    const int64_t total = count(c->id(), cust + ":all");
    const int64_t today = count(c->id(), cust + ":d:" + day);
    const int64_t week = count(c->id(), cust + ":w:" + WeekKey(now));
    e.set_remaining_total(limits.per_customer_total() > 0
                              ? std::max<int64_t>(0, limits.per_customer_total() - total)
                              : -1);
    e.set_remaining_today(limits.per_customer_daily() > 0
                              ? std::max<int64_t>(0, limits.per_customer_daily() - today)
                              : -1);
    e.set_claimed(live.type() == pb::COUPON_CLAIM && total > 0);
    if (live.type() == pb::LOTTERY) {
      e.set_free_draws_left_today(std::max<int64_t>(
          0,
          limits.free_draws_per_day() - count(c->id(), "free:" + r.customer_id() + ":d:" + day)));
    }
    e.set_sold_out(sold_out_.IsSoldOut(c->id(), now));
    // An asset-growth task the customer is enrolled in stays listed (open) with its progress;
    // the checks were passed at enrolment.
    bool enrolled = false;
    if (live.type() == pb::ASSET_GROWTH_TASK) {
      *e.mutable_growth_tiers() = live.growth_tiers();
      for (const Enrolment& en : enrolments) {
        if (en.campaign_id != c->id()) continue;
        enrolled = true;
        pb::AssetGrowthProgress* progress = e.mutable_asset_growth();
        progress->set_enrolled_on(absl::FormatCivilTime(en.enrolled_on));
        progress->set_baseline_fen(en.baseline_fen);
        progress->set_baseline_days(en.baseline_days);
        progress->set_average_fen(en.average_fen);
        progress->set_growth_fen(en.growth_fen);
        progress->set_evaluated_through(en.evaluated_through);
        for (int tier : en.tiers_marked) progress->add_tiers_reached(tier);
      }
      e.set_enrolled(enrolled);
      e.set_remaining_total(enrolled ? 0 : 1);
    }

    if (auto it = not_active.find(c->id()); it != not_active.end()) {
      e.set_open(false);
      e.set_not_open_because(it->second);
      e.set_not_open_reason(ReasonName(common::CAMPAIGN_NOT_ACTIVE));
      closed.push_back(std::move(e));
      continue;
    }

    std::string why, reason;
    auto refuse = [&](const std::string& w, ErrorReason code) {
      if (enrolled) return;
      if (why.empty()) {
        why = w;
        reason = ReasonName(code);
      }
    };
    // Whom the campaign is for is decided before its limits and stock: a customer outside its
    // audience, or in another campaign of its exclusion group, is told only that (NOT_ELIGIBLE),
    // and the coupon centre does not list such a coupon at all. Deciding "sold out" first listed
    // a sold-out VIP-only coupon to everyone. Limits and stock are only noted here.
    std::string limit_why;
    ErrorReason limit_reason = common::ERROR_REASON_UNSPECIFIED;
    auto limited = [&](const std::string& w, ErrorReason code) {
      if (limit_why.empty()) {
        limit_why = w;
        limit_reason = code;
      }
    };
    if (!live.exclusion_group().empty()) {
      for (const auto& claim : claims) {
        if (claim[0] == c->org_id() && claim[1] == live.exclusion_group() && claim[2] != c->id()) {
          refuse("already takes part in campaign " + claim[2] + " of the exclusion group '" +
                     live.exclusion_group() + "'",
                 common::NOT_ELIGIBLE);
        }
      }
    }
    if (limits.per_customer_total() > 0 && total >= limits.per_customer_total()) {
      limited("already taken part " + std::to_string(total) + " time(s); the limit is " +
                  std::to_string(limits.per_customer_total()),
              common::LIMIT_REACHED);
    }
    if (limits.per_customer_daily() > 0 && today >= limits.per_customer_daily()) {
      limited("daily limit of " + std::to_string(limits.per_customer_daily()) + " reached today",
              common::LIMIT_REACHED);
    }
    if (limits.per_customer_weekly() > 0 && week >= limits.per_customer_weekly()) {
      limited("weekly limit of " + std::to_string(limits.per_customer_weekly()) + " reached",
              common::LIMIT_REACHED);
    }
    if (limits.global_total() > 0 && count(c->id(), "g:all") >= limits.global_total()) {
      limited("all " + std::to_string(limits.global_total()) + " participations are taken",
              common::LIMIT_REACHED);
    }
    if (limits.per_org_total() > 0 &&
        count(c->id(), "o:" + r.customer_org_id() + ":all") >= limits.per_org_total()) {
      limited("the bank's " + std::to_string(limits.per_org_total()) + " participations are taken",
              common::LIMIT_REACHED);
    }
    if (e.sold_out()) {
      limited("sold out: the campaign's rewards are all given out", common::STOCK_EXHAUSTED);
    }
    // A customer who took part already (enrolled, or holds a claim) was in the audience then.
    // Without explain a campaign refused by its limits is not listed whatever the audience says,
    // so the audience is not asked for it.
    const bool took_part = enrolled || e.claimed();
    if (why.empty() && !took_part && (r.explain() || limit_why.empty())) {
      absl::StatusOr<bool> member =
          audience_.InAudience(c->org_id(), r.customer_id(), live.audience());
      if (!member.ok()) return member.status();
      if (!*member) refuse("not in the campaign's audience", common::NOT_ELIGIBLE);
    }
    if (!limit_why.empty()) refuse(limit_why, limit_reason);
    if (why.empty()) {
      e.set_open(true);
      open.push_back(std::move(e));
    } else if (r.explain()) {
      e.set_open(false);
      e.set_not_open_because(why);
      e.set_not_open_reason(reason);
      closed.push_back(std::move(e));
    }
  }
  auto ranked = [](const pb::EligibleCampaign& a, const pb::EligibleCampaign& b) {
    if (a.priority() != b.priority()) return a.priority() > b.priority();
    const int64_t ea = a.has_end_time() ? a.end_time().seconds() : INT64_MAX;
    const int64_t eb = b.has_end_time() ? b.end_time().seconds() : INT64_MAX;
    if (ea != eb) return ea < eb;
    return a.campaign_id() < b.campaign_id();
  };
  std::sort(open.begin(), open.end(), ranked);
  std::sort(closed.begin(), closed.end(), ranked);
  pb::ListEligibleResponse response;
  for (auto& e : open) *response.add_campaigns() = std::move(e);
  for (auto& e : closed) *response.add_campaigns() = std::move(e);
  return response;
}

absl::StatusOr<pb::ListCouponsResponse> ParticipationService::ListCoupons(
    const pb::ListCouponsRequest& r) {
  pb::ListEligibleRequest eligible;
  eligible.set_customer_id(r.customer_id());
  eligible.set_customer_org_id(r.customer_org_id());
  eligible.set_channel(r.channel());
  eligible.set_explain(true);
  MKT_ASSIGN_OR_RETURN(pb::ListEligibleResponse all, ListEligible(eligible));
  pb::ListCouponsResponse response;
  for (auto& e : *all.mutable_campaigns()) {
    if (e.type() != pb::COUPON_CLAIM) continue;
    // Sold-out and already-claimed coupons stay visible (greyed out). A coupon the customer may
    // not take at all (audience, exclusion group: NOT_ELIGIBLE, decided before stock and limits)
    // or outside its window is not listed, even when it is sold out too.
    if (!e.open()) {
      const std::string& reason = e.not_open_reason();
      if (reason == ReasonName(common::NOT_ELIGIBLE) ||
          reason == ReasonName(common::CAMPAIGN_NOT_ACTIVE)) {
        continue;
      }
      if (!e.sold_out() && !e.claimed()) continue;
    }
    *response.add_coupons() = std::move(e);
  }
  return response;
}

}  // namespace mkt::campaigns
