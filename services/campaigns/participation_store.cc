#include "services/campaigns/participation_store.h"

#include <algorithm>
#include <limits>

#include "absl/hash/hash.h"
#include "libs/core/status.h"
#include "libs/log/log.h"
#include "libs/pg/arrays.h"
#include "libs/pg/prepared.h"
#include "services/campaigns/asset_growth_store.h"
#include "services/campaigns/pg_campaign_store.h"

namespace mkt::campaigns {
namespace {

constexpr pg::Prepared kSelectByKey{"participations.select_by_key",
                                    "SELECT request_hash, body::text FROM participations "
                                    "WHERE campaign_id = $1 AND idempotency_key = $2"};

// The reservation of a participation with counters only (no exclusion group, no lottery) in one
// statement: the PENDING row unless the key exists, then every counter below its cap, in key
// order. Answers whether the row was inserted and the counters taken ({} or NULL for none).
constexpr pg::Prepared kReserveCounted{
    "participations.reserve_counted",
    "WITH ins AS (INSERT INTO participations (id, campaign_id, idempotency_key, request_hash, "
    "customer_id, customer_org, channel, campaign_version, status, counters, body) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'PENDING', $9::text[], $10::jsonb) "
    "ON CONFLICT (campaign_id, idempotency_key) DO NOTHING RETURNING id), "
    "taken AS (INSERT INTO participation_counters (campaign_id, counter, n, cap) "
    "SELECT $2, c.counter, 1, c.cap FROM unnest($9::text[], $11::bigint[]) AS c(counter, cap) "
    "WHERE c.cap >= 1 AND EXISTS (SELECT 1 FROM ins) ORDER BY c.counter "
    "ON CONFLICT (campaign_id, counter) DO UPDATE "
    "SET n = participation_counters.n + 1, cap = EXCLUDED.cap "
    "WHERE participation_counters.n < EXCLUDED.cap "
    "RETURNING counter) "
    "SELECT EXISTS (SELECT 1 FROM ins), (SELECT array_agg(counter) FROM taken)::text"};

constexpr char kDeleteParticipation[] = "DELETE FROM participations WHERE id = $1";

// Takes every counter whose row is below its cap, in key order (so two transactions taking the
// same counters lock them in the same order), and returns the ones taken.
constexpr char kTakeCounters[] =
    "INSERT INTO participation_counters (campaign_id, counter, n, cap) "
    "SELECT $1, c.counter, 1, c.cap FROM unnest($2::text[], $3::bigint[]) AS c(counter, cap) "
    "WHERE c.cap >= 1 ORDER BY c.counter "
    "ON CONFLICT (campaign_id, counter) DO UPDATE "
    "SET n = participation_counters.n + 1, cap = EXCLUDED.cap "
    "WHERE participation_counters.n < EXCLUDED.cap "
    "RETURNING counter";

constexpr char kReleaseCounters[] =
    "UPDATE participation_counters SET n = n - 1 "
    "WHERE campaign_id = $1 AND counter = ANY($2::text[]) AND n > 0";

constexpr char kClaimExclusion[] =
    "INSERT INTO exclusion_claims (org_id, group_name, customer_id, campaign_id) "
    "VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (org_id, group_name, customer_id) "
    "DO UPDATE SET campaign_id = exclusion_claims.campaign_id "
    "RETURNING campaign_id";

// The claim goes back only when no other live participation of the customer in this campaign
// still relies on it.
constexpr char kReleaseExclusion[] =
    "DELETE FROM exclusion_claims e WHERE e.customer_id = $2 AND e.campaign_id = $1 "
    "AND NOT EXISTS (SELECT 1 FROM participations p WHERE p.campaign_id = $1 "
    "AND p.customer_id = $2 AND p.status <> 'REJECTED' AND p.id <> $3)";

constexpr char kInsertParticipation[] =
    "INSERT INTO participations (id, campaign_id, idempotency_key, request_hash, customer_id, "
    "customer_org, channel, campaign_version, status, counters, body) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'PENDING', $9::text[], $10::jsonb)";

constexpr char kInsertDraw[] =
    "INSERT INTO lottery_draws (participation_id, campaign_id, table_version, random_value, "
    "drawn_prize, awarded_prize, fallback_used, free_draw) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

constexpr pg::Prepared kFinish{
    "participations.finish",
    "UPDATE participations SET status = $2, reason = $3, body = $4::jsonb, updated_at = now() "
    "WHERE id = $1 AND status = 'PENDING' RETURNING counters::text"};

constexpr char kStoredKeys[] =
    "SELECT idempotency_key FROM participations WHERE campaign_id = $1 LIMIT $2";

constexpr char kSelectById[] = "SELECT body::text FROM participations WHERE id = $1";

// Ordered by when each is due (a participation never tried is due from its creation), so one
// that keeps failing moves behind the others instead of heading every sweep.
constexpr char kStalePending[] =
    "SELECT body::text, recovery_attempts FROM participations WHERE status = 'PENDING' "
    "AND created_at < campaigns_ts($1) AND coalesce(next_recovery_at, created_at) <= "
    "campaigns_ts($2) ORDER BY coalesce(next_recovery_at, created_at) LIMIT $3";

constexpr char kDeferRecovery[] =
    "UPDATE participations SET recovery_attempts = recovery_attempts + 1, "
    "next_recovery_at = campaigns_ts($2) WHERE id = $1 AND status = 'PENDING' "
    "RETURNING recovery_attempts";

constexpr char kVersionConfig[] =
    "SELECT config::text FROM campaign_versions WHERE campaign_id = $1 AND version = $2";

constexpr char kReadCounters[] =
    "SELECT campaign_id, counter, n FROM participation_counters "
    "WHERE campaign_id = ANY($1::text[]) AND counter = ANY($2::text[])";

constexpr char kReadExclusions[] =
    "SELECT org_id, group_name, campaign_id FROM exclusion_claims WHERE customer_id = $1";

constexpr char kDrawStats[] =
    "SELECT d.drawn_prize, d.awarded_prize, d.fallback_used, count(*) FROM lottery_draws d "
    "JOIN participations p ON p.id = d.participation_id "
    "WHERE d.campaign_id = $1 AND p.status <> 'REJECTED' GROUP BY 1, 2, 3";

std::string StatusName(pb::ParticipationStatus status) {
  switch (status) {
    case pb::GRANTED:
      return "GRANTED";
    case pb::NO_PRIZE:
      return "NO_PRIZE";
    case pb::PARTICIPATION_REJECTED:
      return "REJECTED";
    case pb::ENROLLED:
      return "ENROLLED";
    default:
      return "PENDING";
  }
}

absl::StatusOr<pb::Participation> ParseBody(const std::string& json) {
  pb::Participation p;
  MKT_RETURN_IF_ERROR(FromJson(json, &p));
  return p;
}

std::vector<std::string> ParseTextArray(const std::string& literal) {
  // Counter keys never contain quotes, commas or braces (ids are validated), so the literal
  // "{a,b}" splits plainly; quoted elements are unquoted.
  std::vector<std::string> out;
  std::string cur;
  bool any = false;
  for (size_t i = 1; i + 1 < literal.size(); ++i) {
    char c = literal[i];
    if (c == ',') {
      out.push_back(cur);
      cur.clear();
    } else if (c != '"') {
      cur += c;
    }
    any = true;
  }
  if (any) out.push_back(cur);
  return out;
}

// Returns the counters of `takes` not taken by the statement's answer.
std::vector<std::string> TakeCounters(pqxx::dbtransaction& tx, const std::string& campaign_id,
                                      const std::vector<CounterTake>& takes, bool* all_taken) {
  std::vector<std::string> keys;
  std::vector<int64_t> caps;
  for (const auto& t : takes) {
    keys.push_back(t.counter);
    caps.push_back(t.cap);
  }
  pqxx::result r = tx.exec_params(kTakeCounters, campaign_id, pg::TextArrayLiteral(keys),
                                  pg::IntArrayLiteral(caps));
  std::vector<std::string> taken;
  for (const auto& row : r) taken.push_back(row[0].as<std::string>());
  *all_taken = taken.size() == takes.size();
  return taken;
}

std::string DescribeFullCounter(const std::string& counter, int64_t cap) {
  const std::string n = std::to_string(cap);
  if (counter.rfind("c:", 0) == 0) {
    if (counter.find(":d:") != std::string::npos) {
      return "the customer has already taken part " + n + " time(s) today, the daily limit";
    }
    if (counter.find(":w:") != std::string::npos) {
      return "the customer has already taken part " + n + " time(s) this week, the weekly limit";
    }
    return "the customer has already taken part " + n + " time(s), the campaign's limit";
  }
  if (counter.rfind("o:", 0) == 0) {
    return "the customer's bank has used up its " + n + " participations";
  }
  if (counter.rfind("g:", 0) == 0) return "the campaign's " + n + " participations are used up";
  return "limit " + counter + " of " + n + " reached";
}

// LIMIT_REACHED naming the first of `takes` that was not `taken`.
absl::Status LimitReached(const std::vector<CounterTake>& takes,
                          const std::vector<std::string>& taken) {
  for (const auto& t : takes) {
    if (std::find(taken.begin(), taken.end(), t.counter) == taken.end()) {
      return Error(absl::StatusCode::kFailedPrecondition, ::marketing::common::v1::LIMIT_REACHED,
                   DescribeFullCounter(t.counter, t.cap));
    }
  }
  return Error(absl::StatusCode::kFailedPrecondition, ::marketing::common::v1::LIMIT_REACHED,
               "a participation limit is reached");
}

}  // namespace

// ---- GroupCommitter ----------------------------------------------------------------------------

GroupCommitter::GroupCommitter(pg::Pool& pool, Options options) : pool_(pool), options_(options) {
  for (int i = 0; i < std::max(1, options_.lanes); ++i) {
    auto lane = std::make_unique<Lane>();
    Lane* raw = lane.get();
    lanes_.push_back(std::move(lane));
    raw->writer = std::thread([this, raw] { RunLane(*raw); });
  }
}

GroupCommitter::~GroupCommitter() {
  for (auto& lane : lanes_) {
    {
      std::lock_guard<std::mutex> lock(lane->mu);
      stopping_ = true;
    }
    lane->cv.notify_all();
  }
  for (auto& lane : lanes_) lane->writer.join();
}

absl::Status GroupCommitter::Run(const std::string& lane_key, Body body) {
  Lane& lane = *lanes_[absl::HashOf(lane_key) % lanes_.size()];
  Item item;
  item.body = std::move(body);
  {
    std::lock_guard<std::mutex> lock(lane.mu);
    if (stopping_) return Unavailable("the participation writer is stopping");
    if (lane.queue.size() >= options_.max_queued) {
      return Error(absl::StatusCode::kResourceExhausted, ::marketing::common::v1::RATE_LIMITED,
                   "too many participations waiting to be written; retry shortly");
    }
    lane.queue.push_back(&item);
  }
  lane.cv.notify_one();
  std::unique_lock<std::mutex> lock(item.done_mu);
  item.done_cv.wait(lock, [&item] { return item.done; });
  return item.result;
}

void GroupCommitter::RunLane(Lane& lane) {
  for (;;) {
    std::vector<Item*> items;
    {
      std::unique_lock<std::mutex> lock(lane.mu);
      lane.cv.wait(lock, [&] { return stopping_ || !lane.queue.empty(); });
      if (lane.queue.empty()) return;  // stopping and drained
      if (lane.queue.size() < static_cast<size_t>(options_.max_items) && !stopping_) {
        lane.cv.wait_for(lock, absl::ToChronoMicroseconds(options_.linger), [&] {
          return lane.queue.size() >= static_cast<size_t>(options_.max_items);
        });
      }
      while (!lane.queue.empty() && items.size() < static_cast<size_t>(options_.max_items)) {
        items.push_back(lane.queue.front());
        lane.queue.pop_front();
      }
    }
    std::vector<absl::Status> results(items.size());
    absl::Status committed = pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
      std::vector<kafka::OutboxMessage> outbox;
      std::vector<kafka::OutboxMessage> own;
      for (size_t i = 0; i < items.size(); ++i) {
        own.clear();
        results[i] = items[i]->body(tx, own);
        if (results[i].ok()) {
          for (auto& m : own) outbox.push_back(std::move(m));
        }
      }
      if (!outbox.empty()) kafka::AppendManyToOutbox(tx, outbox);
      return absl::OkStatus();
    });
    for (size_t i = 0; i < items.size(); ++i) {
      // Notified under the lock: the caller cannot see `done` and destroy the item before the
      // notification is over.
      std::lock_guard<std::mutex> lock(items[i]->done_mu);
      items[i]->result = committed.ok() ? results[i] : committed;
      items[i]->done = true;
      items[i]->done_cv.notify_one();
    }
  }
}

// ---- PgParticipationStore ----------------------------------------------------------------------

absl::StatusOr<ReserveResult> PgParticipationStore::Reserve(const Reservation& rsv) {
  const pb::Participation& p = rsv.participation;
  ReserveResult out;
  // Written here, on the caller's thread, not in the lane that every participation of this
  // campaign passes through (protobuf's JSON printer was a fifth of the service's CPU).
  const std::string p_json = ToJson(p);
  auto body = [&](pqxx::work& tx, std::vector<kafka::OutboxMessage>&) -> absl::Status {
    out = ReserveResult{};
    auto lookup = [&]() -> absl::Status {
      pqxx::result existing =
          pg::ExecPrepared(tx, kSelectByKey, p.campaign_id(), p.idempotency_key());
      if (existing.empty()) return Internal("participation vanished during a replay");
      out.replay = true;
      out.stored_request_hash = existing[0][0].as<std::string>();
      MKT_ASSIGN_OR_RETURN(out.participation, ParseBody(existing[0][1].as<std::string>()));
      return absl::OkStatus();
    };
    if (!rsv.lottery && rsv.exclusion_group.empty()) {
      // The common case (a coupon claim, a points exchange) in one statement; a refusal undoes
      // it in this transaction, which other participations share.
      std::vector<std::string> keys;
      std::vector<int64_t> caps;
      for (const auto& t : rsv.counters) {
        keys.push_back(t.counter);
        caps.push_back(t.cap);
      }
      pqxx::result r = pg::ExecPrepared(
          tx, kReserveCounted, p.id(), p.campaign_id(), p.idempotency_key(), rsv.request_hash,
          p.customer_id(), p.customer_org_id(), p.channel(), p.campaign_version(),
          pg::TextArrayLiteral(keys), p_json, pg::IntArrayLiteral(caps));
      if (!r[0][0].as<bool>()) return lookup();
      const std::vector<std::string> taken =
          r[0][1].is_null() ? std::vector<std::string>{} : ParseTextArray(r[0][1].c_str());
      if (taken.size() != rsv.counters.size()) {
        tx.exec_params(kDeleteParticipation, p.id());
        if (!taken.empty()) {
          tx.exec_params(kReleaseCounters, p.campaign_id(), pg::TextArrayLiteral(taken));
        }
        return LimitReached(rsv.counters, taken);
      }
      out.participation = p;
      return absl::OkStatus();
    }
    if (!pg::ExecPrepared(tx, kSelectByKey, p.campaign_id(), p.idempotency_key()).empty()) {
      return lookup();
    }
    pb::Participation record = p;
    std::vector<std::string> taken_keys;
    {
      pqxx::subtransaction sub(tx, "reserve");
      bool all = false;
      std::vector<std::string> taken = TakeCounters(sub, p.campaign_id(), rsv.counters, &all);
      if (!all) {
        sub.abort();
        return LimitReached(rsv.counters, taken);
      }
      taken_keys = std::move(taken);
      if (!rsv.exclusion_group.empty()) {
        pqxx::result claim = sub.exec_params(kClaimExclusion, rsv.exclusion_org,
                                             rsv.exclusion_group, p.customer_id(), p.campaign_id());
        if (claim.empty() || claim[0][0].as<std::string>() != p.campaign_id()) {
          sub.abort();
          return Error(absl::StatusCode::kFailedPrecondition, ::marketing::common::v1::NOT_ELIGIBLE,
                       "the customer already takes part in campaign " +
                           (claim.empty() ? std::string("?") : claim[0][0].as<std::string>()) +
                           " of the same exclusion group '" + rsv.exclusion_group + "'");
        }
        taken_keys.push_back("x:" + rsv.exclusion_org + ":" + rsv.exclusion_group);
      }
      if (rsv.lottery) {
        pb::DrawRecord* draw = record.mutable_draw();
        bool free = false;
        if (rsv.free_draw) {
          std::vector<std::string> got =
              TakeCounters(sub, p.campaign_id(), {*rsv.free_draw}, &free);
          taken_keys.insert(taken_keys.end(), got.begin(), got.end());
        }
        draw->set_free_draw(free);
        record.set_chances_spent(free ? 0 : rsv.chances_per_draw);
        int awarded = -1;
        for (size_t c = 0; c < rsv.prize_candidates.size(); ++c) {
          if (rsv.prize_candidates[c] < 0) break;
          if (rsv.prize_counters[c].empty()) {
            awarded = static_cast<int>(c);
            break;
          }
          bool fits = false;
          std::vector<std::string> got =
              TakeCounters(sub, p.campaign_id(), rsv.prize_counters[c], &fits);
          if (fits) {
            awarded = static_cast<int>(c);
            taken_keys.insert(taken_keys.end(), got.begin(), got.end());
            break;
          }
          if (!got.empty()) {
            sub.exec_params(kReleaseCounters, p.campaign_id(), pg::TextArrayLiteral(got));
          }
        }
        record.clear_rewards();
        if (awarded >= 0) {
          draw->set_awarded_prize(rsv.prize_candidates[awarded]);
          draw->set_fallback_used(awarded > 0);
          for (const auto& r : rsv.prize_rewards[awarded]) *record.add_rewards() = r;
        } else {
          draw->set_awarded_prize(-1);
          draw->set_fallback_used(false);
        }
        sub.exec_params(kInsertDraw, record.id(), record.campaign_id(), record.campaign_version(),
                        draw->random_value(), draw->drawn_prize(), draw->awarded_prize(),
                        draw->fallback_used(), draw->free_draw());
      }
      try {
        sub.exec_params(kInsertParticipation, record.id(), record.campaign_id(),
                        record.idempotency_key(), rsv.request_hash, record.customer_id(),
                        record.customer_org_id(), record.channel(), record.campaign_version(),
                        pg::TextArrayLiteral(taken_keys), ToJson(record));
      } catch (const pqxx::unique_violation&) {
        // A concurrent request with the same key (another replica) got there first.
        sub.abort();
        return lookup();
      }
      sub.commit();
    }
    out.participation = std::move(record);
    return absl::OkStatus();
  };
  MKT_RETURN_IF_ERROR(reserve_.Run(p.campaign_id(), body));
  return out;
}

absl::StatusOr<pb::Participation> PgParticipationStore::Finish(const pb::Participation& outcome,
                                                               absl::Time window_end) {
  pb::Participation stored;
  // On the caller's thread, outside the lane (see Reserve).
  const std::string outcome_json = ToJson(outcome);
  auto body = [&](pqxx::work& tx, std::vector<kafka::OutboxMessage>& outbox) -> absl::Status {
    pqxx::result updated = pg::ExecPrepared(tx, kFinish, outcome.id(), StatusName(outcome.status()),
                                            outcome.reason(), outcome_json);
    if (updated.empty()) {
      pqxx::result current = tx.exec_params(kSelectById, outcome.id());
      if (current.empty()) return NotFound("participation " + outcome.id() + " does not exist");
      MKT_ASSIGN_OR_RETURN(stored, ParseBody(current[0][0].as<std::string>()));
      return absl::OkStatus();
    }
    stored = outcome;
    if (outcome.status() == pb::ENROLLED) InsertEnrolment(tx, outcome, window_end);
    if (outcome.status() == pb::PARTICIPATION_REJECTED) {
      std::vector<std::string> counters = ParseTextArray(updated[0][0].as<std::string>());
      bool exclusion = false;
      std::vector<std::string> real;
      for (auto& c : counters) {
        if (c.rfind("x:", 0) == 0) {
          exclusion = true;
        } else {
          real.push_back(std::move(c));
        }
      }
      if (!real.empty()) {
        tx.exec_params(kReleaseCounters, outcome.campaign_id(), pg::TextArrayLiteral(real));
      }
      if (exclusion) {
        tx.exec_params(kReleaseExclusion, outcome.campaign_id(), outcome.customer_id(),
                       outcome.id());
      }
    }
    outbox.push_back({kParticipationsTopic, outcome.customer_id(),
                      kafka::MakeEnvelope(kParticipationRecordedType, outcome.org_id(),
                                          log::CurrentRequestId(), outcome)});
    // The event id is stable per participation, so a re-publish is deduplicated downstream.
    outbox.back().envelope.set_event_id("participation:" + outcome.id());
    return absl::OkStatus();
  };
  MKT_RETURN_IF_ERROR(finish_.Run(outcome.campaign_id(), body));
  return stored;
}

absl::StatusOr<std::optional<PgParticipationStore::Stored>> PgParticipationStore::Get(
    const std::string& campaign_id, const std::string& idempotency_key) {
  std::optional<Stored> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = pg::ExecPrepared(tx, kSelectByKey, campaign_id, idempotency_key);
    if (r.empty()) return absl::OkStatus();
    MKT_ASSIGN_OR_RETURN(pb::Participation p, ParseBody(r[0][1].as<std::string>()));
    out = Stored{std::move(p), r[0][0].as<std::string>()};
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<std::string>> PgParticipationStore::StoredKeys(
    const std::string& campaign_id, int64_t limit) {
  std::vector<std::string> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    out.clear();
    for (const auto& row : tx.exec_params(kStoredKeys, campaign_id, limit)) {
      out.push_back(row[0].as<std::string>());
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<PgParticipationStore::StalePending>>
PgParticipationStore::ListStalePending(absl::Time older_than, absl::Time now, int limit) {
  std::vector<StalePending> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    out.clear();
    for (const auto& row : tx.exec_params(kStalePending, absl::ToUnixMicros(older_than),
                                          absl::ToUnixMicros(now), limit)) {
      MKT_ASSIGN_OR_RETURN(pb::Participation p, ParseBody(row[0].as<std::string>()));
      out.push_back({std::move(p), row[1].as<int>()});
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<int> PgParticipationStore::DeferRecovery(const std::string& participation_id,
                                                        absl::Time next_attempt) {
  int attempts = 0;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    pqxx::result r =
        tx.exec_params(kDeferRecovery, participation_id, absl::ToUnixMicros(next_attempt));
    attempts = r.empty() ? 0 : r[0][0].as<int>();
    return absl::OkStatus();
  }));
  return attempts;
}

absl::StatusOr<pb::CampaignConfig> PgParticipationStore::VersionConfig(
    const std::string& campaign_id, int64_t version) {
  pb::CampaignConfig config;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec_params(kVersionConfig, campaign_id, version);
    if (r.empty()) {
      return NotFound("campaign " + campaign_id + " has no version " + std::to_string(version));
    }
    config.Clear();
    return FromJson(r[0][0].as<std::string>(), &config);
  }));
  return config;
}

absl::StatusOr<std::vector<CounterValue>> PgParticipationStore::ReadCounters(
    const std::vector<std::string>& campaign_ids, const std::vector<std::string>& counters) {
  std::vector<CounterValue> out;
  if (campaign_ids.empty() || counters.empty()) return out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    out.clear();
    for (const auto& row : tx.exec_params(kReadCounters, pg::TextArrayLiteral(campaign_ids),
                                          pg::TextArrayLiteral(counters))) {
      out.push_back({row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<int64_t>()});
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<std::vector<std::string>>> PgParticipationStore::ReadExclusionClaims(
    const std::string& customer_id) {
  std::vector<std::vector<std::string>> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    out.clear();
    for (const auto& row : tx.exec_params(kReadExclusions, customer_id)) {
      out.push_back({row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<std::string>()});
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<pb::DrawStats> PgParticipationStore::DrawStats(const std::string& campaign_id,
                                                              int prize_count) {
  pb::DrawStats stats;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    stats.Clear();
    for (int i = 0; i < prize_count; ++i) {
      stats.add_drawn(0);
      stats.add_awarded(0);
    }
    for (const auto& row : tx.exec_params(kDrawStats, campaign_id)) {
      const int drawn = row[0].as<int>();
      const int awarded = row[1].as<int>();
      const bool fallback = row[2].as<bool>();
      const int64_t n = row[3].as<int64_t>();
      stats.set_draws(stats.draws() + n);
      if (drawn < 0) {
        stats.set_drawn_no_prize(stats.drawn_no_prize() + n);
      } else if (drawn < prize_count) {
        stats.set_drawn(drawn, stats.drawn(drawn) + n);
      }
      if (awarded >= 0 && awarded < prize_count)
        stats.set_awarded(awarded, stats.awarded(awarded) + n);
      if (fallback) stats.set_fallbacks(stats.fallbacks() + n);
    }
    return absl::OkStatus();
  }));
  return stats;
}

}  // namespace mkt::campaigns
