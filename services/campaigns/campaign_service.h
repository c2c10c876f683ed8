// The campaigns service's use cases: orgs, the guided set-up of drafts, the maker-checker
// lifecycle with versioned edits, templates and copies, forecasts, the audit trail, and the
// scheduler's start/end of campaigns at their window. Each call takes the acting operator and
// applies tenancy (an operator sees campaigns of their org and its descendants; what they cannot
// see answers NOT_FOUND, so other banks' campaigns do not even show they exist) and the role
// rules; the decisions themselves are the plain functions of campaign_rules.h and lifecycle.h.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "libs/core/ids.h"
#include "libs/tenancy/tenancy.h"
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "services/campaigns/campaign_rules.h"
#include "services/campaigns/lifecycle.h"
#include "services/campaigns/pg_campaign_store.h"
#include "services/campaigns/reference_data.h"

namespace mkt::campaigns {

struct CampaignServiceOptions {
  // Expected uptake for forecasts when the operator gave none, in basis points.
  int32_t default_uptake_bp = 1000;
  // What one point of an EVENT_TRIGGER campaign's reward costs its budget, in fen; set on the
  // version when it is submitted (decision 034).
  int64_t points_unit_cost_fen = 1;
  // The events service's event types, for checking trigger expressions (null: not checked here).
  events::EventTypeCache* event_types = nullptr;
};

class CampaignService {
 public:
  CampaignService(PgCampaignStore& store, const SegmentDirectory& segments,
                  const BenefitCatalog& benefits, const Clock& clock,
                  CampaignServiceOptions options = {});

  using Actor = tenancy::Actor;

  absl::StatusOr<pb::Org> CreateOrg(const Actor& actor, const pb::CreateOrgRequest& request,
                                    const std::string& request_id);
  absl::StatusOr<pb::Org> GetOrg(const Actor& actor, const pb::GetOrgRequest& request);
  absl::StatusOr<pb::ListOrgsResponse> ListOrgs(const Actor& actor,
                                                const pb::ListOrgsRequest& request);

  absl::StatusOr<pb::Campaign> CreateCampaign(const Actor& actor,
                                              const pb::CreateCampaignRequest& request,
                                              const std::string& request_id);
  // Saves one step of a draft (or of an edit of a published campaign) when the step is valid;
  // INVALID_ARGUMENT listing every error otherwise, ABORTED (CONFLICT) on a stale revision.
  absl::StatusOr<pb::Campaign> SaveStep(const Actor& actor, const pb::SaveStepRequest& request,
                                        const std::string& request_id);
  absl::StatusOr<pb::Campaign> GetCampaign(const Actor& actor,
                                           const pb::GetCampaignRequest& request);
  absl::StatusOr<pb::ListCampaignsResponse> ListCampaigns(const Actor& actor,
                                                          const pb::ListCampaignsRequest& request);
  absl::StatusOr<pb::ValidateCampaignResponse> Validate(const Actor& actor,
                                                        const pb::ValidateCampaignRequest& request);
  absl::StatusOr<pb::CostForecast> Forecast(const Actor& actor,
                                            const pb::ForecastCostRequest& request);
  absl::StatusOr<pb::ListVersionsResponse> ListVersions(const Actor& actor,
                                                        const pb::ListVersionsRequest& request);

  // Submit, approve, reject, publish, pause, resume, end, archive.
  absl::StatusOr<pb::Campaign> Act(const Actor& actor, Action action,
                                   const pb::CampaignActionRequest& request,
                                   const std::string& request_id);

  absl::StatusOr<pb::Template> SaveAsTemplate(const Actor& actor,
                                              const pb::SaveAsTemplateRequest& request,
                                              const std::string& request_id);
  absl::StatusOr<pb::Template> GetTemplate(const Actor& actor,
                                           const pb::GetTemplateRequest& request);
  absl::StatusOr<pb::ListTemplatesResponse> ListTemplates(const Actor& actor,
                                                          const pb::ListTemplatesRequest& request);
  absl::StatusOr<pb::Campaign> CreateFromTemplate(const Actor& actor,
                                                  const pb::CreateFromTemplateRequest& request,
                                                  const std::string& request_id);
  absl::StatusOr<pb::Campaign> CopyCampaign(const Actor& actor,
                                            const pb::CopyCampaignRequest& request,
                                            const std::string& request_id);

  absl::StatusOr<pb::ListAuditResponse> ListAudit(const Actor& actor,
                                                  const pb::ListAuditRequest& request);

  // Starts campaigns whose window has begun and ends those whose window is over, as of the
  // clock's now; returns how many changed. Safe to run in several replicas at once.
  absl::StatusOr<int> AdvanceDue(int limit = 500);

 private:
  ValidationContext ContextFor(const std::string& owner_org) const;
  absl::StatusOr<pb::Campaign> LoadVisible(const Actor& actor, const std::string& id);
  absl::StatusOr<pb::Template> LoadVisibleTemplate(const Actor& actor, const std::string& id);
  absl::Status CheckTargetOrg(const Actor& actor, const std::string& org_id);
  absl::StatusOr<pb::Campaign> CreateCopy(const Actor& actor, const std::string& org_id,
                                          pb::CampaignConfig config, const std::string& name,
                                          const std::string& template_id,
                                          const std::string& campaign_id,
                                          const std::string& request_id);
  AuditRecord Audit(const Actor& actor, std::string action, std::string comment,
                    const std::string& request_id) const;

  PgCampaignStore& store_;
  const SegmentDirectory& segments_;
  const BenefitCatalog& benefits_;
  const Clock& clock_;
  CampaignServiceOptions options_;
};

}  // namespace mkt::campaigns
