#include "services/campaigns/asset_growth_store.h"

#include <algorithm>

#include "absl/time/clock.h"

#include "libs/core/status.h"
#include "libs/kafka/outbox.h"
#include "libs/log/log.h"
#include "libs/pg/arrays.h"
#include "libs/tenancy/tenancy.h"
#include "services/campaigns/participation_store.h"
#include "services/campaigns/pg_campaign_store.h"

namespace mkt::campaigns {
namespace {

// The latest report of a day wins; a replay or an older report changes nothing.
constexpr char kUpsertBalance[] =
    "INSERT INTO asset_balances (customer_bank, customer_id, day, balance_fen, as_of, event_key) "
    "VALUES ($1, $2, $3::date, $4, campaigns_ts($5), $6) "
    "ON CONFLICT (customer_bank, customer_id, day) DO UPDATE SET balance_fen = "
    "EXCLUDED.balance_fen, "
    "as_of = EXCLUDED.as_of, event_key = EXCLUDED.event_key, updated_at = now() "
    "WHERE (EXCLUDED.as_of, EXCLUDED.event_key) > (asset_balances.as_of, asset_balances.event_key) "
    "RETURNING 1";

constexpr char kDailyBalances[] =
    "(SELECT day::text, balance_fen FROM asset_balances "
    " WHERE customer_bank = $1 AND customer_id = $2 AND day < $3::date "
    " ORDER BY day DESC LIMIT 1) "
    "UNION ALL "
    "(SELECT day::text, balance_fen FROM asset_balances WHERE customer_bank = $1 "
    " AND customer_id = $2 AND day >= $3::date AND day <= $4::date) "
    "ORDER BY 1";

constexpr char kInsertEnrolment[] =
    "INSERT INTO asset_growth_enrolments (participation_id, campaign_id, org_id, customer_org_id, "
    "customer_bank, customer_id, enrolled_on, baseline_fen, baseline_days, window_end) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7::date, $8, $9, campaigns_ts($10)) "
    "ON CONFLICT (participation_id) DO NOTHING";

constexpr char kEnrolmentColumns[] =
    "SELECT e.participation_id, e.campaign_id, e.org_id, e.customer_id, e.enrolled_on::text, "
    "e.baseline_fen, e.baseline_days, campaigns_micros(e.window_end), e.average_fen, e.growth_fen, "
    "coalesce(e.evaluated_through::text, ''), "
    "coalesce((SELECT array_agg(g.tier ORDER BY g.tier)::text FROM asset_growth_grants g "
    "          WHERE g.participation_id = e.participation_id), '{}'), e.customer_org_id "
    "FROM asset_growth_enrolments e ";

constexpr char kLockEnrolment[] =
    "SELECT 1 FROM asset_growth_enrolments WHERE participation_id = $1 FOR UPDATE";

constexpr char kMarkTier[] =
    "INSERT INTO asset_growth_grants (participation_id, tier, campaign_id, customer_id, "
    "request_id, tier_config, growth_fen, state) "
    "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, 'PENDING') "
    "ON CONFLICT (participation_id, tier) DO NOTHING RETURNING tier";

constexpr char kUpdateProgress[] =
    "UPDATE asset_growth_enrolments SET average_fen = $2, growth_fen = $3, "
    "evaluated_through = $4::date, evaluated_at = now() WHERE participation_id = $1";

constexpr char kMarkedTiers[] =
    "SELECT tier FROM asset_growth_grants WHERE participation_id = $1 ORDER BY tier";

constexpr char kSelectBodyForUpdate[] =
    "SELECT body::text FROM participations WHERE id = $1 FOR UPDATE";

constexpr char kUpdateBody[] =
    "UPDATE participations SET body = $2::jsonb, updated_at = now() WHERE id = $1";

constexpr char kGrantColumns[] =
    "SELECT g.participation_id, g.tier, g.campaign_id, g.customer_id, e.org_id, g.request_id, "
    "g.tier_config::text FROM asset_growth_grants g "
    "JOIN asset_growth_enrolments e ON e.participation_id = g.participation_id ";

constexpr char kSettle[] =
    "UPDATE asset_growth_grants SET state = $3, reason = $4, updated_at = now() "
    "WHERE participation_id = $1 AND tier = $2 AND state = 'PENDING' RETURNING growth_fen";

constexpr char kGrantState[] =
    "SELECT state FROM asset_growth_grants WHERE participation_id = $1 AND tier = $2";

std::string DayText(absl::CivilDay day) { return absl::FormatCivilTime(day); }

absl::CivilDay ParseDay(const std::string& text) {
  absl::CivilDay day;
  (void)absl::ParseCivilTime(text, &day);
  return day;
}

std::set<int> ParseIntArray(const std::string& literal) {
  std::set<int> out;
  std::string cur;
  for (char c : literal) {
    if (c >= '0' && c <= '9') {
      cur += c;
    } else if (!cur.empty()) {
      out.insert(std::stoi(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.insert(std::stoi(cur));
  return out;
}

Enrolment EnrolmentOf(const pqxx::row& row) {
  Enrolment e;
  e.participation_id = row[0].as<std::string>();
  e.campaign_id = row[1].as<std::string>();
  e.org_id = row[2].as<std::string>();
  e.customer_id = row[3].as<std::string>();
  e.enrolled_on = ParseDay(row[4].as<std::string>());
  e.baseline_fen = row[5].as<int64_t>();
  e.baseline_days = row[6].as<int>();
  e.window_end = absl::FromUnixMicros(row[7].as<int64_t>());
  e.average_fen = row[8].as<int64_t>();
  e.growth_fen = row[9].as<int64_t>();
  e.evaluated_through = row[10].as<std::string>();
  e.tiers_marked = ParseIntArray(row[11].as<std::string>());
  e.customer_org_id = row[12].as<std::string>();
  return e;
}

absl::StatusOr<TierGrant> GrantOf(const pqxx::row& row) {
  TierGrant g;
  g.participation_id = row[0].as<std::string>();
  g.tier = row[1].as<int>();
  g.campaign_id = row[2].as<std::string>();
  g.customer_id = row[3].as<std::string>();
  g.org_id = row[4].as<std::string>();
  g.request_id = row[5].as<std::string>();
  MKT_RETURN_IF_ERROR(FromJson(row[6].as<std::string>(), &g.config));
  return g;
}

}  // namespace

std::string CustomerBank(std::string_view customer_org_id) {
  return tenancy::MemberBankOf(customer_org_id);
}

void InsertEnrolment(pqxx::work& tx, const pb::Participation& p, absl::Time window_end) {
  const pb::AssetGrowthProgress& g = p.asset_growth();
  // A window without an end (never valid for a published campaign) is stored as 9999-12-31.
  const absl::Time end = std::min(window_end, absl::FromUnixSeconds(253'402'300'799));
  tx.exec_params(kInsertEnrolment, p.id(), p.campaign_id(), p.org_id(), p.customer_org_id(),
                 CustomerBank(p.customer_org_id()), p.customer_id(), g.enrolled_on(),
                 g.baseline_fen(), g.baseline_days(), absl::ToUnixMicros(end));
}

absl::StatusOr<bool> PgAssetGrowthStore::RecordBalance(const BalanceReport& r) {
  // Without a valid org the report belongs to nobody (and would mix customers of the same id).
  if (!tenancy::IsValidOrgId(r.customer_org_id)) {
    return InvalidArgument("org_id", "a balance report names the customer's org, such as bank-a");
  }
  // campaigns_ts() overflows (SQLSTATE 22008) far outside these, and ToUnixMicros saturates: a
  // report there would fail the same way on every retry.
  static const absl::Time kFirst = absl::FromCivil(absl::CivilDay(1900, 1, 1), absl::UTCTimeZone());
  static const absl::Time kLast = absl::FromCivil(absl::CivilDay(10000, 1, 1), absl::UTCTimeZone());
  if (r.as_of < kFirst || r.as_of >= kLast || r.day < absl::CivilDay(1900, 1, 1) ||
      r.day >= absl::CivilDay(10000, 1, 1)) {
    return InvalidArgument("as_of", "a balance report's time and day are within years 1900..9999");
  }
  bool changed = false;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    changed =
        !tx.exec_params(kUpsertBalance, CustomerBank(r.customer_org_id), r.customer_id,
                        DayText(r.day), r.balance_fen, absl::ToUnixMicros(r.as_of), r.event_key)
             .empty();
    return absl::OkStatus();
  }));
  return changed;
}

absl::StatusOr<std::vector<DayBalance>> PgAssetGrowthStore::DailyBalances(
    const std::string& customer_org_id, const std::string& customer_id, absl::CivilDay from,
    absl::CivilDay to) {
  std::vector<DayBalance> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    out.clear();
    for (const auto& row : tx.exec_params(kDailyBalances, CustomerBank(customer_org_id),
                                          customer_id, DayText(from), DayText(to))) {
      out.push_back({ParseDay(row[0].as<std::string>()), row[1].as<int64_t>()});
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<Enrolment>> PgAssetGrowthStore::EnrolmentsOf(
    const std::string& customer_org_id, const std::string& customer_id, absl::Time ended_after) {
  std::vector<Enrolment> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    out.clear();
    for (const auto& row : tx.exec_params(
             std::string(kEnrolmentColumns) +
                 "WHERE e.customer_bank = $1 AND e.customer_id = $2 "
                 "AND e.window_end > campaigns_ts($3) ORDER BY e.participation_id",
             CustomerBank(customer_org_id), customer_id, absl::ToUnixMicros(ended_after))) {
      out.push_back(EnrolmentOf(row));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<Enrolment>> PgAssetGrowthStore::EnrolmentsIn(
    const std::string& customer_org_id, const std::string& customer_id,
    const std::vector<std::string>& campaigns) {
  std::vector<Enrolment> out;
  if (campaigns.empty()) return out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    out.clear();
    for (const auto& row : tx.exec_params(
             std::string(kEnrolmentColumns) + "WHERE e.customer_bank = $1 AND e.customer_id = $2 "
                                              "AND e.campaign_id = ANY($3::text[])",
             CustomerBank(customer_org_id), customer_id, pg::TextArrayLiteral(campaigns))) {
      out.push_back(EnrolmentOf(row));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<Enrolment>> PgAssetGrowthStore::ActiveEnrolments(
    absl::Time ended_after, const std::string& after_id, int limit) {
  std::vector<Enrolment> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    out.clear();
    for (const auto& row :
         tx.exec_params(std::string(kEnrolmentColumns) +
                            "WHERE e.window_end > campaigns_ts($1) AND e.participation_id > $2 "
                            "ORDER BY e.participation_id LIMIT $3",
                        absl::ToUnixMicros(ended_after), after_id, limit)) {
      out.push_back(EnrolmentOf(row));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<TierGrant>> PgAssetGrowthStore::RecordEvaluation(
    const Enrolment& e, int64_t average_fen, int64_t growth_fen,
    const std::string& evaluated_through, const std::vector<TierGrant>& reached) {
  std::vector<TierGrant> marked;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    marked.clear();
    // Serialises evaluations of one enrolment (the consumer and the sweep), so the progress
    // written last is the one computed last.
    if (tx.exec_params(kLockEnrolment, e.participation_id).empty()) {
      return NotFound("enrolment " + e.participation_id + " does not exist");
    }
    for (const TierGrant& g : reached) {
      if (!tx.exec_params(kMarkTier, e.participation_id, g.tier, e.campaign_id, e.customer_id,
                          g.request_id, ToJson(g.config), growth_fen)
               .empty()) {
        marked.push_back(g);
      }
    }
    tx.exec_params(kUpdateProgress, e.participation_id, average_fen, growth_fen, evaluated_through);
    pqxx::result body = tx.exec_params(kSelectBodyForUpdate, e.participation_id);
    if (!body.empty()) {
      pb::Participation p;
      MKT_RETURN_IF_ERROR(FromJson(body[0][0].as<std::string>(), &p));
      pb::AssetGrowthProgress* progress = p.mutable_asset_growth();
      progress->set_average_fen(average_fen);
      progress->set_growth_fen(growth_fen);
      progress->set_evaluated_through(evaluated_through);
      progress->clear_tiers_reached();
      for (const auto& row : tx.exec_params(kMarkedTiers, e.participation_id)) {
        progress->add_tiers_reached(row[0].as<int>());
      }
      tx.exec_params(kUpdateBody, e.participation_id, ToJson(p));
    }
    return absl::OkStatus();
  }));
  return marked;
}

absl::StatusOr<std::vector<TierGrant>> PgAssetGrowthStore::PendingGrants(
    absl::Time older_than, int limit, const std::string& participation_id) {
  std::vector<TierGrant> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    out.clear();
    pqxx::result rows =
        participation_id.empty()
            ? tx.exec_params(std::string(kGrantColumns) +
                                 "WHERE g.state = 'PENDING' AND g.updated_at < campaigns_ts($1) "
                                 "ORDER BY g.updated_at LIMIT $2",
                             absl::ToUnixMicros(older_than), limit)
            : tx.exec_params(std::string(kGrantColumns) +
                                 "WHERE g.state = 'PENDING' AND g.participation_id = $1 "
                                 "ORDER BY g.tier",
                             participation_id);
    for (const auto& row : rows) {
      MKT_ASSIGN_OR_RETURN(TierGrant g, GrantOf(row));
      out.push_back(std::move(g));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PgAssetGrowthStore::SettleGrant(const TierGrant& g, bool granted,
                                             const std::string& reason) {
  return pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    pqxx::result settled = tx.exec_params(kSettle, g.participation_id, g.tier,
                                          granted ? "GRANTED" : "REJECTED", reason);
    if (settled.empty() || !granted) return absl::OkStatus();
    pqxx::result body = tx.exec_params(kSelectBodyForUpdate, g.participation_id);
    if (body.empty()) return absl::OkStatus();
    pb::Participation p;
    MKT_RETURN_IF_ERROR(FromJson(body[0][0].as<std::string>(), &p));
    for (const pb::RewardItem& item : g.config.rewards()) {
      pb::GrantedReward* reward = p.add_rewards();
      reward->set_benefit_template_id(item.benefit_template_id());
      reward->set_kind(item.kind());
      reward->set_quantity(item.quantity() > 0 ? item.quantity() : 1);
      reward->set_prize_name("tier " + std::to_string(g.tier));
    }
    const absl::Time now = absl::Now();
    p.mutable_updated_at()->set_seconds(absl::ToUnixSeconds(now));
    tx.exec_params(kUpdateBody, g.participation_id, ToJson(p));
    auto envelope =
        kafka::MakeEnvelope(kParticipationRecordedType, p.org_id(), log::CurrentRequestId(), p);
    // Stable per tier, so a re-publish is deduplicated downstream.
    envelope.set_event_id("participation:" + p.id() + ":tier-" + std::to_string(g.tier));
    kafka::AppendToOutbox(tx, kParticipationsTopic, p.customer_id(), envelope);
    return absl::OkStatus();
  });
}

absl::StatusOr<std::string> PgAssetGrowthStore::GrantState(const std::string& participation_id,
                                                           int tier) {
  std::string state;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec_params(kGrantState, participation_id, tier);
    state = r.empty() ? "" : r[0][0].as<std::string>();
    return absl::OkStatus();
  }));
  return state;
}

}  // namespace mkt::campaigns
