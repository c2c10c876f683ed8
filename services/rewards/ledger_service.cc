#include "services/rewards/ledger_service.h"

#include <memory>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/time_util.h"
#include "libs/core/status.h"
#include "libs/core/text.h"

namespace mkt::rewards {
namespace {

using google::protobuf::util::TimeUtil;
namespace cpb = ::marketing::common::v1;

// Grant, Spend and Fund quantities above this are a client's mistake (a unit mix-up, a garbage
// value), not a benefit: 10^15 fen is ten trillion yuan. Raw CreateTransfers amounts may be any
// positive int64; there only a request total that would overflow is refused.
constexpr int64_t kMaxReasonableAmount = 1'000'000'000'000'000;
constexpr size_t kMaxTransferIdLength = 128;
// Derived transfer ids append ":benefit" and the like, and reversals append an original id.
constexpr size_t kMaxRequestIdLength = 64;
constexpr size_t kMaxIdLength = 64;
constexpr size_t kMaxReferenceLength = 128;
constexpr size_t kMaxReasonLength = 256;
constexpr size_t kMaxTransfersPerBatch = 500;
constexpr int kMaxGrantsPerCall = 500;
constexpr size_t kMaxMetadataEntries = 32;
constexpr size_t kMaxMetadataValueLength = 1024;
constexpr size_t kMaxPageTokenLength = 512;
constexpr int kMaxTimeoutSeconds = 86400;
constexpr int kMaxWithinDays = 3650;
constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 500;
// The expiry RPC works through expired lots in chunks so one call never holds a huge transaction.
constexpr int kExpiryChunk = 1000;
constexpr int kMaxExpiryChunksPerCall = 100;
// A reversal refused ABORTED (points of its grant expired between the read of their expiries and
// the apply, or a transaction aborted by a concurrent one) is built again and retried; the
// expiry job takes milliseconds, so a second try nearly always succeeds.
constexpr int kReverseAttempts = 3;

std::string Indexed(std::string_view list, size_t i, std::string_view field) {
  std::string out(list);
  out += "[" + std::to_string(i) + "]";
  if (!field.empty()) {
    out += ".";
    out += field;
  }
  return out;
}

std::string Join(const std::string& prefix, std::string_view field) {
  if (prefix.empty()) return std::string(field);
  return prefix + "." + std::string(field);
}

bool IsKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

// 1..max characters of [A-Za-z0-9._:-]: what idempotency keys and ids may contain.
bool IsKey(const std::string& s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  return std::all_of(s.begin(), s.end(), IsKeyChar);
}

// At most `max` bytes of printable UTF-8 (see libs/core/text.h).
bool IsCleanText(const std::string& s, size_t max) {
  return s.size() <= max && PrintableUtf8Length(s) >= 0;
}

bool IsKnownAsset(pb::Asset asset) { return asset >= pb::POINTS && asset <= pb::COUPON; }

bool IsBenefitAsset(pb::Asset asset) {
  return asset == pb::POINTS || asset == pb::CASH_FEN || asset == pb::LOTTERY_CHANCE;
}

bool IsKnownCode(pb::TransferCode code) { return code >= pb::GRANT && code <= pb::RELEASE; }

// The lowercase role names SYSTEM accounts use as owner_id.
std::string RoleName(pb::SystemRole role) {
  std::string name = pb::SystemRole_Name(role);
  if (name.rfind("ROLE_", 0) == 0) name = name.substr(5);
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return name;
}

bool IsRoleName(const std::string& owner_id) {
  for (int r = pb::ROLE_ISSUANCE; r <= pb::ROLE_EXPENSE; ++r) {
    if (owner_id == RoleName(static_cast<pb::SystemRole>(r))) return true;
  }
  return false;
}

bool IsValidTimestamp(const google::protobuf::Timestamp& ts) {
  return ts.seconds() >= TimeUtil::kTimestampMinSeconds &&
         ts.seconds() <= TimeUtil::kTimestampMaxSeconds && ts.nanos() >= 0 &&
         ts.nanos() <= 999'999'999;
}

absl::Time ToTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

absl::Status ValidateAmount(int64_t amount, const std::string& field, bool allow_zero) {
  if (amount < 0 || (amount == 0 && !allow_zero)) {
    return InvalidArgument(
        field, field + (allow_zero ? " must not be negative" : " must be a positive whole number"));
  }
  if (amount > kMaxReasonableAmount) {
    return InvalidArgument(field, field + " is unreasonably large (at most 10^15)");
  }
  return absl::OkStatus();
}

absl::Status ValidateIdField(const std::string& value, const std::string& field, size_t max) {
  if (!IsKey(value, max)) {
    return InvalidArgument(field, field + " must be 1 to " + std::to_string(max) +
                                      " characters of letters, digits, '.', '_', ':' and '-'");
  }
  return absl::OkStatus();
}

absl::Status ValidateOptionalId(const std::string& value, const std::string& field) {
  if (value.empty()) return absl::OkStatus();
  return ValidateIdField(value, field, kMaxIdLength);
}

absl::Status ValidateReference(const std::string& value, const std::string& field, size_t max) {
  if (!IsCleanText(value, max)) {
    return InvalidArgument(field, field + " must be at most " + std::to_string(max) +
                                      " bytes of UTF-8 text without control characters");
  }
  return absl::OkStatus();
}

absl::Status ValidateMetadata(const google::protobuf::Map<std::string, std::string>& metadata,
                              const std::string& field) {
  if (metadata.size() > kMaxMetadataEntries) {
    return InvalidArgument(
        field, field + " may hold at most " + std::to_string(kMaxMetadataEntries) + " entries");
  }
  // Sorted, so that the same bad input always names the same key.
  std::map<std::string, std::string> sorted(metadata.begin(), metadata.end());
  for (const auto& [key, value] : sorted) {
    if (!IsKey(key, kMaxIdLength)) {
      return InvalidArgument(field, field +
                                        " keys must be 1 to 64 characters of letters, digits, "
                                        "'.', '_', ':' and '-'");
    }
    if (!IsCleanText(value, kMaxMetadataValueLength)) {
      return InvalidArgument(field + "." + key,
                             field + "." + key +
                                 " must be at most 1024 bytes of UTF-8 text without control "
                                 "characters");
    }
  }
  return absl::OkStatus();
}

// Checks the rule of a points lot; `field` names the PointsExpiry in the request.
absl::Status ValidateExpiryRule(const pb::PointsExpiry& rule, const std::string& field) {
  switch (rule.rule_case()) {
    case pb::PointsExpiry::kFixedAt: {
      const auto& at = rule.fixed_at();
      // Lots live in PostgreSQL timestamptz, whose calendar we stay well inside.
      if (!IsValidTimestamp(at) || at.seconds() < 0) {
        return InvalidArgument(
            Join(field, "fixed_at"),
            Join(field, "fixed_at") + " must be a valid instant between 1970 and 9999");
      }
      return absl::OkStatus();
    }
    case pb::PointsExpiry::kDaysAfterGrant:
      if (rule.days_after_grant() < 1 || rule.days_after_grant() > kMaxExpiryDays) {
        return InvalidArgument(Join(field, "days_after_grant"), Join(field, "days_after_grant") +
                                                                    " must be between 1 and " +
                                                                    std::to_string(kMaxExpiryDays));
      }
      return absl::OkStatus();
    case pb::PointsExpiry::kEndOfYearPlusYears:
      if (rule.end_of_year_plus_years() < 0 || rule.end_of_year_plus_years() > kMaxExpiryYears) {
        return InvalidArgument(Join(field, "end_of_year_plus_years"),
                               Join(field, "end_of_year_plus_years") +
                                   " must be between 0 (31 December this year) and " +
                                   std::to_string(kMaxExpiryYears));
      }
      return absl::OkStatus();
    case pb::PointsExpiry::RULE_NOT_SET:
      break;
  }
  return InvalidArgument(field, field +
                                    " must set one rule: fixed_at, days_after_grant or "
                                    "end_of_year_plus_years (points always expire)");
}

// Checks that `ref` names an account that can exist: a known asset, an owner kind that fits it,
// and well-formed ids. `field` is the path of the AccountRef in the request.
absl::Status ValidateAccountRef(const pb::AccountRef& ref, const std::string& field) {
  MKT_RETURN_IF_ERROR(ValidateIdField(ref.org_id(), Join(field, "org_id"), kMaxIdLength));
  if (!IsKnownAsset(ref.asset())) {
    return InvalidArgument(
        Join(field, "asset"),
        Join(field, "asset") + " must be POINTS, CASH_FEN, LOTTERY_CHANCE, BUDGET_FEN or STOCK");
  }
  const pb::OwnerKind kind = ref.owner_kind();
  bool fits = false;
  std::string allowed;
  switch (ref.asset()) {
    case pb::BUDGET_FEN:
      fits = kind == pb::CAMPAIGN || kind == pb::SYSTEM;
      allowed = "CAMPAIGN or SYSTEM";
      break;
    case pb::STOCK:
      fits = kind == pb::TEMPLATE || kind == pb::SYSTEM;
      allowed = "TEMPLATE or SYSTEM";
      break;
    default:
      fits = kind == pb::CUSTOMER || kind == pb::SYSTEM;
      allowed = "CUSTOMER or SYSTEM";
      break;
  }
  if (!fits) {
    return InvalidArgument(Join(field, "owner_kind"), Join(field, "owner_kind") + " of a " +
                                                          pb::Asset_Name(ref.asset()) +
                                                          " account must be " + allowed);
  }
  if (ref.asset() == pb::STOCK || ref.asset() == pb::COUPON) {
    if (!IsKey(ref.asset_ref(), kMaxIdLength)) {
      return InvalidArgument(Join(field, "asset_ref"),
                             Join(field, "asset_ref") +
                                 " of a STOCK account must be the reward template id (1 to 64 "
                                 "characters of letters, digits, '.', '_', ':' and '-')");
    }
  } else if (!ref.asset_ref().empty()) {
    return InvalidArgument(
        Join(field, "asset_ref"),
        Join(field, "asset_ref") + " is only for STOCK accounts; leave it empty");
  }
  if (kind == pb::SYSTEM) {
    if (!IsRoleName(ref.owner_id())) {
      return InvalidArgument(Join(field, "owner_id"),
                             Join(field, "owner_id") +
                                 " of a SYSTEM account must be a role: issuance, expiry, "
                                 "redemption, payout, funding or expense");
    }
    return absl::OkStatus();
  }
  MKT_RETURN_IF_ERROR(ValidateIdField(ref.owner_id(), Join(field, "owner_id"), kMaxIdLength));
  if (kind == pb::TEMPLATE && ref.owner_id() != ref.asset_ref()) {
    return InvalidArgument(Join(field, "owner_id"),
                           Join(field, "owner_id") +
                               " of a template's STOCK account must equal asset_ref (the template "
                               "id)");
  }
  return absl::OkStatus();
}

using AccountKey = std::tuple<std::string, int, std::string, int, std::string>;

AccountKey KeyOf(const pb::AccountRef& ref) {
  return {ref.org_id(), ref.asset(), ref.asset_ref(), ref.owner_kind(), ref.owner_id()};
}

// The ledger names its own transfers "expire:<lot id>" (the expiry job) and "timeout:<pending
// id>" (the timeout sweeper). A caller's transfer of that name would pre-empt them: a lot that
// never expires, a reservation that is never released.
absl::Status RefuseLedgerOwnId(std::string_view id, const std::string& field) {
  if (!absl::StartsWith(AsAbsl(id), "expire:") && !absl::StartsWith(AsAbsl(id), "timeout:")) {
    return absl::OkStatus();
  }
  return InvalidArgument(field, field +
                                    " may not begin with \"expire:\" or \"timeout:\": those "
                                    "are the names of the ledger's own transfers");
}

absl::Status ValidateSpec(const pb::TransferSpec& spec, size_t i) {
  auto field = [i](std::string_view name) { return Indexed("transfers", i, name); };
  if (!IsKey(spec.id(), kMaxTransferIdLength)) {
    return InvalidArgument(field("id"), field("id") +
                                            " must be 1 to 128 characters of letters, digits, "
                                            "'.', '_', ':' and '-'");
  }
  MKT_RETURN_IF_ERROR(RefuseLedgerOwnId(spec.id(), field("id")));
  MKT_RETURN_IF_ERROR(ValidateAccountRef(spec.debit(), field("debit")));
  MKT_RETURN_IF_ERROR(ValidateAccountRef(spec.credit(), field("credit")));
  if (spec.debit().asset() != spec.credit().asset()) {
    return InvalidArgument(field("credit.asset"), field("credit.asset") +
                                                      " must be the debit's asset (" +
                                                      pb::Asset_Name(spec.debit().asset()) +
                                                      "): a transfer moves one asset");
  }
  if (KeyOf(spec.debit()) == KeyOf(spec.credit())) {
    return InvalidArgument(field("credit"), field("credit") + " is the same account as the debit");
  }
  // Raw transfers may carry any positive int64; ValidateTransferSpecs refuses a request whose
  // total on one account would overflow.
  if (spec.amount() <= 0) {
    return InvalidArgument(field("amount"), field("amount") + " must be a positive whole number");
  }
  if (!IsKnownCode(spec.code())) {
    return InvalidArgument(
        field("code"),
        field("code") + " must be GRANT, SPEND, EXPIRE, REVERSE, FUND, PAYOUT, ADJUST or RELEASE");
  }
  MKT_RETURN_IF_ERROR(ValidateOptionalId(spec.campaign_id(), field("campaign_id")));
  MKT_RETURN_IF_ERROR(ValidateReference(spec.event_id(), field("event_id"), kMaxReferenceLength));
  MKT_RETURN_IF_ERROR(ValidateReference(spec.order_id(), field("order_id"), kMaxReferenceLength));
  MKT_RETURN_IF_ERROR(ValidateMetadata(spec.metadata(), field("metadata")));

  const bool points_to_customer =
      spec.credit().asset() == pb::POINTS && spec.credit().owner_kind() == pb::CUSTOMER;
  // A reversal gives back the very lots the reversed spend took, so it carries no rule of its own.
  if (points_to_customer && spec.code() != pb::REVERSE) {
    if (!spec.has_expiry()) {
      return InvalidArgument(field("expiry"),
                             field("expiry") +
                                 " is required when POINTS are credited to a customer (every "
                                 "points lot expires)");
    }
    MKT_RETURN_IF_ERROR(ValidateExpiryRule(spec.expiry(), field("expiry")));
  } else if (spec.has_expiry()) {
    return InvalidArgument(field("expiry"),
                           field("expiry") +
                               " applies only to POINTS credited to a customer (and not to "
                               "reversals)");
  }
  if (spec.pending()) {
    if (points_to_customer) {
      return InvalidArgument(field("pending"),
                             field("pending") +
                                 ": POINTS cannot be credited to a customer as pending (a points "
                                 "lot exists only once posted)");
    }
    if (spec.timeout_seconds() < 1 || spec.timeout_seconds() > kMaxTimeoutSeconds) {
      return InvalidArgument(
          field("timeout_seconds"),
          field("timeout_seconds") + " of a pending transfer must be between 1 and 86400 seconds");
    }
  } else if (spec.timeout_seconds() != 0) {
    return InvalidArgument(field("timeout_seconds"),
                           field("timeout_seconds") + " applies only to pending transfers");
  }
  if (spec.code() == pb::REVERSE) {
    if (!IsKey(spec.reverses_transfer_id(), kMaxTransferIdLength)) {
      return InvalidArgument(
          field("reverses_transfer_id"),
          field("reverses_transfer_id") + " must name the transfer a REVERSE transfer reverses");
    }
    if (spec.pending()) {
      return InvalidArgument(field("pending"), field("pending") + ": a reversal cannot be pending");
    }
  } else if (!spec.reverses_transfer_id().empty()) {
    return InvalidArgument(field("reverses_transfer_id"),
                           field("reverses_transfer_id") + " is only for REVERSE transfers");
  }
  return absl::OkStatus();
}

absl::Status ValidateRequestId(const std::string& request_id) {
  MKT_RETURN_IF_ERROR(ValidateIdField(request_id, "request_id", kMaxRequestIdLength));
  // Transfer ids are "<request_id>:<leg>".
  if (RefuseLedgerOwnId(request_id + ":", "request_id").ok()) return absl::OkStatus();
  return InvalidArgument("request_id",
                         "request_id may not be \"expire\" or \"timeout\" or begin with "
                         "\"expire:\" or \"timeout:\": its transfers would take the names of "
                         "the ledger's own");
}

absl::Status ValidatePage(const cpb::PageRequest& page, int* size) {
  if (page.page_size() < 0 || page.page_size() > kMaxPageSize) {
    return InvalidArgument("page.page_size", "page.page_size must be between 0 and 500");
  }
  if (!IsCleanText(page.page_token(), kMaxPageTokenLength)) {
    return InvalidArgument("page.page_token",
                           "page.page_token is not one this service issued; start again without "
                           "it");
  }
  *size = page.page_size() == 0 ? kDefaultPageSize : page.page_size();
  return absl::OkStatus();
}

pb::AccountRef TemplateStockAccount(const std::string& org_id, const std::string& template_id) {
  pb::AccountRef ref;
  ref.set_org_id(org_id);
  ref.set_asset(pb::STOCK);
  ref.set_asset_ref(template_id);
  ref.set_owner_kind(pb::TEMPLATE);
  ref.set_owner_id(template_id);
  return ref;
}

// The transfer of `transfers` whose id is `id`; the store answers in the batch's order, but the
// service does not rely on it.
const pb::Transfer* FindTransfer(const std::vector<pb::Transfer>& transfers,
                                 const std::string& id) {
  for (const auto& t : transfers) {
    if (t.id() == id) return &t;
  }
  return nullptr;
}

// A REVERSE of `target` for `request`: id "<request_id>:<target id>", debit and credit swapped,
// tagged with the campaign, event and order of `leg` (the grant leg being undone) and the reason.
absl::StatusOr<pb::TransferSpec> ReversalOf(const pb::ReverseRequest& request,
                                            const pb::Transfer& target, const pb::Transfer& leg,
                                            int64_t amount) {
  pb::TransferSpec spec;
  spec.set_id(request.request_id() + ":" + target.id());
  if (spec.id().size() > kMaxTransferIdLength) {
    return InvalidArgument("request_id",
                           "request_id is too long: \"<request_id>:" + target.id() +
                               "\" must fit in 128 characters; use a shorter request_id");
  }
  *spec.mutable_debit() = target.credit();
  *spec.mutable_credit() = target.debit();
  spec.set_amount(amount);
  spec.set_code(pb::REVERSE);
  spec.set_reverses_transfer_id(target.id());
  spec.set_campaign_id(leg.campaign_id());
  spec.set_event_id(leg.event_id());
  spec.set_order_id(leg.order_id());
  if (!request.reason().empty()) (*spec.mutable_metadata())["reason"] = request.reason();
  return spec;
}

}  // namespace

pb::AccountRef CampaignBudgetAccount(const std::string& org_id, const std::string& campaign_id) {
  pb::AccountRef ref;
  ref.set_org_id(org_id);
  ref.set_asset(pb::BUDGET_FEN);
  ref.set_owner_kind(pb::CAMPAIGN);
  ref.set_owner_id(campaign_id);
  return ref;
}

pb::AccountRef SystemAccount(const std::string& org_id, pb::Asset asset, pb::SystemRole role,
                             const std::string& asset_ref) {
  pb::AccountRef ref;
  ref.set_org_id(org_id);
  ref.set_asset(asset);
  ref.set_asset_ref(asset_ref);
  ref.set_owner_kind(pb::SYSTEM);
  ref.set_owner_id(RoleName(role));
  return ref;
}

pb::AccountRef CustomerAccount(const std::string& org_id, pb::Asset asset,
                               const std::string& customer_id) {
  pb::AccountRef ref;
  ref.set_org_id(org_id);
  ref.set_asset(asset);
  ref.set_owner_kind(pb::CUSTOMER);
  ref.set_owner_id(customer_id);
  return ref;
}

absl::Status ValidateTransferSpecs(const std::vector<pb::TransferSpec>& specs) {
  if (specs.empty()) {
    return InvalidArgument("transfers", "transfers must hold at least one transfer");
  }
  if (specs.size() > kMaxTransfersPerBatch) {
    return InvalidArgument("transfers", "transfers may hold at most 500 transfers per request");
  }
  std::set<std::string> ids;
  // Per account and side, the sum the batch adds to the account's running totals.
  std::map<std::pair<AccountKey, bool>, int64_t> totals;
  for (size_t i = 0; i < specs.size(); ++i) {
    const pb::TransferSpec& spec = specs[i];
    MKT_RETURN_IF_ERROR(ValidateSpec(spec, i));
    if (!ids.insert(spec.id()).second) {
      return InvalidArgument(Indexed("transfers", i, "id"),
                             Indexed("transfers", i, "id") + " \"" + spec.id() +
                                 "\" appears twice in the request; every transfer needs its own "
                                 "id");
    }
    for (bool debit : {true, false}) {
      int64_t& total = totals[{KeyOf(debit ? spec.debit() : spec.credit()), debit}];
      if (__builtin_add_overflow(total, spec.amount(), &total)) {
        return InvalidArgument(Indexed("transfers", i, "amount"),
                               Indexed("transfers", i, "amount") +
                                   " makes the request's total on one account overflow");
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<pb::CreateTransfersResponse> LedgerService::CreateTransfers(
    const pb::CreateTransfersRequest& request) {
  std::vector<pb::TransferSpec> specs(request.transfers().begin(), request.transfers().end());
  MKT_RETURN_IF_ERROR(ValidateTransferSpecs(specs));
  // The request has no id of its own; the first transfer's id is as stable as the client's keys,
  // so a replay lands in the same batch.
  LinkedBatch batch{.batch_id = specs.front().id(), .transfers = std::move(specs)};
  MKT_ASSIGN_OR_RETURN(AppliedBatch applied, batcher_.Apply(std::move(batch)));
  pb::CreateTransfersResponse response;
  for (auto& t : applied.transfers) *response.add_transfers() = std::move(t);
  return response;
}

absl::StatusOr<pb::Transfer> LedgerService::ResolvePending(const pb::ResolvePendingRequest& request,
                                                           bool post) {
  MKT_RETURN_IF_ERROR(ValidateIdField(request.id(), "id", kMaxTransferIdLength));
  MKT_RETURN_IF_ERROR(RefuseLedgerOwnId(request.id(), "id"));
  MKT_RETURN_IF_ERROR(ValidateIdField(request.pending_id(), "pending_id", kMaxTransferIdLength));
  if (request.id() == request.pending_id()) {
    return InvalidArgument("id", "id must be a new transfer id, not the pending transfer's id");
  }
  // A resolution touches one pending transfer's accounts and is not grouped: the store applies
  // it in its own transaction.
  return store_.ResolvePending(request.id(), request.pending_id(), post);
}

absl::StatusOr<LinkedBatch> LedgerService::PrepareGrant(const pb::GrantRequest& request) const {
  MKT_RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  MKT_RETURN_IF_ERROR(ValidateIdField(request.org_id(), "org_id", kMaxIdLength));
  MKT_RETURN_IF_ERROR(ValidateIdField(request.customer_id(), "customer_id", kMaxIdLength));
  if (!IsBenefitAsset(request.asset())) {
    return InvalidArgument("asset", "asset must be POINTS, CASH_FEN or LOTTERY_CHANCE");
  }
  MKT_RETURN_IF_ERROR(ValidateAmount(request.quantity(), "quantity", /*allow_zero=*/false));
  MKT_RETURN_IF_ERROR(
      ValidateAmount(request.budget_cost_fen(), "budget_cost_fen", /*allow_zero=*/true));
  if (request.budget_cost_fen() > 0 && request.campaign_id().empty()) {
    return InvalidArgument("campaign_id",
                           "campaign_id is required when budget_cost_fen is set: the cost is "
                           "taken from that campaign's budget");
  }
  MKT_RETURN_IF_ERROR(ValidateOptionalId(request.campaign_id(), "campaign_id"));
  MKT_RETURN_IF_ERROR(ValidateOptionalId(request.stock_template_id(), "stock_template_id"));
  MKT_RETURN_IF_ERROR(ValidateAmount(request.stock_units(), "stock_units", /*allow_zero=*/true));
  if (request.stock_units() > 0 && request.stock_template_id().empty()) {
    return InvalidArgument("stock_units",
                           "stock_units needs stock_template_id: the units are taken from that "
                           "template's stock");
  }
  if (request.asset() == pb::POINTS) {
    if (!request.has_expiry()) {
      return InvalidArgument("expiry",
                             "expiry is required when granting POINTS (every points lot expires)");
    }
    MKT_RETURN_IF_ERROR(ValidateExpiryRule(request.expiry(), "expiry"));
  } else if (request.has_expiry()) {
    return InvalidArgument("expiry", "expiry applies only to POINTS");
  }
  MKT_RETURN_IF_ERROR(ValidateReference(request.event_id(), "event_id", kMaxReferenceLength));
  MKT_RETURN_IF_ERROR(ValidateMetadata(request.metadata(), "metadata"));

  const std::string& org = request.org_id();
  auto leg = [&](std::string_view suffix) {
    pb::TransferSpec spec;
    spec.set_id(request.request_id() + ":" + std::string(suffix));
    spec.set_code(pb::GRANT);
    spec.set_campaign_id(request.campaign_id());
    spec.set_event_id(request.event_id());
    spec.mutable_metadata()->insert(request.metadata().begin(), request.metadata().end());
    return spec;
  };
  // The budget and stock legs are there only when asked for: a resend that drops one must not
  // be taken for a replay of the stored grant.
  LinkedBatch batch{
      .batch_id = request.request_id(), .transfers = {}, .replay_needs_whole_batch = true};
  if (request.budget_cost_fen() > 0) {
    pb::TransferSpec budget = leg("budget");
    *budget.mutable_debit() = CampaignBudgetAccount(org, request.campaign_id());
    *budget.mutable_credit() = SystemAccount(org, pb::BUDGET_FEN, pb::ROLE_EXPENSE);
    budget.set_amount(request.budget_cost_fen());
    batch.transfers.push_back(std::move(budget));
  }
  if (!request.stock_template_id().empty()) {
    const std::string& tmpl = request.stock_template_id();
    pb::TransferSpec stock = leg("stock");
    *stock.mutable_debit() = TemplateStockAccount(org, tmpl);
    *stock.mutable_credit() = SystemAccount(org, pb::STOCK, pb::ROLE_ISSUANCE, tmpl);
    stock.set_amount(request.stock_units() > 0 ? request.stock_units() : 1);
    batch.transfers.push_back(std::move(stock));
  }
  pb::TransferSpec benefit = leg("benefit");
  *benefit.mutable_debit() = SystemAccount(org, request.asset(), pb::ROLE_ISSUANCE);
  *benefit.mutable_credit() = CustomerAccount(org, request.asset(), request.customer_id());
  benefit.set_amount(request.quantity());
  if (request.asset() == pb::POINTS) *benefit.mutable_expiry() = request.expiry();
  batch.report_account = benefit.credit();
  batch.transfers.push_back(std::move(benefit));
  MKT_RETURN_IF_ERROR(ValidateTransferSpecs(batch.transfers));
  return batch;
}

absl::StatusOr<pb::GrantResponse> LedgerService::FinishGrant(AppliedBatch applied,
                                                             const pb::AccountRef& customer) {
  pb::GrantResponse response;
  for (auto& t : applied.transfers) *response.add_transfers() = std::move(t);
  if (applied.account) {
    *response.mutable_account() = *std::move(applied.account);
  } else {
    MKT_ASSIGN_OR_RETURN(*response.mutable_account(), store_.GetAccount(customer));
  }
  return response;
}

absl::StatusOr<pb::GrantResponse> LedgerService::Grant(const pb::GrantRequest& request) {
  MKT_ASSIGN_OR_RETURN(LinkedBatch batch, PrepareGrant(request));
  pb::AccountRef customer = batch.transfers.back().credit();
  MKT_ASSIGN_OR_RETURN(AppliedBatch applied, batcher_.Apply(std::move(batch)));
  return FinishGrant(std::move(applied), customer);
}

void LedgerService::GrantAsync(const pb::GrantRequest& request, WorkerPool& readers,
                               std::function<void(absl::StatusOr<pb::GrantResponse>)> done) {
  absl::StatusOr<LinkedBatch> batch = PrepareGrant(request);
  if (!batch.ok()) {
    done(batch.status());
    return;
  }
  pb::AccountRef customer = batch->transfers.back().credit();
  auto shared_done =
      std::make_shared<std::function<void(absl::StatusOr<pb::GrantResponse>)>>(std::move(done));
  batcher_.Submit(std::move(*batch), [this, &readers, customer = std::move(customer),
                                      shared_done](BatchResult result) mutable {
    if (!result.ok()) {
      (*shared_done)(result.status());
      return;
    }
    if (result->account) {  // the usual case: nothing left to read
      (*shared_done)(FinishGrant(*std::move(result), customer));
      return;
    }
    auto applied = std::make_shared<AppliedBatch>(*std::move(result));
    auto finish = [this, customer, applied, shared_done] {
      (*shared_done)(FinishGrant(std::move(*applied), customer));
    };
    if (!readers.TrySubmit(finish)) finish();
  });
}

void LedgerService::GrantManyAsync(
    const pb::GrantManyRequest& request, WorkerPool& readers,
    std::function<void(absl::StatusOr<pb::GrantManyResponse>)> done) {
  const int n = request.grants_size();
  if (n == 0 || n > kMaxGrantsPerCall) {
    done(InvalidArgument("grants", absl::StrCat("a GrantMany call carries 1 to ", kMaxGrantsPerCall,
                                                " grants, not ", n)));
    return;
  }
  struct Gathered {
    absl::Mutex mu;
    pb::GrantManyResponse response ABSL_GUARDED_BY(mu);
    int left ABSL_GUARDED_BY(mu);
    std::function<void(absl::StatusOr<pb::GrantManyResponse>)> done;
  };
  auto gathered = std::make_shared<Gathered>();
  {
    absl::MutexLock lock(&gathered->mu);
    gathered->left = n;
    gathered->response.mutable_outcomes()->Reserve(n);
    for (const pb::GrantRequest& grant : request.grants()) {
      gathered->response.add_outcomes()->set_request_id(grant.request_id());
    }
  }
  gathered->done = std::move(done);
  for (int i = 0; i < n; ++i) {
    // `done` may run here (a grant refused before the commit) or on a writer thread.
    GrantAsync(request.grants(i), readers, [gathered, i](absl::StatusOr<pb::GrantResponse> result) {
      pb::GrantManyResponse complete;
      {
        absl::MutexLock lock(&gathered->mu);
        pb::GrantOutcome& outcome = *gathered->response.mutable_outcomes(i);
        if (result.ok()) {
          *outcome.mutable_grant() = *std::move(result);
        } else {
          SetItemStatus(result.status(), outcome);
        }
        if (--gathered->left > 0) return;
        complete = std::move(gathered->response);
      }
      gathered->done(std::move(complete));
    });
  }
}

absl::StatusOr<pb::SpendResponse> LedgerService::Spend(const pb::SpendRequest& request) {
  MKT_RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  MKT_RETURN_IF_ERROR(ValidateIdField(request.org_id(), "org_id", kMaxIdLength));
  MKT_RETURN_IF_ERROR(ValidateIdField(request.customer_id(), "customer_id", kMaxIdLength));
  if (!IsBenefitAsset(request.asset())) {
    return InvalidArgument("asset", "asset must be POINTS, CASH_FEN or LOTTERY_CHANCE");
  }
  MKT_RETURN_IF_ERROR(ValidateAmount(request.amount(), "amount", /*allow_zero=*/false));
  MKT_RETURN_IF_ERROR(ValidateReference(request.order_id(), "order_id", kMaxReferenceLength));
  MKT_RETURN_IF_ERROR(ValidateOptionalId(request.campaign_id(), "campaign_id"));
  if (request.pending()) {
    if (request.timeout_seconds() < 1 || request.timeout_seconds() > kMaxTimeoutSeconds) {
      return InvalidArgument("timeout_seconds",
                             "timeout_seconds of a pending spend must be between 1 and 86400");
    }
  } else if (request.timeout_seconds() != 0) {
    return InvalidArgument("timeout_seconds", "timeout_seconds applies only to pending spends");
  }
  MKT_RETURN_IF_ERROR(ValidateMetadata(request.metadata(), "metadata"));

  pb::TransferSpec spend;
  spend.set_id(request.request_id() + ":spend");
  *spend.mutable_debit() =
      CustomerAccount(request.org_id(), request.asset(), request.customer_id());
  *spend.mutable_credit() = SystemAccount(request.org_id(), request.asset(), pb::ROLE_REDEMPTION);
  spend.set_amount(request.amount());
  spend.set_code(pb::SPEND);
  spend.set_order_id(request.order_id());
  spend.set_campaign_id(request.campaign_id());
  spend.set_pending(request.pending());
  spend.set_timeout_seconds(request.timeout_seconds());
  spend.mutable_metadata()->insert(request.metadata().begin(), request.metadata().end());
  LinkedBatch batch{
      .batch_id = request.request_id(), .transfers = {spend}, .report_account = spend.debit()};
  MKT_RETURN_IF_ERROR(ValidateTransferSpecs(batch.transfers));

  MKT_ASSIGN_OR_RETURN(AppliedBatch applied, batcher_.Apply(std::move(batch)));
  const pb::Transfer* stored = FindTransfer(applied.transfers, spend.id());
  if (stored == nullptr) return Internal("the ledger did not return the spend transfer");
  pb::SpendResponse response;
  *response.mutable_transfer() = *stored;
  if (applied.account) {
    *response.mutable_account() = *std::move(applied.account);
  } else {
    MKT_ASSIGN_OR_RETURN(*response.mutable_account(), store_.GetAccount(spend.debit()));
  }
  return response;
}

absl::StatusOr<pb::ReverseResponse> LedgerService::Reverse(const pb::ReverseRequest& request) {
  MKT_RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  MKT_RETURN_IF_ERROR(ValidateReference(request.reason(), "reason", kMaxReasonLength));
  std::vector<pb::Transfer> originals;
  switch (request.target_case()) {
    case pb::ReverseRequest::kBatchId: {
      MKT_RETURN_IF_ERROR(ValidateIdField(request.batch_id(), "batch_id", kMaxTransferIdLength));
      MKT_ASSIGN_OR_RETURN(originals, store_.GetBatch(request.batch_id()));
      break;
    }
    case pb::ReverseRequest::kTransferId: {
      MKT_RETURN_IF_ERROR(
          ValidateIdField(request.transfer_id(), "transfer_id", kMaxTransferIdLength));
      MKT_ASSIGN_OR_RETURN(pb::Transfer original, store_.GetTransfer(request.transfer_id()));
      if (original.state() != pb::POSTED) {
        return Error(absl::StatusCode::kFailedPrecondition, cpb::CONFLICT,
                     "transfer \"" + original.id() +
                         "\" is not posted; a pending transfer is voided, not reversed",
                     "transfer_id");
      }
      if (original.code() == pb::REVERSE) {
        return Error(absl::StatusCode::kFailedPrecondition, cpb::CONFLICT,
                     "transfer \"" + original.id() + "\" is itself a reversal", "transfer_id");
      }
      originals.push_back(std::move(original));
      break;
    }
    case pb::ReverseRequest::TARGET_NOT_SET:
      return InvalidArgument("target", "set batch_id or transfer_id: what to reverse");
  }

  // The expiries are read outside the transaction that applies the batch, so the expiry job may
  // expire more of a credit's lots in between: the store then refuses the batch ABORTED
  // (checks_expiry_reversals) and it is built again from a fresh read.
  for (int attempt = 1;; ++attempt) {
    // The reversal's ids name its target, so the same request_id for another target would make
    // only new ids: the store is asked to refuse a request_id that already names other
    // transfers.
    LinkedBatch batch{
        .batch_id = request.request_id(), .transfers = {}, .exclusive_batch_id = true};
    // The last leg of a batch is undone first, so a grant gives its benefit back before its
    // budget and stock are restored.
    for (auto it = originals.rbegin(); it != originals.rend(); ++it) {
      const pb::Transfer& original = *it;
      if (original.state() != pb::POSTED || original.code() == pb::REVERSE) continue;
      if (original.credit().owner_kind() == pb::CUSTOMER &&
          original.credit().asset() == pb::POINTS) {
        // Points of this credit that expired come back from EXPIRY first (into a lot of their
        // own, which the clawback below takes first), so the customer does not lose them twice;
        // what they spent is still clawed back from their other points.
        MKT_RETURN_IF_ERROR(AddExpiryReversals(request, original, batch.transfers));
        batch.checks_expiry_reversals = true;
      }
      MKT_ASSIGN_OR_RETURN(pb::TransferSpec spec,
                           ReversalOf(request, original, original, original.amount()));
      batch.transfers.push_back(std::move(spec));
    }
    if (batch.transfers.empty()) {
      return NotFound("batch \"" + request.batch_id() + "\" has no posted transfer to reverse");
    }
    MKT_RETURN_IF_ERROR(ValidateTransferSpecs(batch.transfers));
    BatchResult applied = batcher_.Apply(std::move(batch));
    // Nothing of an aborted batch was stored, so building it again is safe.
    if (!applied.ok() && applied.status().code() == absl::StatusCode::kAborted &&
        attempt < kReverseAttempts) {
      continue;
    }
    MKT_RETURN_IF_ERROR(applied.status());
    pb::ReverseResponse response;
    for (auto& t : applied->transfers) *response.add_transfers() = std::move(t);
    return response;
  }
}

absl::Status LedgerService::AddExpiryReversals(const pb::ReverseRequest& request,
                                               const pb::Transfer& original,
                                               std::vector<pb::TransferSpec>& out) {
  MKT_ASSIGN_OR_RETURN(std::vector<LotExpiry> expiries, store_.GetLotExpiries(original.id()));
  if (expiries.empty()) return absl::OkStatus();
  // Was `original` reversed by this request already? Then this is a replay: the batch must be
  // what was stored, not what the expiries are now (points put back later may have expired).
  bool replay = false;
  if (absl::StatusOr<pb::Transfer> leg =
          store_.GetTransfer(request.request_id() + ":" + original.id());
      leg.ok()) {
    replay = true;
  } else if (leg.status().code() != absl::StatusCode::kNotFound) {
    return leg.status();
  }
  int64_t left = original.amount();  // what the clawback takes back at most
  for (const LotExpiry& e : expiries) {
    const pb::Transfer& expiry = e.expiry;
    MKT_ASSIGN_OR_RETURN(pb::TransferSpec spec, ReversalOf(request, expiry, original, 0));
    int64_t amount = replay ? 0 : std::min(expiry.amount() - e.reversed_amount, left);
    if (replay || e.reversed_amount > 0) {
      // A retry of this request gives the same amount back again, so that it is a replay.
      absl::StatusOr<pb::Transfer> earlier = store_.GetTransfer(spec.id());
      if (earlier.ok()) {
        amount = earlier->amount();
      } else if (earlier.status().code() != absl::StatusCode::kNotFound) {
        return earlier.status();
      }
    }
    if (amount <= 0) continue;
    spec.set_amount(amount);
    out.push_back(std::move(spec));
    left -= amount;
  }
  return absl::OkStatus();
}

absl::StatusOr<pb::FundResponse> LedgerService::Fund(const pb::FundRequest& request) {
  MKT_RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  MKT_RETURN_IF_ERROR(ValidateIdField(request.org_id(), "org_id", kMaxIdLength));
  if (request.asset() != pb::BUDGET_FEN && request.asset() != pb::STOCK) {
    return InvalidArgument("asset",
                           "asset must be BUDGET_FEN (a campaign's budget) or STOCK (a reward "
                           "template's stock)");
  }
  MKT_RETURN_IF_ERROR(ValidateIdField(request.owner_id(), "owner_id", kMaxIdLength));
  MKT_RETURN_IF_ERROR(ValidateAmount(request.amount(), "amount", /*allow_zero=*/false));

  const std::string& org = request.org_id();
  pb::TransferSpec fund;
  fund.set_id(request.request_id() + ":fund");
  if (request.asset() == pb::BUDGET_FEN) {
    *fund.mutable_debit() = SystemAccount(org, pb::BUDGET_FEN, pb::ROLE_FUNDING);
    *fund.mutable_credit() = CampaignBudgetAccount(org, request.owner_id());
  } else {
    *fund.mutable_debit() = SystemAccount(org, pb::STOCK, pb::ROLE_FUNDING, request.owner_id());
    *fund.mutable_credit() = TemplateStockAccount(org, request.owner_id());
  }
  fund.set_amount(request.amount());
  fund.set_code(pb::FUND);
  LinkedBatch batch{
      .batch_id = request.request_id(), .transfers = {fund}, .report_account = fund.credit()};
  MKT_RETURN_IF_ERROR(ValidateTransferSpecs(batch.transfers));

  MKT_ASSIGN_OR_RETURN(AppliedBatch applied, batcher_.Apply(std::move(batch)));
  const pb::Transfer* stored = FindTransfer(applied.transfers, fund.id());
  if (stored == nullptr) return Internal("the ledger did not return the funding transfer");
  pb::FundResponse response;
  *response.mutable_transfer() = *stored;
  if (applied.account) {
    *response.mutable_account() = *std::move(applied.account);
  } else {
    MKT_ASSIGN_OR_RETURN(*response.mutable_account(), store_.GetAccount(fund.credit()));
  }
  return response;
}

absl::StatusOr<pb::Transfer> LedgerService::ReleaseBudget(const std::string& request_id,
                                                          const std::string& org_id,
                                                          const std::string& campaign_id,
                                                          int64_t amount_fen) {
  MKT_RETURN_IF_ERROR(ValidateRequestId(request_id));
  MKT_RETURN_IF_ERROR(ValidateIdField(org_id, "org_id", kMaxIdLength));
  MKT_RETURN_IF_ERROR(ValidateIdField(campaign_id, "campaign_id", kMaxIdLength));
  MKT_RETURN_IF_ERROR(ValidateAmount(amount_fen, "amount", /*allow_zero=*/false));
  pb::TransferSpec release;
  release.set_id(request_id + ":release");
  *release.mutable_debit() = CampaignBudgetAccount(org_id, campaign_id);
  *release.mutable_credit() = SystemAccount(org_id, pb::BUDGET_FEN, pb::ROLE_FUNDING);
  release.set_amount(amount_fen);
  release.set_code(pb::RELEASE);
  release.set_campaign_id(campaign_id);
  LinkedBatch batch{
      .batch_id = request_id, .transfers = {release}, .report_account = release.debit()};
  MKT_RETURN_IF_ERROR(ValidateTransferSpecs(batch.transfers));
  MKT_ASSIGN_OR_RETURN(AppliedBatch applied, batcher_.Apply(std::move(batch)));
  const pb::Transfer* stored = FindTransfer(applied.transfers, release.id());
  if (stored == nullptr) return Internal("the ledger did not return the release transfer");
  return *stored;
}

absl::StatusOr<pb::GetBalancesResponse> LedgerService::GetBalances(
    const pb::GetBalancesRequest& request) {
  MKT_RETURN_IF_ERROR(ValidateIdField(request.org_id(), "org_id", kMaxIdLength));
  MKT_RETURN_IF_ERROR(ValidateIdField(request.customer_id(), "customer_id", kMaxIdLength));
  MKT_ASSIGN_OR_RETURN(std::vector<pb::Account> accounts,
                       store_.GetCustomerAccounts(request.org_id(), request.customer_id()));
  pb::GetBalancesResponse response;
  for (auto& a : accounts) *response.add_accounts() = std::move(a);
  return response;
}

absl::StatusOr<pb::Account> LedgerService::GetAccount(const pb::GetAccountRequest& request) {
  MKT_RETURN_IF_ERROR(ValidateAccountRef(request.ref(), "ref"));
  return store_.GetAccount(request.ref());
}

absl::StatusOr<pb::CampaignBudget> LedgerService::GetCampaignBudget(
    const pb::GetCampaignBudgetRequest& request) {
  MKT_RETURN_IF_ERROR(ValidateIdField(request.org_id(), "org_id", kMaxIdLength));
  MKT_RETURN_IF_ERROR(ValidateIdField(request.campaign_id(), "campaign_id", kMaxIdLength));
  const pb::AccountRef ref = CampaignBudgetAccount(request.org_id(), request.campaign_id());
  absl::StatusOr<pb::Account> account = store_.GetAccount(ref);
  if (absl::IsNotFound(account.status())) {
    return Error(absl::StatusCode::kNotFound, cpb::ACCOUNT_NOT_FOUND,
                 "campaign " + request.campaign_id() + " has no budget at " + request.org_id() +
                     ": a campaign's budget is funded up to its cap when a version is published, "
                     "in the campaign's own org",
                 "campaign_id");
  }
  MKT_RETURN_IF_ERROR(account.status());
  MKT_ASSIGN_OR_RETURN(const BudgetFlows flows, store_.GetBudgetFlows(ref));
  pb::CampaignBudget budget;
  budget.set_org_id(request.org_id());
  budget.set_campaign_id(request.campaign_id());
  budget.set_funded_fen(flows.funded);
  budget.set_spent_fen(account->debits_posted() - flows.released);
  budget.set_returned_fen(account->credits_posted() - flows.funded);
  budget.set_released_fen(flows.released);
  budget.set_held_fen(account->debits_pending());
  budget.set_available_fen(account->available());
  *budget.mutable_created_at() = account->created_at();
  return budget;
}

absl::StatusOr<pb::ListExpiringLotsResponse> LedgerService::ListExpiringLots(
    const pb::ListExpiringLotsRequest& request) {
  MKT_RETURN_IF_ERROR(ValidateIdField(request.org_id(), "org_id", kMaxIdLength));
  MKT_RETURN_IF_ERROR(ValidateIdField(request.customer_id(), "customer_id", kMaxIdLength));
  if (request.within_days() < 1 || request.within_days() > kMaxWithinDays) {
    return InvalidArgument("within_days", "within_days must be between 1 and 3650");
  }
  absl::Time until = clock_.Now() + absl::Hours(24) * request.within_days();
  return store_.ListExpiringLots(request.org_id(), request.customer_id(), until);
}

absl::StatusOr<pb::ListHistoryResponse> LedgerService::ListHistory(
    const pb::ListHistoryRequest& request) {
  MKT_RETURN_IF_ERROR(ValidateIdField(request.org_id(), "org_id", kMaxIdLength));
  MKT_RETURN_IF_ERROR(ValidateIdField(request.customer_id(), "customer_id", kMaxIdLength));
  int size = 0;
  MKT_RETURN_IF_ERROR(ValidatePage(request.page(), &size));
  return store_.ListHistory(request.org_id(), request.customer_id(), request.page().page_token(),
                            size);
}

absl::StatusOr<pb::GetStatementResponse> LedgerService::GetStatement(
    const pb::GetStatementRequest& request) {
  MKT_RETURN_IF_ERROR(ValidateAccountRef(request.account(), "account"));
  absl::Time from = absl::UnixEpoch();
  absl::Time to = clock_.Now();
  if (request.has_from()) {
    if (!IsValidTimestamp(request.from())) {
      return InvalidArgument("from", "from must be a valid instant");
    }
    from = ToTime(request.from());
  }
  if (request.has_to()) {
    if (!IsValidTimestamp(request.to())) {
      return InvalidArgument("to", "to must be a valid instant");
    }
    to = ToTime(request.to());
  }
  if (from > to) return InvalidArgument("from", "from must not be after to");
  int size = 0;
  MKT_RETURN_IF_ERROR(ValidatePage(request.page(), &size));
  return store_.GetStatement(request.account(), from, to, request.page().page_token(), size);
}

absl::StatusOr<pb::RunExpiryResponse> LedgerService::RunExpiry(
    const pb::RunExpiryRequest& request) {
  absl::Time as_of = clock_.Now();
  if (request.has_as_of()) {
    if (!IsValidTimestamp(request.as_of())) {
      return InvalidArgument("as_of", "as_of must be a valid instant");
    }
    as_of = ToTime(request.as_of());
  }
  pb::RunExpiryResponse total;
  for (int chunk = 0; chunk < kMaxExpiryChunksPerCall; ++chunk) {
    MKT_ASSIGN_OR_RETURN(pb::RunExpiryResponse done, store_.ExpireLots(as_of, kExpiryChunk));
    total.set_lots_expired(total.lots_expired() + done.lots_expired());
    total.set_points_expired(total.points_expired() + done.points_expired());
    if (done.lots_expired() < kExpiryChunk) break;
  }
  return total;
}

absl::StatusOr<pb::CheckIntegrityResponse> LedgerService::CheckIntegrity() {
  return store_.CheckIntegrity();
}

}  // namespace mkt::rewards
