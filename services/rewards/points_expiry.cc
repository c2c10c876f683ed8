#include "services/rewards/points_expiry.h"

#include "absl/strings/str_cat.h"
#include "libs/core/status.h"

namespace mkt::rewards {
namespace {

namespace pb = ::marketing::rewards::v1;

// google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
constexpr int64_t kMinTimestampSeconds = -62135596800;
constexpr int64_t kMaxTimestampSeconds = 253402300799;

absl::Time EndOfDay(absl::CivilDay day) {
  return absl::FromCivil(absl::CivilSecond(day.year(), day.month(), day.day(), 23, 59, 59),
                         ChinaStandardTime());
}

}  // namespace

absl::TimeZone ChinaStandardTime() {
  static const absl::TimeZone* tz = new absl::TimeZone(absl::FixedTimeZone(8 * 3600));
  return *tz;
}

absl::StatusOr<absl::Time> ExpiryOf(const pb::PointsExpiry& rule, absl::Time granted_at) {
  switch (rule.rule_case()) {
    case pb::PointsExpiry::kFixedAt: {
      const auto& at = rule.fixed_at();
      if (at.seconds() < kMinTimestampSeconds || at.seconds() > kMaxTimestampSeconds ||
          at.nanos() < 0 || at.nanos() > 999999999) {
        return InvalidArgument("expiry.fixed_at", "the expiry instant is not a valid timestamp");
      }
      return absl::FromUnixSeconds(at.seconds()) + absl::Nanoseconds(at.nanos());
    }
    case pb::PointsExpiry::kDaysAfterGrant: {
      const int days = rule.days_after_grant();
      if (days < 1 || days > kMaxExpiryDays) {
        return InvalidArgument(
            "expiry.days_after_grant",
            absl::StrCat("days_after_grant must be 1..", kMaxExpiryDays, ", got ", days));
      }
      const absl::CivilDay granted_day = absl::ToCivilDay(granted_at, ChinaStandardTime());
      return EndOfDay(granted_day + days);
    }
    case pb::PointsExpiry::kEndOfYearPlusYears: {
      const int years = rule.end_of_year_plus_years();
      if (years < 0 || years > kMaxExpiryYears) {
        return InvalidArgument(
            "expiry.end_of_year_plus_years",
            absl::StrCat("end_of_year_plus_years must be 0..", kMaxExpiryYears, ", got ", years));
      }
      const absl::CivilYear year = absl::ToCivilYear(granted_at, ChinaStandardTime());
      return EndOfDay(absl::CivilDay(year.year() + years, 12, 31));
    }
    case pb::PointsExpiry::RULE_NOT_SET:
      break;
  }
  return InvalidArgument("expiry", "points credited to a customer need an expiry rule");
}

}  // namespace mkt::rewards
