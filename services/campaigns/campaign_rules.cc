#include "services/campaigns/campaign_rules.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "google/protobuf/util/message_differencer.h"
#include "libs/core/text.h"
#include "libs/expr/expr.h"
#include "libs/tenancy/tenancy.h"
#include "services/campaigns/asset_growth.h"
#include "services/campaigns/trigger_expression.h"

namespace mkt::campaigns {
namespace {

std::string Indexed(const std::string& list, int i, const std::string& field = "") {
  std::string path = list + "[" + std::to_string(i) + "]";
  return field.empty() ? path : path + "." + field;
}

// Code points of well-formed UTF-8 (line breaks allowed: descriptions and rules are paragraphs);
// -1 when malformed.
int TextLength(const std::string& s) {
  if (!IsWellFormedUtf8(s)) return -1;
  int n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// A one-line label shown to people: required or optional, at most `max` code points.
void CheckLabel(FieldErrors& errors, const std::string& field, const std::string& value, int max,
                bool required) {
  if (value.empty()) {
    if (required) errors.Add(field, "is required");
    return;
  }
  const int n = PrintableUtf8Length(value);
  if (n < 0) {
    errors.Add(field, "must be printable UTF-8 without control characters");
  } else if (n > max) {
    errors.Add(field, "is " + std::to_string(n) + " characters; at most " + std::to_string(max));
  }
}

void CheckText(FieldErrors& errors, const std::string& field, const std::string& value, int max) {
  const int n = TextLength(value);
  if (n < 0) {
    errors.Add(field, "must be well-formed UTF-8");
  } else if (n > max) {
    errors.Add(field, "is " + std::to_string(n) + " characters; at most " + std::to_string(max));
  }
}

bool IsCodeLike(const std::string& s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

void CheckBasics(const pb::CampaignConfig& c, const ValidationContext&, FieldErrors& errors) {
  CheckLabel(errors, "name", c.name(), kMaxNameLength, true);
  if (c.type() == pb::CAMPAIGN_TYPE_UNSPECIFIED || !pb::CampaignType_IsValid(c.type())) {
    errors.Add("type",
               "is required: EVENT_TRIGGER, COUPON_CLAIM, LOTTERY, POINTS_EXCHANGE, "
               "ASSET_GROWTH_TASK or BATCH_GRANT");
  }
  CheckLabel(errors, "plan_id", c.plan_id(), 64, false);
  CheckLabel(errors, "department", c.department(), kMaxNameLength, false);
  const bool has_start = c.has_start_time();
  const bool has_end = c.has_end_time();
  if (!has_start) errors.Add("start_time", "is required");
  if (!has_end) errors.Add("end_time", "is required");
  auto bad_timestamp = [](const google::protobuf::Timestamp& t) {
    return t.nanos() < 0 || t.nanos() > 999'999'999 || t.seconds() < 0 ||
           t.seconds() > 253'402'300'799;  // 9999-12-31
  };
  if (has_start && bad_timestamp(c.start_time())) errors.Add("start_time", "is not a valid time");
  if (has_end && bad_timestamp(c.end_time())) errors.Add("end_time", "is not a valid time");
  if (has_start && has_end && !errors.Mentions("start_time") && !errors.Mentions("end_time")) {
    const int64_t start = c.start_time().seconds();
    const int64_t end = c.end_time().seconds();
    if (end < start || (end == start && c.end_time().nanos() <= c.start_time().nanos())) {
      errors.Add("end_time", "must be after start_time (the window is inverted or empty)");
    } else if (end - start > 2 * 366 * 86400) {
      errors.Add("end_time", "the window may last at most two years");
    }
  }
  if (c.priority() < 0 || c.priority() > kMaxPriority) {
    errors.Add("priority", "must be between 0 and " + std::to_string(kMaxPriority));
  }
  if (!c.exclusion_group().empty() && !IsCodeLike(c.exclusion_group(), 64)) {
    errors.Add("exclusion_group", "must be 1..64 of [a-z0-9_-]");
  } else if (!c.exclusion_group().empty() &&
             (c.type() == pb::EVENT_TRIGGER || c.type() == pb::BATCH_GRANT)) {
    // Decision 036: only participations claim a group (participation_service.cc); an event's
    // grant or a batch's never asks, so the group would be stored and ignored.
    errors.Add("exclusion_group",
               std::string(c.type() == pb::EVENT_TRIGGER ? "an event campaign's rewards"
                                                         : "a batch grant's grants") +
                   " are not participations and never take part in a "
                   "mutual-exclusion group; leave it empty");
  }
  CheckText(errors, "description", c.description(), kMaxDescriptionLength);
}

void CheckSegmentList(const google::protobuf::RepeatedPtrField<pb::SegmentRef>& refs,
                      const std::string& list, const ValidationContext& ctx,
                      std::set<std::string>& seen, FieldErrors& errors) {
  if (refs.size() > kMaxSegmentsPerList) {
    errors.Add(list, "at most " + std::to_string(kMaxSegmentsPerList) + " segments");
    return;
  }
  for (int i = 0; i < refs.size(); ++i) {
    const pb::SegmentRef& ref = refs[i];
    const std::string field = Indexed(list, i, "segment_id");
    if (ref.segment_id().empty()) {
      errors.Add(field, "is required");
      continue;
    }
    if (ref.segment_id().size() > 64 || PrintableUtf8Length(ref.segment_id()) < 0) {
      errors.Add(field, "is not a segment id");
      continue;
    }
    if (!seen.insert(ref.segment_id()).second) {
      errors.Add(field, "segment '" + ref.segment_id() + "' is listed twice");
      continue;
    }
    if (ref.version() < 0) {
      errors.Add(Indexed(list, i, "version"), "must not be negative");
      continue;
    }
    if (ctx.segments == nullptr) continue;
    absl::StatusOr<SegmentInfo> info = ctx.segments->Lookup(ref.segment_id());
    // Another org's segment is reported like an unknown one: its existence is not ours to show.
    if ((!info.ok() && info.status().code() == absl::StatusCode::kNotFound) ||
        (info.ok() && !tenancy::Covers(info->owner_org, ctx.owner_org))) {
      errors.Add(field, "unknown segment '" + ref.segment_id() + "'");
    } else if (!info.ok()) {
      errors.Add(field, "cannot be checked now (segment directory: " +
                            std::string(info.status().message()) + ")");
    } else if (ref.version() > info->version) {
      errors.Add(Indexed(list, i, "version"),
                 "version " + std::to_string(ref.version()) + " of '" + ref.segment_id() +
                     "' does not exist (current: " + std::to_string(info->version) + ")");
    }
  }
}

void CheckAudience(const pb::CampaignConfig& c, const ValidationContext& ctx, FieldErrors& errors) {
  if (c.audience().include().empty()) {
    errors.Add("audience.include", "at least one segment to include is required");
  }
  std::set<std::string> seen;
  CheckSegmentList(c.audience().include(), "audience.include", ctx, seen, errors);
  CheckSegmentList(c.audience().exclude(), "audience.exclude", ctx, seen, errors);
}

// Readable names of the reward kinds, for messages.
std::string KindWords(pb::RewardKind kind) {
  switch (kind) {
    case pb::REWARD_KIND_COUPON:
      return "a coupon (REWARD_KIND_COUPON)";
    case pb::REWARD_KIND_POINTS:
      return "points (REWARD_KIND_POINTS)";
    case pb::REWARD_KIND_CASH_FEN:
      return "cash (REWARD_KIND_CASH_FEN)";
    case pb::REWARD_KIND_LOTTERY_CHANCE:
      return "lottery chances (REWARD_KIND_LOTTERY_CHANCE)";
    default:
      return pb::RewardKind_Name(kind);
  }
}

// `kind` is the item's or prize's reward kind: a template of another kind would be refused by
// the rewards service at every grant (a points template issued as a coupon, say), or grant the
// wrong thing against the template's stock.
void CheckBenefit(const std::string& field, const std::string& id, pb::RewardKind kind,
                  const ValidationContext& ctx, FieldErrors& errors) {
  if (id.empty()) {
    errors.Add(field, "is required");
    return;
  }
  if (id.size() > 64 || PrintableUtf8Length(id) < 0) {
    errors.Add(field, "is not a benefit template id");
    return;
  }
  if (ctx.benefits == nullptr) return;
  absl::StatusOr<BenefitInfo> info = ctx.benefits->Lookup(id);
  if ((!info.ok() && info.status().code() == absl::StatusCode::kNotFound) ||
      (info.ok() && !tenancy::Covers(info->owner_org, ctx.owner_org))) {
    errors.Add(field, "unknown benefit template '" + id + "'");
  } else if (info.ok() && info->kind && *info->kind != kind && pb::RewardKind_IsValid(kind)) {
    errors.Add(field, "benefit template '" + id + "' (" + info->type + ") grants " +
                          KindWords(*info->kind) + ", but this reward's kind is " +
                          KindWords(kind) +
                          ": every grant would be refused; choose a template "
                          "of that kind or set the kind to match");
  } else if (!info.ok()) {
    errors.Add(field, "cannot be checked now (benefit catalog: " +
                          std::string(info.status().message()) + ")");
  }
}

constexpr int64_t kMaxQuantity = 1'000'000;

void CheckQuantity(const std::string& field, int64_t quantity, FieldErrors& errors) {
  if (quantity <= 0) {
    errors.Add(field, "must be at least 1");
  } else if (quantity > kMaxQuantity) {
    errors.Add(field, "must be at most " + std::to_string(kMaxQuantity));
  }
}

// At most one coupon per grant. The benefits issuer (reward_issuer.h CouponIssuePlanFor) issues a
// coupon per Benefits.IssueCoupon call and an issued coupon cannot be taken back, so a grant of
// two could not be all or nothing: it refuses any grant of more than one coupon unit with
// INVALID_ARGUMENT. A configuration asking for more would be published and then refused at every
// claim, winning draw, exchange or recipient, so it is refused here, against the item.
constexpr char kOneCouponWhy[] =
    " (an issued coupon cannot be taken back if the next one is refused, so the rewards service "
    "refuses a grant of more than one coupon: every grant would fail)";

// A coupon reward item or prize grants one unit (`what` names it: "a coupon prize is one
// coupon"). Out-of-range quantities are CheckQuantity's.
void CheckOneCouponUnit(const std::string& field, pb::RewardKind kind, int64_t quantity,
                        const std::string& what, FieldErrors& errors) {
  if (kind != pb::REWARD_KIND_COUPON || quantity <= 1 || quantity > kMaxQuantity) return;
  errors.Add(field, what + ": must be 1" + kOneCouponWhy);
}

// What one item of a points exchange costs: at least a point (a price of 0 or less would make the
// exchange free, as nothing is spent), at most kMaxPricePoints.
void CheckPrice(const std::string& field, int64_t price_points, FieldErrors& errors) {
  if (price_points <= 0) {
    errors.Add(field, "must be at least 1 (the points one exchange of this item costs)");
  } else if (price_points > kMaxPricePoints) {
    errors.Add(field, "must be at most " + std::to_string(kMaxPricePoints));
  }
}

// What a reward item, prize or tier reward grants. Proto3 keeps a number it does not know (a
// client built against a newer proto, or a hand-written request), and the reward issuer would
// grant a coupon for it (reward_issuer.cc AssetOf): an unknown kind is refused instead.
void CheckKind(const std::string& field, pb::RewardKind kind, FieldErrors& errors) {
  if (!pb::RewardKind_IsValid(kind)) {
    errors.Add(field, "is not a reward kind (" + std::to_string(static_cast<int>(kind)) +
                          "): REWARD_KIND_COUPON (the default), REWARD_KIND_POINTS, "
                          "REWARD_KIND_CASH_FEN or REWARD_KIND_LOTTERY_CHANCE");
  }
}

// How long granted points stay valid: 0 is the default of 365 days, a negative value used to be
// taken as that default too, more than kMaxPointsValidDays is refused by the ledger at every
// grant, and on another kind of reward the value would be ignored (only points expire).
void CheckPointsValidDays(const std::string& field, pb::RewardKind kind, int32_t days,
                          FieldErrors& errors) {
  if (days < 0) {
    errors.Add(field, "must not be negative (0 means 365 days)");
  } else if (days > kMaxPointsValidDays) {
    errors.Add(field, "must be at most " + std::to_string(kMaxPointsValidDays) +
                          " (ten years, the longest the ledger keeps points; 0 means 365 days)");
  } else if (days > 0 && kind != pb::REWARD_KIND_POINTS && pb::RewardKind_IsValid(kind)) {
    errors.Add(field,
               "only points expire: leave it 0 for a " + pb::RewardKind_Name(kind) + " reward");
  }
}

// A reward of an event campaign, in the form the events service turns into a rule's reward
// (services/events/events_service.cc RuleFromCampaign): its benefit_template_id names the ledger
// asset granted (POINTS, CASH_FEN or LOTTERY_CHANCE; the events service grants nothing else).
void CheckEventReward(const pb::RewardItem& r, const std::string& field, FieldErrors& errors) {
  static const std::pair<const char*, pb::RewardKind> kAssets[] = {
      {"POINTS", pb::REWARD_KIND_POINTS},
      {"CASH_FEN", pb::REWARD_KIND_CASH_FEN},
      {"LOTTERY_CHANCE", pb::REWARD_KIND_LOTTERY_CHANCE},
  };
  const auto* asset = std::find_if(std::begin(kAssets), std::end(kAssets), [&](const auto& a) {
    return r.benefit_template_id() == a.first;
  });
  if (r.benefit_template_id().empty()) {
    errors.Add(field + ".benefit_template_id", "is required: POINTS, CASH_FEN or LOTTERY_CHANCE");
  } else if (asset == std::end(kAssets)) {
    const bool printable =
        r.benefit_template_id().size() <= 64 && PrintableUtf8Length(r.benefit_template_id()) >= 0;
    errors.Add(field + ".benefit_template_id",
               "an event campaign grants POINTS, CASH_FEN or LOTTERY_CHANCE (the asset "
               "itself, not a benefit template)" +
                   (printable ? ", not '" + r.benefit_template_id() + "'" : std::string()));
  } else if (r.kind() != asset->second) {
    errors.Add(field + ".kind", "must be " + pb::RewardKind_Name(asset->second) + " for a " +
                                    asset->first + " reward");
  }
  CheckQuantity(field + ".quantity", r.quantity(), errors);
  // The events service grants its points with the ledger's default validity (365 days) and
  // does not read this field.
  if (r.points_valid_days() != 0) {
    errors.Add(field + ".points_valid_days",
               "an event campaign's points are valid 365 days (the events service does not read "
               "points_valid_days); leave it 0");
  }
}

// Calls fn on every reward item of `config`: items, event tiers' rewards and growth tiers' items.
template <typename Fn>
void ForEachRewardItem(pb::CampaignConfig* config, const Fn& fn) {
  for (pb::RewardItem& item : *config->mutable_rewards()) fn(&item);
  if (config->has_event_trigger()) {  // never adds an empty trigger to another type's config
    for (pb::TriggerTier& tier : *config->mutable_event_trigger()->mutable_tiers()) {
      if (tier.has_reward()) fn(tier.mutable_reward());
    }
  }
  for (pb::GrowthTier& tier : *config->mutable_growth_tiers()) {
    for (pb::RewardItem& item : *tier.mutable_rewards()) fn(&item);
  }
}

// An event campaign uses one item only, so a second one would silently grant nothing.
void CheckEventRewards(const pb::CampaignConfig& c, FieldErrors& errors) {
  if (c.rewards().size() > 1) {
    errors.Add("rewards",
               "an event campaign grants one reward item per matching event; keep one (the events "
               "service would ignore the others)");
  }
  for (int i = 0; i < c.rewards().size() && i < kMaxRewardItems; ++i) {
    CheckEventReward(c.rewards(i), Indexed("rewards", i), errors);
  }
}

// Which matching events of an event campaign grant (decision 031): what the events service's
// CompileRule would refuse is refused here, on save, where the operator sees it.
void CheckEventTrigger(const pb::CampaignConfig& c, FieldErrors& errors) {
  if (!c.has_event_trigger()) return;
  const pb::EventTrigger& t = c.event_trigger();
  if (c.type() != pb::EVENT_TRIGGER) {
    errors.Add("event_trigger", "only an event campaign (EVENT_TRIGGER) has an event trigger");
    return;
  }
  if (!pb::TriggerKind_IsValid(t.kind())) {
    errors.Add("event_trigger.kind",
               "is not a trigger kind: TRIGGER_EVERY_MATCH, TRIGGER_FIRST_TIME, "
               "TRIGGER_COUNT_AT_LEAST or TRIGGER_CUMULATIVE_AMOUNT");
    return;
  }
  const bool counted = t.kind() == pb::TRIGGER_COUNT_AT_LEAST;
  const bool tiered = t.kind() == pb::TRIGGER_CUMULATIVE_AMOUNT;
  if (!pb::TriggerWindow_IsValid(t.window())) {
    errors.Add("event_trigger.window",
               "is not a window: TRIGGER_WINDOW_CAMPAIGN, TRIGGER_WINDOW_CALENDAR_MONTH or "
               "TRIGGER_WINDOW_CALENDAR_DAY");
  } else if (!counted && !tiered && t.window() != pb::TRIGGER_WINDOW_UNSPECIFIED &&
             t.window() != pb::TRIGGER_WINDOW_CAMPAIGN) {
    errors.Add("event_trigger.window",
               "only counts and sums run over a window (TRIGGER_COUNT_AT_LEAST, "
               "TRIGGER_CUMULATIVE_AMOUNT); leave it unset for " +
                   pb::TriggerKind_Name(t.kind()));
  }
  if (counted) {
    if (t.count_threshold() < 1 || t.count_threshold() > kMaxTriggerCount) {
      errors.Add("event_trigger.count_threshold",
                 "must be between 1 and " + std::to_string(kMaxTriggerCount) +
                     ": the number of matching events that grants the reward");
    }
  } else if (t.count_threshold() != 0) {
    errors.Add("event_trigger.count_threshold",
               "applies only to TRIGGER_COUNT_AT_LEAST; leave it 0");
  }
  if (!tiered) {
    if (!t.tiers().empty()) {
      errors.Add("event_trigger.tiers", "apply only to TRIGGER_CUMULATIVE_AMOUNT");
    }
    return;
  }
  if (!c.rewards().empty()) {
    errors.Add("rewards",
               "a cumulative event campaign grants its tiers' rewards; use event_trigger.tiers "
               "and leave rewards empty");
  }
  if (t.tiers().empty() || t.tiers().size() > kMaxTriggerTiers) {
    errors.Add("event_trigger.tiers", "a cumulative event campaign needs 1 to " +
                                          std::to_string(kMaxTriggerTiers) + " tiers");
  }
  int64_t previous = 0;
  for (int i = 0; i < t.tiers().size() && i < kMaxTriggerTiers; ++i) {
    const pb::TriggerTier& tier = t.tiers(i);
    const std::string field = Indexed("event_trigger.tiers", i);
    if (tier.threshold_fen() <= 0 || tier.threshold_fen() > kMaxTierThresholdFen) {
      errors.Add(field + ".threshold_fen",
                 "must be between 1 and " + std::to_string(kMaxTierThresholdFen) + " fen");
    } else if (tier.threshold_fen() <= previous) {
      errors.Add(field + ".threshold_fen", "must be above the previous tier's " +
                                               std::to_string(previous) +
                                               " fen: thresholds increase tier by tier");
    }
    previous = std::max(previous, tier.threshold_fen());
    if (!tier.has_reward()) {
      errors.Add(field + ".reward", "is required: what reaching the threshold grants");
    } else {
      CheckEventReward(tier.reward(), field + ".reward", errors);
    }
  }
}

// The tags a trigger reads (`customer.tag("x")`) must exist and be the campaign's org's own or an
// ancestor's, as audience segments must (decision 032): the events service reads them as the
// campaign's bank sees them, and a tag nobody created would leave the condition false for every
// customer.
void CheckTriggerTags(std::string_view expression, const ValidationContext& ctx,
                      FieldErrors& errors) {
  if (ctx.segments == nullptr) return;
  absl::StatusOr<expr::Expression> parsed = expr::Parse(expression);
  if (!parsed.ok()) return;  // CheckTriggerExpression reports it
  for (const std::string& tag : expr::TagNames(*parsed)) {
    absl::StatusOr<TagInfo> info = ctx.segments->LookupTag(tag);
    if (!info.ok() && info.status().code() == absl::StatusCode::kUnimplemented) return;
    // Another bank's tag is reported like an unknown one: its existence is not ours to show.
    if ((!info.ok() && info.status().code() == absl::StatusCode::kNotFound) ||
        (info.ok() && !tenancy::Covers(info->owner_org, ctx.owner_org))) {
      errors.Add("trigger_expression",
                 "unknown tag '" + tag +
                     "': a condition reads the tags of the campaign's bank and the federation");
    } else if (!info.ok()) {
      errors.Add("trigger_expression", "tag '" + tag +
                                           "' cannot be checked now (segment directory: " +
                                           std::string(info.status().message()) + ")");
    }
  }
}

// Decision 036: a field the campaign's type never reads is refused, not stored and ignored. An
// operator who sets a daily limit on an event campaign, a price on a coupon claim or a condition
// on a lottery expects it to hold.
void CheckFieldsOfOtherTypes(const pb::CampaignConfig& c, FieldErrors& errors) {
  const pb::CampaignType type = c.type();
  if (type == pb::CAMPAIGN_TYPE_UNSPECIFIED || !pb::CampaignType_IsValid(type)) return;
  const pb::ParticipationLimits& l = c.limits();
  if (type == pb::EVENT_TRIGGER || type == pb::BATCH_GRANT) {
    const std::pair<const char*, int64_t> limits[] = {
        // A batch grants each customer once: a per-customer total of 1 says just that.
        {"limits.per_customer_total",
         type == pb::BATCH_GRANT && l.per_customer_total() > 1 ? l.per_customer_total() : 0},
        {"limits.per_customer_daily", l.per_customer_daily()},
        {"limits.per_customer_weekly", l.per_customer_weekly()},
        {"limits.global_total", l.global_total()},
        {"limits.per_org_total", l.per_org_total()},
    };
    for (const auto& [field, value] : limits) {
      if (value <= 0) continue;
      errors.Add(field, type == pb::EVENT_TRIGGER
                            ? "an event campaign limits each customer with "
                              "limits.per_customer_total and the whole campaign with its "
                              "budget cap; the events service applies no daily, weekly, global "
                              "or per-org limit, so leave it 0"
                            : "a batch grant gives each customer of its audience one grant and "
                              "applies no other limit; narrow the audience instead (leave it 0; "
                              "a per-customer total may be 1)");
    }
  }
  if (type != pb::LOTTERY) {
    if (l.free_draws_per_day() > 0) {
      errors.Add("limits.free_draws_per_day", "only a lottery has draws; leave it 0");
    }
    if (l.chances_per_draw() > 0) {
      errors.Add("limits.chances_per_draw", "only a lottery has draws; leave it 0");
    }
  }
  if (type != pb::EVENT_TRIGGER && !c.trigger_expression().empty()) {
    errors.Add("trigger_expression",
               "only an event campaign (EVENT_TRIGGER) has a trigger condition; choose who may "
               "take part with the audience's segments");
  }
  if (type != pb::POINTS_EXCHANGE) {
    auto check_price = [&](const pb::RewardItem& r, const std::string& field) {
      if (r.price_points() != 0) {
        errors.Add(field + ".price_points",
                   "only a points exchange prices its items in points; leave it 0");
      }
    };
    for (int i = 0; i < c.rewards().size() && i < kMaxRewardItems; ++i) {
      check_price(c.rewards(i), Indexed("rewards", i));
    }
    for (int i = 0; i < c.event_trigger().tiers().size() && i < kMaxTriggerTiers; ++i) {
      check_price(c.event_trigger().tiers(i).reward(), Indexed("event_trigger.tiers", i, "reward"));
    }
    for (int i = 0; i < c.growth_tiers().size() && i < kMaxGrowthTiers; ++i) {
      for (int j = 0; j < c.growth_tiers(i).rewards().size() && j < kMaxTierRewards; ++j) {
        check_price(c.growth_tiers(i).rewards(j),
                    Indexed(Indexed("growth_tiers", i) + ".rewards", j));
      }
    }
  }
}

void CheckRulesAndRewards(const pb::CampaignConfig& c, const ValidationContext& ctx,
                          FieldErrors& errors) {
  CheckFieldsOfOtherTypes(c, errors);
  if (c.type() == pb::EVENT_TRIGGER) {
    if (absl::Status s = CheckTriggerExpression(c.trigger_expression()); !s.ok()) {
      errors.Add("trigger_expression", std::string(s.message()));
    } else {
      if (ctx.event_types != nullptr) {
        if (absl::Status t = CheckTriggerAgainstRegistry(c.trigger_expression(), *ctx.event_types);
            !t.ok()) {
          errors.Add("trigger_expression", std::string(t.message()));
        }
      }
      CheckTriggerTags(c.trigger_expression(), ctx, errors);
    }
  }
  CheckEventTrigger(c, errors);
  const pb::ParticipationLimits& l = c.limits();
  const std::pair<const char*, int64_t> limits[] = {
      {"limits.per_customer_total", l.per_customer_total()},
      {"limits.per_customer_daily", l.per_customer_daily()},
      {"limits.per_customer_weekly", l.per_customer_weekly()},
      {"limits.global_total", l.global_total()},
      {"limits.per_org_total", l.per_org_total()},
  };
  for (const auto& [field, value] : limits) {
    if (value < 0) errors.Add(field, "must not be negative (0 means no limit)");
  }
  if (l.free_draws_per_day() < 0) {
    errors.Add("limits.free_draws_per_day", "must not be negative (0 means no free draws)");
  }
  if (l.chances_per_draw() < 0) {
    errors.Add("limits.chances_per_draw", "must not be negative (0 means 1 chance a draw)");
  }
  if (l.per_customer_daily() > 0 && l.per_customer_weekly() > 0 &&
      l.per_customer_daily() > l.per_customer_weekly()) {
    errors.Add("limits.per_customer_daily", "exceeds the weekly limit");
  }
  if (l.per_customer_weekly() > 0 && l.per_customer_total() > 0 &&
      l.per_customer_weekly() > l.per_customer_total()) {
    errors.Add("limits.per_customer_weekly", "exceeds the per-customer total");
  }

  if (c.type() == pb::LOTTERY) {
    if (!c.rewards().empty()) {
      errors.Add("rewards", "a lottery grants its prizes; use the prize table");
    }
    if (c.prizes().empty()) errors.Add("prizes", "a lottery needs at least one prize");
    if (c.prizes().size() > kMaxPrizes) {
      errors.Add("prizes", "at most " + std::to_string(kMaxPrizes) + " prizes");
    }
    int64_t total_bp = 0;
    std::set<std::string> names;
    int fallback = -1;
    for (int i = 0; i < c.prizes().size() && i < kMaxPrizes; ++i) {
      const pb::Prize& p = c.prizes(i);
      CheckLabel(errors, Indexed("prizes", i, "name"), p.name(), 32, true);
      if (!p.name().empty() && !names.insert(p.name()).second) {
        errors.Add(Indexed("prizes", i, "name"), "prize '" + p.name() + "' is listed twice");
      }
      CheckBenefit(Indexed("prizes", i, "benefit_template_id"), p.benefit_template_id(), p.kind(),
                   ctx, errors);
      CheckQuantity(Indexed("prizes", i, "quantity"), p.quantity(), errors);
      // A draw wins one prize: each coupon prize is one coupon.
      CheckOneCouponUnit(Indexed("prizes", i, "quantity"), p.kind(), p.quantity(),
                         "a coupon prize is one coupon", errors);
      CheckKind(Indexed("prizes", i, "kind"), p.kind(), errors);
      CheckPointsValidDays(Indexed("prizes", i, "points_valid_days"), p.kind(),
                           p.points_valid_days(), errors);
      if (p.probability_bp() <= 0 || p.probability_bp() > kFullProbabilityBp) {
        errors.Add(Indexed("prizes", i, "probability_bp"), "must be between 1 and 10000");
      } else {
        total_bp += p.probability_bp();
      }
      if (p.stock() < 0) {
        errors.Add(Indexed("prizes", i, "stock"), "must not be negative (0 means no limit)");
      }
      if (p.daily_release_cap() < 0) {
        errors.Add(Indexed("prizes", i, "daily_release_cap"),
                   "must not be negative (0 means no daily cap)");
      }
      if (p.fallback()) {
        if (fallback >= 0) {
          errors.Add(Indexed("prizes", i, "fallback"),
                     "prizes[" + std::to_string(fallback) +
                         "] is already the fallback; a prize table has at most one");
        } else {
          fallback = i;
        }
      }
    }
    if (total_bp > kFullProbabilityBp) {
      errors.Add("prizes", "probabilities add up to " + std::to_string(total_bp) +
                               " bp, more than 10000 (100%)");
    }
  } else if (c.type() == pb::ASSET_GROWTH_TASK) {
    if (!c.prizes().empty()) errors.Add("prizes", "only a lottery has a prize table");
    if (!c.rewards().empty()) {
      errors.Add("rewards", "an asset-growth task grants its tiers' rewards; use growth_tiers");
    }
    for (int i = 0; i < c.growth_tiers().size() && i < kMaxGrowthTiers; ++i) {
      const pb::GrowthTier& tier = c.growth_tiers(i);
      const std::string tier_field = Indexed("growth_tiers", i);
      for (int j = 0; j < tier.rewards().size() && j < kMaxTierRewards; ++j) {
        const pb::RewardItem& r = tier.rewards(j);
        CheckBenefit(Indexed(tier_field + ".rewards", j, "benefit_template_id"),
                     r.benefit_template_id(), r.kind(), ctx, errors);
        CheckQuantity(Indexed(tier_field + ".rewards", j, "quantity"), r.quantity(), errors);
        CheckKind(Indexed(tier_field + ".rewards", j, "kind"), r.kind(), errors);
        CheckPointsValidDays(Indexed(tier_field + ".rewards", j, "points_valid_days"), r.kind(),
                             r.points_valid_days(), errors);
      }
    }
  } else {
    if (!c.prizes().empty()) errors.Add("prizes", "only a lottery has a prize table");
    const bool tiered =
        c.type() == pb::EVENT_TRIGGER && c.event_trigger().kind() == pb::TRIGGER_CUMULATIVE_AMOUNT;
    if (c.rewards().empty() && !tiered) {
      errors.Add("rewards", "at least one reward item is required");
    }
    if (c.rewards().size() > kMaxRewardItems) {
      errors.Add("rewards", "at most " + std::to_string(kMaxRewardItems) + " reward items");
    }
    if (c.type() == pb::EVENT_TRIGGER) {
      CheckEventRewards(c, errors);
    } else {
      // POINTS_EXCHANGE: the customer chooses an item by its benefit template (item_id) and the
      // first item with it is taken (participation_service.cc), so a later one with the same
      // template could never be chosen.
      std::map<std::string, int> first_item;
      // COUPON_CLAIM and BATCH_GRANT grant every item at once (a claim without item_id, each
      // recipient of a batch), so together they may hold one coupon; an exchange grants the one
      // item chosen.
      const bool grants_every_item = c.type() != pb::POINTS_EXCHANGE;
      int first_coupon = -1;
      for (int i = 0; i < c.rewards().size() && i < kMaxRewardItems; ++i) {
        const pb::RewardItem& r = c.rewards(i);
        const std::string benefit_field = Indexed("rewards", i, "benefit_template_id");
        CheckBenefit(benefit_field, r.benefit_template_id(), r.kind(), ctx, errors);
        CheckQuantity(Indexed("rewards", i, "quantity"), r.quantity(), errors);
        CheckOneCouponUnit(Indexed("rewards", i, "quantity"), r.kind(), r.quantity(),
                           "a coupon reward grants one coupon", errors);
        if (grants_every_item && r.kind() == pb::REWARD_KIND_COUPON) {
          if (first_coupon < 0) {
            first_coupon = i;
          } else {
            errors.Add(Indexed("rewards", i),
                       std::string(c.type() == pb::BATCH_GRANT
                                       ? "a batch grant gives each recipient at most one coupon"
                                       : "a coupon claim grants at most one coupon") +
                           " and rewards[" + std::to_string(first_coupon) + "] is one already" +
                           kOneCouponWhy +
                           "; grant points, cash or lottery chances beside it, or offer this "
                           "coupon in a campaign of its own");
          }
        }
        CheckKind(Indexed("rewards", i, "kind"), r.kind(), errors);
        CheckPointsValidDays(Indexed("rewards", i, "points_valid_days"), r.kind(),
                             r.points_valid_days(), errors);
        if (c.type() == pb::POINTS_EXCHANGE) {
          CheckPrice(Indexed("rewards", i, "price_points"), r.price_points(), errors);
          const std::string& id = r.benefit_template_id();
          if (!id.empty() && id.size() <= 64 && PrintableUtf8Length(id) >= 0) {
            const auto [earlier, first] = first_item.emplace(id, i);
            if (!first) {
              errors.Add(benefit_field,
                         "benefit template '" + id + "' is already offered by rewards[" +
                             std::to_string(earlier->second) +
                             "]: an exchange is chosen by benefit template (item_id), so this "
                             "item could never be chosen");
            }
          }
        }
      }
    }
  }
  CheckGrowthTiers(c, errors);
  if (c.budget_cap_fen() <= 0) {
    errors.Add("budget_cap_fen", "a budget cap (in fen, more than 0) is required");
  } else if (c.budget_cap_fen() > 1'000'000'000'000'000) {
    errors.Add("budget_cap_fen", "is implausibly large");
  }
}

void CheckChannels(const pb::CampaignConfig& c, FieldErrors& errors) {
  if (c.channels().empty()) errors.Add("channels", "at least one channel is required");
  if (c.channels().size() > kMaxChannels) {
    errors.Add("channels", "at most " + std::to_string(kMaxChannels) + " channels");
    return;
  }
  std::set<std::string> seen;
  for (int i = 0; i < c.channels().size(); ++i) {
    const pb::ChannelPlacement& p = c.channels(i);
    const std::string channel_field = Indexed("channels", i, "channel");
    if (!IsCodeLike(p.channel(), 32)) {
      errors.Add(channel_field, "must be a channel code of [a-z0-9_-], e.g. mobile_banking");
    } else if (!seen.insert(p.channel()).second) {
      errors.Add(channel_field, "channel '" + p.channel() + "' is listed twice");
    }
    const pb::ChannelContent& content = p.content();
    CheckLabel(errors, Indexed("channels", i, "content.title"), content.title(), kMaxTitleLength,
               true);
    CheckText(errors, Indexed("channels", i, "content.description"), content.description(),
              kMaxChannelDescriptionLength);
    CheckText(errors, Indexed("channels", i, "content.rules_text"), content.rules_text(),
              kMaxRulesTextLength);
    const std::string& url = content.image_url();
    if (!url.empty()) {
      const std::string field = Indexed("channels", i, "content.image_url");
      if (url.size() > kMaxImageUrlBytes) {
        errors.Add(field, "is " + std::to_string(url.size()) + " bytes; at most " +
                              std::to_string(kMaxImageUrlBytes));
      } else if ((url.rfind("https://", 0) != 0 && url.rfind("http://", 0) != 0) ||
                 PrintableUtf8Length(url) < 0 || url.find(' ') != std::string::npos) {
        errors.Add(field, "must be an http(s) URL without spaces");
      }
    }
  }
}

void CheckReview(const pb::CampaignConfig& c, FieldErrors& errors) {
  if (c.expected_uptake_bp() < 0 || c.expected_uptake_bp() > kFullProbabilityBp) {
    errors.Add("expected_uptake_bp", "must be between 0 and 10000 (0: the default)");
  }
}

}  // namespace

int64_t EventRewardUnitCostFen(pb::RewardKind kind, int64_t points_unit_cost_fen) {
  switch (kind) {
    case pb::REWARD_KIND_CASH_FEN:
      return 1;
    case pb::REWARD_KIND_POINTS:
      return points_unit_cost_fen;
    default:
      return 0;
  }
}

void ClearRewardUnitCosts(pb::CampaignConfig* config) {
  ForEachRewardItem(config, [](pb::RewardItem* item) { item->clear_unit_cost_fen(); });
}

void PriceEventRewards(pb::CampaignConfig* config, int64_t points_unit_cost_fen) {
  if (config->type() != pb::EVENT_TRIGGER) return ClearRewardUnitCosts(config);
  ForEachRewardItem(config, [&](pb::RewardItem* item) {
    item->set_unit_cost_fen(EventRewardUnitCostFen(item->kind(), points_unit_cost_fen));
  });
}

void MergeStep(pb::Step step, const pb::CampaignConfig& from, pb::CampaignConfig* to) {
  switch (step) {
    case pb::STEP_BASICS:
      to->set_name(from.name());
      to->set_type(from.type());
      to->set_plan_id(from.plan_id());
      to->set_department(from.department());
      if (from.has_start_time()) {
        *to->mutable_start_time() = from.start_time();
      } else {
        to->clear_start_time();
      }
      if (from.has_end_time()) {
        *to->mutable_end_time() = from.end_time();
      } else {
        to->clear_end_time();
      }
      to->set_priority(from.priority());
      to->set_exclusion_group(from.exclusion_group());
      to->set_description(from.description());
      break;
    case pb::STEP_AUDIENCE:
      *to->mutable_audience() = from.audience();
      break;
    case pb::STEP_RULES_REWARDS:
      to->set_trigger_expression(from.trigger_expression());
      *to->mutable_limits() = from.limits();
      *to->mutable_rewards() = from.rewards();
      *to->mutable_prizes() = from.prizes();
      to->set_budget_cap_fen(from.budget_cap_fen());
      *to->mutable_growth_tiers() = from.growth_tiers();
      to->set_baseline_days(from.baseline_days());
      if (from.has_event_trigger()) {
        *to->mutable_event_trigger() = from.event_trigger();
      } else {
        to->clear_event_trigger();
      }
      // The price of an event reward is set at submission (decision 034), never by a client.
      ClearRewardUnitCosts(to);
      break;
    case pb::STEP_CHANNELS_CONTENT:
      *to->mutable_channels() = from.channels();
      break;
    case pb::STEP_REVIEW:
      to->set_expected_uptake_bp(from.expected_uptake_bp());
      break;
    default:
      break;
  }
}

FieldErrors ValidateStep(pb::Step step, const pb::CampaignConfig& config,
                         const ValidationContext& context) {
  FieldErrors errors;
  switch (step) {
    case pb::STEP_BASICS:
      CheckBasics(config, context, errors);
      break;
    case pb::STEP_AUDIENCE:
      CheckAudience(config, context, errors);
      break;
    case pb::STEP_RULES_REWARDS:
      CheckRulesAndRewards(config, context, errors);
      break;
    case pb::STEP_CHANNELS_CONTENT:
      CheckChannels(config, errors);
      break;
    case pb::STEP_REVIEW:
      CheckReview(config, errors);
      break;
    default:
      errors.Add("step", "must be one of STEP_BASICS .. STEP_REVIEW");
  }
  return errors;
}

FieldErrors ValidateForSubmission(const pb::CampaignConfig& config,
                                  const ValidationContext& context) {
  FieldErrors errors;
  for (pb::Step step : {pb::STEP_BASICS, pb::STEP_AUDIENCE, pb::STEP_RULES_REWARDS,
                        pb::STEP_CHANNELS_CONTENT, pb::STEP_REVIEW}) {
    errors.Append(ValidateStep(step, config, context));
  }
  if (config.has_end_time() && !errors.Mentions("end_time") &&
      absl::FromUnixSeconds(config.end_time().seconds()) +
              absl::Nanoseconds(config.end_time().nanos()) <=
          context.now) {
    errors.Add("end_time", "the window has already ended");
  }
  if (config.ByteSizeLong() > kMaxConfigBytes) {
    errors.Add("config",
               "the configuration is larger than " + std::to_string(kMaxConfigBytes) + " bytes");
  }
  return errors;
}

namespace {

// The rewards of a configuration as granted (without the output-only price).
pb::CampaignConfig RewardsOnly(const pb::CampaignConfig& c) {
  pb::CampaignConfig out;
  *out.mutable_rewards() = c.rewards();
  ClearRewardUnitCosts(&out);
  return out;
}

}  // namespace

FieldErrors CheckEditOfLive(const pb::CampaignConfig& live, const pb::CampaignConfig& draft) {
  FieldErrors errors;
  if (draft.type() != live.type()) {
    errors.Add("type", "a published campaign keeps its type (" +
                           pb::CampaignType_Name(live.type()) +
                           "): what it has done is counted as that type; copy it to make a " +
                           pb::CampaignType_Name(draft.type()) + " campaign");
    return errors;  // the rest compares like with like
  }
  // A batch grant's grants are sent, and resent after a crash or a hand-over, under the request
  // id "batch:<campaign>:<customer>", built from the live rewards: other rewards under the same
  // ids would be refused IDEMPOTENCY_KEY_REUSED for customers the batch already granted.
  if (live.type() == pb::BATCH_GRANT &&
      !google::protobuf::util::MessageDifferencer::Equals(RewardsOnly(live), RewardsOnly(draft))) {
    errors.Add("rewards",
               "a published batch grant keeps its rewards: customers it has granted were given "
               "these, and a resent grant must be the same; copy the campaign to grant something "
               "else");
  }
  // Prize i's stock and daily release are counted under its place in the table
  // (participation_service.cc "prize:<i>"): another prize in that place would inherit them.
  for (int i = 0; i < live.prizes().size(); ++i) {
    const pb::Prize& was = live.prizes(i);
    if (i >= draft.prizes().size()) {
      errors.Add("prizes", "a published lottery keeps its " + std::to_string(live.prizes().size()) +
                               " prizes in their places (their stock and daily release are "
                               "counted by place); change their weights, stock or caps, or add "
                               "prizes at the end");
      break;
    }
    const pb::Prize& now = draft.prizes(i);
    if (now.benefit_template_id() != was.benefit_template_id() || now.kind() != was.kind()) {
      errors.Add(Indexed("prizes", i, "benefit_template_id"),
                 "a published lottery's prize keeps what it grants ('" + was.benefit_template_id() +
                     "'): its stock and daily release are counted by its place; add a new prize "
                     "at the end instead");
    }
  }
  // Tier i counts as reached by place (the growth task's granted tiers, the events service's
  // granted-tier bits): moving a threshold would grant a tier twice or never.
  for (int i = 0; i < live.growth_tiers().size(); ++i) {
    if (i >= draft.growth_tiers().size() ||
        draft.growth_tiers(i).min_growth_fen() != live.growth_tiers(i).min_growth_fen()) {
      errors.Add(i >= draft.growth_tiers().size() ? std::string("growth_tiers")
                                                  : Indexed("growth_tiers", i, "min_growth_fen"),
                 "a published task keeps its tiers and their thresholds (customers who reached a "
                 "tier are counted by its place); change their rewards, or add higher tiers at "
                 "the end");
      break;
    }
  }
  const pb::EventTrigger& was = live.event_trigger();
  const pb::EventTrigger& now = draft.event_trigger();
  if (now.kind() != was.kind()) {
    errors.Add("event_trigger.kind", "a published event campaign keeps its trigger kind (" +
                                         pb::TriggerKind_Name(was.kind()) +
                                         "): its customers' counts and grants are kept by it");
  } else if (now.window() != was.window()) {
    errors.Add("event_trigger.window",
               "a published event campaign keeps its window (" +
                   pb::TriggerWindow_Name(was.window()) +
                   "): its customers' counts and sums run over it and would start again");
  } else {
    for (int i = 0; i < was.tiers().size(); ++i) {
      if (i >= now.tiers().size() || now.tiers(i).threshold_fen() != was.tiers(i).threshold_fen()) {
        errors.Add(i >= now.tiers().size() ? std::string("event_trigger.tiers")
                                           : Indexed("event_trigger.tiers", i, "threshold_fen"),
                   "a published event campaign keeps its tiers and their thresholds (a tier a "
                   "customer reached is counted by its place); change their rewards, or add "
                   "higher tiers at the end");
        break;
      }
    }
  }
  return errors;
}

void PinSegmentVersions(pb::CampaignConfig* config, const SegmentDirectory& segments) {
  for (auto* list : {config->mutable_audience()->mutable_include(),
                     config->mutable_audience()->mutable_exclude()}) {
    for (pb::SegmentRef& ref : *list) {
      if (ref.version() != 0) continue;
      if (auto info = segments.Lookup(ref.segment_id()); info.ok()) ref.set_version(info->version);
    }
  }
}

const std::vector<std::string>& CopyFlaggedFields() {
  static const auto* fields = new std::vector<std::string>{
      "start_time", "end_time", "budget_cap_fen", "audience.include", "audience.exclude"};
  return *fields;
}

void ClearFlaggedFields(pb::CampaignConfig* config) {
  config->clear_start_time();
  config->clear_end_time();
  config->set_budget_cap_fen(0);
  config->clear_audience();
}

std::vector<std::string> FlaggedFieldsOfStep(pb::Step step) {
  switch (step) {
    case pb::STEP_BASICS:
      return {"start_time", "end_time"};
    case pb::STEP_AUDIENCE:
      return {"audience.include", "audience.exclude"};
    case pb::STEP_RULES_REWARDS:
      return {"budget_cap_fen"};
    default:
      return {};
  }
}

}  // namespace mkt::campaigns
