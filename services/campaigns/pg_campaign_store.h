// The campaigns service's PostgreSQL store: orgs, campaigns with their immutable versions,
// templates and the audit log. Every change of a campaign is one transaction that locks the row,
// lets the caller's rules decide, and writes the row, the version, the audit entry and the change
// event (outbox) together, so none of them can exist without the others.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "marketing/campaigns/v1/campaigns.pb.h"

namespace mkt::campaigns {

namespace pb = ::marketing::campaigns::v1;

inline constexpr char kCampaignChangesTopic[] = "mkt.campaign-changes.v1";
inline constexpr char kCampaignChangedType[] = "campaigns.CampaignChanged";

// The schema of this service (component "campaigns").
const pg::MigrationSet& CampaignsMigrations();

// One row of the audit log. The store fills before/after JSON of campaign updates itself.
struct AuditRecord {
  absl::Time at;
  std::string org_id;
  std::string entity;  // "campaign", "template", "org"
  std::string entity_id;
  std::string action;
  std::string actor_org;
  std::string actor_operator;
  std::string before_json;
  std::string after_json;
  std::string comment;
  std::string request_id;
};

// What a rule decided about a locked campaign.
struct CampaignUpdate {
  // The campaign after the change; the store sets its revision (current + 1) and updated_at.
  pb::Campaign after;
  // A newly submitted version to insert.
  std::optional<pb::CampaignVersion> new_version;
  // A decision on an existing version (APPROVED, REJECTED, WITHDRAWN).
  struct Decision {
    int64_t version = 0;
    std::string decision;
    std::string decided_by;
    std::string comment;
  };
  std::optional<Decision> decision;
  // Action, actor, comment, request id and time; org, entity and JSON are filled by the store.
  AuditRecord audit;
  // Published through the outbox with the campaign's final revision and live configuration.
  std::optional<pb::CampaignChanged> change;
  // True: nothing to write (the rule found nothing to do); the current campaign is returned.
  bool unchanged = false;
};

using CampaignRule = std::function<absl::Status(const pb::Campaign& current, CampaignUpdate*)>;

struct CampaignFilter {
  // The subtree to list (an org and its descendants).
  std::string subtree_org;
  std::vector<std::string> states;  // names; empty: all
  std::string type;                 // name; empty: all
  std::string after_id;             // keyset paging
  int limit = 50;
};

struct AuditFilter {
  std::string subtree_org;
  std::string entity_id;
  std::string actor_operator;
  std::optional<absl::Time> since;
  std::optional<absl::Time> until;
  int64_t before_id = 0;  // keyset paging, newest first; 0: from the newest
  int limit = 50;
};

class PgCampaignStore {
 public:
  explicit PgCampaignStore(pg::Pool& pool) : pool_(pool) {}

  // ---- Orgs
  // ALREADY_EXISTS for a taken id; FAILED_PRECONDITION when the parent does not exist.
  absl::Status InsertOrg(const pb::Org& org, AuditRecord audit);
  // NOT_FOUND when unknown.
  absl::StatusOr<pb::Org> GetOrg(const std::string& id);
  // `ancestors` and the subtree of `subtree_org`, by id.
  absl::StatusOr<std::vector<pb::Org>> ListOrgs(const std::vector<std::string>& ancestors,
                                                const std::string& subtree_org,
                                                const std::string& after_id, int limit);

  // ---- Campaigns
  // Inserts a new campaign (revision 1) with its audit entry.
  absl::StatusOr<pb::Campaign> InsertCampaign(pb::Campaign campaign, AuditRecord audit);
  // NOT_FOUND when unknown. `live` holds the live version's configuration.
  absl::StatusOr<pb::Campaign> GetCampaign(const std::string& id);
  absl::StatusOr<std::vector<pb::Campaign>> ListCampaigns(const CampaignFilter& filter);
  // Locks the campaign, runs `rule` on it and writes what it decided (see CampaignUpdate).
  // `rule`'s error rolls everything back and is returned.
  absl::StatusOr<pb::Campaign> UpdateCampaign(const std::string& id, const CampaignRule& rule);
  absl::StatusOr<std::vector<pb::CampaignVersion>> ListVersions(const std::string& campaign_id);
  // Ids of campaigns whose window has started (SCHEDULED) or ended (APPROVED, SCHEDULED,
  // ONLINE, PAUSED) at `now`, oldest due first.
  absl::StatusOr<std::vector<std::string>> ListDue(absl::Time now, int limit);

  // ---- Templates
  absl::Status InsertTemplate(const pb::Template& tmpl, AuditRecord audit);
  absl::StatusOr<pb::Template> GetTemplate(const std::string& id);
  // Templates of `ancestors` and of the subtree of `subtree_org`.
  absl::StatusOr<std::vector<pb::Template>> ListTemplates(const std::vector<std::string>& ancestors,
                                                          const std::string& subtree_org,
                                                          const std::string& type,
                                                          const std::string& after_id, int limit);

  // ---- Audit
  absl::StatusOr<std::vector<pb::AuditEntry>> ListAudit(const AuditFilter& filter);

 private:
  pg::Pool& pool_;
};

// Protobuf JSON (field names as in the .proto, enums by name) both ways.
std::string ToJson(const google::protobuf::Message& message);
absl::Status FromJson(const std::string& json, google::protobuf::Message* message);

}  // namespace mkt::campaigns
