#include "services/events/event_store.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <string_view>
#include <tuple>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "google/protobuf/util/json_util.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/pg/arrays.h"
#include "nlohmann/json.hpp"
#include "services/events/events_sql.h"
#include "spdlog/spdlog.h"

namespace mkt::events {
namespace {

using Key = std::tuple<std::string, std::string, std::string>;  // rule, customer, window

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out);
  return out;
}

template <class M>
absl::StatusOr<M> FromJson(const std::string& json) {
  M m;
  if (!google::protobuf::util::JsonStringToMessage(json, &m).ok()) {
    return Internal("a stored definition does not parse");
  }
  return m;
}

std::string PgTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%E6S+00", t, absl::UTCTimeZone());
}

struct Contribution {
  std::string event_key;
  std::string rule_id;
  std::string customer_id;
  std::string window_key;
  int64_t amount_fen = 0;
  int64_t refunded_fen = 0;
  bool cancelled = false;
  bool changed = false;
};

// A reversal waiting for its original (decision 030): stored in parked_reversals, or, when it
// arrived in the batch being applied, that event.
struct ParkedReversal {
  std::string event_key;
  pb::ReversalKind kind = pb::NOT_A_REVERSAL;
  int64_t amount_fen = 0;
  const ValidatedEvent* arrived = nullptr;
};

struct ActiveGrant {
  std::string grant_id;
  std::string event_key;
  int tier = 0;
};

struct NewGrant {
  std::string grant_id;
  std::string event_key;
  const CompiledRule* rule;
  int tier;
  std::string customer_id;
  std::string org_id;
  std::string window_key;
};

constexpr char kDataExceptionPayload[] = "type.mkt/events.DataException";

// The first line of a driver message without libpq's "ERROR:  " prefix (later lines may quote
// parameters), cut to `limit` bytes on a character boundary: it becomes a dead letter's reason.
std::string Describe(std::string_view message, size_t limit = 400) {
  message = message.substr(0, message.find('\n'));
  for (std::string_view prefix : {"ERROR:", "FATAL:"}) {
    if (message.starts_with(prefix)) message.remove_prefix(prefix.size());
  }
  while (!message.empty() && message.front() == ' ') message.remove_prefix(1);
  if (message.size() > limit) {
    size_t cut = limit;
    while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xc0) == 0x80) --cut;
    return absl::StrCat(AsAbsl(message.substr(0, cut)), "...");
  }
  return std::string(message);
}

// Wraps a transaction body so that the data exceptions it throws become statuses that
// IsDataException recognises (pg::WithTransaction would make them INTERNAL, and the consumer would
// retry the batch for ever); any other exception propagates to pg::WithTransaction as before, so
// serialization failures, deadlocks and lost connections are still retried or reported as such.
std::function<absl::Status(pqxx::work&)> RefusingData(
    std::function<absl::Status(pqxx::work&)> body) {
  return [body = std::move(body)](pqxx::work& tx) -> absl::Status {
    try {
      return body(tx);
    } catch (const pqxx::sql_error& e) {
      // Class 22, data exception: 22P02 malformed array literal (a NUL cuts a parameter short),
      // 22P05 \u0000 in jsonb, 22021 invalid UTF-8, 22003 numeric out of range, 22008 ...
      if (!e.sqlstate().starts_with("22")) throw;
      return DataException(
          e.sqlstate(), absl::StrCat("PostgreSQL error ", e.sqlstate(), ": ", Describe(e.what())));
    } catch (const nlohmann::json::exception& e) {
      return DataException(
          "", absl::StrCat("the attributes cannot be stored as JSON: ", Describe(e.what())));
    }
  };
}

}  // namespace

absl::Status DataException(std::string_view sqlstate, std::string_view message) {
  absl::Status status =
      Error(absl::StatusCode::kInvalidArgument, ::marketing::common::v1::INVALID_ARGUMENT, message);
  status.SetPayload(kDataExceptionPayload, absl::Cord(std::string(sqlstate)));
  return status;
}

bool IsDataException(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kDataExceptionPayload).has_value();
}

std::string DataExceptionSqlState(const absl::Status& status) {
  if (status.ok()) return "";
  auto state = status.GetPayload(kDataExceptionPayload);
  return state ? std::string(*state) : "";
}

}  // namespace mkt::events

namespace mkt::pg {
const MigrationSet& EventsMigrationSet();  // embedded by mkt_embed_sql()
}  // namespace mkt::pg

namespace mkt::events {

const pg::MigrationSet& EventsMigrations() { return pg::EventsMigrationSet(); }

namespace {

// Every stored event type, in the caller's transaction.
absl::StatusOr<std::vector<pb::EventType>> ReadEventTypes(pqxx::work& tx) {
  std::vector<pb::EventType> out;
  for (const auto& row : tx.exec(kSelectEventTypes)) {
    MKT_ASSIGN_OR_RETURN(auto t, FromJson<pb::EventType>(row[0].as<std::string>()));
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<pb::EventType>> EventStore::SeedAndLoadEventTypes() {
  std::vector<pb::EventType> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    for (const pb::EventType& t : DefaultEventTypes()) {
      tx.exec_params(kInsertEventTypeIfAbsent, t.name(), ToJson(t));
    }
    MKT_ASSIGN_OR_RETURN(out, ReadEventTypes(tx));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<pb::EventType>> EventStore::LoadEventTypes() {
  std::vector<pb::EventType> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    MKT_ASSIGN_OR_RETURN(out, ReadEventTypes(tx));
    return absl::OkStatus();
  }));
  return out;
}

absl::Status EventStore::SaveEventType(const pb::EventType& type) {
  return pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    tx.exec_params(kUpsertEventType, type.name(), ToJson(type));
    return absl::OkStatus();
  });
}

absl::StatusOr<bool> EventStore::SaveRule(const pb::TriggerRule& rule,
                                          const RuleLifecycle& lifecycle) {
  bool stored = false;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    stored = !tx.exec_params(kUpsertRule, rule.rule_id(), rule.campaign_id(), rule.revision(),
                             ToJson(rule), LifecycleToJson(lifecycle))
                  .empty();
    return absl::OkStatus();
  }));
  return stored;
}

absl::StatusOr<EventStore::RulesChanged> EventStore::LoadRulesChangedSince(int64_t since_micros) {
  RulesChanged out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    out = RulesChanged{};
    out.as_of_micros =
        tx.exec1("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")[0]
            .as<int64_t>();
    for (const auto& row : tx.exec_params(kSelectRulesChangedSince, since_micros)) {
      MKT_ASSIGN_OR_RETURN(auto r, FromJson<pb::TriggerRule>(row[0].as<std::string>()));
      absl::StatusOr<RuleLifecycle> lifecycle = LifecycleFromJson(row[1].as<std::string>());
      if (!lifecycle.ok()) {
        // Matched as a rule never paused or ended, rather than not at all.
        spdlog::error("events: the stored lifecycle of rule {} cannot be read: {}", r.rule_id(),
                      std::string(lifecycle.status().message()));
        lifecycle = RuleLifecycle{};
      }
      out.rules.push_back(std::move(r));
      out.lifecycles.push_back(*std::move(lifecycle));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::Status EventStore::EnsurePartitions(const std::vector<ValidatedEvent>& events) {
  static const absl::TimeZone utc = absl::UTCTimeZone();
  std::set<std::string> months;
  for (const auto& e : events) months.insert(absl::FormatTime("%Y-%m", e.occurred_at, utc));
  for (const std::string& month : months) {
    {
      absl::MutexLock lock(&partitions_mu_);
      if (partitions_.count(month) > 0) continue;
    }
    absl::CivilMonth m;
    if (!absl::ParseCivilTime(month, &m)) return Internal("bad partition month");
    const std::string name = absl::StrCat("event_log_", absl::FormatCivilTime(m).substr(0, 4), "_",
                                          absl::FormatCivilTime(m).substr(5, 2));
    const std::string sql = absl::StrCat(
        "CREATE TABLE IF NOT EXISTS ", name, " PARTITION OF event_log FOR VALUES FROM ('",
        absl::FormatCivilTime(absl::CivilDay(m)), " 00:00:00+00') TO ('",
        absl::FormatCivilTime(absl::CivilDay(m + 1)), " 00:00:00+00')");
    // Replicas creating the same partition at once: one wins, the other retries and sees it.
    absl::Status s;
    for (int attempt = 0; attempt < 3; ++attempt) {
      s = pg::WithTransaction(pool_, RefusingData([&](pqxx::work& tx) {
                                tx.exec(sql);
                                return absl::OkStatus();
                              }));
      if (IsDataException(s)) return s;  // an occurred_at PostgreSQL cannot hold
      if (s.ok()) break;
    }
    MKT_RETURN_IF_ERROR(s);
    absl::MutexLock lock(&partitions_mu_);
    partitions_.insert(month);
  }
  return absl::OkStatus();
}

absl::StatusOr<BatchStats> EventStore::ProcessBatch(const std::vector<ValidatedEvent>& events,
                                                    const RuleIndex& rules, const TagSnapshot* tags,
                                                    const AudienceSnapshot* audiences) {
  BatchStats stats;
  if (events.empty()) return stats;
  MKT_RETURN_IF_ERROR(EnsurePartitions(events));

  // Conditions are evaluated before the transaction: they read only the event and tags.
  struct Candidate {
    const CompiledRule* rule;
    std::string window_key;
  };
  std::vector<std::vector<Candidate>> candidates(events.size());
  const absl::Time now = absl::Now();
  for (size_t i = 0; i < events.size(); ++i) {
    const ValidatedEvent& e = events[i];
    if (e.reversal != pb::NOT_A_REVERSAL) continue;
    auto it = rules.by_type.find(e.event_type);
    if (it == rules.by_type.end()) continue;
    for (const auto& rule : it->second) {
      if (!CoversEvent(*rule, e)) continue;
      if (!Receives(*rule, now)) continue;  // an ended rule whose late events stopped
      std::optional<std::string> window = WindowKey(*rule, e.occurred_at);
      if (!window) continue;
      if (rule->condition != nullptr &&
          !rule->condition->Matches(EventActivation(e, tags, rule->proto.org_id()))) {
        continue;
      }
      if (!InAudience(*rule, e, audiences)) continue;
      candidates[i].push_back({rule.get(), *window});
    }
  }

  const auto apply = [&](pqxx::work& tx) -> absl::Status {
    stats = BatchStats{};
    // 1. Dedupe: the first of each key in the batch, then against what is stored.
    std::set<std::string> in_batch;
    std::vector<size_t> firsts;
    std::string keys = "{", customers = "{", orgs = "{", types = "{", times = "{", amounts = "{";
    for (size_t i = 0; i < events.size(); ++i) {
      const ValidatedEvent& e = events[i];
      if (!in_batch.insert(e.event_key).second) continue;
      firsts.push_back(i);
      pg::AppendTextArrayElement(keys, e.event_key);
      pg::AppendTextArrayElement(customers, e.customer_id);
      pg::AppendTextArrayElement(orgs, e.org_id);
      pg::AppendTextArrayElement(types, e.event_type);
      pg::AppendTextArrayElement(times, PgTime(e.occurred_at));
      if (amounts.size() > 1) amounts += ',';
      amounts += std::to_string(e.amount_fen);
    }
    std::set<std::string> fresh;
    for (const auto& row : tx.exec_params(kInsertEventKeys, keys + "}", customers + "}", orgs + "}",
                                          types + "}", times + "}", amounts + "}")) {
      fresh.insert(row[0].as<std::string>());
    }
    std::vector<size_t> todo;
    for (size_t i : firsts) {
      if (fresh.count(events[i].event_key) > 0) todo.push_back(i);
    }
    stats.events = static_cast<int>(todo.size());
    stats.duplicates = static_cast<int>(events.size() - todo.size());
    if (todo.empty()) return absl::OkStatus();

    // 2. The event log.
    {
      std::string t = "{", k = "{", c = "{", o = "{", ty = "{", a = "{", p = "{", at = "{",
                  env = "{";
      for (size_t i : todo) {
        const ValidatedEvent& e = events[i];
        pg::AppendTextArrayElement(t, PgTime(e.occurred_at));
        pg::AppendTextArrayElement(k, e.event_key);
        pg::AppendTextArrayElement(c, e.customer_id);
        pg::AppendTextArrayElement(o, e.org_id);
        pg::AppendTextArrayElement(ty, e.event_type);
        if (a.size() > 1) a += ',';
        a += std::to_string(e.amount_fen);
        pg::AppendTextArrayElement(p, e.product_code);
        nlohmann::json attrs = nlohmann::json::object();
        for (const auto& [name, value] : e.attributes) attrs[name] = value;
        pg::AppendTextArrayElement(at, attrs.dump());
        pg::AppendTextArrayElement(env, e.envelope_event_id);
      }
      tx.exec_params(kInsertEventLog, t + "}", k + "}", c + "}", o + "}", ty + "}", a + "}",
                     p + "}", at + "}", env + "}");
    }

    // 3. What the reversals undo: the originals' contributions.
    std::map<std::string, std::vector<Contribution>> contributions;  // by original event key
    {
      std::vector<std::string> originals;
      for (size_t i : todo) {
        if (events[i].reversal != pb::NOT_A_REVERSAL) originals.push_back(events[i].original_key);
      }
      if (!originals.empty()) {
        for (const auto& row :
             tx.exec_params(kSelectContributions, pg::TextArrayLiteral(originals))) {
          Contribution c;
          c.event_key = row[0].as<std::string>();
          c.rule_id = row[1].as<std::string>();
          c.customer_id = row[2].as<std::string>();
          c.window_key = row[3].as<std::string>();
          c.amount_fen = row[4].as<int64_t>();
          c.refunded_fen = row[5].as<int64_t>();
          c.cancelled = row[6].as<bool>();
          contributions[c.event_key].push_back(std::move(c));
        }
      }
    }
    // The rules those contributions counted for that are not in memory: a rule whose condition
    // no longer compiles against its event type is skipped at start-up, and another replica may
    // hold a rule this one has not loaded yet. A reversal needs the kind, count threshold and
    // tiers, not the condition, so the stored definition serves.
    std::map<std::string, pb::TriggerRule, std::less<>> stored_rules;
    {
      std::set<std::string> missing;
      for (const auto& [key, list] : contributions) {
        for (const Contribution& c : list) {
          if (rules.by_id.count(c.rule_id) == 0) missing.insert(c.rule_id);
        }
      }
      if (!missing.empty()) {
        for (const auto& row :
             tx.exec_params(kSelectRuleDefinitions, pg::TextArrayLiteral(missing))) {
          auto rule = FromJson<pb::TriggerRule>(row[1].as<std::string>());
          if (rule.ok()) stored_rules.emplace(row[0].as<std::string>(), *std::move(rule));
        }
      }
    }
    // Contributions of events earlier in this same batch (a spend and its refund together).
    std::map<std::string, std::vector<Contribution>> batch_contributions;

    // What a reversal does when its original has no stored contributions (decision 030): an
    // original applied before matched nothing, so the reversal has no effect; an original not
    // seen yet is waited for. Reversals parked earlier wait for this batch's fresh events here.
    bool any_reversal = !contributions.empty();
    std::set<std::string> known_before;
    {
      std::vector<std::string> unresolved;
      for (size_t i : todo) {
        const ValidatedEvent& e = events[i];
        if (e.reversal == pb::NOT_A_REVERSAL) continue;
        any_reversal = true;
        if (contributions.count(e.original_key) == 0) unresolved.push_back(e.original_key);
      }
      if (!unresolved.empty()) {
        for (const auto& row :
             tx.exec_params(kSelectKnownEvents, pg::TextArrayLiteral(unresolved))) {
          // Keys this batch inserted are applied (or not) in order below.
          std::string key = row[0].as<std::string>();
          if (fresh.count(key) == 0) known_before.insert(std::move(key));
        }
      }
    }
    std::map<std::string, std::vector<ParkedReversal>> parked;  // by original key, oldest first
    for (const auto& row : tx.exec_params(kSelectParkedReversals, keys + "}")) {
      parked[row[1].as<std::string>()].push_back({row[0].as<std::string>(),
                                                  static_cast<pb::ReversalKind>(row[2].as<int>()),
                                                  row[3].as<int64_t>(), nullptr});
    }
    any_reversal = any_reversal || !parked.empty();

    // 4. Lock and load the aggregates every matching and reversal touches.
    std::set<Key> agg_keys;
    std::set<Key> grant_window_keys;
    for (size_t i : todo) {
      for (const Candidate& cand : candidates[i]) {
        agg_keys.insert({cand.rule->proto.rule_id(), events[i].customer_id, cand.window_key});
        agg_keys.insert({cand.rule->proto.rule_id(), events[i].customer_id, kGrantsWindow});
        grant_window_keys.insert(
            {cand.rule->proto.rule_id(), events[i].customer_id, cand.window_key});
      }
    }
    for (const auto& [key, list] : contributions) {
      for (const Contribution& c : list) {
        agg_keys.insert({c.rule_id, c.customer_id, c.window_key});
        agg_keys.insert({c.rule_id, c.customer_id, kGrantsWindow});
        grant_window_keys.insert({c.rule_id, c.customer_id, c.window_key});
      }
    }
    std::map<Key, Aggregate> aggregates;
    if (!agg_keys.empty()) {
      std::string r = "{", c = "{", w = "{";
      for (const auto& [rule, customer, window] : agg_keys) {
        pg::AppendTextArrayElement(r, rule);
        pg::AppendTextArrayElement(c, customer);
        pg::AppendTextArrayElement(w, window);
        aggregates[{rule, customer, window}] = Aggregate{};
      }
      for (const auto& row : tx.exec_params(kLockAggregates, r + "}", c + "}", w + "}")) {
        Aggregate& a = aggregates[{row[0].as<std::string>(), row[1].as<std::string>(),
                                   row[2].as<std::string>()}];
        a.count = row[3].as<int64_t>();
        a.amount_fen = row[4].as<int64_t>();
        a.tiers_granted = row[5].as<int64_t>();
      }
    }
    // Grants that a reversal may claw back, by (rule, customer, window).
    std::map<Key, std::vector<ActiveGrant>> active_grants;
    if (any_reversal) {
      std::string r = "{", c = "{", w = "{";
      for (const auto& [rule, customer, window] : grant_window_keys) {
        pg::AppendTextArrayElement(r, rule);
        pg::AppendTextArrayElement(c, customer);
        pg::AppendTextArrayElement(w, window);
      }
      for (const auto& row : tx.exec_params(kSelectActiveGrants, r + "}", c + "}", w + "}")) {
        active_grants[{row[0].as<std::string>(), row[1].as<std::string>(),
                       row[2].as<std::string>()}]
            .push_back({row[3].as<std::string>(), row[4].as<std::string>(), row[5].as<int>()});
      }
    }

    // 5. Apply each event in order.
    std::vector<NewGrant> new_grants;
    std::vector<std::string> clawbacks;
    struct NewOutcome {
      std::string event_key, rule_id, customer_id, window_key, decision;
      int64_t amount_fen;
    };
    std::vector<NewOutcome> outcomes;
    auto claw_back = [&](const Key& key, auto&& pick) {
      auto& list = active_grants[key];
      for (auto it = list.begin(); it != list.end();) {
        if (pick(*it)) {
          clawbacks.push_back(it->grant_id);
          int64_t& grants_made =
              aggregates[{std::get<0>(key), std::get<1>(key), kGrantsWindow}].count;
          if (grants_made > 0) --grants_made;
          ++stats.clawbacks;
          it = list.erase(it);
        } else {
          ++it;
        }
      }
    };
    // Takes a reversal's share back from the contributions of its original.
    auto reverse = [&](pb::ReversalKind kind, int64_t amount_fen, std::vector<Contribution>& list) {
      for (Contribution& c : list) {
        if (c.cancelled) continue;
        const Key key{c.rule_id, c.customer_id, c.window_key};
        int64_t take = c.amount_fen - c.refunded_fen;
        if (kind == pb::REFUND) take = std::min(take, amount_fen);
        c.refunded_fen += take;
        const bool cancel = kind == pb::CANCEL || c.refunded_fen >= c.amount_fen;
        c.cancelled = cancel;
        c.changed = true;
        // The rule as held in memory, else as stored. A rule found in neither (never in
        // production: a rule is stored before it is used) is of no known kind: the aggregate
        // still loses the contribution, and a cancelled event still loses its own grants.
        const pb::TriggerRule* rule = &pb::TriggerRule::default_instance();
        if (auto it = rules.by_id.find(c.rule_id); it != rules.by_id.end()) {
          rule = &it->second->proto;
        } else if (auto st = stored_rules.find(c.rule_id); st != stored_rules.end()) {
          rule = &st->second;
        } else {
          spdlog::error(
              "events: rule {} of {}'s contribution is neither loaded nor stored; its reversal "
              "claws back the event's own grants",
              c.rule_id, c.event_key);
        }
        std::vector<int> lost = ApplyReversal(*rule, cancel ? 1 : 0, take, aggregates[key]);
        const std::string original = c.event_key;
        // Exactly the tiers no longer held, whichever event crossed them; an event's own grant
        // for the kinds whose grants belong to their event (decision 010, amended).
        claw_back(key, [&](const ActiveGrant& g) {
          return ClawsBack(*rule, cancel, lost, g.event_key == original, g.tier);
        });
      }
    };
    std::set<std::string> applied_in_batch;  // this batch's events applied so far
    std::vector<std::string> unparked;       // parked rows applied now
    for (size_t i : todo) {
      const ValidatedEvent& e = events[i];
      if (e.reversal == pb::NOT_A_REVERSAL) {
        for (const Candidate& cand : candidates[i]) {
          const std::string& rule_id = cand.rule->proto.rule_id();
          const Key key{rule_id, e.customer_id, cand.window_key};
          Aggregate& agg = aggregates[key];
          Aggregate& granted = aggregates[{rule_id, e.customer_id, kGrantsWindow}];
          MatchEffect effect = ApplyMatch(cand.rule->proto, e.amount_fen, agg, granted);
          ++stats.matches;
          outcomes.push_back({e.event_key, rule_id, e.customer_id, cand.window_key, effect.decision,
                              e.amount_fen});
          batch_contributions[e.event_key].push_back({e.event_key, rule_id, e.customer_id,
                                                      cand.window_key, e.amount_fen, 0, false,
                                                      false});
          for (int tier : effect.grant_tiers) {
            NewGrant g{GrantId(e.event_key, rule_id, tier),
                       e.event_key,
                       cand.rule,
                       tier,
                       e.customer_id,
                       e.org_id,
                       cand.window_key};
            active_grants[key].push_back({g.grant_id, e.event_key, tier});
            new_grants.push_back(std::move(g));
          }
        }
        applied_in_batch.insert(e.event_key);
        // Reversals that came before this event apply now, in the order they came.
        if (auto p = parked.find(e.event_key); p != parked.end()) {
          auto bc = batch_contributions.find(e.event_key);
          for (const ParkedReversal& r : p->second) {
            if (bc != batch_contributions.end()) reverse(r.kind, r.amount_fen, bc->second);
            if (r.arrived == nullptr) unparked.push_back(r.event_key);
          }
          parked.erase(p);
        }
        continue;
      }
      // A reversal: take the original's contribution back from each rule it counted for.
      std::vector<Contribution>* list = nullptr;
      if (auto it = contributions.find(e.original_key); it != contributions.end()) {
        list = &it->second;
      } else if (auto jt = batch_contributions.find(e.original_key);
                 jt != batch_contributions.end()) {
        list = &jt->second;
      }
      if (list != nullptr) {
        reverse(e.reversal, e.amount_fen, *list);
      } else if (known_before.count(e.original_key) == 0 &&
                 applied_in_batch.count(e.original_key) == 0) {
        // The original has not arrived: the reversal waits for it.
        parked[e.original_key].push_back({e.event_key, e.reversal, e.amount_fen, &e});
      }
      // Otherwise the original matched nothing: no effect.
    }

    // 6. Write it all.
    if (!aggregates.empty()) {
      std::string r = "{", c = "{", w = "{", n = "{", a = "{", t = "{";
      for (const auto& [key, agg] : aggregates) {
        pg::AppendTextArrayElement(r, std::get<0>(key));
        pg::AppendTextArrayElement(c, std::get<1>(key));
        pg::AppendTextArrayElement(w, std::get<2>(key));
        if (n.size() > 1) {
          n += ',';
          a += ',';
          t += ',';
        }
        n += std::to_string(agg.count);
        a += std::to_string(agg.amount_fen);
        t += std::to_string(agg.tiers_granted);
      }
      tx.exec_params(kUpsertAggregates, r + "}", c + "}", w + "}", n + "}", a + "}", t + "}");
    }
    if (!outcomes.empty()) {
      std::string k = "{", r = "{", c = "{", w = "{", a = "{", d = "{";
      for (const auto& o : outcomes) {
        pg::AppendTextArrayElement(k, o.event_key);
        pg::AppendTextArrayElement(r, o.rule_id);
        pg::AppendTextArrayElement(c, o.customer_id);
        pg::AppendTextArrayElement(w, o.window_key);
        if (a.size() > 1) a += ',';
        a += std::to_string(o.amount_fen);
        pg::AppendTextArrayElement(d, o.decision);
      }
      tx.exec_params(kInsertOutcomes, k + "}", r + "}", c + "}", w + "}", a + "}", d + "}");
    }
    {
      std::string k = "{", r = "{", f = "{", x = "{";
      bool any = false;
      for (auto* source : {&contributions, &batch_contributions}) {
        for (const auto& [key, list] : *source) {
          for (const Contribution& c : list) {
            if (!c.changed) continue;
            any = true;
            pg::AppendTextArrayElement(k, c.event_key);
            pg::AppendTextArrayElement(r, c.rule_id);
            if (f.size() > 1) {
              f += ',';
              x += ',';
            }
            f += std::to_string(c.refunded_fen);
            x += c.cancelled ? "true" : "false";
          }
        }
      }
      if (any) tx.exec_params(kUpdateOutcomes, k + "}", r + "}", f + "}", x + "}");
    }
    if (!new_grants.empty()) {
      std::string id = "{", ek = "{", rule = "{", tier = "{", camp = "{", org = "{", cust = "{",
                  win = "{", asset = "{", qty = "{", cost = "{", stock = "{", units = "{",
                  expiry = "{";
      for (const NewGrant& g : new_grants) {
        const pb::RewardSpec& reward = RewardOf(g.rule->proto, g.tier);
        pg::AppendTextArrayElement(id, g.grant_id);
        pg::AppendTextArrayElement(ek, g.event_key);
        pg::AppendTextArrayElement(rule, g.rule->proto.rule_id());
        pg::AppendTextArrayElement(camp, g.rule->proto.campaign_id());
        pg::AppendTextArrayElement(org, g.org_id);
        pg::AppendTextArrayElement(cust, g.customer_id);
        pg::AppendTextArrayElement(win, g.window_key);
        pg::AppendTextArrayElement(stock, reward.stock_template_id());
        for (auto [s, v] : std::initializer_list<std::pair<std::string*, int64_t>>{
                 {&tier, g.tier},
                 {&asset, reward.asset()},
                 {&qty, reward.quantity()},
                 {&cost, reward.budget_cost_fen()},
                 {&units, reward.stock_units()},
                 {&expiry, reward.points_expiry_days() > 0 ? reward.points_expiry_days() : 365}}) {
          if (s->size() > 1) *s += ',';
          *s += std::to_string(v);
        }
      }
      tx.exec_params(kInsertGrants, id + "}", ek + "}", rule + "}", tier + "}", camp + "}",
                     org + "}", cust + "}", win + "}", asset + "}", qty + "}", cost + "}",
                     stock + "}", units + "}", expiry + "}");
      stats.grants = static_cast<int>(new_grants.size());
    }
    if (!clawbacks.empty()) tx.exec_params(kRequestReversal, pg::TextArrayLiteral(clawbacks));
    if (!unparked.empty()) tx.exec_params(kDeleteParkedReversals, pg::TextArrayLiteral(unparked));
    stats.unparked = static_cast<int>(unparked.size());
    {
      std::string k = "{", o = "{", r = "{", a = "{", c = "{", g = "{";
      bool any = false;
      for (const auto& [original, list] : parked) {
        for (const ParkedReversal& p : list) {
          if (p.arrived == nullptr) continue;  // parked before this batch: stored already
          any = true;
          ++stats.parked;
          pg::AppendTextArrayElement(k, p.event_key);
          pg::AppendTextArrayElement(o, original);
          pg::AppendTextArrayElement(c, p.arrived->customer_id);
          pg::AppendTextArrayElement(g, p.arrived->org_id);
          if (r.size() > 1) {
            r += ',';
            a += ',';
          }
          r += std::to_string(static_cast<int>(p.kind));
          a += std::to_string(p.amount_fen);
        }
      }
      if (any) {
        tx.exec_params(kInsertParkedReversals, k + "}", o + "}", r + "}", a + "}", c + "}",
                       g + "}");
      }
    }
    return absl::OkStatus();
  };
  absl::Status status = pg::WithTransaction(pool_, RefusingData(apply));
  if (!status.ok()) return status;
  return stats;
}

namespace {

GrantRow ReadGrantRow(const pqxx::row& row) {
  GrantRow g;
  g.seq = row[0].as<int64_t>();
  g.grant_id = row[1].as<std::string>();
  g.event_key = row[2].as<std::string>();
  g.rule_id = row[3].as<std::string>();
  g.tier = row[4].as<int>();
  g.campaign_id = row[5].as<std::string>();
  g.org_id = row[6].as<std::string>();
  g.customer_id = row[7].as<std::string>();
  g.reward.set_asset(static_cast<::marketing::rewards::v1::Asset>(row[8].as<int>()));
  g.reward.set_quantity(row[9].as<int64_t>());
  g.reward.set_budget_cost_fen(row[10].as<int64_t>());
  g.reward.set_stock_template_id(row[11].as<std::string>());
  g.reward.set_stock_units(row[12].as<int64_t>());
  g.reward.set_points_expiry_days(row[13].as<int>());
  g.state = row[14].as<std::string>();
  g.granted = row[15].as<bool>();
  g.attempts = row[16].as<int>();
  const absl::Time now = absl::Now();
  g.created = now - absl::Microseconds(row[17].as<int64_t>());
  if (!row[18].is_null()) g.unfunded_since = now - absl::Microseconds(row[18].as<int64_t>());
  return g;
}

}  // namespace

absl::StatusOr<int64_t> EventStore::MaxGrantSeq() {
  int64_t max_seq = 0;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    max_seq = tx.exec1(kSelectMaxGrantSeq)[0].as<int64_t>();
    return absl::OkStatus();
  }));
  return max_seq;
}

namespace {

// Reads due rows with `select` and, in the same transaction, cancels those that are reversals of
// grants never sent (never attempted, created after `unsent_after_seq`); returns the others.
template <class... Params>
absl::Status ReadDue(pg::Pool& pool, int64_t unsent_after_seq, std::vector<GrantRow>& out,
                     const char* select, const Params&... params) {
  return pg::WithTransaction(pool, [&](pqxx::work& tx) {
    out.clear();
    std::vector<int64_t> unsent;
    for (const auto& row : tx.exec_params(select, params...)) {
      GrantRow g = ReadGrantRow(row);
      if (g.state == "reverse_pending" && !g.granted && g.attempts == 0 &&
          g.seq > unsent_after_seq) {
        unsent.push_back(g.seq);
      }
      out.push_back(std::move(g));
    }
    if (unsent.empty()) return absl::OkStatus();
    std::set<int64_t> cancelled;
    for (const auto& row : tx.exec_params(kCancelUnsent, pg::IntArrayLiteral(unsent))) {
      cancelled.insert(row[0].as<int64_t>());
    }
    std::erase_if(out, [&](const GrantRow& g) { return cancelled.count(g.seq) > 0; });
    return absl::OkStatus();
  });
}

}  // namespace

absl::StatusOr<std::vector<GrantRow>> EventStore::ClaimDueAfter(int64_t after_seq,
                                                                int64_t unsent_after_seq,
                                                                int limit) {
  std::vector<GrantRow> out;
  // Rows above the cursor were never handed to this sender, so none of them is held.
  MKT_RETURN_IF_ERROR(ReadDue(pool_, unsent_after_seq, out, kSelectDueAfter, after_seq, limit));
  return out;
}

absl::StatusOr<std::vector<GrantRow>> EventStore::ClaimDueAgain(int64_t up_to_seq,
                                                                const std::vector<int64_t>& held,
                                                                int64_t unsent_after_seq,
                                                                int limit) {
  std::vector<GrantRow> out;
  // Held rows are not read, so never cancelled under a call in flight.
  MKT_RETURN_IF_ERROR(ReadDue(pool_, unsent_after_seq, out, kSelectDueAgain, up_to_seq,
                              pg::IntArrayLiteral(held), limit));
  return out;
}

absl::Status EventStore::Finish(const std::vector<GrantResult>& results) {
  if (results.empty()) return absl::OkStatus();
  std::string ids = "{", kinds = "{", reasons = "{", unfunded = "{";
  std::vector<std::string> rejected;
  for (const GrantResult& r : results) {
    pg::AppendTextArrayElement(ids, r.grant_id);
    if (unfunded.size() > 1) unfunded += ',';
    unfunded += r.unfunded ? 't' : 'f';
    const char* kind = "retry";
    switch (r.kind) {
      case GrantResult::Kind::kGranted:
        kind = "granted";
        break;
      case GrantResult::Kind::kRejected:
        kind = "rejected";
        rejected.push_back(r.grant_id);
        break;
      case GrantResult::Kind::kReversed:
        kind = "reversed";
        break;
      case GrantResult::Kind::kReverseFailed:
        kind = "reverse_failed";
        break;
      case GrantResult::Kind::kRetry:
        break;
    }
    pg::AppendTextArrayElement(kinds, kind);
    pg::AppendTextArrayElement(reasons, StorableText(r.reason, 500));
  }
  return pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    // A grant the ledger refuses for a business reason (budget or stock exhausted) gives back
    // what deciding it took: its count towards per_customer_total and its tier's bit, so that a
    // later matching event can grant (decision 010, amended). Only a pending grant becomes
    // rejected: a reversal requested meanwhile gave them back already, and a refusal recorded
    // twice gives back once. The aggregates are locked before the grant rows, as the batch
    // transaction does, so that neither gives back what the other just did.
    std::map<Key, int64_t> give_back;  // window rows: the tier bits; '*grants' rows: the count
    if (!rejected.empty()) {
      const std::string rejected_ids = pg::TextArrayLiteral(rejected);
      std::set<Key> keys;
      for (const auto& row : tx.exec_params(kSelectPendingGrantWindows, rejected_ids)) {
        const std::string rule = row[0].as<std::string>(), customer = row[1].as<std::string>();
        keys.insert({rule, customer, row[2].as<std::string>()});
        keys.insert({rule, customer, kGrantsWindow});
      }
      if (!keys.empty()) {
        std::string r = "{", c = "{", w = "{";
        for (const auto& [rule, customer, window] : keys) {
          pg::AppendTextArrayElement(r, rule);
          pg::AppendTextArrayElement(c, customer);
          pg::AppendTextArrayElement(w, window);
        }
        tx.exec_params(kLockAggregates, r + "}", c + "}", w + "}");
        for (const auto& row : tx.exec_params(kLockPendingGrants, rejected_ids)) {
          const std::string rule = row[0].as<std::string>(), customer = row[1].as<std::string>();
          const int tier = row[3].as<int>();
          ++give_back[{rule, customer, kGrantsWindow}];
          if (tier >= 0 && tier < 63) {
            give_back[{rule, customer, row[2].as<std::string>()}] |= int64_t{1} << tier;
          }
        }
      }
    }
    tx.exec_params(kFinishGrants, ids + "}", kinds + "}", reasons + "}", unfunded + "}");
    if (!give_back.empty()) {
      std::string r = "{", c = "{", w = "{", n = "{", b = "{";
      for (const auto& [key, value] : give_back) {
        const bool count = std::get<2>(key) == kGrantsWindow;
        pg::AppendTextArrayElement(r, std::get<0>(key));
        pg::AppendTextArrayElement(c, std::get<1>(key));
        pg::AppendTextArrayElement(w, std::get<2>(key));
        if (n.size() > 1) {
          n += ',';
          b += ',';
        }
        n += std::to_string(count ? value : 0);
        b += std::to_string(count ? 0 : value);
      }
      tx.exec_params(kGiveBackGrants, r + "}", c + "}", w + "}", n + "}", b + "}");
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<pb::LoggedEvent>> EventStore::ListCustomerEvents(
    const pb::ListCustomerEventsRequest& request) {
  if (request.customer_id().empty())
    return InvalidArgument("customer_id", "customer_id is required");
  const absl::Time from = request.has_from() ? absl::FromUnixSeconds(request.from().seconds())
                                             : absl::FromUnixSeconds(0);
  const absl::Time to = request.has_to() ? absl::FromUnixSeconds(request.to().seconds())
                                         : absl::FromUnixSeconds(4102444800);  // 2100
  const int limit = request.limit() > 0 ? std::min(request.limit(), 1000) : 100;
  std::vector<pb::LoggedEvent> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const auto& row : tx.exec_params(kListCustomerEvents, request.customer_id(),
                                          request.org_id(), PgTime(from), PgTime(to), limit)) {
      pb::LoggedEvent e;
      e.set_event_key(row[0].as<std::string>());
      e.set_event_type(row[1].as<std::string>());
      e.set_customer_id(row[2].as<std::string>());
      e.set_org_id(row[3].as<std::string>());
      const int64_t micros = row[4].as<int64_t>();
      e.mutable_occurred_at()->set_seconds(micros / 1000000);
      e.mutable_occurred_at()->set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
      e.set_amount_fen(row[5].as<int64_t>());
      e.set_product_code(row[6].as<std::string>());
      auto attrs = nlohmann::json::parse(row[7].as<std::string>(), nullptr, false);
      if (attrs.is_object()) {
        for (auto it = attrs.begin(); it != attrs.end(); ++it) {
          if (it.value().is_string()) (*e.mutable_attributes())[it.key()] = it.value();
        }
      }
      out.push_back(std::move(e));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::optional<ValidatedEvent>> EventStore::LoadEvent(
    const std::string& event_key, const EventTypeRegistry& types) {
  std::optional<pb::BusinessEvent> found;
  std::string envelope;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    auto rows = tx.exec_params(kSelectLoggedEvent, event_key);
    if (rows.empty()) return absl::OkStatus();
    const auto& row = rows[0];
    pb::BusinessEvent e;
    const std::string key = row[0].as<std::string>();
    const size_t colon = key.find(':');
    e.set_source(key.substr(0, colon));
    e.set_source_event_id(colon == std::string::npos ? "" : key.substr(colon + 1));
    e.set_event_type(row[1].as<std::string>());
    e.set_customer_id(row[2].as<std::string>());
    e.set_org_id(row[3].as<std::string>());
    const int64_t micros = row[4].as<int64_t>();
    e.mutable_occurred_at()->set_seconds(micros / 1000000);
    e.mutable_occurred_at()->set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
    e.set_amount_fen(row[5].as<int64_t>());
    e.set_product_code(row[6].as<std::string>());
    auto attrs = nlohmann::json::parse(row[7].as<std::string>(), nullptr, false);
    if (attrs.is_object()) {
      for (auto it = attrs.begin(); it != attrs.end(); ++it) {
        if (it.value().is_string()) (*e.mutable_attributes())[it.key()] = it.value();
      }
    }
    envelope = row[8].as<std::string>();
    found = std::move(e);
    return absl::OkStatus();
  }));
  if (!found) return std::optional<ValidatedEvent>();
  MKT_ASSIGN_OR_RETURN(ValidatedEvent v, types.Validate(*found, envelope));
  return std::optional<ValidatedEvent>(std::move(v));
}

absl::StatusOr<std::string> EventStore::LoadDecision(const std::string& event_key,
                                                     const std::string& rule_id) {
  std::string decision;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    auto rows = tx.exec_params(kSelectDecision, event_key, rule_id);
    decision = rows.empty() ? "" : rows[0][0].as<std::string>();
    return absl::OkStatus();
  }));
  return decision;
}

absl::StatusOr<Aggregate> EventStore::LoadAggregate(const std::string& rule_id,
                                                    const std::string& customer_id,
                                                    const std::string& window_key) {
  Aggregate a;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    auto rows = tx.exec_params(kSelectAggregate, rule_id, customer_id, window_key);
    if (!rows.empty()) {
      a.count = rows[0][0].as<int64_t>();
      a.amount_fen = rows[0][1].as<int64_t>();
      a.tiers_granted = rows[0][2].as<int64_t>();
    }
    return absl::OkStatus();
  }));
  return a;
}

absl::StatusOr<std::vector<pb::GrantOutcome>> EventStore::ListGrants(const std::string& event_key,
                                                                     const std::string& rule_id) {
  std::vector<pb::GrantOutcome> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const auto& row : tx.exec_params(kSelectGrantsOf, event_key, rule_id)) {
      pb::GrantOutcome g;
      g.set_grant_id(row[0].as<std::string>());
      g.set_rule_id(row[1].as<std::string>());
      g.set_tier(row[2].as<int>());
      g.set_state(row[3].as<std::string>());
      g.set_reason(row[4].as<std::string>());
      g.set_event_key(row[5].as<std::string>());
      out.push_back(std::move(g));
    }
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace mkt::events
