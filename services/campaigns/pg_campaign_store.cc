#include "services/campaigns/pg_campaign_store.h"

#include <google/protobuf/util/json_util.h>

#include <pqxx/pqxx>

#include "libs/core/status.h"
#include "libs/kafka/outbox.h"
#include "libs/log/log.h"
#include "libs/pg/arrays.h"
#include "libs/protojson/protojson.h"

namespace mkt::pg {
const MigrationSet& CampaignsMigrationSet();
}  // namespace mkt::pg

namespace mkt::campaigns {
namespace {

// ---- SQL ---------------------------------------------------------------------------------------

// Visibility of a subtree: $n is the org; the federation sees everything.
#define MKT_SUBTREE(col, n) "(" n " = 'fed' OR " col " = " n " OR " col " LIKE " n " || '.%')"

constexpr char kInsertOrg[] =
    "INSERT INTO orgs (id, parent_id, display_name, region, created_at) "
    "VALUES ($1, NULLIF($2, ''), $3, $4, campaigns_ts($5)) "
    "RETURNING campaigns_micros(created_at)";
constexpr char kSelectOrg[] =
    "SELECT id, coalesce(parent_id, ''), display_name, region, campaigns_micros(created_at) "
    "FROM orgs WHERE id = $1";
constexpr char kListOrgs[] =
    "SELECT id, coalesce(parent_id, ''), display_name, region, campaigns_micros(created_at) "
    "FROM orgs WHERE (id = ANY($1::text[]) OR " MKT_SUBTREE("id", "$2") ") AND id > $3 "
    "ORDER BY id LIMIT $4";

constexpr char kCampaignColumns[] =
    "c.body::text, c.revision, campaigns_micros(c.created_at), campaigns_micros(c.updated_at), "
    "c.live_version, coalesce(v.config::text, '')";
constexpr char kCampaignFrom[] =
    " FROM campaigns c LEFT JOIN campaign_versions v "
    "ON v.campaign_id = c.id AND v.version = c.live_version ";

constexpr char kInsertCampaign[] =
    "INSERT INTO campaigns (id, org_id, state, type, window_start, window_end, revision, "
    "live_version, body, created_at, updated_at) VALUES ($1, $2, $3, $4, "
    "campaigns_ts(NULLIF($5, '')::bigint), campaigns_ts(NULLIF($6, '')::bigint), 1, 0, "
    "$7::jsonb, campaigns_ts($8), campaigns_ts($8))";
constexpr char kUpdateCampaign[] =
    "UPDATE campaigns SET state = $2, type = $3, window_start = "
    "campaigns_ts(NULLIF($4, '')::bigint), window_end = campaigns_ts(NULLIF($5, '')::bigint), "
    "revision = $6, live_version = $7, body = $8::jsonb, updated_at = campaigns_ts($9) "
    "WHERE id = $1";
// An approved version of an asset-growth task moves its enrolments' window end with it, so an
// extended task keeps evaluating the customers who enrolled before the edit (decision 036); the
// task's enrolments are found by their index on campaign_id (V007).
constexpr char kMoveEnrolmentsEnd[] =
    "UPDATE asset_growth_enrolments SET window_end = campaigns_ts($2::bigint) "
    "WHERE campaign_id = $1 AND window_end <> campaigns_ts($2::bigint)";
// An ended asset-growth task stops measuring at its end: an operator's early end caps the window
// of its enrolments, so balances after it never grant a tier (the scheduler's end at the window's
// end changes nothing).
constexpr char kEndEnrolments[] =
    "UPDATE asset_growth_enrolments SET window_end = campaigns_ts($2::bigint) "
    "WHERE campaign_id = $1 AND window_end > campaigns_ts($2::bigint)";
constexpr char kInsertVersion[] =
    "INSERT INTO campaign_versions (campaign_id, version, config, submitted_by, submitted_at) "
    "VALUES ($1, $2, $3::jsonb, $4, campaigns_ts($5))";
constexpr char kDecideVersion[] =
    "UPDATE campaign_versions SET decision = $3, decided_by = $4, decided_at = campaigns_ts($5), "
    "comment = $6 WHERE campaign_id = $1 AND version = $2 AND decision = 'PENDING'";
constexpr char kListVersions[] =
    "SELECT version, config::text, submitted_by, campaigns_micros(submitted_at), decision, "
    "decided_by, coalesce(campaigns_micros(decided_at), 0), comment FROM campaign_versions "
    "WHERE campaign_id = $1 ORDER BY version";
constexpr char kListDue[] =
    "SELECT id FROM campaigns WHERE (state = 'SCHEDULED' AND window_start <= campaigns_ts($1)) "
    "OR (state IN ('APPROVED', 'SCHEDULED', 'ONLINE', 'PAUSED') AND window_end <= "
    "campaigns_ts($1)) ORDER BY least(window_start, window_end) LIMIT $2";

constexpr char kInsertTemplate[] =
    "INSERT INTO templates (id, org_id, type, body, created_at) "
    "VALUES ($1, $2, $3, $4::jsonb, campaigns_ts($5))";
constexpr char kSelectTemplate[] = "SELECT body::text FROM templates WHERE id = $1";
constexpr char kListTemplates[] =
    "SELECT body::text FROM templates WHERE (org_id = ANY($1::text[]) OR " MKT_SUBTREE(
        "org_id", "$2") ") AND ($3 = '' OR type = $3) AND id > $4 ORDER BY id LIMIT $5";

constexpr char kInsertAudit[] =
    "INSERT INTO audit_log (at, org_id, entity, entity_id, action, actor_org, actor_operator, "
    "before, after, comment, request_id) VALUES (campaigns_ts($1), $2, $3, $4, $5, $6, $7, "
    "NULLIF($8, '')::jsonb, NULLIF($9, '')::jsonb, $10, $11)";
constexpr char kListAudit[] =
    "SELECT id, campaigns_micros(at), org_id, entity, entity_id, action, actor_org, "
    "actor_operator, coalesce(before::text, ''), coalesce(after::text, ''), comment, request_id "
    "FROM audit_log WHERE " MKT_SUBTREE("org_id", "$1") " AND ($2 = '' OR entity_id = $2) "
    "AND ($3 = '' OR actor_operator = $3) AND at >= campaigns_ts($4) AND at < campaigns_ts($5) "
    "AND ($6 = 0 OR id < $6) ORDER BY id DESC LIMIT $7";

#undef MKT_SUBTREE

// ---- Conversions -------------------------------------------------------------------------------

int64_t Micros(absl::Time t) { return absl::ToUnixMicros(t); }

void SetMicros(google::protobuf::Timestamp* ts, int64_t micros) {
  int64_t seconds = micros / 1'000'000;
  int64_t rest = micros % 1'000'000;
  if (rest < 0) {
    rest += 1'000'000;
    --seconds;
  }
  ts->set_seconds(seconds);
  ts->set_nanos(static_cast<int32_t>(rest * 1000));
}

std::string OptionalMicros(bool present, const google::protobuf::Timestamp& ts) {
  if (!present) return "";
  return std::to_string(ts.seconds() * 1'000'000 + ts.nanos() / 1000);
}

// The configuration that decides the queried columns: the live one once there is one.
const pb::CampaignConfig& Effective(const pb::Campaign& c) {
  return c.live_version() > 0 ? c.live() : c.draft();
}

void InsertAudit(pqxx::work& tx, const AuditRecord& a) {
  tx.exec_params(kInsertAudit, Micros(a.at), a.org_id, a.entity, a.entity_id, a.action, a.actor_org,
                 a.actor_operator, a.before_json, a.after_json, a.comment, a.request_id);
}

absl::StatusOr<pb::Campaign> CampaignFromRow(const pqxx::row& row) {
  pb::Campaign c;
  MKT_RETURN_IF_ERROR(FromJson(row[0].as<std::string>(), &c));
  c.set_revision(row[1].as<int64_t>());
  SetMicros(c.mutable_created_at(), row[2].as<int64_t>());
  SetMicros(c.mutable_updated_at(), row[3].as<int64_t>());
  c.set_live_version(row[4].as<int64_t>());
  c.clear_live();
  if (const std::string live = row[5].as<std::string>(); !live.empty()) {
    MKT_RETURN_IF_ERROR(FromJson(live, c.mutable_live()));
  }
  return c;
}

pb::Org OrgFromRow(const pqxx::row& row) {
  pb::Org org;
  org.set_id(row[0].as<std::string>());
  org.set_parent_id(row[1].as<std::string>());
  org.set_display_name(row[2].as<std::string>());
  org.set_region(row[3].as<std::string>());
  SetMicros(org.mutable_created_at(), row[4].as<int64_t>());
  return org;
}

// The campaign as stored in `body`: without the live configuration (kept in its version).
std::string BodyJson(const pb::Campaign& c) {
  pb::Campaign body = c;
  body.clear_live();
  body.clear_revision();
  body.clear_created_at();
  body.clear_updated_at();
  body.clear_live_version();
  return ToJson(body);
}

template <class Body>
absl::Status Run(pg::Pool& pool, Body body) {
  return pg::WithTransaction(pool, [&](pqxx::work& tx) -> absl::Status { return body(tx); });
}

}  // namespace

const pg::MigrationSet& CampaignsMigrations() { return pg::CampaignsMigrationSet(); }

std::string ToJson(const google::protobuf::Message& message) {
  // From reflection: protobuf's printer was a fifth of the service's CPU on a coupon claim.
  return protojson::ToJson(message, protojson::Fields::kSet);
}

absl::Status FromJson(const std::string& json, google::protobuf::Message* message) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  auto status = google::protobuf::util::JsonStringToMessage(json, message, options);
  if (!status.ok()) return Internal("stored JSON does not parse: " + status.ToString());
  return absl::OkStatus();
}

// ---- Orgs --------------------------------------------------------------------------------------

absl::Status PgCampaignStore::InsertOrg(const pb::Org& org, AuditRecord audit) {
  return Run(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(kInsertOrg, org.id(), org.parent_id(), org.display_name(),
                                    org.region(), Micros(audit.at));
    pb::Org stored = org;
    SetMicros(stored.mutable_created_at(), r[0][0].as<int64_t>());
    audit.org_id = org.id();
    audit.entity = "org";
    audit.entity_id = org.id();
    audit.after_json = ToJson(stored);
    InsertAudit(tx, audit);
    return absl::OkStatus();
  });
}

absl::StatusOr<pb::Org> PgCampaignStore::GetOrg(const std::string& id) {
  std::optional<pb::Org> org;
  MKT_RETURN_IF_ERROR(Run(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(kSelectOrg, id);
    if (!r.empty()) org = OrgFromRow(r[0]);
    return absl::OkStatus();
  }));
  if (!org) return NotFound("no org \"" + id + "\"");
  return *std::move(org);
}

absl::StatusOr<std::vector<pb::Org>> PgCampaignStore::ListOrgs(
    const std::vector<std::string>& ancestors, const std::string& subtree_org,
    const std::string& after_id, int limit) {
  std::vector<pb::Org> out;
  MKT_RETURN_IF_ERROR(Run(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const auto& row :
         tx.exec_params(kListOrgs, pg::TextArrayLiteral(ancestors), subtree_org, after_id, limit)) {
      out.push_back(OrgFromRow(row));
    }
    return absl::OkStatus();
  }));
  return out;
}

// ---- Campaigns ---------------------------------------------------------------------------------

absl::StatusOr<pb::Campaign> PgCampaignStore::InsertCampaign(pb::Campaign campaign,
                                                             AuditRecord audit) {
  campaign.set_revision(1);
  SetMicros(campaign.mutable_created_at(), Micros(audit.at));
  *campaign.mutable_updated_at() = campaign.created_at();
  const pb::CampaignConfig& eff = Effective(campaign);
  MKT_RETURN_IF_ERROR(Run(pool_, [&](pqxx::work& tx) {
    tx.exec_params(
        kInsertCampaign, campaign.id(), campaign.org_id(), pb::CampaignState_Name(campaign.state()),
        pb::CampaignType_Name(eff.type()), OptionalMicros(eff.has_start_time(), eff.start_time()),
        OptionalMicros(eff.has_end_time(), eff.end_time()), BodyJson(campaign), Micros(audit.at));
    audit.org_id = campaign.org_id();
    audit.entity = "campaign";
    audit.entity_id = campaign.id();
    audit.after_json = ToJson(campaign);
    InsertAudit(tx, audit);
    return absl::OkStatus();
  }));
  return campaign;
}

absl::StatusOr<pb::Campaign> PgCampaignStore::GetCampaign(const std::string& id) {
  std::optional<absl::StatusOr<pb::Campaign>> found;
  MKT_RETURN_IF_ERROR(Run(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(
        std::string("SELECT ") + kCampaignColumns + kCampaignFrom + "WHERE c.id = $1", id);
    if (!r.empty()) found = CampaignFromRow(r[0]);
    return absl::OkStatus();
  }));
  if (!found) return NotFound("no campaign \"" + id + "\"");
  return *std::move(found);
}

absl::StatusOr<std::vector<pb::Campaign>> PgCampaignStore::ListCampaigns(const CampaignFilter& f) {
  std::vector<pb::Campaign> out;
  MKT_RETURN_IF_ERROR(Run(pool_, [&](pqxx::work& tx) -> absl::Status {
    out.clear();
    const std::string sql = std::string("SELECT ") + kCampaignColumns + kCampaignFrom +
                            "WHERE ($1 = 'fed' OR c.org_id = $1 OR c.org_id LIKE $1 || '.%') "
                            "AND (cardinality($2::text[]) = 0 OR c.state = ANY($2::text[])) "
                            "AND ($3 = '' OR c.type = $3) AND c.id > $4 ORDER BY c.id LIMIT $5";
    for (const auto& row : tx.exec_params(sql, f.subtree_org, pg::TextArrayLiteral(f.states),
                                          f.type, f.after_id, f.limit)) {
      MKT_ASSIGN_OR_RETURN(pb::Campaign c, CampaignFromRow(row));
      out.push_back(std::move(c));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<pb::Campaign> PgCampaignStore::UpdateCampaign(const std::string& id,
                                                             const CampaignRule& rule) {
  pb::Campaign result;
  MKT_RETURN_IF_ERROR(Run(pool_, [&](pqxx::work& tx) -> absl::Status {
    // The campaign row is the lock every change of the campaign serialises on, so its change
    // events enter the outbox in the order they happened (decision 004).
    pqxx::result r = tx.exec_params(std::string("SELECT ") + kCampaignColumns + kCampaignFrom +
                                        "WHERE c.id = $1 FOR UPDATE OF c",
                                    id);
    if (r.empty()) return NotFound("no campaign \"" + id + "\"");
    MKT_ASSIGN_OR_RETURN(pb::Campaign current, CampaignFromRow(r[0]));
    CampaignUpdate update;
    update.after = current;
    MKT_RETURN_IF_ERROR(rule(current, &update));
    if (update.unchanged) {
      result = std::move(current);
      return absl::OkStatus();
    }
    pb::Campaign& after = update.after;
    after.set_id(current.id());
    after.set_org_id(current.org_id());
    *after.mutable_created_at() = current.created_at();
    after.set_revision(current.revision() + 1);
    SetMicros(after.mutable_updated_at(), Micros(update.audit.at));

    if (update.new_version) {
      const pb::CampaignVersion& v = *update.new_version;
      tx.exec_params(kInsertVersion, id, v.version(), ToJson(v.config()), v.submitted_by(),
                     Micros(update.audit.at));
    }
    if (update.decision) {
      pqxx::result decided = tx.exec_params(kDecideVersion, id, update.decision->version,
                                            update.decision->decision, update.decision->decided_by,
                                            Micros(update.audit.at), update.decision->comment);
      if (decided.affected_rows() != 1) {
        return Internal("version " + std::to_string(update.decision->version) + " of " + id +
                        " is not pending");
      }
    }
    const pb::CampaignConfig& eff = Effective(after);
    tx.exec_params(kUpdateCampaign, id, pb::CampaignState_Name(after.state()),
                   pb::CampaignType_Name(eff.type()),
                   OptionalMicros(eff.has_start_time(), eff.start_time()),
                   OptionalMicros(eff.has_end_time(), eff.end_time()), after.revision(),
                   after.live_version(), BodyJson(after), Micros(update.audit.at));

    if (after.live_version() != current.live_version() && eff.type() == pb::ASSET_GROWTH_TASK &&
        eff.has_end_time()) {
      tx.exec_params(kMoveEnrolmentsEnd, id, OptionalMicros(true, eff.end_time()));
    }
    if (after.state() == pb::ENDED && current.state() != pb::ENDED &&
        eff.type() == pb::ASSET_GROWTH_TASK) {
      tx.exec_params(kEndEnrolments, id, Micros(update.audit.at));
    }

    AuditRecord audit = std::move(update.audit);
    audit.org_id = current.org_id();
    audit.entity = "campaign";
    audit.entity_id = id;
    audit.before_json = ToJson(current);
    audit.after_json = ToJson(after);
    InsertAudit(tx, audit);

    if (update.change) {
      pb::CampaignChanged& change = *update.change;
      change.set_campaign_id(id);
      change.set_org_id(after.org_id());
      change.set_state(after.state());
      change.set_version(after.live_version());
      change.set_revision(after.revision());
      *change.mutable_config() = after.live();
      SetMicros(change.mutable_changed_at(), Micros(audit.at));
      kafka::AppendToOutbox(
          tx, kCampaignChangesTopic, id,
          kafka::MakeEnvelope(kCampaignChangedType, after.org_id(), audit.request_id, change));
    }
    result = after;
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<std::vector<pb::CampaignVersion>> PgCampaignStore::ListVersions(
    const std::string& campaign_id) {
  std::vector<pb::CampaignVersion> out;
  MKT_RETURN_IF_ERROR(Run(pool_, [&](pqxx::work& tx) -> absl::Status {
    out.clear();
    for (const auto& row : tx.exec_params(kListVersions, campaign_id)) {
      pb::CampaignVersion v;
      v.set_campaign_id(campaign_id);
      v.set_version(row[0].as<int64_t>());
      MKT_RETURN_IF_ERROR(FromJson(row[1].as<std::string>(), v.mutable_config()));
      v.set_submitted_by(row[2].as<std::string>());
      SetMicros(v.mutable_submitted_at(), row[3].as<int64_t>());
      v.set_decision(row[4].as<std::string>());
      v.set_decided_by(row[5].as<std::string>());
      if (int64_t at = row[6].as<int64_t>(); at != 0) SetMicros(v.mutable_decided_at(), at);
      v.set_comment(row[7].as<std::string>());
      out.push_back(std::move(v));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<std::string>> PgCampaignStore::ListDue(absl::Time now, int limit) {
  std::vector<std::string> out;
  MKT_RETURN_IF_ERROR(Run(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const auto& row : tx.exec_params(kListDue, Micros(now), limit)) {
      out.push_back(row[0].as<std::string>());
    }
    return absl::OkStatus();
  }));
  return out;
}

// ---- Templates ---------------------------------------------------------------------------------

absl::Status PgCampaignStore::InsertTemplate(const pb::Template& tmpl, AuditRecord audit) {
  return Run(pool_, [&](pqxx::work& tx) {
    tx.exec_params(kInsertTemplate, tmpl.id(), tmpl.org_id(), pb::CampaignType_Name(tmpl.type()),
                   ToJson(tmpl), Micros(audit.at));
    audit.org_id = tmpl.org_id();
    audit.entity = "template";
    audit.entity_id = tmpl.id();
    audit.after_json = ToJson(tmpl);
    InsertAudit(tx, audit);
    return absl::OkStatus();
  });
}

absl::StatusOr<pb::Template> PgCampaignStore::GetTemplate(const std::string& id) {
  std::optional<std::string> body;
  MKT_RETURN_IF_ERROR(Run(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(kSelectTemplate, id);
    if (!r.empty()) body = r[0][0].as<std::string>();
    return absl::OkStatus();
  }));
  if (!body) return NotFound("no template \"" + id + "\"");
  pb::Template tmpl;
  MKT_RETURN_IF_ERROR(FromJson(*body, &tmpl));
  return tmpl;
}

absl::StatusOr<std::vector<pb::Template>> PgCampaignStore::ListTemplates(
    const std::vector<std::string>& ancestors, const std::string& subtree_org,
    const std::string& type, const std::string& after_id, int limit) {
  std::vector<pb::Template> out;
  MKT_RETURN_IF_ERROR(Run(pool_, [&](pqxx::work& tx) -> absl::Status {
    out.clear();
    for (const auto& row : tx.exec_params(kListTemplates, pg::TextArrayLiteral(ancestors),
                                          subtree_org, type, after_id, limit)) {
      pb::Template tmpl;
      MKT_RETURN_IF_ERROR(FromJson(row[0].as<std::string>(), &tmpl));
      out.push_back(std::move(tmpl));
    }
    return absl::OkStatus();
  }));
  return out;
}

// ---- Audit -------------------------------------------------------------------------------------

absl::StatusOr<std::vector<pb::AuditEntry>> PgCampaignStore::ListAudit(const AuditFilter& f) {
  std::vector<pb::AuditEntry> out;
  // Unbounded ends stay inside timestamptz's range: 1970 and the end of year 9999.
  const int64_t since = f.since ? Micros(*f.since) : 0;
  const int64_t until = f.until ? Micros(*f.until) : int64_t{253'402'300'799'000'000};
  MKT_RETURN_IF_ERROR(Run(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const auto& row : tx.exec_params(kListAudit, f.subtree_org, f.entity_id, f.actor_operator,
                                          since, until, f.before_id, f.limit)) {
      pb::AuditEntry e;
      e.set_id(row[0].as<int64_t>());
      SetMicros(e.mutable_at(), row[1].as<int64_t>());
      e.set_org_id(row[2].as<std::string>());
      e.set_entity(row[3].as<std::string>());
      e.set_entity_id(row[4].as<std::string>());
      e.set_action(row[5].as<std::string>());
      e.set_actor_org(row[6].as<std::string>());
      e.set_actor_operator(row[7].as<std::string>());
      e.set_before_json(row[8].as<std::string>());
      e.set_after_json(row[9].as<std::string>());
      e.set_comment(row[10].as<std::string>());
      e.set_request_id(row[11].as<std::string>());
      out.push_back(std::move(e));
    }
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace mkt::campaigns
