// The pure rules of benefits: whether a template is well formed, when an instance granted now is
// valid, whether a coupon may be used on an order, and how much it takes off. No I/O, so every
// edge (threshold exactly met, the discount cap, an order smaller than the coupon) is tested by
// table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "marketing/rewards/v1/benefits.pb.h"

namespace mkt::rewards {

namespace pb = ::marketing::rewards::v1;

// Orders above this (10^12 fen, ten billion yuan) are refused as malformed, which also keeps
// amount * rate in int64.
inline constexpr int64_t kMaxOrderFen = 1'000'000'000'000;

// What a coupon takes off an order.
struct Discount {
  int64_t fen = 0;
  // COUPON_FINANCIAL: the rate benefit on `product_code` (no money off the order).
  int32_t rate_bp = 0;
  std::string product_code;
};

// True for the types granted as coupon instances (held as the ledger's COUPON asset).
bool IsInstanceType(pb::BenefitType type);
// True for the instance types that take money off an order at checkout.
bool IsCheckoutCoupon(pb::BenefitType type);

// Returns INVALID_ARGUMENT (field "template.<field>") for the first malformed field of a template
// being created: ids, name, type, the face value and type-specific fields, the validity rule,
// usage lists, stock and cost.
absl::Status ValidateTemplate(const pb::BenefitTemplate& t);

// The validity window of an instance granted at `granted_at`: [from, until).
struct ValidityWindow {
  absl::Time from;
  absl::Time until;
};
ValidityWindow WindowFor(const pb::Validity& validity, absl::Time granted_at);

// Returns INVALID_ARGUMENT for a malformed order (negative or absurd amount, bad ids).
absl::Status ValidateOrder(const pb::OrderInfo& order);

// Returns COUPON_NOT_USABLE (FAILED_PRECONDITION, field naming the rule) when the usage rules
// refuse the order: below the minimum, another channel, merchant, category or product.
absl::Status CheckUsage(const pb::BenefitTemplate& t, const pb::OrderInfo& order);

// Returns the discount of `t` on an order of `order_fen` (already checked by CheckUsage).
// CASH takes face_value but never more than the order; THRESHOLD needs order >= threshold
// (COUPON_NOT_USABLE below it) and takes face_value, capped at the order; DISCOUNT takes
// floor(order * rate / 10000), capped at max_discount_fen when set; FINANCIAL takes no money
// and carries the rate; a GIFT_VOUCHER takes nothing off.
absl::StatusOr<Discount> ComputeDiscount(const pb::BenefitTemplate& t, int64_t order_fen);

}  // namespace mkt::rewards
