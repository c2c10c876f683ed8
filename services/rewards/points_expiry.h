// When a points lot expires: the three rules of pb::PointsExpiry (a fixed instant, N days after
// the grant, the end of the grant's year plus N years), with calendar rules in China Standard
// Time. Shared by the ledger store (which stamps each lot) and the service (which validates).
#pragma once

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "marketing/rewards/v1/ledger.pb.h"

namespace mkt::rewards {

// The longest "N days after the grant" and "end of year + N years" a rule may ask for.
inline constexpr int kMaxExpiryDays = 3650;
inline constexpr int kMaxExpiryYears = 100;

// China Standard Time: UTC+8 all year (no daylight saving), as a fixed offset so that the
// result never depends on the host's zoneinfo.
absl::TimeZone ChinaStandardTime();

// Returns the instant a points lot granted at `granted_at` expires under `rule`:
//   fixed_at                 that instant;
//   days_after_grant N       23:59:59 China time on the N-th calendar day after the grant day;
//   end_of_year_plus_years N 23:59:59 China time on 31 December of the grant's year + N.
// INVALID_ARGUMENT (field "expiry.<rule>") for no rule, N out of 1..3650 days / 0..100 years,
// or a fixed instant that is not a valid timestamp.
absl::StatusOr<absl::Time> ExpiryOf(const ::marketing::rewards::v1::PointsExpiry& rule,
                                    absl::Time granted_at);

}  // namespace mkt::rewards
