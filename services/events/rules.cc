#include "services/events/rules.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "libs/auth/crypto.h"
#include "libs/core/money.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/tenancy/tenancy.h"
#include "nlohmann/json.hpp"

namespace mkt::events {
namespace {

absl::Time FromProto(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

// a - b held at 0 (counts and amounts never go below it), without overflow whatever is stored.
int64_t SubtractDownToZero(int64_t a, int64_t b) {
  int64_t difference;
  if (__builtin_sub_overflow(a, b, &difference)) {
    return b < 0 ? std::numeric_limits<int64_t>::max() : 0;
  }
  return std::max<int64_t>(0, difference);
}

absl::Status CheckReward(const pb::RewardSpec& reward, const std::string& field) {
  if (reward.asset() != ::marketing::rewards::v1::POINTS &&
      reward.asset() != ::marketing::rewards::v1::CASH_FEN &&
      reward.asset() != ::marketing::rewards::v1::LOTTERY_CHANCE) {
    return InvalidArgument(field + ".asset", "a reward is POINTS, CASH_FEN or LOTTERY_CHANCE");
  }
  if (reward.quantity() <= 0) return InvalidArgument(field + ".quantity", "quantity must be > 0");
  if (reward.budget_cost_fen() < 0 || reward.stock_units() < 0) {
    return InvalidArgument(field, "costs cannot be negative");
  }
  return absl::OkStatus();
}

// What the segments service would accept in a BatchIsMember call.
absl::Status CheckAudience(const pb::Audience& audience) {
  if (audience.include_size() + audience.exclude_size() > 100) {
    return InvalidArgument("audience", "an audience names at most 100 segments");
  }
  for (const auto* list : {&audience.include(), &audience.exclude()}) {
    const char* name = list == &audience.include() ? "include" : "exclude";
    for (int i = 0; i < list->size(); ++i) {
      const pb::SegmentRef& ref = list->Get(i);
      if (ref.segment_id().empty() || ref.segment_id().size() > 64 ||
          PrintableUtf8Length(ref.segment_id()) < 0 || ref.version() < 0) {
        return InvalidArgument(absl::StrCat("audience.", name, "[", i, "]"),
                               "a segment id of 1..64 printable characters and a version >= 0");
      }
    }
  }
  return absl::OkStatus();
}

// The rule's org and segments, e.g. "bank-a|+seg-1@3|-seg-2@1"; empty without segments.
std::string AudienceKey(const pb::TriggerRule& rule) {
  const pb::Audience& a = rule.audience();
  if (a.include().empty() && a.exclude().empty()) return "";
  std::string key = rule.org_id();
  for (const auto& ref : a.include())
    absl::StrAppend(&key, "|+", ref.segment_id(), "@", ref.version());
  for (const auto& ref : a.exclude())
    absl::StrAppend(&key, "|-", ref.segment_id(), "@", ref.version());
  return key;
}

// A moment as stored in a lifecycle: microseconds since the epoch, null for InfiniteFuture.
nlohmann::json MomentJson(absl::Time t) {
  if (t == absl::InfiniteFuture()) return nullptr;
  return absl::ToUnixMicros(t);
}

absl::StatusOr<absl::Time> MomentFromJson(const nlohmann::json& j) {
  if (j.is_null()) return absl::InfiniteFuture();
  if (!j.is_number_integer()) return InvalidArgument("lifecycle", "a moment is an integer");
  return absl::FromUnixMicros(j.get<int64_t>());
}

}  // namespace

std::string LifecycleToJson(const RuleLifecycle& lifecycle) {
  if (lifecycle == RuleLifecycle{}) return "";
  nlohmann::json j = nlohmann::json::object();
  j["ended"] = lifecycle.ended;
  j["ended_at"] = MomentJson(lifecycle.ended_at);
  nlohmann::json paused = nlohmann::json::array();
  for (const auto& [from, to] : lifecycle.paused) {
    paused.push_back(nlohmann::json::array({MomentJson(from), MomentJson(to)}));
  }
  j["paused"] = std::move(paused);
  return j.dump();
}

absl::StatusOr<RuleLifecycle> LifecycleFromJson(std::string_view json) {
  RuleLifecycle lifecycle;
  if (json.empty()) return lifecycle;
  const nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return InvalidArgument("lifecycle", "not a JSON object");
  if (auto it = j.find("ended"); it != j.end() && it->is_boolean()) {
    lifecycle.ended = it->get<bool>();
  }
  if (auto it = j.find("ended_at"); it != j.end()) {
    MKT_ASSIGN_OR_RETURN(lifecycle.ended_at, MomentFromJson(*it));
  }
  if (auto it = j.find("paused"); it != j.end() && it->is_array()) {
    for (const nlohmann::json& period : *it) {
      if (!period.is_array() || period.size() != 2) {
        return InvalidArgument("lifecycle", "a paused period is [from, to]");
      }
      MKT_ASSIGN_OR_RETURN(absl::Time from, MomentFromJson(period[0]));
      MKT_ASSIGN_OR_RETURN(absl::Time to, MomentFromJson(period[1]));
      lifecycle.paused.emplace_back(from, to);
    }
  }
  return lifecycle;
}

absl::StatusOr<std::shared_ptr<const CompiledRule>> CompileRule(const pb::TriggerRule& rule,
                                                                const EventTypeRegistry& types) {
  if (rule.rule_id().empty() || rule.rule_id().size() > 64) {
    return InvalidArgument("rule_id", "rule_id must be 1..64 characters");
  }
  if (rule.campaign_id().empty() || rule.org_id().empty()) {
    return InvalidArgument("campaign_id", "a rule belongs to a campaign and an org");
  }
  std::shared_ptr<const EventTypeInfo> type = types.Find(rule.event_type());
  if (type == nullptr) {
    return InvalidArgument("event_type", "unknown event type \"" + rule.event_type() + "\"");
  }
  if (type->proto().reversal() != pb::NOT_A_REVERSAL) {
    return InvalidArgument("event_type", "a reversal event type cannot trigger grants");
  }
  auto compiled = std::make_shared<CompiledRule>();
  compiled->proto = rule;
  compiled->type_version = type->proto().version();
  if (rule.has_start_time()) compiled->start = FromProto(rule.start_time());
  if (rule.has_end_time()) compiled->end = FromProto(rule.end_time());
  if (compiled->end <= compiled->start) {
    return InvalidArgument("end_time", "end_time must be after start_time");
  }
  if (!rule.condition().empty()) {
    auto program = expr::CompileExpression(rule.condition(), *type);
    if (!program.ok()) {
      return InvalidArgument("condition", std::string(program.status().message()));
    }
    compiled->condition = *std::move(program);
  }
  switch (rule.kind()) {
    case pb::EVERY_MATCH:
    case pb::FIRST_TIME:
      MKT_RETURN_IF_ERROR(CheckReward(rule.reward(), "reward"));
      break;
    case pb::COUNT_AT_LEAST:
      if (rule.count_threshold() < 1) {
        return InvalidArgument("count_threshold", "COUNT_AT_LEAST needs count_threshold >= 1");
      }
      MKT_RETURN_IF_ERROR(CheckReward(rule.reward(), "reward"));
      break;
    case pb::CUMULATIVE_AMOUNT: {
      if (rule.tiers_size() < 1 || rule.tiers_size() > 62) {
        return InvalidArgument("tiers", "CUMULATIVE_AMOUNT needs 1..62 tiers");
      }
      int64_t previous = 0;
      for (int i = 0; i < rule.tiers_size(); ++i) {
        if (rule.tiers(i).threshold_fen() <= previous) {
          return InvalidArgument(absl::StrCat("tiers[", i, "].threshold_fen"),
                                 "tier thresholds must be positive and increasing");
        }
        previous = rule.tiers(i).threshold_fen();
        MKT_RETURN_IF_ERROR(
            CheckReward(rule.tiers(i).reward(), absl::StrCat("tiers[", i, "].reward")));
      }
      break;
    }
    default:
      return InvalidArgument("kind", "a rule needs a kind");
  }
  MKT_RETURN_IF_ERROR(CheckAudience(rule.audience()));
  compiled->audience_key = AudienceKey(rule);
  if (rule.per_customer_total() < 0) {
    return InvalidArgument("per_customer_total", "per_customer_total cannot be negative");
  }
  return std::shared_ptr<const CompiledRule>(std::move(compiled));
}

std::shared_ptr<const CompiledRule> HoldRule(const pb::TriggerRule& rule,
                                             const RuleLifecycle& lifecycle,
                                             absl::Duration late_events,
                                             const EventTypeRegistry& types, absl::Status* status) {
  absl::StatusOr<std::shared_ptr<const CompiledRule>> compiled = CompileRule(rule, types);
  *status = compiled.status();
  std::shared_ptr<CompiledRule> held;
  if (compiled.ok()) {
    held = std::make_shared<CompiledRule>(**compiled);
  } else {
    held = std::make_shared<CompiledRule>();
    held->proto = rule;
    held->unfit = std::string(compiled.status().message());
    if (held->unfit.empty()) held->unfit = "it does not compile";
    if (auto type = types.Find(rule.event_type()); type != nullptr) {
      held->type_version = type->proto().version();  // compiled again at its next version
    }
  }
  held->lifecycle = lifecycle;
  if (lifecycle.ended) {
    held->end = std::min(held->end, lifecycle.ended_at);
    // Ended at no stated moment, with no window end: no late event can be told from a new one.
    if (held->end != absl::InfiniteFuture()) held->late_until = held->end + late_events;
  }
  return held;
}

bool Receives(const CompiledRule& rule, absl::Time now) {
  if (!rule.unfit.empty()) return false;
  return rule.proto.active() || now < rule.late_until;
}

RuleBook::RuleBook() : index_(std::make_shared<RuleIndex>()) {}

std::shared_ptr<const RuleIndex> RuleBook::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return index_;
}

bool RuleBook::Upsert(std::shared_ptr<const CompiledRule> rule) {
  absl::MutexLock lock(&mu_);
  const std::string& id = rule->proto.rule_id();
  auto held = index_->by_id.find(id);
  if (held != index_->by_id.end() && held->second->proto.revision() > rule->proto.revision()) {
    return false;
  }
  auto next = std::make_shared<RuleIndex>(*index_);
  next->by_id[id] = rule;
  for (auto& [type, rules] : next->by_type) {
    std::erase_if(rules, [&](const auto& r) { return r->proto.rule_id() == id; });
  }
  if (Receives(*rule, absl::Now())) next->by_type[rule->proto.event_type()].push_back(rule);
  index_ = std::move(next);
  return true;
}

size_t RuleBook::DropExpired(absl::Time now) {
  absl::MutexLock lock(&mu_);
  size_t expired = 0;
  for (const auto& [type, rules] : index_->by_type) {
    for (const auto& rule : rules) expired += Receives(*rule, now) ? 0 : 1;
  }
  if (expired == 0) return 0;
  auto next = std::make_shared<RuleIndex>(*index_);
  for (auto& [type, rules] : next->by_type) {
    std::erase_if(rules, [&](const auto& r) { return !Receives(*r, now); });
  }
  index_ = std::move(next);
  return expired;
}

size_t RuleBook::active_count() const {
  auto snapshot = Snapshot();
  size_t n = 0;
  for (const auto& [type, rules] : snapshot->by_type) n += rules.size();
  return n;
}

std::optional<std::string> WindowKey(const CompiledRule& rule, absl::Time occurred_at) {
  if (occurred_at < rule.start || occurred_at >= rule.end) return std::nullopt;
  for (const auto& [from, to] : rule.lifecycle.paused) {
    if (occurred_at >= from && occurred_at < to) return std::nullopt;
  }
  static const absl::TimeZone kChina = absl::FixedTimeZone(8 * 3600);
  switch (rule.proto.window()) {
    case pb::CALENDAR_MONTH:
      return absl::FormatTime("m:%Y-%m", occurred_at, kChina);
    case pb::CALENDAR_DAY:
      return absl::FormatTime("d:%Y-%m-%d", occurred_at, kChina);
    default:
      return std::string("c");
  }
}

void AudienceSnapshot::Put(std::string_view audience_key, std::string_view customer_id, bool in) {
  in_[{std::string(audience_key), std::string(customer_id)}] = in;
}

std::optional<bool> AudienceSnapshot::Find(std::string_view audience_key,
                                           std::string_view customer_id) const {
  auto it = in_.find(std::make_pair(std::string(audience_key), std::string(customer_id)));
  if (it == in_.end()) return std::nullopt;
  return it->second;
}

absl::Status EveryoneInAudiences::Fetch(const AudienceQueries& queries,
                                        AudienceSnapshot& into) const {
  for (const auto& [key, query] : queries) {
    for (const std::string& customer : query.customers) into.Put(key, customer, true);
  }
  return absl::OkStatus();
}

AudienceQueries AudiencesToCheck(const std::vector<ValidatedEvent>& events,
                                 const RuleIndex& rules) {
  AudienceQueries queries;
  for (const ValidatedEvent& e : events) {
    if (e.reversal != pb::NOT_A_REVERSAL) continue;
    auto it = rules.by_type.find(e.event_type);
    if (it == rules.by_type.end()) continue;
    for (const auto& rule : it->second) {
      if (rule->audience_key.empty()) continue;
      if (!CoversEvent(*rule, e) || !WindowKey(*rule, e.occurred_at)) continue;
      auto [q, fresh] = queries.try_emplace(rule->audience_key);
      if (fresh) {
        q->second.org_id = rule->proto.org_id();
        q->second.audience = rule->proto.audience();
      }
      q->second.customers.insert(e.customer_id);
    }
  }
  return queries;
}

bool InAudience(const CompiledRule& rule, const ValidatedEvent& event,
                const AudienceSnapshot* audiences) {
  if (rule.audience_key.empty()) return true;
  if (audiences == nullptr) return false;
  return audiences->Find(rule.audience_key, event.customer_id).value_or(false);
}

bool CoversEvent(const CompiledRule& rule, const ValidatedEvent& event) {
  return tenancy::Covers(rule.proto.org_id(), event.org_id);
}

TagQueries TagsToFetch(const std::vector<ValidatedEvent>& events, const RuleIndex& rules) {
  TagQueries queries;
  for (const ValidatedEvent& e : events) {
    if (e.reversal != pb::NOT_A_REVERSAL) continue;
    auto it = rules.by_type.find(e.event_type);
    if (it == rules.by_type.end()) continue;
    for (const auto& rule : it->second) {
      if (rule->condition == nullptr || rule->condition->tags().empty()) continue;
      if (!CoversEvent(*rule, e) || !WindowKey(*rule, e.occurred_at)) continue;
      TagQuery& query = queries[rule->proto.org_id()];
      query.customers.insert(e.customer_id);
      query.tags.insert(rule->condition->tags().begin(), rule->condition->tags().end());
    }
  }
  return queries;
}

MatchEffect ApplyMatch(const pb::TriggerRule& rule, int64_t amount_fen, Aggregate& agg,
                       Aggregate& grants) {
  MatchEffect effect;
  const int64_t count_before = agg.count;
  // Saturating: validation bounds one event's amount (kMaxEventAmountFen), but a window's sum of
  // many such amounts, or an aggregate stored before the bound, could pass the int64 maximum.
  agg.count = SaturatingAdd(agg.count, 1);
  agg.amount_fen = SaturatingAdd(agg.amount_fen, amount_fen);
  std::vector<int> due;
  switch (rule.kind()) {
    case pb::EVERY_MATCH:
      due.push_back(0);
      effect.decision = "matched";
      break;
    case pb::FIRST_TIME:
      if (count_before == 0 && (agg.tiers_granted & 1) == 0) {
        due.push_back(0);
        effect.decision = "first matching event";
      } else {
        effect.decision = absl::StrCat("not the first: matching event number ", agg.count);
      }
      break;
    case pb::COUNT_AT_LEAST:
      if (agg.count >= rule.count_threshold() && (agg.tiers_granted & 1) == 0) {
        due.push_back(0);
        effect.decision = absl::StrCat("count ", agg.count, " reached ", rule.count_threshold());
      } else {
        effect.decision = (agg.tiers_granted & 1) != 0
                              ? absl::StrCat("count ", agg.count, ": already granted this window")
                              : absl::StrCat("count ", agg.count, " of ", rule.count_threshold());
      }
      break;
    case pb::CUMULATIVE_AMOUNT:
      for (int i = 0; i < rule.tiers_size(); ++i) {
        if (agg.amount_fen >= rule.tiers(i).threshold_fen() &&
            (agg.tiers_granted & (int64_t{1} << i)) == 0) {
          due.push_back(i);
        }
      }
      effect.decision = absl::StrCat("cumulative ", agg.amount_fen, " fen");
      break;
    default:
      break;
  }
  for (int tier : due) {
    if (rule.per_customer_total() > 0 && grants.count >= rule.per_customer_total()) {
      absl::StrAppend(&effect.decision, "; per-customer limit ", rule.per_customer_total(),
                      " reached");
      // The tier stays unearned so that a later rule change (higher limit) can grant it.
      break;
    }
    grants.count = SaturatingAdd(grants.count, 1);
    if (rule.kind() != pb::EVERY_MATCH) agg.tiers_granted |= int64_t{1} << tier;
    effect.grant_tiers.push_back(tier);
    absl::StrAppend(&effect.decision, "; grants tier ", tier);
  }
  return effect;
}

std::vector<int> ApplyReversal(const pb::TriggerRule& rule, int64_t count, int64_t amount_fen,
                               Aggregate& agg) {
  agg.count = SubtractDownToZero(agg.count, count);
  agg.amount_fen = SubtractDownToZero(agg.amount_fen, amount_fen);
  std::vector<int> lost;
  if (rule.kind() == pb::COUNT_AT_LEAST) {
    if ((agg.tiers_granted & 1) != 0 && agg.count < rule.count_threshold()) {
      agg.tiers_granted &= ~int64_t{1};
      lost.push_back(0);
    }
  } else if (rule.kind() == pb::CUMULATIVE_AMOUNT) {
    for (int i = 0; i < rule.tiers_size(); ++i) {
      const int64_t bit = int64_t{1} << i;
      if ((agg.tiers_granted & bit) != 0 && agg.amount_fen < rule.tiers(i).threshold_fen()) {
        agg.tiers_granted &= ~bit;
        lost.push_back(i);
      }
    }
  } else if (rule.kind() == pb::FIRST_TIME) {
    // Every counted event was cancelled (the grant went with the one that had it): the customer
    // has had no first event in this window, so the next one is the first.
    if ((agg.tiers_granted & 1) != 0 && agg.count == 0) {
      agg.tiers_granted &= ~int64_t{1};
      lost.push_back(0);
    }
  }
  return lost;
}

bool ClawsBack(const pb::TriggerRule& rule, bool cancelled, const std::vector<int>& lost,
               bool grant_of_reversed_event, int tier) {
  const bool tier_lost = std::find(lost.begin(), lost.end(), tier) != lost.end();
  switch (rule.kind()) {
    case pb::COUNT_AT_LEAST:
    case pb::CUMULATIVE_AMOUNT:
      return tier_lost;
    case pb::FIRST_TIME:
      return (cancelled && grant_of_reversed_event) || tier_lost;
    default:  // EVERY_MATCH, or a rule whose definition is not known
      return cancelled && grant_of_reversed_event;
  }
}

const pb::RewardSpec& RewardOf(const pb::TriggerRule& rule, int tier) {
  if (rule.kind() == pb::CUMULATIVE_AMOUNT && tier >= 0 && tier < rule.tiers_size()) {
    return rule.tiers(tier).reward();
  }
  return rule.reward();
}

std::string GrantId(std::string_view event_key, std::string_view rule_id, int tier) {
  return "evg-" + auth::Sha256Hex(absl::StrCat(AsAbsl(event_key), "|", AsAbsl(rule_id), "|", tier))
                      .substr(0, 40);
}

std::string ReversalId(std::string_view grant_id) {
  return "evr-" + std::string(grant_id.substr(4));
}

}  // namespace mkt::events
