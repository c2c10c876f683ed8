#include "services/events/events_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "libs/core/status.h"
#include "libs/kafka/outbox.h"
#include "libs/log/log.h"
#include "libs/metrics/metrics.h"
#include "prometheus/counter.h"
#include "spdlog/spdlog.h"

namespace mkt::events {
namespace {

// Reversals that arrived before their original, and those applied once it came (decision 030).
struct WaitingReversalMetrics {
  prometheus::Counter& parked;
  prometheus::Counter& applied;
};

WaitingReversalMetrics& WaitingReversals() {
  static WaitingReversalMetrics* m = [] {
    auto& family = prometheus::BuildCounter()
                       .Name("mkt_events_waiting_reversals_total")
                       .Help(
                           "Reversals that arrived before their original (what=parked) and "
                           "those applied when it came (what=applied)")
                       .Register(metrics::Registry());
    return new WaitingReversalMetrics{family.Add({{"what", "parked"}}),
                                      family.Add({{"what", "applied"}})};
  }();
  return *m;
}

// Rules held unfit: their definition does not compile (decision 010, amended 2026-11-29, later), by
// where the definition came from (campaign_change, type_change, stored).
prometheus::Counter& UnfitRules(const char* source) {
  static auto& family = prometheus::BuildCounter()
                            .Name("mkt_events_unfit_rules_total")
                            .Help(
                                "Rule revisions held inactive because their definition does not "
                                "compile (source=campaign_change, type_change, stored)")
                            .Register(metrics::Registry());
  return family.Add({{"source", source}});
}

namespace cpb = ::marketing::campaigns::v1;

absl::Time TimeOf(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

absl::Status CheckScope(const tenancy::Actor& actor, const std::string& org) {
  if (!tenancy::Covers(actor.org_id, org)) {
    return Error(absl::StatusCode::kPermissionDenied, ::marketing::common::v1::PERMISSION_DENIED,
                 "org " + org + " is outside the operator's organisation");
  }
  return absl::OkStatus();
}

// Applies [begin, end), whose apply failed with `failure` (a data exception), in two halves.
absl::Status Bisect(size_t begin, size_t end, const absl::Status& failure,
                    const std::function<absl::Status(size_t, size_t)>& apply,
                    const std::function<void(size_t, const absl::Status&)>& refused) {
  if (end - begin == 1) {
    refused(begin, failure);
    return absl::OkStatus();
  }
  const size_t middle = begin + (end - begin) / 2;
  for (auto [from, to] : {std::pair{begin, middle}, std::pair{middle, end}}) {
    absl::Status status = apply(from, to);
    if (IsDataException(status)) status = Bisect(from, to, status, apply, refused);
    MKT_RETURN_IF_ERROR(status);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ApplyIsolatingRefusedEvents(
    size_t count, const std::function<absl::Status(size_t begin, size_t end)>& apply,
    const std::function<void(size_t index, const absl::Status& status)>& refused) {
  if (count == 0) return absl::OkStatus();
  absl::Status status = apply(0, count);
  if (!IsDataException(status)) return status;
  spdlog::warn(
      "events: the database refused the data of a batch of {} event(s) ({}); applying it in parts "
      "to set the offending event(s) aside",
      count, status.message());
  return Bisect(0, count, status, apply, refused);
}

EventsService::EventsService(EventStore& store, const CustomerTags* tags,
                             const Audiences* audiences)
    : store_(store), tags_(tags), audiences_(audiences) {}

absl::Status EventsService::Start() {
  const int64_t load = types_loads_started_.fetch_add(1) + 1;
  MKT_ASSIGN_OR_RETURN(std::vector<pb::EventType> types, store_.SeedAndLoadEventTypes());
  types_.Load(types);
  types_loaded_by_.store(load);
  {
    absl::MutexLock lock(&refresh_mu_);
    refreshed_at_ = absl::Now();
  }
  MKT_ASSIGN_OR_RETURN(EventStore::RulesChanged all, store_.LoadRulesChangedSince(0));
  rules_reloaded_as_of_.store(all.as_of_micros);
  for (size_t i = 0; i < all.rules.size(); ++i) {
    // One that does not compile is held unfit at its revision: never matched, compiled again when
    // its event type changes.
    absl::Status status;
    rules_.Upsert(Hold(all.rules[i], all.lifecycles[i], "stored", &status));
  }
  spdlog::info("events: {} event types, {} active rules", types.size(), rules_.active_count());
  return absl::OkStatus();
}

absl::Status EventsService::ReloadTypesAfter(int64_t mark) {
  absl::MutexLock lock(&types_load_mu_);
  if (types_loaded_by_.load() > mark) return absl::OkStatus();
  const int64_t load = types_loads_started_.fetch_add(1) + 1;
  absl::StatusOr<std::vector<pb::EventType>> types = store_.LoadEventTypes();
  if (!types.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot reload the event types from the database: ",
                                               types.status().message()));
  }
  types_.Merge(*types);
  ++types_generation_;
  types_loaded_by_.store(load);
  return absl::OkStatus();
}

absl::Status EventsService::ReloadRules() {
  // Only what was written since the last reload: every stored rule (campaign rules are never
  // deleted) would be read and parsed again every period otherwise.
  MKT_ASSIGN_OR_RETURN(EventStore::RulesChanged changed,
                       store_.LoadRulesChangedSince(rules_reloaded_as_of_.load()));
  const std::shared_ptr<const RuleIndex> held = rules_.Snapshot();
  int reloaded = 0;
  for (size_t i = 0; i < changed.rules.size(); ++i) {
    const pb::TriggerRule& rule = changed.rules[i];
    const RuleLifecycle& lifecycle = changed.lifecycles[i];
    if (auto it = held->by_id.find(rule.rule_id()); it != held->by_id.end()) {
      const pb::TriggerRule& mine = it->second->proto;
      if (mine.revision() > rule.revision() ||
          (mine.revision() == rule.revision() && it->second->lifecycle == lifecycle &&
           mine.SerializeAsString() == rule.SerializeAsString())) {
        continue;
      }
    }
    // A revision that does not compile is held all the same (unfit, matching nothing): the
    // revision it replaces must stop matching here too.
    absl::Status status;
    std::shared_ptr<const CompiledRule> next = Hold(rule, lifecycle, nullptr, &status);
    if (!status.ok()) {
      absl::MutexLock lock(&refresh_mu_);
      if (refused_rules_.insert(absl::StrCat(rule.rule_id(), "@", rule.revision())).second) {
        spdlog::error(
            "events: stored rule {} (revision {}) does not compile; held inactive at that "
            "revision: {}",
            rule.rule_id(), rule.revision(), status.message());
        UnfitRules("stored").Increment();
      }
    }
    if (rules_.Upsert(std::move(next))) ++reloaded;
  }
  if (reloaded > 0) {
    spdlog::info("events: {} rule(s) reloaded from the database (upserted through another replica)",
                 reloaded);
  }
  rules_reloaded_as_of_.store(changed.as_of_micros);
  return absl::OkStatus();
}

void EventsService::RefreshIfDue() {
  {
    absl::MutexLock lock(&refresh_mu_);
    const absl::Time now = absl::Now();
    if (now - refreshed_at_ < refresh_every_) return;
    refreshed_at_ = now;
  }
  if (const size_t expired = rules_.DropExpired(absl::Now()); expired > 0) {
    spdlog::info("events: {} ended rule(s) no longer match late events", expired);
  }
  absl::Status s = ReloadTypesAfter(TypesLoadMark());
  if (s.ok()) s = ReloadRules();
  if (!s.ok()) {
    spdlog::warn("events: cannot refresh the event types and rules from the database ({}); {}",
                 s.message(), "using the copy in memory until the next attempt");
  }
}

void EventsService::RecompileForChangedTypes() {
  const int64_t generation = types_generation_.load();
  absl::MutexLock lock(&recompile_mu_);
  if (rules_compiled_for_ == generation) return;
  const std::shared_ptr<const RuleIndex> held = rules_.Snapshot();
  for (const auto& [id, rule] : held->by_id) {
    std::shared_ptr<const EventTypeInfo> type = types_.Find(rule->proto.event_type());
    if (type == nullptr || type->proto().version() == rule->type_version) continue;
    // Compiled again from the definition as received (never from a copy held unfit), so a rule
    // held for want of an attribute matches again once a later version brings it back.
    absl::Status status;
    std::shared_ptr<const CompiledRule> next = Hold(rule->proto, rule->lifecycle, nullptr, &status);
    if (!status.ok()) {
      spdlog::error(
          "events: rule {} (revision {}) does not fit version {} of event type {} ({}); it is "
          "held inactive until the type fits it again or a campaign change or an UpsertRule "
          "replaces it",
          id, rule->proto.revision(), type->proto().version(), rule->proto.event_type(),
          status.message());
      if (rule->unfit.empty()) UnfitRules("type_change").Increment();
    } else if (!rule->unfit.empty()) {
      spdlog::info("events: rule {} (revision {}) fits version {} of event type {} again", id,
                   rule->proto.revision(), type->proto().version(), rule->proto.event_type());
    }
    rules_.Upsert(std::move(next));
  }
  rules_compiled_for_ = generation;
}

absl::Status EventsService::HandleBatch(const std::vector<kafka::IncomingMessage>& batch,
                                        std::vector<Rejected>* rejected) {
  // Any load of the event types numbered above this one started after the batch arrived.
  const int64_t mark = TypesLoadMark();
  RefreshIfDue();
  std::vector<ValidatedEvent> events;
  std::vector<size_t> origin;  // events[i] is batch[origin[i]]
  const size_t rejected_before = rejected->size();
  bool unfit = false;  // some event does not fit its type as this replica holds it
  const auto read = [&] {
    events.clear();
    origin.clear();
    rejected->resize(rejected_before);
    unfit = false;
    events.reserve(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      const kafka::IncomingMessage& m = batch[i];
      if (m.value.size() > kMaxEventBytes) {
        rejected->push_back({i, absl::StrCat("oversized: ", m.value.size(), " bytes (limit ",
                                             kMaxEventBytes, ")")});
        continue;
      }
      auto envelope = kafka::ParseEnvelope(m);
      if (!envelope.ok()) {
        rejected->push_back(
            {i, "not a protobuf envelope: " + std::string(envelope.status().message())});
        continue;
      }
      pb::BusinessEvent event;
      if (envelope->type() != kBusinessEventType || !envelope->payload().UnpackTo(&event)) {
        // protobuf's parser refuses a proto3 string field that is not well-formed UTF-8.
        rejected->push_back(
            {i, absl::StrCat("envelope type \"", envelope->type(),
                             "\" does not hold a marketing.events.v1.BusinessEvent (a malformed "
                             "message, or a text field that is not well-formed UTF-8)")});
        continue;
      }
      auto valid = types_.Validate(event, envelope->event_id());
      if (!valid.ok()) {
        rejected->push_back({i, std::string(valid.status().message())});
        unfit = true;
        continue;
      }
      events.push_back(*std::move(valid));
      origin.push_back(i);
    }
  };
  read();
  if (unfit) {
    // This replica's copy of the registry may be behind the database (a type defined or changed
    // through another replica): an event is dead-lettered only when it does not fit the types
    // as loaded after the batch arrived. Without them the batch is retried, never dead-lettered.
    MKT_RETURN_IF_ERROR(ReloadTypesAfter(mark));
    read();
  }
  if (events.empty()) return absl::OkStatus();
  RecompileForChangedTypes();
  auto snapshot = rules_.Snapshot();
  // A condition reads attributes by slot: a rule compiled against another version of the type
  // than an event was validated with (the type changed meanwhile, here or through another
  // replica) would read the wrong ones. The batch is then retried, validated and matched again
  // once the rules are compiled for the version now held.
  for (const ValidatedEvent& e : events) {
    auto of_type = snapshot->by_type.find(e.event_type);
    if (of_type == snapshot->by_type.end()) continue;
    for (const auto& rule : of_type->second) {
      if (rule->type_version == e.type_version) continue;
      ++types_generation_;
      return absl::UnavailableError(absl::StrCat(
          "rule ", rule->proto.rule_id(), " was compiled for version ", rule->type_version,
          " of event type ", e.event_type, ", the event fits version ", e.type_version,
          "; the batch is retried once the rules are compiled again"));
    }
  }
  // The tags the batch's conditions read, fetched at once before any is evaluated.
  TagSnapshot tags;
  if (const TagQueries queries = TagsToFetch(events, *snapshot);
      !queries.empty() && tags_ != nullptr) {
    if (absl::Status s = tags_->Fetch(queries, tags); !s.ok()) {
      return absl::UnavailableError(
          absl::StrCat("cannot read the customer tags the rules need: ", s.message()));
    }
  }
  // Likewise the campaigns' audiences (decision 033).
  AudienceSnapshot audiences;
  if (const AudienceQueries queries = AudiencesToCheck(events, *snapshot);
      !queries.empty() && audiences_ != nullptr) {
    if (absl::Status s = audiences_->Fetch(queries, audiences); !s.ok()) {
      return absl::UnavailableError(
          absl::StrCat("cannot check the campaigns' audiences: ", s.message()));
    }
  }
  bool grants_changed = false;
  const auto apply = [&](size_t begin, size_t end) -> absl::Status {
    std::vector<ValidatedEvent> part;
    if (begin > 0 || end < events.size()) {
      part.assign(events.begin() + static_cast<ptrdiff_t>(begin),
                  events.begin() + static_cast<ptrdiff_t>(end));
    }
    MKT_ASSIGN_OR_RETURN(BatchStats stats, store_.ProcessBatch(part.empty() ? events : part,
                                                               *snapshot, &tags, &audiences));
    grants_changed = grants_changed || stats.grants > 0 || stats.clawbacks > 0;
    if (stats.parked > 0) {
      WaitingReversals().parked.Increment(stats.parked);
      spdlog::info("events: {} reversal(s) arrived before their original and wait for it",
                   stats.parked);
    }
    if (stats.unparked > 0) WaitingReversals().applied.Increment(stats.unparked);
    return absl::OkStatus();
  };
  // An event whose data the database refuses is dead-lettered rather than retried for ever with
  // its batch (which would stop its partition for good); the rest of the batch is applied.
  const auto refused = [&](size_t i, const absl::Status& status) {
    spdlog::error("events: the database refused event {} (message {}[{}]@{}): {}",
                  events[i].event_key, batch[origin[i]].topic, batch[origin[i]].partition,
                  batch[origin[i]].offset, status.message());
    rejected->push_back({origin[i], absl::StrCat("the database refused it: ", status.message())});
  };
  absl::Status status = ApplyIsolatingRefusedEvents(events.size(), apply, refused);
  // Parts applied before a failure are committed: their grants are due even so.
  if (grants_changed && on_grants_) on_grants_();
  return status;
}

namespace {

// The most one grant may charge a budget: the ledger's limit on an amount (10^15 fen).
constexpr int64_t kMaxBudgetCostFen = 1'000'000'000'000'000;

// An event campaign's reward item names the ledger asset it grants (POINTS, CASH_FEN or
// LOTTERY_CHANCE); the campaigns service refuses anything else on save. Each grant charges the
// campaign's budget quantity × the unit cost set when the version was submitted (decision 034).
// nullopt: not an asset; INVALID_ARGUMENT (naming `field`): a cost no grant can carry.
absl::StatusOr<std::optional<pb::RewardSpec>> RewardOf(const cpb::RewardItem& item,
                                                       const std::string& field) {
  ::marketing::rewards::v1::Asset asset;
  if (!::marketing::rewards::v1::Asset_Parse(item.benefit_template_id(), &asset)) {
    return std::optional<pb::RewardSpec>();
  }
  const __int128 cost = static_cast<__int128>(item.quantity()) * item.unit_cost_fen();
  if (item.unit_cost_fen() < 0 || cost < 0 || cost > kMaxBudgetCostFen) {
    return InvalidArgument(field + ".unit_cost_fen",
                           absl::StrCat("quantity times unit cost must be 0..", kMaxBudgetCostFen,
                                        " fen; unit cost ", item.unit_cost_fen()));
  }
  pb::RewardSpec reward;
  reward.set_asset(asset);
  reward.set_quantity(item.quantity());
  reward.set_budget_cost_fen(static_cast<int64_t>(cost));
  reward.set_benefit_template_id(item.benefit_template_id());
  return std::optional<pb::RewardSpec>(std::move(reward));
}

pb::RuleKind KindOf(cpb::TriggerKind kind) {
  switch (kind) {
    case cpb::TRIGGER_FIRST_TIME:
      return pb::FIRST_TIME;
    case cpb::TRIGGER_COUNT_AT_LEAST:
      return pb::COUNT_AT_LEAST;
    case cpb::TRIGGER_CUMULATIVE_AMOUNT:
      return pb::CUMULATIVE_AMOUNT;
    case cpb::TRIGGER_EVERY_MATCH:
    case cpb::TRIGGER_KIND_UNSPECIFIED:
      return pb::EVERY_MATCH;
    default:
      return pb::RULE_KIND_UNSPECIFIED;  // CompileRule refuses it
  }
}

pb::WindowKind WindowOf(cpb::TriggerWindow window) {
  switch (window) {
    case cpb::TRIGGER_WINDOW_CALENDAR_MONTH:
      return pb::CALENDAR_MONTH;
    case cpb::TRIGGER_WINDOW_CALENDAR_DAY:
      return pb::CALENDAR_DAY;
    default:
      return pb::CAMPAIGN_WINDOW;
  }
}

}  // namespace

absl::StatusOr<std::optional<pb::TriggerRule>> RuleFromCampaign(
    const cpb::CampaignChanged& change) {
  const cpb::CampaignConfig& config = change.config();
  if (config.type() != cpb::EVENT_TRIGGER) return std::optional<pb::TriggerRule>();
  pb::TriggerRule rule;
  rule.set_rule_id("campaign:" + change.campaign_id());
  rule.set_campaign_id(change.campaign_id());
  rule.set_org_id(change.org_id());
  rule.set_revision(change.revision());
  // Decision 031: the campaign says which matching events grant; unset is every one.
  const cpb::EventTrigger& trigger = config.event_trigger();
  rule.set_kind(KindOf(trigger.kind()));
  rule.set_window(WindowOf(trigger.window()));
  rule.set_count_threshold(trigger.count_threshold());
  for (int i = 0; i < trigger.tiers_size(); ++i) {
    const std::string field = absl::StrCat("event_trigger.tiers[", i, "].reward");
    MKT_ASSIGN_OR_RETURN(std::optional<pb::RewardSpec> reward,
                         RewardOf(trigger.tiers(i).reward(), field));
    if (!reward) return InvalidArgument(field, "a tier grants POINTS, CASH_FEN or LOTTERY_CHANCE");
    pb::Tier* tier = rule.add_tiers();
    tier->set_threshold_fen(trigger.tiers(i).threshold_fen());
    *tier->mutable_reward() = *std::move(reward);
  }
  rule.set_condition(config.trigger_expression());
  if (config.has_start_time()) *rule.mutable_start_time() = config.start_time();
  if (config.has_end_time()) *rule.mutable_end_time() = config.end_time();
  rule.set_per_customer_total(config.limits().per_customer_total());
  // Decision 033: the campaign's audience, at the versions it was approved with.
  const auto copy = [](const auto& from, auto* to) {
    for (const auto& ref : from) {
      pb::SegmentRef* r = to->Add();
      r->set_segment_id(ref.segment_id());
      r->set_version(ref.version());
    }
  };
  copy(config.audience().include(), rule.mutable_audience()->mutable_include());
  copy(config.audience().exclude(), rule.mutable_audience()->mutable_exclude());
  rule.set_active(change.state() == cpb::ONLINE);
  auto parsed = expr::Parse(config.trigger_expression());
  if (!parsed.ok())
    return InvalidArgument("trigger_expression", std::string(parsed.status().message()));
  std::vector<std::string> types = expr::RequiredValues(*parsed, "event.type");
  if (types.size() != 1) {
    return InvalidArgument(
        "trigger_expression",
        "the trigger expression must pin one event type (event.type == \"...\")");
  }
  rule.set_event_type(types[0]);
  for (int i = 0; i < config.rewards_size(); ++i) {
    MKT_ASSIGN_OR_RETURN(std::optional<pb::RewardSpec> reward,
                         RewardOf(config.rewards(i), absl::StrCat("rewards[", i, "]")));
    if (!reward) continue;
    *rule.mutable_reward() = *std::move(reward);
    break;
  }
  return std::optional<pb::TriggerRule>(std::move(rule));
}

RuleLifecycle NextLifecycle(const CompiledRule* held, const cpb::CampaignChanged& change) {
  if (held != nullptr && held->proto.revision() >= change.revision()) return held->lifecycle;
  RuleLifecycle next = held != nullptr ? held->lifecycle : RuleLifecycle{};
  const bool stamped = change.has_changed_at();
  const absl::Time at = TimeOf(change.changed_at());
  const bool paused = !next.paused.empty() && next.paused.back().second == absl::InfiniteFuture();
  switch (change.state()) {
    case cpb::PAUSED:
      if (!paused && stamped) next.paused.emplace_back(at, absl::InfiniteFuture());
      break;
    case cpb::ONLINE:
      // Resumed (or an edit approved while online): a pause ends here.
      if (paused) next.paused.back().second = stamped ? at : next.paused.back().first;
      next.ended = false;
      next.ended_at = absl::InfiniteFuture();
      break;
    case cpb::ENDED:
      // Ended while paused: the open pause already refuses what occurred since.
      if (!next.ended) next.ended_at = stamped ? at : absl::InfiniteFuture();
      next.ended = true;
      break;
    default:  // ARCHIVED (no more late events), or a state in which nothing is matched
      next.ended = false;
      next.ended_at = absl::InfiniteFuture();
      break;
  }
  return next;
}

std::shared_ptr<const CompiledRule> EventsService::Hold(const pb::TriggerRule& rule,
                                                        const RuleLifecycle& lifecycle,
                                                        const char* source, absl::Status* status) {
  std::shared_ptr<const CompiledRule> held =
      HoldRule(rule, lifecycle, late_events(), types_, status);
  if (!status->ok() && source != nullptr) {
    spdlog::error(
        "events: rule {} (revision {}) does not compile; held inactive at that revision, matching "
        "nothing: {}",
        rule.rule_id(), rule.revision(), status->message());
    UnfitRules(source).Increment();
  }
  return held;
}

absl::Status EventsService::HandleCampaignChange(const kafka::IncomingMessage& message) {
  MKT_ASSIGN_OR_RETURN(auto envelope, kafka::ParseEnvelope(message));
  cpb::CampaignChanged change;
  if (!envelope.payload().UnpackTo(&change)) {
    return InvalidArgument("payload", "not a marketing.campaigns.v1.CampaignChanged");
  }
  absl::StatusOr<std::optional<pb::TriggerRule>> derived = RuleFromCampaign(change);
  if (derived.ok() && !derived->has_value()) return absl::OkStatus();
  const std::string rule_id = "campaign:" + change.campaign_id();
  const std::shared_ptr<const RuleIndex> snapshot = rules_.Snapshot();
  std::shared_ptr<const CompiledRule> held;
  if (auto it = snapshot->by_id.find(rule_id); it != snapshot->by_id.end()) held = it->second;
  // Decision 010, amended 2026-11-29, later: a change whose config cannot become a rule still moves
  // the campaign's rule to its revision, matching nothing, so the revision it replaces stops
  // granting and a later pause or end is never ignored.
  pb::TriggerRule rule;
  absl::Status refused;
  if (derived.ok()) {
    rule = **std::move(derived);
  } else {
    refused = derived.status();
    if (held == nullptr) {
      return InvalidArgument("config", absl::StrCat("campaign ", change.campaign_id(),
                                                    " cannot become a rule: ", refused.message()));
    }
    // The definition held before, at this revision and inactive for good (the config it would be
    // compiled from is lost): compiling it again when its type changes never revives it.
    rule = held->proto;
    rule.set_revision(change.revision());
    rule.set_active(false);
  }
  const RuleLifecycle lifecycle = NextLifecycle(held.get(), change);
  const int64_t mark = TypesLoadMark();
  absl::Status status;
  std::shared_ptr<const CompiledRule> next =
      HoldRule(rule, lifecycle, late_events(), types_, &status);
  if (!status.ok()) {
    // The rule may read a type (or an attribute) defined through another replica a moment ago:
    // compiled again against the types as loaded now (UNAVAILABLE, retried, when they cannot be).
    MKT_RETURN_IF_ERROR(ReloadTypesAfter(mark));
    next = Hold(rule, lifecycle, "campaign_change", &status);
    if (!status.ok() && refused.ok()) refused = status;
  } else if (!refused.ok()) {
    spdlog::error(
        "events: campaign {} revision {} cannot become a rule ({}); its rule is held inactive "
        "at that revision",
        change.campaign_id(), change.revision(), refused.message());
    UnfitRules("campaign_change").Increment();
  }
  MKT_ASSIGN_OR_RETURN(bool stored, store_.SaveRule(rule, lifecycle));
  if (stored) rules_.Upsert(std::move(next));
  // A change that asked the rule to grant is refused (dead-lettered with the reason for the
  // campaign's operators); a pause, an end or an archive is applied all the same.
  if (!refused.ok() && change.state() == cpb::ONLINE) {
    return InvalidArgument("config", absl::StrCat("campaign ", change.campaign_id(),
                                                  " cannot become a rule: ", refused.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<pb::EventType> EventsService::UpsertEventType(const tenancy::Actor& actor,
                                                             pb::EventType type) {
  if (!actor.Has(tenancy::Role::kAdmin)) {
    return Error(absl::StatusCode::kPermissionDenied, ::marketing::common::v1::PERMISSION_DENIED,
                 "defining event types needs the admin role");
  }
  // One registry serves every member bank: a bank changing "loan.disbursed" would change what
  // every other bank's core system must send.
  if (actor.org_id != tenancy::kFederation) {
    return Error(absl::StatusCode::kPermissionDenied, ::marketing::common::v1::PERMISSION_DENIED,
                 "event types are shared by every member bank: only the federation's admins "
                 "define them");
  }
  MKT_RETURN_IF_ERROR(CheckEventType(type));
  // The next version follows the stored one, which another replica may have written.
  MKT_RETURN_IF_ERROR(ReloadTypesAfter(TypesLoadMark()));
  if (auto held = types_.Find(type.name()); held != nullptr) {
    type.set_version(held->proto().version() + 1);
  } else {
    type.set_version(1);
  }
  MKT_RETURN_IF_ERROR(store_.SaveEventType(type));
  MKT_RETURN_IF_ERROR(types_.Put(type));
  ++types_generation_;
  RecompileForChangedTypes();
  return type;
}

absl::StatusOr<pb::UpsertRuleResponse> EventsService::UpsertRule(const tenancy::Actor& actor,
                                                                 const pb::TriggerRule& rule) {
  MKT_RETURN_IF_ERROR(CheckScope(actor, rule.org_id()));
  const int64_t mark = TypesLoadMark();
  auto compiled = CompileRule(rule, types_);
  if (!compiled.ok()) {
    // As for a campaign's rule: refused only against the types as stored now.
    MKT_RETURN_IF_ERROR(ReloadTypesAfter(mark));
    compiled = CompileRule(rule, types_);
  }
  MKT_RETURN_IF_ERROR(compiled.status());
  MKT_ASSIGN_OR_RETURN(bool stored, store_.SaveRule(rule));
  if (!stored) {
    return Error(absl::StatusCode::kFailedPrecondition, ::marketing::common::v1::CONFLICT,
                 "a higher revision of rule " + rule.rule_id() + " is stored", "revision");
  }
  rules_.Upsert(*std::move(compiled));
  pb::UpsertRuleResponse response;
  *response.mutable_rule() = rule;
  return response;
}

absl::StatusOr<pb::ListRulesResponse> EventsService::ListRules(
    const tenancy::Actor& actor, const pb::ListRulesRequest& request) const {
  pb::ListRulesResponse response;
  // Held for the loop: a range-for over `Snapshot()->by_id` would keep the map, not the
  // snapshot, and a rule upserted meanwhile would free it under the loop.
  const std::shared_ptr<const RuleIndex> snapshot = rules_.Snapshot();
  for (const auto& [id, rule] : snapshot->by_id) {
    if (!tenancy::Covers(actor.org_id, rule->proto.org_id())) continue;
    if (!request.campaign_id().empty() && rule->proto.campaign_id() != request.campaign_id()) {
      continue;
    }
    pb::TriggerRule* listed = response.add_rules();
    *listed = rule->proto;
    // A rule held unfit (its definition does not compile) matches nothing, whatever it asked.
    if (!rule->unfit.empty()) listed->set_active(false);
  }
  return response;
}

absl::StatusOr<pb::ListCustomerEventsResponse> EventsService::ListCustomerEvents(
    const tenancy::Actor& actor, const pb::ListCustomerEventsRequest& request) {
  pb::ListCustomerEventsRequest scoped = request;
  // The actor's subtree unless a narrower org is asked for ("" in the store: every org).
  if (scoped.org_id().empty()) scoped.set_org_id(actor.org_id);
  if (!tenancy::IsValidOrgId(scoped.org_id())) {
    return InvalidArgument("org_id", "org_id must be an org id such as bank-a");
  }
  MKT_RETURN_IF_ERROR(CheckScope(actor, scoped.org_id()));
  if (scoped.org_id() == tenancy::kFederation) scoped.set_org_id("");
  if (request.limit() < 0 || request.limit() > 1000) {
    return InvalidArgument("limit", "limit must be 1..1000 (0: 100)");
  }
  MKT_ASSIGN_OR_RETURN(auto events, store_.ListCustomerEvents(scoped));
  pb::ListCustomerEventsResponse response;
  for (auto& e : events) {
    if (!tenancy::Covers(actor.org_id, e.org_id())) continue;
    *response.add_events() = std::move(e);
  }
  return response;
}

absl::StatusOr<pb::ExplainResponse> EventsService::Explain(const tenancy::Actor& actor,
                                                           const pb::ExplainRequest& request) {
  RefreshIfDue();  // a rule upserted through another replica is explained here too
  auto snapshot = rules_.Snapshot();
  auto rule_it = snapshot->by_id.find(request.rule_id());
  // Another bank's rule is as unknown as a missing one.
  if (rule_it == snapshot->by_id.end() ||
      !tenancy::Covers(actor.org_id, rule_it->second->proto.org_id())) {
    return NotFound("no rule " + request.rule_id());
  }
  const CompiledRule& rule = *rule_it->second;
  MKT_ASSIGN_OR_RETURN(std::optional<ValidatedEvent> event,
                       store_.LoadEvent(request.event_key(), types_));
  // Another bank's event is as unknown as a missing one.
  if (!event || !tenancy::Covers(actor.org_id, event->org_id)) {
    return NotFound("no event " + request.event_key() + " in the event log");
  }
  pb::ExplainResponse response;
  response.set_event_type_matches(event->event_type == rule.proto.event_type());
  response.set_org_covered(CoversEvent(rule, *event));
  // The audience as it is now, like the tags below.
  if (rule.audience_key.empty()) {
    response.set_in_audience(true);
  } else if (audiences_ != nullptr) {
    AudienceQueries queries;
    AudienceQuery& query = queries[rule.audience_key];
    query.org_id = rule.proto.org_id();
    query.audience = rule.proto.audience();
    query.customers.insert(event->customer_id);
    AudienceSnapshot answer;
    if (absl::Status s = audiences_->Fetch(queries, answer); !s.ok()) {
      return absl::UnavailableError(
          absl::StrCat("cannot check the campaign's audience to explain it: ", s.message()));
    }
    response.set_in_audience(InAudience(rule, *event, &answer));
  }
  std::optional<std::string> window = WindowKey(rule, event->occurred_at);
  response.set_within_window(window.has_value());
  if (rule.condition != nullptr) {
    // The tags as they are now: a change since the event was processed shows in the summary.
    TagSnapshot tags;
    if (!rule.condition->tags().empty() && tags_ != nullptr) {
      TagQueries queries;
      TagQuery& query = queries[rule.proto.org_id()];
      query.customers.insert(event->customer_id);
      query.tags.insert(rule.condition->tags().begin(), rule.condition->tags().end());
      if (absl::Status s = tags_->Fetch(queries, tags); !s.ok()) {
        return absl::UnavailableError(absl::StrCat(
            "cannot read the customer's tags to explain the condition: ", s.message()));
      }
    }
    EventActivation activation(*event, &tags, rule.proto.org_id());
    expr::Explanation e = rule.condition->Explain(activation);
    response.set_condition_holds(e.result);
    response.set_failed_condition(e.failed_condition);
    for (const auto& o : e.observations) {
      auto* obs = response.add_observations();
      obs->set_condition(o.condition);
      obs->set_left(o.left);
      obs->set_right(o.right);
      obs->set_result(o.result);
    }
  } else {
    response.set_condition_holds(true);
  }
  MKT_ASSIGN_OR_RETURN(std::string decision,
                       store_.LoadDecision(event->event_key, rule.proto.rule_id()));
  response.set_decision(decision);
  if (window) {
    MKT_ASSIGN_OR_RETURN(Aggregate agg,
                         store_.LoadAggregate(rule.proto.rule_id(), event->customer_id, *window));
    response.set_aggregate_count(agg.count);
    response.set_aggregate_amount_fen(agg.amount_fen);
  }
  MKT_ASSIGN_OR_RETURN(auto grants, store_.ListGrants(event->event_key, rule.proto.rule_id()));
  bool granted = false;
  for (auto& g : grants) {
    granted = granted || g.state() == "granted" || g.state() == "pending";
    *response.add_grants() = std::move(g);
  }
  response.set_granted(granted);
  std::string summary;
  if (!rule.unfit.empty()) {
    summary = absl::StrCat("the rule is held inactive: its definition does not compile (",
                           rule.unfit, ")");
  } else if (!response.event_type_matches()) {
    summary =
        absl::StrCat("the rule listens to ", rule.proto.event_type(), ", not ", event->event_type);
  } else if (!response.org_covered()) {
    summary = absl::StrCat("the rule is ", rule.proto.org_id(),
                           "'s and does not apply to events of ", event->org_id);
  } else if (!response.within_window()) {
    summary = "the event occurred outside the rule's window";
  } else if (!response.condition_holds()) {
    summary = absl::StrCat("the condition failed at `", response.failed_condition(), "`");
  } else if (!response.in_audience()) {
    summary = "the customer is not in the campaign's audience";
  } else if (decision.empty()) {
    summary =
        "the condition holds now but did not when the event was processed (rule, tags or "
        "audience changed since)";
  } else if (response.grants_size() == 0) {
    summary = absl::StrCat("matched but granted nothing: ", decision);
  } else {
    summary = absl::StrCat(
        decision, "; grant state: ", response.grants(0).state(),
        response.grants(0).reason().empty() ? "" : " (" + response.grants(0).reason() + ")");
  }
  response.set_summary(summary);
  return response;
}

}  // namespace mkt::events
