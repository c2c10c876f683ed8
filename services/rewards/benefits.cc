#include "services/rewards/benefits.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <optional>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "libs/core/status.h"
#include "libs/log/log.h"
#include "libs/pg/arrays.h"
#include "libs/pg/prepared.h"
#include "libs/pg/reads.h"
#include "libs/tenancy/tenancy.h"
#include "services/rewards/batcher.h"
#include "services/rewards/coupon_rules.h"
#include "services/rewards/fulfilment.h"
#include "services/rewards/ledger_service.h"
#include "spdlog/spdlog.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::common::v1;

// ---- SQL.
#define MKT_COUPON_COLUMNS                                                                 \
  "c.id, c.code, c.org_id, c.template_id, c.type, c.customer_id, c.campaign_id, c.state, " \
  "(extract(epoch from c.valid_from) * 1000000)::bigint, "                                 \
  "(extract(epoch from c.valid_until) * 1000000)::bigint, coalesce(c.redemption_id, ''), " \
  "(extract(epoch from c.collected_at) * 1000000)::bigint, "                               \
  "(extract(epoch from c.issued_at) * 1000000)::bigint"

constexpr char kInsertTemplate[] =
    "INSERT INTO benefit_templates (id, org_id, type, status, spec, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, decode($5, 'hex'), $6::timestamptz, $6::timestamptz) "
    "ON CONFLICT (id) DO NOTHING";
constexpr char kSelectTemplate[] =
    "SELECT encode(spec, 'hex'), status FROM benefit_templates WHERE id = $1";
constexpr char kLockTemplate[] =
    "SELECT encode(spec, 'hex'), status FROM benefit_templates WHERE id = $1 FOR UPDATE";
constexpr char kUpdateTemplate[] =
    "UPDATE benefit_templates SET status = $2, spec = decode($3, 'hex'), "
    "updated_at = $4::timestamptz WHERE id = $1";

constexpr char kSelectCouponByRequest[] =
    "SELECT id, template_id, customer_id, campaign_id, holder_org_id FROM coupons "
    "WHERE issue_request_id = $1";
constexpr char kInsertCoupon[] =
    "INSERT INTO coupons (code, issue_request_id, org_id, template_id, type, customer_id, "
    "campaign_id, state, valid_from, valid_until, issued_at, updated_at, holder_org_id) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8::timestamptz, $9::timestamptz, $10::timestamptz, "
    "$10::timestamptz, $11) RETURNING id";
// The transactional issue path (replays, THIRD_PARTY and inactive templates) writes the coupon
// and its issue event with the unapplied intent, applies the intent, then marks the event applied,
// makes the coupon ISSUED and reads it back in one prepared statement. The common case is written
// by the ledger batch itself (decision 017; LinkedBatch::new_coupon).
constexpr char kDrawCouponIds[] =
    "SELECT nextval(pg_get_serial_sequence('coupons', 'id')) FROM generate_series(1, $1)";
constexpr pg::Prepared kFinishIssueReturning{
    "coupons.finish_issue",
    "WITH e AS (UPDATE coupon_events SET applied = true WHERE coupon_id = $1 AND seq = 1) "
    "UPDATE coupons c SET state = $2, updated_at = $3::timestamptz WHERE c.id = $1 AND "
    "c.state = 0 RETURNING " MKT_COUPON_COLUMNS};
constexpr char kSelectCouponById[] = "SELECT " MKT_COUPON_COLUMNS " FROM coupons c WHERE c.id = $1";
constexpr char kSelectCouponByCode[] =
    "SELECT " MKT_COUPON_COLUMNS " FROM coupons c WHERE c.code = $1";
constexpr char kLockCouponById[] =
    "SELECT " MKT_COUPON_COLUMNS " FROM coupons c WHERE c.id = $1 FOR UPDATE";
constexpr char kLockCouponByCode[] =
    "SELECT " MKT_COUPON_COLUMNS " FROM coupons c WHERE c.code = $1 FOR UPDATE";
constexpr char kUpdateCouponState[] =
    "UPDATE coupons SET state = $2, redemption_id = nullif($3, ''), version = version + 1, "
    "updated_at = $4::timestamptz WHERE id = $1";
constexpr char kSetCollected[] =
    "UPDATE coupons SET collected_at = $2::timestamptz, version = version + 1, "
    "updated_at = $2::timestamptz WHERE id = $1";
constexpr char kDeleteUnissuedCoupon[] = "DELETE FROM coupons WHERE id = $1 AND state = 0";
// The redemption whose gift the coupon's last collection handed over.
constexpr char kSelectCollectedRedemption[] =
    "SELECT coalesce(redemption_id, '') FROM coupon_events WHERE coupon_id = $1 "
    "AND cause = 'collected' ORDER BY seq DESC LIMIT 1";
// How long a wallet read waits for another call already reading the same wallet before reading
// it itself (wallet_cache.h, "Herds").
constexpr absl::Duration kWalletReadWait = absl::Seconds(2);
// Prepared: wallets are read again and again (P3).
constexpr pg::Prepared kSelectWalletCoupons{
    "rewards_wallet_coupons",
    "SELECT " MKT_COUPON_COLUMNS
    " FROM coupons c WHERE c.holder_org_id = $1 AND c.customer_id = $2 AND c.state > 0 "
    "ORDER BY c.state, c.valid_until, c.id"};
// The same for several customers ($2, a text[]): wallet refreshes read in batches.
constexpr pg::Prepared kSelectWalletCouponsOf{
    "rewards_wallet_coupons_of",
    "SELECT " MKT_COUPON_COLUMNS
    " FROM coupons c WHERE c.holder_org_id = $1 AND c.customer_id = ANY($2::text[]) "
    "AND c.state > 0 ORDER BY c.customer_id, c.state, c.valid_until, c.id"};

constexpr char kInsertEvent[] =
    "INSERT INTO coupon_events (coupon_id, seq, from_state, to_state, actor, cause, "
    "redemption_id, at, intent, applied) "
    "SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5, nullif($6, ''), $7::timestamptz, "
    "CASE WHEN $8 = '' THEN NULL ELSE decode($8, 'hex') END, $8 = '' "
    "FROM coupon_events WHERE coupon_id = $1";
constexpr char kSelectUnappliedOfCoupon[] =
    "SELECT e.seq, encode(e.intent, 'hex'), e.from_state, e.to_state, c.customer_id "
    "FROM coupon_events e JOIN coupons c ON c.id = e.coupon_id "
    "WHERE e.coupon_id = $1 AND NOT e.applied ORDER BY e.seq";
constexpr char kMarkApplied[] =
    "UPDATE coupon_events SET applied = true WHERE coupon_id = $1 AND seq = $2";
constexpr char kFinishIssue[] =
    "UPDATE coupons SET state = $2, updated_at = $3::timestamptz WHERE id = $1 AND state = 0";
constexpr char kSelectIssueIntent[] =
    "SELECT encode(intent, 'hex') FROM coupon_events WHERE coupon_id = $1 AND from_state = 0 "
    "AND intent IS NOT NULL ORDER BY seq LIMIT 1";
constexpr char kSelectStaleIntents[] =
    "SELECT DISTINCT coupon_id FROM coupon_events WHERE NOT applied AND at < $1::timestamptz "
    "LIMIT $2";

constexpr char kInsertRedemption[] =
    "INSERT INTO redemptions (id, coupon_id, order_id, state, detail, lock_expires_at, "
    "created_at, updated_at) VALUES ($1, $2, $3, $4, decode($5, 'hex'), $6::timestamptz, "
    "$7::timestamptz, $7::timestamptz)";
constexpr char kSelectRedemptionByOrder[] =
    "SELECT id, encode(detail, 'hex') FROM redemptions WHERE order_id = $1 AND coupon_id = $2";
constexpr char kSelectRedemptionCoupon[] = "SELECT coupon_id FROM redemptions WHERE id = $1";
// The org a coupon is *held* in (the bank whose campaign granted it, V005), not its template's:
// a bank's coupon of a federation template is that bank's, and a sibling bank must not use it
// although the federation's template is in its lineage (decision 011, tenancy).
constexpr char kSelectOrgOfCoupon[] =
    "SELECT holder_org_id FROM coupons WHERE code = $1 AND state > 0";
constexpr char kSelectOrgOfRedemption[] =
    "SELECT c.holder_org_id FROM redemptions r JOIN coupons c ON c.id = r.coupon_id "
    "WHERE r.id = $1";
constexpr char kLockRedemption[] =
    "SELECT encode(detail, 'hex'), coupon_id FROM redemptions WHERE id = $1 FOR UPDATE";
constexpr char kUpdateRedemption[] =
    "UPDATE redemptions SET state = $2, detail = decode($3, 'hex'), updated_at = $4::timestamptz "
    "WHERE id = $1";
constexpr char kSelectDueLocks[] =
    "SELECT id FROM redemptions WHERE state = 1 AND lock_expires_at <= $1::timestamptz "
    "ORDER BY lock_expires_at LIMIT $2";
constexpr char kSelectDueCoupons[] =
    "SELECT id FROM coupons WHERE state = 1 AND valid_until <= $1::timestamptz "
    "ORDER BY valid_until LIMIT $2";

constexpr char kInsertQrToken[] =
    "INSERT INTO qr_tokens (jti, coupon_id, customer_id, expires_at) "
    "VALUES ($1, $2, $3, $4::timestamptz)";
constexpr char kSelectQrToken[] = "SELECT coupon_id FROM qr_tokens WHERE jti = $1";
constexpr char kLockQrToken[] =
    "SELECT coupon_id, used_at IS NOT NULL, coalesce(terminal_id, ''), "
    "coalesce(redemption_id, '') FROM qr_tokens WHERE jti = $1 FOR UPDATE";
constexpr char kSelectQrTokenUse[] =
    "SELECT coalesce(redemption_id, '') FROM qr_tokens WHERE jti = $1 AND used_at IS NOT NULL";
constexpr char kSelectRedemption[] = "SELECT encode(detail, 'hex') FROM redemptions WHERE id = $1";
constexpr char kUseQrToken[] =
    "UPDATE qr_tokens SET used_at = $2::timestamptz, terminal_id = $3, redemption_id = $4 "
    "WHERE jti = $1";

// ---- Small helpers.

constexpr int kLockTimeoutMarginSeconds = 3600;

std::string HexOf(std::string_view data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (unsigned char c : data) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

std::string FromHex(std::string_view hex) {
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(nibble(hex[i]) * 16 + nibble(hex[i + 1]));
  }
  return out;
}

std::string Bytes(const google::protobuf::MessageLite& m) { return HexOf(m.SerializeAsString()); }

template <class Message>
Message Parse(const std::string& hex) {
  Message m;
  m.ParseFromString(FromHex(hex));
  return m;
}

std::string PgTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", t, absl::UTCTimeZone());
}

void SetTime(google::protobuf::Timestamp* ts, absl::Time t) {
  const int64_t micros = absl::ToUnixMicros(t);
  ts->set_seconds(micros / 1000000);
  ts->set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
}

absl::Time TimeOf(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

bool IsKeyChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == ':' ||
         c == '-';
}

absl::Status KeyField(const std::string& value, const std::string& field) {
  if (value.empty() || value.size() > 64 || !std::all_of(value.begin(), value.end(), IsKeyChar)) {
    return InvalidArgument(field, field +
                                      " must be 1 to 64 characters of letters, digits, '.', "
                                      "'_', ':' and '-'");
  }
  return absl::OkStatus();
}

absl::Status CodeField(const std::string& code) {
  if (code.empty() || code.size() > 64 || !std::all_of(code.begin(), code.end(), IsKeyChar)) {
    return InvalidArgument("coupon_code", "coupon_code is malformed");
  }
  return absl::OkStatus();
}

absl::Status Conflict(const std::string& message, const std::string& field) {
  return Error(absl::StatusCode::kFailedPrecondition, cpb::CONFLICT, message, field);
}
absl::Status NotUsable(const std::string& message, const std::string& field = "coupon_code") {
  return Error(absl::StatusCode::kFailedPrecondition, cpb::COUPON_NOT_USABLE, message, field);
}
absl::Status Denied(const std::string& message, const std::string& field) {
  return Error(absl::StatusCode::kPermissionDenied, cpb::PERMISSION_DENIED, message, field);
}
absl::Status UnknownCoupon() { return NoSuchCoupon(); }
absl::Status HandedOver(absl::Time collected_at) {
  return Conflict("the gift of this voucher was handed over at " +
                      absl::FormatTime(collected_at, absl::UTCTimeZone()) +
                      " under an earlier redemption; it is not handed over again",
                  "coupon_code");
}

// A ledger refusal that retrying will not change (the batch is wrong or a balance is short).
bool IsPermanent(const absl::Status& s) {
  return s.code() == absl::StatusCode::kFailedPrecondition ||
         s.code() == absl::StatusCode::kNotFound ||
         s.code() == absl::StatusCode::kInvalidArgument ||
         s.code() == absl::StatusCode::kAlreadyExists;
}

pb::TransferSpec Spec(std::string id, pb::AccountRef debit, pb::AccountRef credit, int64_t amount,
                      pb::TransferCode code) {
  pb::TransferSpec s;
  s.set_id(std::move(id));
  *s.mutable_debit() = std::move(debit);
  *s.mutable_credit() = std::move(credit);
  s.set_amount(amount);
  s.set_code(code);
  return s;
}

std::string StateName(int state) {
  return state == 0 ? "being issued" : pb::CouponState_Name(static_cast<pb::CouponState>(state));
}

// A QR redemption sent again after its answer was lost: the terminal that used the token
// presents it again for the same order. Returns the redemption the token made (as it is now),
// nullopt when `order` is not that terminal's order (the token was used by someone else), or
// CONFLICT when it is that order with another amount or merchant (as for an online lock).
absl::StatusOr<std::optional<pb::Redemption>> QrRetry(pqxx::work& tx,
                                                      const std::string& redemption_id,
                                                      const pb::OrderInfo& order) {
  if (redemption_id.empty()) return std::nullopt;
  pqxx::result r = tx.exec_params(kSelectRedemption, redemption_id);
  if (r.empty()) return std::nullopt;
  pb::Redemption stored = Parse<pb::Redemption>(r[0][0].as<std::string>());
  if (stored.terminal_id() != order.terminal_id() || stored.order_id() != order.order_id()) {
    return std::nullopt;
  }
  if (stored.order_amount_fen() != order.amount_fen()) {
    return Conflict(absl::StrCat("order ", stored.order_id(), " already redeemed this token for ",
                                 stored.order_amount_fen(), " fen (redemption ", stored.id(),
                                 "); an order of another amount needs a new order id"),
                    "order.amount_fen");
  }
  if (stored.merchant_id() != order.merchant_id()) {
    return Conflict(absl::StrCat("order ", stored.order_id(), " redeemed this token at merchant ",
                                 stored.merchant_id(), " (redemption ", stored.id(), ")"),
                    "order.merchant_id");
  }
  return stored;
}

}  // namespace

absl::Status NoSuchTemplate(const std::string& template_id) {
  return Error(absl::StatusCode::kNotFound, cpb::NOT_FOUND,
               "there is no benefit template \"" + template_id + "\"", "template_id");
}
absl::Status NoSuchCoupon() {
  return Error(absl::StatusCode::kNotFound, cpb::NOT_FOUND, "there is no coupon with this code",
               "coupon_code");
}
absl::Status NoSuchRedemption(const std::string& redemption_id) {
  return Error(absl::StatusCode::kNotFound, cpb::NOT_FOUND,
               "there is no redemption \"" + redemption_id + "\"", "redemption_id");
}
absl::Status UnknownQrToken() {
  return Error(absl::StatusCode::kInvalidArgument, cpb::TOKEN_INVALID,
               "the QR token is not known here", "token");
}

pb::AccountRef CustomerCoupons(const std::string& org_id, const std::string& template_id,
                               const std::string& customer_id) {
  pb::AccountRef ref = CustomerAccount(org_id, pb::COUPON, customer_id);
  ref.set_asset_ref(template_id);
  return ref;
}

pb::AccountRef SystemCoupons(const std::string& org_id, const std::string& template_id,
                             pb::SystemRole role) {
  return SystemAccount(org_id, pb::COUPON, role, template_id);
}

struct Benefits::CouponRow {
  int64_t id = 0;
  std::string code;
  std::string org_id;
  std::string template_id;
  int type = 0;
  std::string customer_id;
  std::string campaign_id;
  int state = 0;
  absl::Time valid_from;
  absl::Time valid_until;
  std::string redemption_id;
  std::optional<absl::Time> collected_at;
  absl::Time issued_at;

  static CouponRow From(const pqxx::row& r) {
    CouponRow c;
    c.id = r[0].as<int64_t>();
    c.code = r[1].as<std::string>();
    c.org_id = r[2].as<std::string>();
    c.template_id = r[3].as<std::string>();
    c.type = r[4].as<int>();
    c.customer_id = r[5].as<std::string>();
    c.campaign_id = r[6].as<std::string>();
    c.state = r[7].as<int>();
    c.valid_from = absl::FromUnixMicros(r[8].as<int64_t>());
    c.valid_until = absl::FromUnixMicros(r[9].as<int64_t>());
    c.redemption_id = r[10].as<std::string>();
    if (!r[11].is_null()) c.collected_at = absl::FromUnixMicros(r[11].as<int64_t>());
    c.issued_at = absl::FromUnixMicros(r[12].as<int64_t>());
    return c;
  }
};

// One state change of a coupon: the new state, the history row and the ledger intent.
struct Benefits::Change {
  int to_state = 0;
  std::string redemption_id;  // what the coupon row keeps
  std::string actor;
  std::string cause;
  std::string event_redemption_id;
  std::optional<pb::LedgerIntent> intent;

  void Write(pqxx::work& tx, const CouponRow& c, absl::Time now) const {
    tx.exec_params(kUpdateCouponState, c.id, to_state, redemption_id, PgTime(now));
    tx.exec_params(kInsertEvent, c.id, c.state, to_state, actor, cause, event_redemption_id,
                   PgTime(now), intent ? Bytes(*intent) : std::string());
  }
};

Benefits::Benefits(pg::Pool& pool, LedgerStore& ledger, const Clock& clock, BenefitsOptions options)
    : pool_(pool),
      ledger_(ledger),
      clock_(clock),
      options_(std::move(options)),
      signer_(options_.qr_key),
      wallets_(options_.wallet_cache_ttl, options_.wallet_cache_max_entries) {}

// ---- Templates.

absl::StatusOr<pb::BenefitTemplate> Benefits::CreateTemplate(const pb::BenefitTemplate& in) {
  MKT_RETURN_IF_ERROR(ValidateTemplate(in));
  pb::BenefitTemplate t = in;
  t.set_status(pb::TEMPLATE_DRAFT);
  const absl::Time now = clock_.Now();
  SetTime(t.mutable_created_at(), now);
  SetTime(t.mutable_updated_at(), now);
  bool inserted = false;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    inserted = tx.exec_params(kInsertTemplate, t.id(), t.org_id(), static_cast<int>(t.type()),
                              static_cast<int>(t.status()), Bytes(t), PgTime(now))
                   .affected_rows() == 1;
    return absl::OkStatus();
  }));
  if (!inserted) {
    MKT_ASSIGN_OR_RETURN(pb::BenefitTemplate existing, LoadTemplate(t.id()));
    pb::BenefitTemplate a = existing, b = t;
    for (auto* x : {&a, &b}) {
      x->clear_status();
      x->clear_created_at();
      x->clear_updated_at();
    }
    if (a.SerializeAsString() != b.SerializeAsString()) {
      return Error(absl::StatusCode::kAlreadyExists, cpb::ALREADY_EXISTS,
                   "a different template with this id exists", "template.id");
    }
    return existing;
  }
  return t;
}

absl::StatusOr<pb::BenefitTemplate> Benefits::LoadTemplate(const std::string& id, bool fresh) {
  MKT_RETURN_IF_ERROR(KeyField(id, "template_id"));
  const absl::Time now = absl::Now();
  const absl::Duration ttl = options_.template_cache_ttl;
  uint64_t generation = 0;
  bool refreshing = false;  // this call marked the expired entry as being read
  {
    absl::MutexLock lock(&templates_mu_);
    if (auto it = templates_.find(id);
        !fresh && it != templates_.end() && ttl > absl::ZeroDuration()) {
      if (now - it->second.loaded_at < ttl || it->second.refreshing) return it->second.spec;
      it->second.refreshing = refreshing = true;
    }
    generation = templates_generation_;
  }
  std::optional<pb::BenefitTemplate> t;
  absl::Status read = pg::WithReads(pool_, [&](pqxx::nontransaction& reads) {
    pqxx::result r = reads.exec_params(kSelectTemplate, id);
    if (!r.empty()) {
      t = Parse<pb::BenefitTemplate>(r[0][0].as<std::string>());
      t->set_status(static_cast<pb::TemplateStatus>(r[0][1].as<int>()));
    }
    return absl::OkStatus();
  });
  absl::MutexLock lock(&templates_mu_);
  auto it = templates_.find(id);
  if (!read.ok() || !t) {
    if (refreshing && it != templates_.end()) it->second.refreshing = false;
    MKT_RETURN_IF_ERROR(read);
    // Not cached: a template created a moment later is found at once.
    return NoSuchTemplate(id);
  }
  // A status change committed while this was read must not be covered by what was read before
  // (ForgetTemplate dropped the entry, a later read fills it).
  if (generation == templates_generation_) {
    templates_[id] = CachedTemplate{.spec = *t, .loaded_at = now};
  } else if (refreshing && it != templates_.end()) {
    it->second.refreshing = false;
  }
  return *std::move(t);
}

absl::StatusOr<std::string> Benefits::OrgOfTemplate(const std::string& template_id) {
  MKT_ASSIGN_OR_RETURN(pb::BenefitTemplate t, LoadTemplate(template_id));
  return t.org_id();
}

void Benefits::ForgetTemplate(const std::string& id) {
  absl::MutexLock lock(&templates_mu_);
  templates_.erase(id);
  ++templates_generation_;
}

absl::StatusOr<pb::BenefitTemplate> Benefits::GetTemplate(const std::string& id) {
  // What an operator (or another service) asks for is read afresh, and refreshes the cache
  // without discarding what concurrent issues are reading.
  return LoadTemplate(id, /*fresh=*/true);
}

absl::StatusOr<pb::BenefitTemplate> Benefits::SetStatus(const std::string& id,
                                                        pb::TemplateStatus from,
                                                        pb::TemplateStatus to) {
  MKT_RETURN_IF_ERROR(KeyField(id, "template_id"));
  std::optional<pb::BenefitTemplate> out;
  absl::Status changed = pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec_params(kLockTemplate, id);
    if (r.empty()) {
      return NoSuchTemplate(id);
    }
    pb::BenefitTemplate t = Parse<pb::BenefitTemplate>(r[0][0].as<std::string>());
    t.set_status(static_cast<pb::TemplateStatus>(r[0][1].as<int>()));
    if (t.status() != to) {
      if (t.status() != from) {
        return Conflict("template \"" + id + "\" is " + pb::TemplateStatus_Name(t.status()) +
                            "; it must be " + pb::TemplateStatus_Name(from),
                        "template_id");
      }
      t.set_status(to);
      SetTime(t.mutable_updated_at(), clock_.Now());
      tx.exec_params(kUpdateTemplate, id, static_cast<int>(to), Bytes(t), PgTime(clock_.Now()));
    }
    out = t;
    return absl::OkStatus();
  });
  // After the commit: this process's next issue or wallet sees the new status.
  ForgetTemplate(id);
  MKT_RETURN_IF_ERROR(changed);
  return *std::move(out);
}

absl::StatusOr<pb::BenefitTemplate> Benefits::ActivateTemplate(const std::string& id) {
  MKT_ASSIGN_OR_RETURN(pb::BenefitTemplate t, LoadTemplate(id));
  if (t.status() == pb::TEMPLATE_DRAFT && IsInstanceType(t.type())) {
    // Ledger first: the funding transfer's id makes a retry after a crash a replay, and the
    // template only turns ACTIVE once its stock exists.
    pb::LedgerIntent fund;
    fund.set_batch_id("tpl." + id + ".fund");
    pb::AccountRef stock;
    stock.set_org_id(t.org_id());
    stock.set_asset(pb::STOCK);
    stock.set_asset_ref(id);
    stock.set_owner_kind(pb::TEMPLATE);
    stock.set_owner_id(id);
    *fund.add_transfers() =
        Spec(fund.batch_id(), SystemAccount(t.org_id(), pb::STOCK, pb::ROLE_FUNDING, id), stock,
             t.total_stock(), pb::FUND);
    MKT_RETURN_IF_ERROR(ApplyIntent(fund));
  }
  return SetStatus(id, pb::TEMPLATE_DRAFT, pb::TEMPLATE_ACTIVE);
}

absl::StatusOr<pb::BenefitTemplate> Benefits::RetireTemplate(const std::string& id) {
  return SetStatus(id, pb::TEMPLATE_ACTIVE, pb::TEMPLATE_RETIRED);
}

// ---- Ledger intents.

absl::Status Benefits::ApplyIntent(const pb::LedgerIntent& intent) {
  if (!intent.resolve_id().empty()) {
    return ledger_.ResolvePending(intent.resolve_id(), intent.pending_id(), intent.post()).status();
  }
  return ApplyTransfers(intent, std::nullopt);
}

absl::Status Benefits::ApplyTransfers(const pb::LedgerIntent& intent,
                                      std::optional<NewCoupon> coupon) {
  std::vector<pb::TransferSpec> specs(intent.transfers().begin(), intent.transfers().end());
  MKT_RETURN_IF_ERROR(ValidateTransferSpecs(specs));
  // The only pending transfers of coupons are their locks' holds, and a lock is always resolved
  // through the coupon (confirm, cancel, or the lock-timeout job), whose intent may reach the
  // ledger late (a crash, an outage). So the hold waits for it however long that takes: a
  // confirm committed before an outage must still post once the ledger is back, not find the
  // hold voided by the ledger's own timeout while the coupon is REDEEMED.
  const bool holds = std::any_of(specs.begin(), specs.end(),
                                 [](const pb::TransferSpec& s) { return s.pending(); });
  LinkedBatch batch{.batch_id = intent.batch_id(),
                    .transfers = std::move(specs),
                    .new_coupon = std::move(coupon),
                    .holds_until_resolved = holds};
  if (GrantBatcher* batcher = batcher_.load(); batcher != nullptr) {
    return batcher->Apply(std::move(batch)).status();
  }
  MKT_ASSIGN_OR_RETURN(std::vector<BatchResult> results, ledger_.Apply({std::move(batch)}));
  if (results.size() != 1) return Internal("the ledger answered a batch with no result");
  return results[0].status();
}

absl::Status Benefits::ApplyIntents(int64_t coupon_id) {
  struct Pending {
    int seq;
    std::string intent;
    int from_state;
    int to_state;
  };
  std::vector<Pending> pending;
  std::string customer_id;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pending.clear();
    for (const pqxx::row& r : tx.exec_params(kSelectUnappliedOfCoupon, coupon_id)) {
      pending.push_back({r[0].as<int>(), r[1].as<std::string>(), r[2].as<int>(), r[3].as<int>()});
      customer_id = r[4].as<std::string>();
    }
    return absl::OkStatus();
  }));
  if (pending.empty()) return absl::OkStatus();
  absl::Status applied = [&]() -> absl::Status {
    // In order: a confirmation posts the reservation its lock created.
    for (const Pending& p : pending) {
      MKT_RETURN_IF_ERROR(ApplyIntent(Parse<pb::LedgerIntent>(p.intent)));
      MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
        tx.exec_params(kMarkApplied, coupon_id, p.seq);
        if (p.from_state == 0)
          tx.exec_params(kFinishIssue, coupon_id, p.to_state, PgTime(clock_.Now()));
        return absl::OkStatus();
      }));
    }
    return absl::OkStatus();
  }();
  // The coupon row changed before its ledger work, and an issue becomes visible only with its
  // last step: the wallet is read again after all of it (the ledger's own invalidation may come
  // before the row's last change).
  InvalidateWallet(customer_id);
  return applied;
}

absl::StatusOr<int> Benefits::RepairLedger(int limit) {
  std::vector<int64_t> coupons;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    coupons.clear();
    for (const pqxx::row& r :
         tx.exec_params(kSelectStaleIntents, PgTime(clock_.Now() - options_.repair_grace), limit)) {
      coupons.push_back(r[0].as<int64_t>());
    }
    return absl::OkStatus();
  }));
  int repaired = 0;
  for (int64_t id : coupons) {
    absl::Status s = ApplyIntents(id);
    if (s.ok()) {
      ++repaired;
    } else if (IsPermanent(s)) {
      // An issue the ledger refuses (stock or budget ran out) leaves no coupon; any other
      // refusal is a bug that the integrity alarms must show, so it stays unapplied.
      bool deleted = false;
      MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
        deleted = tx.exec_params(kDeleteUnissuedCoupon, id).affected_rows() > 0;
        return absl::OkStatus();
      }));
      if (!deleted) spdlog::error("benefits: the ledger refuses coupon {}'s change: {}", id, s);
    } else {
      spdlog::warn("benefits: repairing coupon {} failed (retried later): {}", id, s);
    }
  }
  return repaired;
}

// ---- Issue.

absl::StatusOr<pb::Coupon> Benefits::IssueCoupon(const pb::IssueCouponRequest& req) {
  MKT_RETURN_IF_ERROR(KeyField(req.request_id(), "request_id"));
  MKT_RETURN_IF_ERROR(KeyField(req.customer_id(), "customer_id"));
  if (!req.campaign_id().empty()) MKT_RETURN_IF_ERROR(KeyField(req.campaign_id(), "campaign_id"));
  MKT_ASSIGN_OR_RETURN(const pb::BenefitTemplate t, LoadTemplate(req.template_id()));
  if (!IsInstanceType(t.type())) {
    return InvalidArgument("template_id",
                           "points, red envelopes and lottery chances are granted through "
                           "Ledger.Grant, not as coupon instances");
  }
  if (t.unit_cost_fen() > 0 && req.campaign_id().empty()) {
    return InvalidArgument("campaign_id", "campaign_id is required: the template costs " +
                                              std::to_string(t.unit_cost_fen()) +
                                              " fen of a campaign's budget");
  }
  const std::string budget_org = req.budget_org_id().empty() ? t.org_id() : req.budget_org_id();
  if (!req.budget_org_id().empty()) {
    MKT_RETURN_IF_ERROR(KeyField(req.budget_org_id(), "budget_org_id"));
    if (!tenancy::Covers(t.org_id(), budget_org)) {
      return InvalidArgument("budget_org_id", "template \"" + t.id() + "\" belongs to org " +
                                                  t.org_id() + ", which does not reach org " +
                                                  budget_org);
    }
  }
  // The ledger work of issuing coupon `id` with `code`: the budget charge (when the template has
  // a cost), a unit of the template's stock, the coupon into the customer's coupon account.
  auto issue_intent = [&](int64_t id, const std::string& code) {
    pb::LedgerIntent intent;
    const std::string batch = absl::StrCat("cpn.", id, ".issue");
    intent.set_batch_id(batch);
    if (t.unit_cost_fen() > 0) {
      pb::AccountRef budget;
      budget.set_org_id(budget_org);
      budget.set_asset(pb::BUDGET_FEN);
      budget.set_owner_kind(pb::CAMPAIGN);
      budget.set_owner_id(req.campaign_id());
      pb::TransferSpec* s = intent.add_transfers();
      *s = Spec(batch + ":budget", budget,
                SystemAccount(budget_org, pb::BUDGET_FEN, pb::ROLE_EXPENSE), t.unit_cost_fen(),
                pb::GRANT);
      s->set_campaign_id(req.campaign_id());
    }
    pb::AccountRef stock;
    stock.set_org_id(t.org_id());
    stock.set_asset(pb::STOCK);
    stock.set_asset_ref(t.id());
    stock.set_owner_kind(pb::TEMPLATE);
    stock.set_owner_id(t.id());
    *intent.add_transfers() =
        Spec(batch + ":stock", stock,
             SystemAccount(t.org_id(), pb::STOCK, pb::ROLE_ISSUANCE, t.id()), 1, pb::GRANT);
    pb::TransferSpec* benefit = intent.add_transfers();
    *benefit = Spec(batch + ":benefit", SystemCoupons(t.org_id(), t.id(), pb::ROLE_ISSUANCE),
                    CustomerCoupons(t.org_id(), t.id(), req.customer_id()), 1, pb::GRANT);
    benefit->set_campaign_id(req.campaign_id());
    (*benefit->mutable_metadata())["coupon_code"] = code;
    return intent;
  };
  const std::string actor = req.campaign_id().empty() ? "issuer" : "campaign:" + req.campaign_id();
  int64_t coupon_id = 0;
  // The issue's intent when this call wrote the coupon (not a replay): applied right away
  // without reading it back.
  std::optional<pb::LedgerIntent> written;
  if (const absl::Time now = clock_.Now(); t.status() == pb::TEMPLATE_ACTIVE &&
                                           t.type() != pb::THIRD_PARTY &&
                                           WindowFor(t.validity(), now).until > now) {
    // The common case: the coupon is written by the ledger batch that issues it, in the batch's
    // own group commit (decision 017). A request id that issued a coupon before is answered by
    // the transaction below, as a replay.
    MKT_ASSIGN_OR_RETURN(const int64_t id, NextCouponId());
    const ValidityWindow w = WindowFor(t.validity(), now);
    // As the database stores them (microseconds), so that the answer is the stored coupon.
    auto micros = [](absl::Time at) { return absl::FromUnixMicros(absl::ToUnixMicros(at)); };
    NewCoupon coupon{.id = id,
                     .code = "C" + absl::AsciiStrToUpper(RandomHex(10)),
                     .issue_request_id = req.request_id(),
                     .org_id = t.org_id(),
                     .template_id = t.id(),
                     .type = static_cast<int>(t.type()),
                     .customer_id = req.customer_id(),
                     .campaign_id = req.campaign_id(),
                     .holder_org_id = budget_org,
                     .valid_from = micros(w.from),
                     .valid_until = micros(w.until),
                     .issued_at = micros(now),
                     .actor = actor};
    const pb::LedgerIntent intent = issue_intent(id, coupon.code);
    coupon.intent = intent.SerializeAsString();
    const CouponRow row{.id = id,
                        .code = coupon.code,
                        .org_id = coupon.org_id,
                        .template_id = coupon.template_id,
                        .type = coupon.type,
                        .customer_id = coupon.customer_id,
                        .campaign_id = coupon.campaign_id,
                        .state = static_cast<int>(pb::COUPON_ISSUED),
                        .valid_from = coupon.valid_from,
                        .valid_until = coupon.valid_until,
                        .issued_at = coupon.issued_at};
    absl::Status issued = ApplyTransfers(intent, std::move(coupon));
    if (issued.ok()) {
      InvalidateWallet(req.customer_id());
      return Answer(row, t);
    }
    if (issued.code() != absl::StatusCode::kAlreadyExists ||
        ReasonOf(issued) != cpb::ALREADY_EXISTS) {
      return issued;  // refused (stock, budget), or its outcome unknown: a retry replays it
    }
  }
  for (int attempt = 0; !written && attempt < 2; ++attempt) {
    const absl::Time now = clock_.Now();
    absl::Status s = pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
      written.reset();
      pqxx::result existing = tx.exec_params(kSelectCouponByRequest, req.request_id());
      if (!existing.empty()) {
        // A replay is the same grant: every field of the request (the paying org as resolved,
        // so naming the template's org is the same as naming none) must match what it issued.
        std::vector<std::string> differ;
        if (existing[0][1].as<std::string>() != req.template_id()) differ.push_back("template_id");
        if (existing[0][2].as<std::string>() != req.customer_id()) differ.push_back("customer_id");
        if (existing[0][3].as<std::string>() != req.campaign_id()) differ.push_back("campaign_id");
        if (existing[0][4].as<std::string>() != budget_org) differ.push_back("budget_org_id");
        if (!differ.empty()) {
          return Error(absl::StatusCode::kAlreadyExists, cpb::IDEMPOTENCY_KEY_REUSED,
                       "request_id \"" + req.request_id() + "\" already issued a coupon with " +
                           "another " + absl::StrJoin(differ, " and ") + "; send a new request_id",
                       "request_id");
        }
        coupon_id = existing[0][0].as<int64_t>();
        return absl::OkStatus();
      }
      if (t.status() != pb::TEMPLATE_ACTIVE) {
        return Conflict("template \"" + t.id() + "\" is " + pb::TemplateStatus_Name(t.status()) +
                            "; only ACTIVE templates are granted",
                        "template_id");
      }
      const ValidityWindow w = WindowFor(t.validity(), now);
      if (w.until <= now) {
        return Conflict("the validity of template \"" + t.id() + "\" has ended", "template_id");
      }
      const std::string code = "C" + absl::AsciiStrToUpper(RandomHex(10));
      coupon_id = tx.exec_params(kInsertCoupon, code, req.request_id(), t.org_id(), t.id(),
                                 static_cast<int>(t.type()), req.customer_id(), req.campaign_id(),
                                 PgTime(w.from), PgTime(w.until), PgTime(now), budget_org)[0][0]
                      .as<int64_t>();
      pb::LedgerIntent intent = issue_intent(coupon_id, code);
      tx.exec_params(kInsertEvent, coupon_id, 0, static_cast<int>(pb::COUPON_ISSUED), actor,
                     "issue", "", PgTime(now), Bytes(intent));
      if (t.type() == pb::THIRD_PARTY) {
        InsertPendingFulfilment(tx, coupon_id, t, req.customer_id(), now);
      }
      written = std::move(intent);
      return absl::OkStatus();
    });
    // Two replays racing to insert the same request: the loser reads the winner's coupon.
    if (s.code() == absl::StatusCode::kAlreadyExists && ReasonOf(s) == cpb::ALREADY_EXISTS) {
      continue;
    }
    MKT_RETURN_IF_ERROR(s);
    break;
  }
  std::optional<CouponRow> row;
  absl::Status applied = written ? ApplyIntent(*written) : ApplyIntents(coupon_id);
  if (written && applied.ok()) {
    // The issue's event is the coupon's first (seq 1); marked, finished and read back in one
    // statement (no row when the sweeper finished it meanwhile: read below).
    MKT_RETURN_IF_ERROR(pg::WithStatement(pool_, [&](pqxx::nontransaction& st) {
      pqxx::result r = pg::ExecPrepared(st, kFinishIssueReturning, coupon_id,
                                        static_cast<int>(pb::COUPON_ISSUED), PgTime(clock_.Now()));
      row.reset();
      if (!r.empty()) row = CouponRow::From(r[0]);
      return absl::OkStatus();
    }));
    InvalidateWallet(req.customer_id());  // ISSUED only now, after the ledger's invalidation
  }
  if (absl::Status s = applied; !s.ok()) {
    if (IsPermanent(s)) {
      MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
        tx.exec_params(kDeleteUnissuedCoupon, coupon_id);
        return absl::OkStatus();
      }));
    }
    return s;
  }
  if (Fulfilments* f = fulfilments_.load(); f != nullptr && t.type() == pb::THIRD_PARTY) {
    // The benefit is the customer's now; the scheduler sends what this could not.
    if (absl::Status s = f->SubmitFirst(coupon_id); !s.ok()) {
      spdlog::warn("benefits: coupon {} issued, fulfilment not sent yet (retried): {}", coupon_id,
                   s);
    }
  }
  if (!row || row->type == pb::THIRD_PARTY) {
    // A replay, or a fulfilment that may have moved the coupon on since.
    MKT_RETURN_IF_ERROR(pg::WithReads(pool_, [&](pqxx::nontransaction& reads) {
      pqxx::result r = reads.exec_params(kSelectCouponById, coupon_id);
      row.reset();
      if (!r.empty()) row = CouponRow::From(r[0]);
      return absl::OkStatus();
    }));
  }
  if (!row) return Internal("the issued coupon disappeared");
  return Answer(*row, t);
}

absl::StatusOr<pb::Coupon> Benefits::Answer(const CouponRow& row, const pb::BenefitTemplate& t) {
  MKT_ASSIGN_OR_RETURN(pb::Coupon out, ToCoupon(row));
  out.set_name(t.name());
  out.set_face_value(t.face_value());
  return out;
}

absl::StatusOr<int64_t> Benefits::NextCouponId() {
  constexpr int kBlock = 64;
  {
    absl::MutexLock lock(&ids_mu_);
    if (!coupon_ids_.empty()) {
      const int64_t id = coupon_ids_.back();
      coupon_ids_.pop_back();
      return id;
    }
  }
  std::vector<int64_t> drawn;
  MKT_RETURN_IF_ERROR(pg::WithStatement(pool_, [&](pqxx::nontransaction& st) {
    for (const pqxx::row& r : st.exec_params(kDrawCouponIds, kBlock)) {
      drawn.push_back(r[0].as<int64_t>());
    }
    return absl::OkStatus();
  }));
  if (drawn.empty()) return Internal("the coupon id sequence gave no ids");
  const int64_t id = drawn.back();
  drawn.pop_back();
  absl::MutexLock lock(&ids_mu_);
  coupon_ids_.insert(coupon_ids_.end(), drawn.begin(), drawn.end());
  return id;
}

absl::StatusOr<pb::Coupon> Benefits::ToCoupon(const CouponRow& c) {
  pb::Coupon out;
  out.set_code(c.code);
  out.set_org_id(c.org_id);
  out.set_template_id(c.template_id);
  out.set_type(static_cast<pb::BenefitType>(c.type));
  out.set_customer_id(c.customer_id);
  out.set_state(static_cast<pb::CouponState>(c.state));
  out.set_campaign_id(c.campaign_id);
  SetTime(out.mutable_valid_from(), c.valid_from);
  SetTime(out.mutable_valid_until(), c.valid_until);
  SetTime(out.mutable_issued_at(), c.issued_at);
  if (c.collected_at) SetTime(out.mutable_collected_at(), *c.collected_at);
  out.set_redemption_id(c.redemption_id);
  if (c.type == pb::THIRD_PARTY) {
    MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
      if (auto f = FulfilmentOfCoupon(tx, c.id)) {
        out.set_fulfilment_id(f->first);
        out.set_fulfilment_state(f->second);
      }
      return absl::OkStatus();
    }));
  }
  return out;
}

bool Benefits::SettleThirdParty(pqxx::work& tx, int64_t coupon_id, bool delivered,
                                const std::string& fulfilment_id, const std::string& actor,
                                const std::string& cause) {
  pqxx::result r = tx.exec_params(kLockCouponById, coupon_id);
  if (r.empty()) return false;
  const CouponRow c = CouponRow::From(r[0]);
  if (c.type != pb::THIRD_PARTY) return false;
  pb::LedgerIntent intent;
  Change change{.actor = actor, .cause = cause};
  if (delivered) {
    // An expired (or already settled) benefit keeps its state; the history of the fulfilment
    // says it was delivered.
    if (c.state != pb::COUPON_ISSUED) return false;
    intent.set_batch_id(fulfilment_id + ".deliver");
    pb::TransferSpec* s = intent.add_transfers();
    *s = Spec(intent.batch_id(), CustomerCoupons(c.org_id, c.template_id, c.customer_id),
              SystemCoupons(c.org_id, c.template_id, pb::ROLE_REDEMPTION), 1, pb::SPEND);
    (*s->mutable_metadata())["fulfilment_id"] = fulfilment_id;
    change.to_state = pb::COUPON_REDEEMED;
  } else {
    if (c.state != pb::COUPON_ISSUED && c.state != pb::COUPON_EXPIRED) return false;
    pqxx::result ir = tx.exec_params(kSelectIssueIntent, coupon_id);
    if (ir.empty()) return false;
    const pb::LedgerIntent issue = Parse<pb::LedgerIntent>(ir[0][0].as<std::string>());
    const std::string batch = absl::StrCat("cpn.", c.id, ".compensate");
    intent.set_batch_id(batch);
    auto reverse = [&](const std::string& id, const pb::AccountRef& debit,
                       const pb::AccountRef& credit, int64_t amount, const std::string& original,
                       const std::string& campaign) {
      pb::TransferSpec* s = intent.add_transfers();
      *s = Spec(id, debit, credit, amount, pb::REVERSE);
      s->set_reverses_transfer_id(original);
      s->set_campaign_id(campaign);
      (*s->mutable_metadata())["fulfilment_id"] = fulfilment_id;
    };
    if (c.state == pb::COUPON_EXPIRED) {
      // The unit comes back from EXPIRY first, so the holding leg below finds it.
      reverse(batch + ":expire", SystemCoupons(c.org_id, c.template_id, pb::ROLE_EXPIRY),
              CustomerCoupons(c.org_id, c.template_id, c.customer_id), 1,
              absl::StrCat("cpn.", c.id, ".expire"), "");
    }
    // The last leg of the issue is undone first: the holding, then stock, then budget.
    for (auto it = issue.transfers().rbegin(); it != issue.transfers().rend(); ++it) {
      const std::string& id = it->id();
      const size_t colon = id.rfind(':');
      reverse(batch + (colon == std::string::npos ? ":" + id : id.substr(colon)), it->credit(),
              it->debit(), it->amount(), id, it->campaign_id());
    }
    change.to_state = pb::COUPON_VOIDED;
  }
  change.intent = intent;
  change.Write(tx, c, clock_.Now());
  return true;
}

absl::StatusOr<pb::Coupon> Benefits::GetCoupon(const std::string& code) {
  MKT_RETURN_IF_ERROR(CodeField(code));
  std::optional<CouponRow> row;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(kSelectCouponByCode, code);
    if (!r.empty()) row = CouponRow::From(r[0]);
    return absl::OkStatus();
  }));
  if (!row || row->state == 0) return UnknownCoupon();
  if (auto t = LoadTemplate(row->template_id); t.ok()) return Answer(*row, *t);
  return ToCoupon(*row);
}

absl::StatusOr<std::string> Benefits::OrgOfCoupon(const std::string& code) {
  MKT_RETURN_IF_ERROR(CodeField(code));
  std::optional<std::string> org;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(kSelectOrgOfCoupon, code);
    if (!r.empty()) org = r[0][0].as<std::string>();
    return absl::OkStatus();
  }));
  if (!org) return NoSuchCoupon();
  return *std::move(org);
}

absl::StatusOr<std::string> Benefits::OrgOfRedemption(const std::string& redemption_id) {
  MKT_RETURN_IF_ERROR(KeyField(redemption_id, "redemption_id"));
  std::optional<std::string> org;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(kSelectOrgOfRedemption, redemption_id);
    if (!r.empty()) org = r[0][0].as<std::string>();
    return absl::OkStatus();
  }));
  if (!org) return NoSuchRedemption(redemption_id);
  return *std::move(org);
}

absl::StatusOr<std::string> Benefits::OrgOfQrToken(const std::string& token) {
  MKT_ASSIGN_OR_RETURN(const QrClaims claims, signer_.Verify(token));
  absl::StatusOr<std::string> org = OrgOfCoupon(claims.coupon_code);
  if (absl::IsNotFound(org.status())) return UnknownQrToken();
  return org;
}

// ---- Online checkout.

absl::StatusOr<pb::Redemption> Benefits::LockCoupon(const pb::LockCouponRequest& req) {
  MKT_RETURN_IF_ERROR(CodeField(req.coupon_code()));
  MKT_RETURN_IF_ERROR(KeyField(req.customer_id(), "customer_id"));
  MKT_RETURN_IF_ERROR(ValidateOrder(req.order()));
  pb::Redemption out;
  int64_t coupon_id = 0;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    const absl::Time now = clock_.Now();
    pqxx::result r = tx.exec_params(kLockCouponByCode, req.coupon_code());
    if (r.empty()) return UnknownCoupon();
    const CouponRow c = CouponRow::From(r[0]);
    coupon_id = c.id;
    if (c.state == 0) return UnknownCoupon();
    if (c.customer_id != req.customer_id()) {
      return Denied("the coupon belongs to another customer", "customer_id");
    }
    pqxx::result prior = tx.exec_params(kSelectRedemptionByOrder, req.order().order_id(), c.id);
    if (!prior.empty()) {
      // One redemption per (order, coupon): a retry of the same lock gets it again; anything
      // else about that pair is a conflict the caller resolves with a new order id.
      out = Parse<pb::Redemption>(prior[0][1].as<std::string>());
      if (out.order_amount_fen() != req.order().amount_fen()) {
        return Conflict(absl::StrCat("order ", out.order_id(), " already locked this coupon for ",
                                     out.order_amount_fen(), " fen (redemption ", out.id(),
                                     "); an order of another amount needs a new order id"),
                        "order.amount_fen");
      }
      if (out.state() == pb::REDEMPTION_CANCELLED || out.state() == pb::REDEMPTION_REVERSED) {
        return Conflict(absl::StrCat("order ", out.order_id(), "'s redemption of this coupon (",
                                     out.id(), ") is ", pb::RedemptionState_Name(out.state()),
                                     "; to lock the coupon again, use a new order id"),
                        "order.order_id");
      }
      return absl::OkStatus();
    }
    if (c.state != pb::COUPON_ISSUED) {
      return NotUsable("the coupon is " + StateName(c.state) +
                       (c.state == pb::COUPON_LOCKED ? " by another order" : ""));
    }
    if (now < c.valid_from) return NotUsable("the coupon is not valid yet");
    if (now >= c.valid_until) return NotUsable("the coupon has expired");
    pqxx::result tr = tx.exec_params(kSelectTemplate, c.template_id);
    if (tr.empty()) return Internal("the coupon's template is missing");
    const pb::BenefitTemplate t = Parse<pb::BenefitTemplate>(tr[0][0].as<std::string>());
    if (!IsCheckoutCoupon(t.type())) {
      return NotUsable("a " + pb::BenefitType_Name(t.type()) +
                       " is redeemed at a counter, not at an online checkout");
    }
    MKT_RETURN_IF_ERROR(CheckUsage(t, req.order()));
    MKT_ASSIGN_OR_RETURN(const Discount d, ComputeDiscount(t, req.order().amount_fen()));

    out.set_id("rdm-" + RandomHex(12));
    out.set_coupon_code(c.code);
    out.set_customer_id(c.customer_id);
    out.set_order_id(req.order().order_id());
    out.set_order_amount_fen(req.order().amount_fen());
    out.set_discount_fen(d.fen);
    out.set_rate_bp(d.rate_bp);
    out.set_product_code(d.product_code);
    out.set_state(pb::REDEMPTION_LOCKED);
    out.set_channel(req.order().channel());
    out.set_merchant_id(req.order().merchant_id());
    out.set_terminal_id(req.order().terminal_id());
    const absl::Time expires = now + options_.lock_ttl;
    SetTime(out.mutable_lock_expires_at(), expires);
    SetTime(out.mutable_created_at(), now);
    SetTime(out.mutable_updated_at(), now);
    tx.exec_params(kInsertRedemption, out.id(), c.id, out.order_id(), static_cast<int>(out.state()),
                   Bytes(out), PgTime(expires), PgTime(now));

    pb::LedgerIntent intent;
    intent.set_batch_id(out.id() + ".lock");
    pb::TransferSpec* s = intent.add_transfers();
    *s = Spec(out.id() + ".lock", CustomerCoupons(c.org_id, c.template_id, c.customer_id),
              SystemCoupons(c.org_id, c.template_id, pb::ROLE_REDEMPTION), 1, pb::SPEND);
    s->set_order_id(out.order_id());
    s->set_pending(true);
    // The coupon's own timeout releases the lock. The spec keeps the timeout it always had (it
    // is part of the content that makes a resend a replay), but the hold is stored without one
    // (ApplyTransfers: holds_until_resolved), so only the coupon's confirm, cancel or timeout
    // resolves it, however late its intent is applied.
    s->set_timeout_seconds(static_cast<int32_t>(std::min<int64_t>(
        86400, absl::ToInt64Seconds(options_.lock_ttl) + kLockTimeoutMarginSeconds)));
    (*s->mutable_metadata())["coupon_code"] = c.code;
    (*s->mutable_metadata())["discount_fen"] = absl::StrCat(d.fen);
    Change{.to_state = pb::COUPON_LOCKED,
           .redemption_id = out.id(),
           .actor = "customer:" + c.customer_id,
           .cause = "lock",
           .event_redemption_id = out.id(),
           .intent = intent}
        .Write(tx, c, now);
    return absl::OkStatus();
  }));
  if (absl::Status s = ApplyIntents(coupon_id); !s.ok()) {
    spdlog::warn("benefits: lock {} committed, ledger behind (repaired later): {}", out.id(), s);
  }
  return out;
}

absl::StatusOr<pb::Redemption> Benefits::ConfirmRedemption(const pb::RedemptionRequest& req) {
  return Resolve(req.redemption_id(), "confirm", "checkout");
}
absl::StatusOr<pb::Redemption> Benefits::CancelRedemption(const pb::RedemptionRequest& req) {
  return Resolve(req.redemption_id(), "cancel", "checkout");
}

absl::StatusOr<pb::Redemption> Benefits::Resolve(const std::string& redemption_id,
                                                 const std::string& op, const std::string& actor) {
  MKT_RETURN_IF_ERROR(KeyField(redemption_id, "redemption_id"));
  const bool confirm = op == "confirm";
  const bool timeout = op == "lock-timeout";
  const bool reverse = op == "reverse";
  pb::Redemption out;
  int64_t coupon_id = 0;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    const absl::Time now = clock_.Now();
    pqxx::result owner = tx.exec_params(kSelectRedemptionCoupon, redemption_id);
    if (owner.empty()) {
      return NoSuchRedemption(redemption_id);
    }
    coupon_id = owner[0][0].as<int64_t>();
    // Coupon first, then the redemption: the order every writer of both takes.
    pqxx::result cr = tx.exec_params(kLockCouponById, coupon_id);
    const CouponRow c = CouponRow::From(cr[0]);
    pqxx::result rr = tx.exec_params(kLockRedemption, redemption_id);
    out = Parse<pb::Redemption>(rr[0][0].as<std::string>());
    const pb::RedemptionState state = out.state();
    const pb::RedemptionState wanted = confirm   ? pb::REDEMPTION_CONFIRMED
                                       : reverse ? pb::REDEMPTION_REVERSED
                                                 : pb::REDEMPTION_CANCELLED;
    if (state == wanted) {
      // A replay (or the timeout got there first: a cancel then answers with it).
      return timeout ? Conflict("already resolved", "redemption_id") : absl::OkStatus();
    }
    const std::string name = pb::RedemptionState_Name(state);
    if (reverse) {
      if (state != pb::REDEMPTION_CONFIRMED) {
        return Conflict("redemption \"" + redemption_id + "\" is " + name +
                            "; only a confirmed redemption can be reversed (cancel a lock)",
                        "redemption_id");
      }
      if (c.type == pb::GIFT_VOUCHER && c.collected_at) {
        // The gift was handed over: giving the voucher back would let the customer collect a
        // second one with it.
        return Conflict("the gift of redemption \"" + redemption_id + "\" was collected at " +
                            absl::FormatTime(*c.collected_at, absl::UTCTimeZone()) +
                            "; a handed-over gift voucher cannot be reversed",
                        "redemption_id");
      }
    } else if (state != pb::REDEMPTION_LOCKED) {
      return Conflict("redemption \"" + redemption_id + "\" is " + name + "; it cannot be " +
                          (confirm ? "confirmed" : "cancelled") +
                          (state == pb::REDEMPTION_CONFIRMED ? " (reverse it instead)" : ""),
                      "redemption_id");
    }
    if (confirm && now >= TimeOf(out.lock_expires_at())) {
      return Conflict(
          "the lock of redemption \"" + redemption_id + "\" expired; lock the coupon again",
          "redemption_id");
    }
    if (timeout && now < TimeOf(out.lock_expires_at())) {
      return Conflict("the lock has not expired", "redemption_id");
    }
    out.set_state(wanted);
    out.set_timed_out(timeout);
    SetTime(out.mutable_updated_at(), now);
    tx.exec_params(kUpdateRedemption, redemption_id, static_cast<int>(wanted), Bytes(out),
                   PgTime(now));
    pb::LedgerIntent intent;
    Change change{.actor = actor, .cause = op, .event_redemption_id = redemption_id};
    if (reverse) {
      // A refund gives the coupon back only while it is still valid; afterwards it stays used.
      if (now >= c.valid_until) {
        tx.exec_params(kInsertEvent, c.id, c.state, c.state, actor, "reverse-after-expiry",
                       redemption_id, PgTime(now), std::string());
        return absl::OkStatus();
      }
      const std::string posting = redemption_id + (out.offline() ? ".redeem" : ".confirm");
      intent.set_batch_id(redemption_id + ".reverse");
      pb::TransferSpec* s = intent.add_transfers();
      *s = Spec(redemption_id + ".reverse",
                SystemCoupons(c.org_id, c.template_id, pb::ROLE_REDEMPTION),
                CustomerCoupons(c.org_id, c.template_id, c.customer_id), 1, pb::REVERSE);
      s->set_reverses_transfer_id(posting);
      s->set_order_id(out.order_id());
      change.to_state = pb::COUPON_ISSUED;
    } else {
      intent.set_resolve_id(redemption_id + (confirm ? ".confirm" : ".cancel"));
      intent.set_pending_id(redemption_id + ".lock");
      intent.set_post(confirm);
      change.to_state = confirm ? pb::COUPON_REDEEMED : pb::COUPON_ISSUED;
      change.redemption_id = confirm ? redemption_id : "";
    }
    change.intent = intent;
    change.Write(tx, c, now);
    return absl::OkStatus();
  }));
  if (absl::Status s = ApplyIntents(coupon_id); !s.ok()) {
    spdlog::warn("benefits: {} of {} committed, ledger behind (repaired later): {}", op,
                 redemption_id, s);
  }
  return out;
}

absl::StatusOr<pb::Redemption> Benefits::ReverseRedemption(const pb::RedemptionRequest& req) {
  return Resolve(req.redemption_id(), "reverse", "checkout");
}

// ---- Offline.

absl::StatusOr<pb::QrToken> Benefits::IssueQrToken(const pb::IssueQrTokenRequest& req) {
  MKT_RETURN_IF_ERROR(CodeField(req.coupon_code()));
  MKT_RETURN_IF_ERROR(KeyField(req.customer_id(), "customer_id"));
  pb::QrToken out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    const absl::Time now = clock_.Now();
    pqxx::result r = tx.exec_params(kSelectCouponByCode, req.coupon_code());
    if (r.empty()) return UnknownCoupon();
    const CouponRow c = CouponRow::From(r[0]);
    if (c.state == 0) return UnknownCoupon();
    if (c.customer_id != req.customer_id()) {
      return Denied("the coupon belongs to another customer", "customer_id");
    }
    if (c.state != pb::COUPON_ISSUED) return NotUsable("the coupon is " + StateName(c.state));
    if (now < c.valid_from || now >= c.valid_until) return NotUsable("the coupon is not valid now");
    if (c.type == pb::THIRD_PARTY) return NotUsable("a third-party benefit has no QR code");
    QrClaims claims{.jti = RandomHex(12),
                    .coupon_code = c.code,
                    .customer_id = c.customer_id,
                    .expires_at = now + std::min(options_.qr_ttl, absl::Seconds(120))};
    tx.exec_params(kInsertQrToken, claims.jti, c.id, c.customer_id, PgTime(claims.expires_at));
    out.set_token(signer_.Sign(claims));
    SetTime(out.mutable_expires_at(), claims.expires_at);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<pb::Redemption> Benefits::RedeemQrToken(const pb::RedeemQrTokenRequest& req) {
  MKT_RETURN_IF_ERROR(KeyField(req.merchant_id(), "merchant_id"));
  MKT_RETURN_IF_ERROR(KeyField(req.terminal_id(), "terminal_id"));
  if (!req.customer_id().empty()) MKT_RETURN_IF_ERROR(KeyField(req.customer_id(), "customer_id"));
  MKT_ASSIGN_OR_RETURN(const QrClaims claims, signer_.Verify(req.token()));
  pb::OrderInfo order;
  order.set_order_id(req.order_id().empty() ? "qr-" + claims.jti : req.order_id());
  order.set_amount_fen(req.order_amount_fen());
  order.set_merchant_id(req.merchant_id());
  order.set_terminal_id(req.terminal_id());
  if (clock_.Now() >= claims.expires_at) {
    // The terminal that used the token may still be retrying a redemption whose answer it lost.
    std::optional<pb::Redemption> retry;
    MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
      retry.reset();
      pqxx::result r = tx.exec_params(kSelectQrTokenUse, claims.jti);
      if (r.empty()) return absl::OkStatus();
      MKT_ASSIGN_OR_RETURN(retry, QrRetry(tx, r[0][0].as<std::string>(), order));
      return absl::OkStatus();
    }));
    if (retry) return *std::move(retry);
    return Error(absl::StatusCode::kFailedPrecondition, cpb::TOKEN_EXPIRED,
                 "the QR token expired; ask the customer to refresh it", "token.expires_at");
  }
  if (!req.customer_id().empty() && req.customer_id() != claims.customer_id) {
    return Denied("the QR token belongs to another customer", "customer_id");
  }
  MKT_RETURN_IF_ERROR(ValidateOrder(order));
  int64_t coupon_id = 0;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    pqxx::result r = tx.exec_params(kSelectQrToken, claims.jti);
    if (r.empty()) {
      return UnknownQrToken();
    }
    coupon_id = r[0][0].as<int64_t>();
    return absl::OkStatus();
  }));
  return RedeemOffline(coupon_id, order, claims.customer_id, claims.jti,
                       "terminal:" + req.terminal_id());
}

absl::StatusOr<pb::Redemption> Benefits::RedeemOffline(int64_t coupon_id,
                                                       const pb::OrderInfo& order,
                                                       const std::string& customer_id,
                                                       const std::string& jti,
                                                       const std::string& actor) {
  pb::Redemption out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    const absl::Time now = clock_.Now();
    pqxx::result cr = tx.exec_params(kLockCouponById, coupon_id);
    if (cr.empty()) return UnknownCoupon();
    const CouponRow c = CouponRow::From(cr[0]);
    if (!jti.empty()) {
      // Under the coupon's lock: of two terminals presenting one token, the second sees it used;
      // the first sending it again for the same order (a lost answer) gets its redemption.
      pqxx::result tr = tx.exec_params(kLockQrToken, jti);
      if (tr[0][1].as<bool>()) {
        MKT_ASSIGN_OR_RETURN(std::optional<pb::Redemption> retry,
                             QrRetry(tx, tr[0][3].as<std::string>(), order));
        if (retry) {
          out = *std::move(retry);
          return absl::OkStatus();
        }
        return Error(absl::StatusCode::kFailedPrecondition, cpb::TOKEN_ALREADY_USED,
                     "the QR token was already used (terminal " + tr[0][2].as<std::string>() + ")",
                     "token");
      }
    }
    if (c.customer_id != customer_id) {
      return Denied("the coupon belongs to another customer", "customer_id");
    }
    if (c.state != pb::COUPON_ISSUED) return NotUsable("the coupon is " + StateName(c.state));
    if (now < c.valid_from || now >= c.valid_until) return NotUsable("the coupon is not valid now");
    pqxx::result tr = tx.exec_params(kSelectTemplate, c.template_id);
    const pb::BenefitTemplate t = Parse<pb::BenefitTemplate>(tr[0][0].as<std::string>());
    MKT_RETURN_IF_ERROR(CheckUsage(t, order));
    MKT_ASSIGN_OR_RETURN(const Discount d, ComputeDiscount(t, order.amount_fen()));
    if (!tx.exec_params(kSelectRedemptionByOrder, order.order_id(), c.id).empty()) {
      return Conflict("this order already redeemed the coupon", "order_id");
    }
    out.set_id("rdm-" + RandomHex(12));
    out.set_coupon_code(c.code);
    out.set_customer_id(c.customer_id);
    out.set_order_id(order.order_id());
    out.set_order_amount_fen(order.amount_fen());
    out.set_discount_fen(d.fen);
    out.set_rate_bp(d.rate_bp);
    out.set_product_code(d.product_code);
    out.set_state(pb::REDEMPTION_CONFIRMED);
    out.set_merchant_id(order.merchant_id());
    out.set_terminal_id(order.terminal_id());
    out.set_offline(true);
    SetTime(out.mutable_created_at(), now);
    SetTime(out.mutable_updated_at(), now);
    tx.exec_params(kInsertRedemption, out.id(), c.id, out.order_id(), static_cast<int>(out.state()),
                   Bytes(out), std::optional<std::string>(), PgTime(now));
    if (!jti.empty()) tx.exec_params(kUseQrToken, jti, PgTime(now), order.terminal_id(), out.id());
    pb::LedgerIntent intent;
    intent.set_batch_id(out.id() + ".redeem");
    pb::TransferSpec* s = intent.add_transfers();
    *s = Spec(out.id() + ".redeem", CustomerCoupons(c.org_id, c.template_id, c.customer_id),
              SystemCoupons(c.org_id, c.template_id, pb::ROLE_REDEMPTION), 1, pb::SPEND);
    s->set_order_id(out.order_id());
    (*s->mutable_metadata())["terminal_id"] = order.terminal_id();
    Change{.to_state = pb::COUPON_REDEEMED,
           .redemption_id = out.id(),
           .actor = actor,
           .cause = jti.empty() ? "redeem-by-code" : "redeem-by-qr",
           .event_redemption_id = out.id(),
           .intent = intent}
        .Write(tx, c, now);
    return absl::OkStatus();
  }));
  if (absl::Status s = ApplyIntents(coupon_id); !s.ok()) {
    spdlog::warn("benefits: redemption {} committed, ledger behind (repaired later): {}", out.id(),
                 s);
  }
  return out;
}

absl::StatusOr<pb::Coupon> Benefits::MarkCollected(const pb::MarkCollectedRequest& req) {
  MKT_RETURN_IF_ERROR(CodeField(req.coupon_code()));
  MKT_RETURN_IF_ERROR(KeyField(req.terminal_id(), "terminal_id"));
  std::optional<CouponRow> row;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(kSelectCouponByCode, req.coupon_code());
    if (!r.empty()) row = CouponRow::From(r[0]);
    return absl::OkStatus();
  }));
  if (!row || row->state == 0) return UnknownCoupon();
  if (row->type != pb::GIFT_VOUCHER) return NotUsable("only gift vouchers are collected");
  // A voucher collected once and then given back (a reversal before such reversals were refused)
  // must not hand its gift over a second time.
  if (row->state == pb::COUPON_ISSUED && row->collected_at) return HandedOver(*row->collected_at);
  if (row->state == pb::COUPON_ISSUED) {
    // Redeemed by code at the counter: the customer proves ownership by identity, not by QR.
    MKT_RETURN_IF_ERROR(KeyField(req.customer_id(), "customer_id"));
    pb::OrderInfo order;
    order.set_order_id("counter-" + row->code);
    order.set_merchant_id(req.merchant_id().empty() ? "counter" : req.merchant_id());
    order.set_terminal_id(req.terminal_id());
    MKT_RETURN_IF_ERROR(ValidateOrder(order));
    MKT_RETURN_IF_ERROR(
        RedeemOffline(row->id, order, req.customer_id(), "", "terminal:" + req.terminal_id())
            .status());
  }
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    const absl::Time now = clock_.Now();
    const CouponRow c = CouponRow::From(tx.exec_params(kLockCouponById, row->id)[0]);
    if (c.state != pb::COUPON_REDEEMED) return NotUsable("the voucher is " + StateName(c.state));
    if (c.collected_at) {
      // Collected already: a retry of this redemption's collection is answered as done; a
      // collection recorded for an earlier redemption (reversed since) is not this one's.
      pqxx::result e = tx.exec_params(kSelectCollectedRedemption, c.id);
      if (!e.empty() && e[0][0].as<std::string>() != c.redemption_id) {
        return HandedOver(*c.collected_at);
      }
    } else {
      tx.exec_params(kSetCollected, c.id, PgTime(now));
      tx.exec_params(kInsertEvent, c.id, c.state, c.state, "terminal:" + req.terminal_id(),
                     "collected", c.redemption_id, PgTime(now), std::string());
    }
    return absl::OkStatus();
  }));
  InvalidateWallet(row->customer_id);  // collected_at has no ledger change
  return GetCoupon(row->code);
}

// ---- Wallet and expiry.

absl::Duration Benefits::WalletRefreshLinger() const {
  return std::min(absl::Milliseconds(20), wallets_.RefreshAfter() / 12);
}

std::optional<pb::Wallet> Benefits::CachedWallet(const pb::GetWalletRequest& req,
                                                 const Background& background) {
  if (!wallets_.enabled() || req.org_id().empty() || req.customer_id().empty()) return std::nullopt;
  uint64_t ticket = 0;
  std::shared_ptr<WalletCache::Reading> refresh;
  const absl::Time now = absl::Now();
  std::optional<pb::Wallet> wallet =
      wallets_.Find(req.org_id(), req.customer_id(), now, &ticket, background ? &refresh : nullptr);
  if (refresh == nullptr) return wallet;
  bool queued = false;
  bool start = false;
  {
    absl::MutexLock lock(&refresh_mu_);
    if (refresh_queue_.size() < kMaxQueuedWalletRefreshes) {
      refresh_queue_.push_back({req.org_id(), req.customer_id(), now, ticket, refresh});
      queued = true;
      if (!refresh_draining_) refresh_draining_ = start = true;
    }
  }
  if (!queued) {
    // The customer's next poll hands it out again.
    wallets_.Abandon(req.customer_id(), refresh);
  } else if (start) {
    StartWalletRefreshes(background);
  }
  return wallet;
}

void Benefits::StartWalletRefreshes(const Background& background) {
  if (background([this, background] { DrainWalletRefreshes(background); })) return;
  // Nobody reads them: each customer's next poll hands theirs out again.
  std::vector<WalletRefresh> dropped;
  {
    absl::MutexLock lock(&refresh_mu_);
    dropped.swap(refresh_queue_);
    refresh_draining_ = false;
  }
  for (const WalletRefresh& r : dropped) wallets_.Abandon(r.customer_id, r.reading);
}

void Benefits::DrainWalletRefreshes(const Background& background) {
  // If a read throws, the queue is not left marked as drained: a later refresh starts a task.
  bool handed_on = false;
  absl::Cleanup stopped = [&] {
    if (handed_on) return;
    absl::MutexLock lock(&refresh_mu_);
    refresh_draining_ = false;
  };
  absl::SleepFor(WalletRefreshLinger());
  std::vector<WalletRefresh> batch;
  {
    absl::MutexLock lock(&refresh_mu_);
    const size_t n = std::min(refresh_queue_.size(), kWalletRefreshBatch);
    batch.assign(std::make_move_iterator(refresh_queue_.begin()),
                 std::make_move_iterator(refresh_queue_.begin() + static_cast<ptrdiff_t>(n)));
    refresh_queue_.erase(refresh_queue_.begin(),
                         refresh_queue_.begin() + static_cast<ptrdiff_t>(n));
  }
  RefreshWallets(batch);
  // One batch per task, so that a steady stream of refreshes never holds a worker for good: what
  // queued meanwhile goes to a new task, behind the other work.
  bool more = false;
  {
    absl::MutexLock lock(&refresh_mu_);
    more = !refresh_queue_.empty();
    if (!more) refresh_draining_ = false;
  }
  handed_on = true;
  if (more) StartWalletRefreshes(background);
}

void Benefits::RefreshWallets(std::vector<WalletRefresh>& batch) {
  // Each refresh ends once, stored or abandoned, even if a read throws.
  std::vector<bool> ended(batch.size(), false);
  absl::Cleanup end_rest = [&] {
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!ended[i]) wallets_.Abandon(batch[i].customer_id, batch[i].reading);
    }
  };
  absl::flat_hash_map<std::string, std::vector<size_t>> by_org;
  for (size_t i = 0; i < batch.size(); ++i) by_org[batch[i].org_id].push_back(i);
  for (const auto& [org_id, members] : by_org) {
    std::vector<std::string> customers;
    customers.reserve(members.size());
    for (size_t i : members) customers.push_back(batch[i].customer_id);
    auto read = ReadWallets(org_id, customers);
    for (size_t i : members) {
      const WalletRefresh& r = batch[i];
      const absl::StatusOr<pb::Wallet>* wallet = nullptr;
      if (read.ok()) {
        if (auto it = read->find(r.customer_id); it != read->end()) wallet = &it->second;
      }
      if (wallet != nullptr && wallet->ok()) {
        wallets_.Store(org_id, r.customer_id, **wallet, r.handed_out, r.ticket, r.reading);
      } else {
        wallets_.Abandon(r.customer_id, r.reading);
      }
      ended[i] = true;
    }
  }
}

absl::StatusOr<pb::Wallet> Benefits::GetWallet(const pb::GetWalletRequest& req) {
  MKT_RETURN_IF_ERROR(KeyField(req.org_id(), "org_id"));
  MKT_RETURN_IF_ERROR(KeyField(req.customer_id(), "customer_id"));
  const absl::Time read_at = absl::Now();
  uint64_t ticket = 0;
  std::shared_ptr<WalletCache::Reading> reading;
  if (std::optional<pb::Wallet> cached = wallets_.FindOrWait(
          req.org_id(), req.customer_id(), read_at, kWalletReadWait, &ticket, &reading)) {
    return *std::move(cached);
  }
  // Callers waiting for this read read the wallet themselves if it fails.
  absl::Cleanup abandon = [&] { wallets_.Abandon(req.customer_id(), reading); };
  MKT_ASSIGN_OR_RETURN(pb::Wallet w, ReadWallet(req.org_id(), req.customer_id()));
  std::move(abandon).Cancel();
  wallets_.Store(req.org_id(), req.customer_id(), w, read_at, ticket, reading);
  return w;
}

absl::StatusOr<pb::Wallet> Benefits::ReadWallet(const std::string& org_id,
                                                const std::string& customer_id) {
  MKT_ASSIGN_OR_RETURN(
      const WalletBalances balances,
      ledger_.GetWalletBalances(org_id, customer_id, clock_.Now() + absl::Hours(24 * 30)));
  std::vector<CouponRow> rows;
  MKT_RETURN_IF_ERROR(pg::WithReads(pool_, [&](pqxx::nontransaction& reads) {
    rows.clear();
    for (const pqxx::row& r : pg::ExecPrepared(reads, kSelectWalletCoupons, org_id, customer_id)) {
      rows.push_back(CouponRow::From(r));
    }
    return absl::OkStatus();
  }));
  return AssembleWallet(balances, rows);
}

absl::StatusOr<absl::flat_hash_map<std::string, absl::StatusOr<pb::Wallet>>> Benefits::ReadWallets(
    const std::string& org_id, const std::vector<std::string>& customer_ids) {
  MKT_ASSIGN_OR_RETURN(
      const auto balances,
      ledger_.GetWalletBalancesOf(org_id, customer_ids, clock_.Now() + absl::Hours(24 * 30)));
  absl::flat_hash_map<std::string, std::vector<CouponRow>> coupons;
  const std::string ids = pg::TextArrayLiteral(customer_ids);
  MKT_RETURN_IF_ERROR(pg::WithReads(pool_, [&](pqxx::nontransaction& reads) {
    coupons.clear();
    for (const pqxx::row& r : pg::ExecPrepared(reads, kSelectWalletCouponsOf, org_id, ids)) {
      CouponRow row = CouponRow::From(r);
      coupons[row.customer_id].push_back(std::move(row));
    }
    return absl::OkStatus();
  }));
  const WalletBalances no_balances;
  const std::vector<CouponRow> no_coupons;
  absl::flat_hash_map<std::string, absl::StatusOr<pb::Wallet>> out;
  for (const std::string& customer_id : customer_ids) {
    auto b = balances.find(customer_id);
    auto c = coupons.find(customer_id);
    out.insert_or_assign(customer_id, AssembleWallet(b != balances.end() ? b->second : no_balances,
                                                     c != coupons.end() ? c->second : no_coupons));
  }
  return out;
}

absl::StatusOr<pb::Wallet> Benefits::AssembleWallet(const WalletBalances& balances,
                                                    const std::vector<CouponRow>& rows) {
  pb::Wallet w;
  for (const pb::Account& a : balances.accounts) {
    switch (a.ref().asset()) {
      case pb::POINTS:
        // Points past their expiry are not spendable even before the expiry job moves them.
        w.set_points(std::max<int64_t>(0, a.available() - balances.points_expired));
        break;
      case pb::CASH_FEN:
        w.set_cash_fen(a.available());
        w.set_cash_pending_payout_fen(a.debits_pending());
        break;
      case pb::LOTTERY_CHANCE:
        w.set_lottery_chances(a.available());
        break;
      default:
        break;
    }
  }
  w.set_points_expiring_30d(balances.points_expiring);
  std::map<std::string, pb::BenefitTemplate> templates;
  for (const CouponRow& row : rows) {
    if (w.coupons_size() == 0 || w.coupons(w.coupons_size() - 1).state() != row.state) {
      w.add_coupons()->set_state(static_cast<pb::CouponState>(row.state));
    }
    MKT_ASSIGN_OR_RETURN(pb::Coupon c, ToCoupon(row));
    auto it = templates.find(row.template_id);
    if (it == templates.end()) {
      if (auto t = LoadTemplate(row.template_id); t.ok()) {
        it = templates.emplace(row.template_id, *t).first;
      }
    }
    if (it != templates.end()) {
      c.set_name(it->second.name());
      c.set_face_value(it->second.face_value());
    }
    *w.mutable_coupons(w.coupons_size() - 1)->add_coupons() = std::move(c);
  }
  return w;
}

absl::StatusOr<pb::RunCouponExpiryResponse> Benefits::RunCouponExpiry(absl::Time as_of, int limit) {
  pb::RunCouponExpiryResponse out;
  std::vector<std::string> locks;
  std::vector<int64_t> coupons;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    locks.clear();
    for (const pqxx::row& r : tx.exec_params(kSelectDueLocks, PgTime(clock_.Now()), limit)) {
      locks.push_back(r[0].as<std::string>());
    }
    return absl::OkStatus();
  }));
  for (const std::string& id : locks) {
    // A confirm or cancel that got there first makes this a CONFLICT: nothing to release.
    if (Resolve(id, "lock-timeout", "job:lock-timeout").ok()) {
      out.set_locks_released(out.locks_released() + 1);
    }
  }
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    coupons.clear();
    for (const pqxx::row& r : tx.exec_params(kSelectDueCoupons, PgTime(as_of), limit)) {
      coupons.push_back(r[0].as<int64_t>());
    }
    return absl::OkStatus();
  }));
  for (int64_t id : coupons) {
    bool expired = false;
    MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
      expired = false;
      const absl::Time now = clock_.Now();
      const CouponRow c = CouponRow::From(tx.exec_params(kLockCouponById, id)[0]);
      // Re-checked under the lock: a coupon locked meanwhile is left to its lock's fate.
      if (c.state != pb::COUPON_ISSUED || c.valid_until > as_of) return absl::OkStatus();
      pb::LedgerIntent intent;
      intent.set_batch_id(absl::StrCat("cpn.", c.id, ".expire"));
      *intent.add_transfers() =
          Spec(intent.batch_id(), CustomerCoupons(c.org_id, c.template_id, c.customer_id),
               SystemCoupons(c.org_id, c.template_id, pb::ROLE_EXPIRY), 1, pb::EXPIRE);
      Change{.to_state = pb::COUPON_EXPIRED,
             .actor = "job:coupon-expiry",
             .cause = "expire",
             .intent = intent}
          .Write(tx, c, now);
      expired = true;
      return absl::OkStatus();
    }));
    if (expired) {
      out.set_coupons_expired(out.coupons_expired() + 1);
      if (absl::Status s = ApplyIntents(id); !s.ok()) {
        spdlog::warn("benefits: expiry of coupon {} committed, ledger behind: {}", id, s);
      }
    }
  }
  return out;
}

}  // namespace mkt::rewards
