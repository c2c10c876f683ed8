#include "services/rewards/coupon_rules.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "libs/core/status.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::common::v1;

constexpr size_t kMaxId = 64;
constexpr int64_t kMaxFace = 1'000'000'000'000;

bool IsKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

bool IsKey(const std::string& s) {
  return !s.empty() && s.size() <= kMaxId && std::all_of(s.begin(), s.end(), IsKeyChar);
}

absl::Status KeyField(const std::string& value, const std::string& field) {
  if (!IsKey(value)) {
    return InvalidArgument(field, field +
                                      " must be 1 to 64 characters of letters, digits, '.', "
                                      "'_', ':' and '-'");
  }
  return absl::OkStatus();
}

absl::Status OptionalKey(const std::string& value, const std::string& field) {
  return value.empty() ? absl::OkStatus() : KeyField(value, field);
}

absl::Status KeyList(const google::protobuf::RepeatedPtrField<std::string>& list,
                     const std::string& field) {
  if (list.size() > 1000) return InvalidArgument(field, field + " has more than 1000 entries");
  for (int i = 0; i < list.size(); ++i) {
    MKT_RETURN_IF_ERROR(KeyField(list[i], absl::StrCat(field, "[", i, "]")));
  }
  return absl::OkStatus();
}

bool Allows(const google::protobuf::RepeatedPtrField<std::string>& list, const std::string& v) {
  return list.empty() || std::find(list.begin(), list.end(), v) != list.end();
}

absl::Status NotUsable(const std::string& field, const std::string& message) {
  return Error(absl::StatusCode::kFailedPrecondition, cpb::COUPON_NOT_USABLE, message, field);
}

absl::Time TimeOf(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

}  // namespace

bool IsInstanceType(pb::BenefitType type) {
  return type == pb::COUPON_CASH || type == pb::COUPON_THRESHOLD || type == pb::COUPON_DISCOUNT ||
         type == pb::COUPON_FINANCIAL || type == pb::GIFT_VOUCHER || type == pb::THIRD_PARTY;
}

bool IsCheckoutCoupon(pb::BenefitType type) {
  return type == pb::COUPON_CASH || type == pb::COUPON_THRESHOLD || type == pb::COUPON_DISCOUNT ||
         type == pb::COUPON_FINANCIAL;
}

absl::Status ValidateTemplate(const pb::BenefitTemplate& t) {
  MKT_RETURN_IF_ERROR(KeyField(t.id(), "template.id"));
  MKT_RETURN_IF_ERROR(KeyField(t.org_id(), "template.org_id"));
  if (t.name().empty() || t.name().size() > 200) {
    return InvalidArgument("template.name", "template.name must be 1 to 200 bytes");
  }
  if (t.type() <= pb::BENEFIT_TYPE_UNSPECIFIED || t.type() > pb::THIRD_PARTY) {
    return InvalidArgument("template.type", "template.type must be a known benefit type");
  }
  const bool needs_face = t.type() != pb::GIFT_VOUCHER && t.type() != pb::THIRD_PARTY;
  if (t.face_value() < 0 || t.face_value() > kMaxFace || (needs_face && t.face_value() == 0)) {
    return InvalidArgument("template.face_value",
                           "template.face_value must be a positive whole number up to 10^12");
  }
  switch (t.type()) {
    case pb::COUPON_THRESHOLD:
      if (t.threshold_fen() <= 0 || t.threshold_fen() > kMaxOrderFen) {
        return InvalidArgument("template.threshold_fen",
                               "a threshold coupon needs threshold_fen > 0 (the order minimum)");
      }
      break;
    case pb::COUPON_DISCOUNT:
      if (t.discount_rate_bp() <= 0 || t.discount_rate_bp() >= 10000) {
        return InvalidArgument("template.discount_rate_bp",
                               "discount_rate_bp must be 1..9999 (basis points off the order)");
      }
      if (t.max_discount_fen() < 0 || t.max_discount_fen() > kMaxOrderFen) {
        return InvalidArgument("template.max_discount_fen",
                               "max_discount_fen must be 0 (no cap) or a positive cap");
      }
      break;
    case pb::COUPON_FINANCIAL:
      if (t.face_value() > 10000) {
        return InvalidArgument("template.face_value",
                               "a financial coupon's face_value is basis points (1..10000)");
      }
      MKT_RETURN_IF_ERROR(KeyField(t.product_code(), "template.product_code"));
      break;
    case pb::GIFT_VOUCHER:
      MKT_RETURN_IF_ERROR(KeyField(t.gift_sku(), "template.gift_sku"));
      break;
    case pb::THIRD_PARTY:
      MKT_RETURN_IF_ERROR(KeyField(t.supplier_id(), "template.supplier_id"));
      MKT_RETURN_IF_ERROR(KeyField(t.supplier_sku(), "template.supplier_sku"));
      break;
    default:
      break;
  }
  if (t.unit_cost_fen() < 0 || t.unit_cost_fen() > kMaxFace) {
    return InvalidArgument("template.unit_cost_fen", "template.unit_cost_fen must be 0..10^12");
  }
  if (t.total_stock() <= 0 || t.total_stock() > 1'000'000'000) {
    return InvalidArgument("template.total_stock", "template.total_stock must be 1..10^9");
  }
  const pb::Validity& v = t.validity();
  if (v.days_after_grant() != 0) {
    if (v.days_after_grant() < 0 || v.days_after_grant() > 3650 || v.has_fixed_from() ||
        v.has_fixed_until()) {
      return InvalidArgument("template.validity.days_after_grant",
                             "days_after_grant must be 1..3650 and excludes a fixed window");
    }
  } else if (!v.has_fixed_until() || !v.has_fixed_from() ||
             TimeOf(v.fixed_until()) <= TimeOf(v.fixed_from())) {
    return InvalidArgument("template.validity",
                           "validity needs days_after_grant or a window fixed_from < fixed_until");
  }
  const pb::UsageRules& u = t.usage();
  if (u.min_order_fen() < 0 || u.min_order_fen() > kMaxOrderFen) {
    return InvalidArgument("template.usage.min_order_fen", "min_order_fen must be 0..10^12");
  }
  MKT_RETURN_IF_ERROR(KeyList(u.channels(), "template.usage.channels"));
  MKT_RETURN_IF_ERROR(KeyList(u.merchants(), "template.usage.merchants"));
  MKT_RETURN_IF_ERROR(KeyList(u.merchant_categories(), "template.usage.merchant_categories"));
  MKT_RETURN_IF_ERROR(KeyList(u.products(), "template.usage.products"));
  return absl::OkStatus();
}

ValidityWindow WindowFor(const pb::Validity& validity, absl::Time granted_at) {
  if (validity.days_after_grant() > 0) {
    return {granted_at, granted_at + absl::Hours(24) * validity.days_after_grant()};
  }
  return {TimeOf(validity.fixed_from()), TimeOf(validity.fixed_until())};
}

absl::Status ValidateOrder(const pb::OrderInfo& order) {
  MKT_RETURN_IF_ERROR(KeyField(order.order_id(), "order.order_id"));
  if (order.amount_fen() < 0) {
    return InvalidArgument("order.amount_fen", "order.amount_fen must not be negative");
  }
  if (order.amount_fen() > kMaxOrderFen) {
    return InvalidArgument("order.amount_fen", "order.amount_fen is unreasonably large");
  }
  MKT_RETURN_IF_ERROR(OptionalKey(order.channel(), "order.channel"));
  MKT_RETURN_IF_ERROR(OptionalKey(order.merchant_id(), "order.merchant_id"));
  MKT_RETURN_IF_ERROR(OptionalKey(order.merchant_category(), "order.merchant_category"));
  MKT_RETURN_IF_ERROR(OptionalKey(order.terminal_id(), "order.terminal_id"));
  return KeyList(order.products(), "order.products");
}

absl::Status CheckUsage(const pb::BenefitTemplate& t, const pb::OrderInfo& order) {
  const pb::UsageRules& u = t.usage();
  if (order.amount_fen() < u.min_order_fen()) {
    return NotUsable("order.amount_fen",
                     absl::StrCat("the coupon needs an order of at least ", u.min_order_fen(),
                                  " fen; this one is ", order.amount_fen()));
  }
  if (!Allows(u.channels(), order.channel())) {
    return NotUsable("order.channel",
                     "the coupon cannot be used on channel \"" + order.channel() + "\"");
  }
  if (!Allows(u.merchants(), order.merchant_id())) {
    return NotUsable("order.merchant_id",
                     "the coupon cannot be used at merchant \"" + order.merchant_id() + "\"");
  }
  if (!Allows(u.merchant_categories(), order.merchant_category())) {
    return NotUsable(
        "order.merchant_category",
        "the coupon cannot be used in merchant category \"" + order.merchant_category() + "\"");
  }
  if (!u.products().empty()) {
    const bool any = std::any_of(order.products().begin(), order.products().end(),
                                 [&](const std::string& p) { return Allows(u.products(), p); });
    if (!any) return NotUsable("order.products", "the order has none of the coupon's products");
  }
  if (t.type() == pb::COUPON_FINANCIAL &&
      std::find(order.products().begin(), order.products().end(), t.product_code()) ==
          order.products().end()) {
    return NotUsable("order.products",
                     "the financial coupon applies only to product \"" + t.product_code() + "\"");
  }
  return absl::OkStatus();
}

absl::StatusOr<Discount> ComputeDiscount(const pb::BenefitTemplate& t, int64_t order_fen) {
  if (order_fen < 0 || order_fen > kMaxOrderFen) {
    return InvalidArgument("order.amount_fen", "order.amount_fen must be 0..10^12");
  }
  Discount d;
  switch (t.type()) {
    case pb::COUPON_CASH:
      d.fen = std::min(t.face_value(), order_fen);
      break;
    case pb::COUPON_THRESHOLD:
      if (order_fen < t.threshold_fen()) {
        return NotUsable("order.amount_fen",
                         absl::StrCat("the coupon takes ", t.face_value(), " fen off orders of ",
                                      t.threshold_fen(), " fen or more; this one is ", order_fen));
      }
      d.fen = std::min(t.face_value(), order_fen);
      break;
    case pb::COUPON_DISCOUNT:
      // Rounded down: the bank never pays a fraction of a fen more than the rate says.
      d.fen = order_fen * t.discount_rate_bp() / 10000;
      if (t.max_discount_fen() > 0) d.fen = std::min(d.fen, t.max_discount_fen());
      break;
    case pb::COUPON_FINANCIAL:
      d.rate_bp = static_cast<int32_t>(t.face_value());
      d.product_code = t.product_code();
      break;
    case pb::GIFT_VOUCHER:
    case pb::THIRD_PARTY:
      break;
    default:
      return NotUsable("coupon_code", "this benefit is not used against an order");
  }
  return d;
}

}  // namespace mkt::rewards
