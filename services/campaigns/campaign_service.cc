#include "services/campaigns/campaign_service.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "services/campaigns/cost_forecast.h"

namespace mkt::campaigns {
namespace {

using ::marketing::common::v1::CONFLICT;
using ::marketing::common::v1::PERMISSION_DENIED;

absl::Status Denied(const std::string& message) {
  return Error(absl::StatusCode::kPermissionDenied, PERMISSION_DENIED, message);
}

absl::Status StaleRevision(int64_t current, int64_t expected) {
  return Error(absl::StatusCode::kAborted, CONFLICT,
               "the campaign changed since it was read (revision " + std::to_string(current) +
                   ", the request edited " + std::to_string(expected) + "); reload and retry");
}

absl::Status Required(const std::string& field) { return InvalidArgument(field, "is required"); }

int PageSize(const ::marketing::common::v1::PageRequest& page) {
  if (page.page_size() <= 0) return 50;
  return std::min(page.page_size(), 500);
}

absl::Time TimeOf(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

// A step has content when merging it into an empty configuration changes anything.
bool StepHasContent(pb::Step step, const pb::CampaignConfig& config) {
  pb::CampaignConfig probe;
  MergeStep(step, config, &probe);
  // Merging always sets the step's sub-messages, so compare with what an empty step leaves.
  pb::CampaignConfig nothing;
  MergeStep(step, pb::CampaignConfig(), &nothing);
  return probe.SerializeAsString() != nothing.SerializeAsString();
}

void Unflag(pb::Campaign* campaign, pb::Step step) {
  std::vector<std::string> cleared = FlaggedFieldsOfStep(step);
  auto* flags = campaign->mutable_flagged_fields();
  flags->erase(std::remove_if(flags->begin(), flags->end(),
                              [&](const std::string& f) {
                                return std::find(cleared.begin(), cleared.end(), f) !=
                                       cleared.end();
                              }),
               flags->end());
}

absl::Status CheckSize(const pb::CampaignConfig& config) {
  if (config.ByteSizeLong() > kMaxConfigBytes) {
    return InvalidArgument(
        "config", "the configuration is larger than " + std::to_string(kMaxConfigBytes) + " bytes");
  }
  return absl::OkStatus();
}

pb::ChangeKind KindOf(Action action) {
  switch (action) {
    case Action::kPublish:
    case Action::kApprove:
      return pb::PUBLISHED;
    case Action::kStart:
      return pb::STARTED;
    case Action::kPause:
      return pb::PAUSED_CHANGE;
    case Action::kResume:
      return pb::RESUMED;
    case Action::kEnd:
      return pb::ENDED_CHANGE;
    case Action::kArchive:
      return pb::ARCHIVED_CHANGE;
    default:
      return pb::CHANGE_KIND_UNSPECIFIED;
  }
}

std::string NewId(const char* prefix) { return prefix + RandomHex(8); }

}  // namespace

CampaignService::CampaignService(PgCampaignStore& store, const SegmentDirectory& segments,
                                 const BenefitCatalog& benefits, const Clock& clock,
                                 CampaignServiceOptions options)
    : store_(store), segments_(segments), benefits_(benefits), clock_(clock), options_(options) {}

ValidationContext CampaignService::ContextFor(const std::string& owner_org) const {
  return ValidationContext{&segments_, &benefits_, owner_org, clock_.Now(), options_.event_types};
}

AuditRecord CampaignService::Audit(const Actor& actor, std::string action, std::string comment,
                                   const std::string& request_id) const {
  AuditRecord a;
  a.at = clock_.Now();
  a.action = std::move(action);
  a.actor_org = actor.org_id;
  a.actor_operator = actor.operator_id;
  a.comment = std::move(comment);
  a.request_id = request_id;
  return a;
}

absl::StatusOr<pb::Campaign> CampaignService::LoadVisible(const Actor& actor,
                                                          const std::string& id) {
  if (id.empty()) return Required("campaign_id");
  absl::StatusOr<pb::Campaign> campaign = store_.GetCampaign(id);
  // Another bank's campaign answers exactly like a missing one.
  if (campaign.ok() && !CanSee(actor, campaign->org_id())) {
    return NotFound("no campaign \"" + id + "\"");
  }
  return campaign;
}

absl::Status CampaignService::CheckTargetOrg(const Actor& actor, const std::string& org_id) {
  if (!tenancy::IsValidOrgId(org_id)) return InvalidArgument("org_id", "is not an org id");
  if (!tenancy::Covers(actor.org_id, org_id)) {
    return Denied("an operator of " + actor.org_id + " cannot act for org " + org_id);
  }
  absl::StatusOr<pb::Org> org = store_.GetOrg(org_id);
  if (org.status().code() == absl::StatusCode::kNotFound) {
    return InvalidArgument("org_id", "unknown org \"" + org_id + "\"");
  }
  return org.status();
}

// ---- Orgs --------------------------------------------------------------------------------------

absl::StatusOr<pb::Org> CampaignService::CreateOrg(const Actor& actor,
                                                   const pb::CreateOrgRequest& request,
                                                   const std::string& request_id) {
  if (!actor.Has(tenancy::Role::kAdmin)) return Denied("only an admin may create orgs");
  FieldErrors errors;
  if (!tenancy::IsValidOrgId(request.id()) || request.id() == tenancy::kFederation) {
    errors.Add("id", "must be a new org id such as bank-c or bank-a.branch-07");
  }
  const int name_length = PrintableUtf8Length(request.display_name());
  if (name_length <= 0 || name_length > kMaxNameLength) {
    errors.Add("display_name", "is required: 1..64 printable characters");
  }
  if (PrintableUtf8Length(request.region()) < 0 || request.region().size() > 64) {
    errors.Add("region", "at most 64 printable characters");
  }
  MKT_RETURN_IF_ERROR(errors.ToStatus());
  const std::string parent = tenancy::ParentOf(request.id());
  if (!tenancy::Covers(actor.org_id, parent)) {
    return Denied("an admin of " + actor.org_id + " cannot create orgs under " + parent);
  }
  pb::Org org;
  org.set_id(request.id());
  org.set_parent_id(parent);
  org.set_display_name(request.display_name());
  org.set_region(request.region());
  absl::Status inserted = store_.InsertOrg(org, Audit(actor, "org.create", "", request_id));
  if (inserted.code() == absl::StatusCode::kFailedPrecondition) {
    return InvalidArgument("id", "the parent org \"" + parent + "\" does not exist");
  }
  if (inserted.code() == absl::StatusCode::kAlreadyExists) {
    return Error(absl::StatusCode::kAlreadyExists, ::marketing::common::v1::ALREADY_EXISTS,
                 "org \"" + org.id() + "\" exists already", "id");
  }
  MKT_RETURN_IF_ERROR(inserted);
  return store_.GetOrg(org.id());
}

absl::StatusOr<pb::Org> CampaignService::GetOrg(const Actor& actor,
                                                const pb::GetOrgRequest& request) {
  if (!tenancy::Covers(actor.org_id, request.id()) &&
      !tenancy::Covers(request.id(), actor.org_id)) {
    return NotFound("no org \"" + request.id() + "\"");
  }
  return store_.GetOrg(request.id());
}

absl::StatusOr<pb::ListOrgsResponse> CampaignService::ListOrgs(const Actor& actor,
                                                               const pb::ListOrgsRequest& request) {
  const int limit = PageSize(request.page());
  MKT_ASSIGN_OR_RETURN(auto orgs,
                       store_.ListOrgs(tenancy::SelfAndAncestors(actor.org_id), actor.org_id,
                                       request.page().page_token(), limit));
  pb::ListOrgsResponse response;
  for (auto& org : orgs) *response.add_orgs() = std::move(org);
  if (static_cast<int>(orgs.size()) == limit) {
    response.mutable_page()->set_next_page_token(orgs.back().id());
  }
  return response;
}

// ---- Drafts ------------------------------------------------------------------------------------

absl::StatusOr<pb::Campaign> CampaignService::CreateCampaign(
    const Actor& actor, const pb::CreateCampaignRequest& request, const std::string& request_id) {
  MKT_RETURN_IF_ERROR(CheckRole(actor, Action::kEdit));
  const std::string org_id = request.org_id().empty() ? actor.org_id : request.org_id();
  MKT_RETURN_IF_ERROR(CheckTargetOrg(actor, org_id));
  MKT_RETURN_IF_ERROR(CheckSize(request.config()));

  const ValidationContext context = ContextFor(org_id);
  pb::CampaignConfig draft;
  FieldErrors errors;
  for (pb::Step step : {pb::STEP_BASICS, pb::STEP_AUDIENCE, pb::STEP_RULES_REWARDS,
                        pb::STEP_CHANNELS_CONTENT, pb::STEP_REVIEW}) {
    if (step != pb::STEP_BASICS && !StepHasContent(step, request.config())) continue;
    MergeStep(step, request.config(), &draft);
    errors.Append(ValidateStep(step, draft, context));
  }
  MKT_RETURN_IF_ERROR(errors.ToStatus());
  PinSegmentVersions(&draft, segments_);

  pb::Campaign campaign;
  campaign.set_id(NewId("cmp_"));
  campaign.set_org_id(org_id);
  campaign.set_state(pb::DRAFT);
  campaign.set_change_state(pb::NO_CHANGE);
  *campaign.mutable_draft() = std::move(draft);
  campaign.set_created_by(actor.operator_id);
  return store_.InsertCampaign(std::move(campaign),
                               Audit(actor, "campaign.create", "", request_id));
}

absl::StatusOr<pb::Campaign> CampaignService::SaveStep(const Actor& actor,
                                                       const pb::SaveStepRequest& request,
                                                       const std::string& request_id) {
  MKT_RETURN_IF_ERROR(CheckRole(actor, Action::kEdit));
  if (request.step() < pb::STEP_BASICS || request.step() > pb::STEP_REVIEW) {
    return InvalidArgument("step", "must be one of STEP_BASICS .. STEP_REVIEW");
  }
  if (request.expected_revision() <= 0) {
    return InvalidArgument("expected_revision",
                           "is required: the revision of the campaign the edit is based on");
  }
  MKT_RETURN_IF_ERROR(CheckSize(request.config()));
  MKT_RETURN_IF_ERROR(LoadVisible(actor, request.campaign_id()).status());
  return store_.UpdateCampaign(request.campaign_id(), [&](const pb::Campaign& current,
                                                          CampaignUpdate* update) {
    if (!CanSee(actor, current.org_id())) return NotFound("no campaign");
    if (current.revision() != request.expected_revision()) {
      return StaleRevision(current.revision(), request.expected_revision());
    }
    MKT_ASSIGN_OR_RETURN(LifecycleState next,
                         Apply({current.state(), current.change_state()}, Action::kEdit));
    pb::Campaign& after = update->after;
    MergeStep(request.step(), request.config(), after.mutable_draft());
    FieldErrors errors = ValidateStep(request.step(), after.draft(), ContextFor(current.org_id()));
    if (current.live_version() > 0) errors.Append(CheckEditOfLive(current.live(), after.draft()));
    MKT_RETURN_IF_ERROR(errors.ToStatus());
    MKT_RETURN_IF_ERROR(CheckSize(after.draft()));
    if (request.step() == pb::STEP_AUDIENCE) PinSegmentVersions(after.mutable_draft(), segments_);
    after.set_state(next.state);
    after.set_change_state(next.change);
    Unflag(&after, request.step());
    update->audit = Audit(actor, "campaign.save_step", pb::Step_Name(request.step()), request_id);
    return absl::OkStatus();
  });
}

absl::StatusOr<pb::Campaign> CampaignService::GetCampaign(const Actor& actor,
                                                          const pb::GetCampaignRequest& request) {
  return LoadVisible(actor, request.campaign_id());
}

absl::StatusOr<pb::ListCampaignsResponse> CampaignService::ListCampaigns(
    const Actor& actor, const pb::ListCampaignsRequest& request) {
  CampaignFilter filter;
  filter.subtree_org = request.org_id().empty() ? actor.org_id : request.org_id();
  if (!tenancy::IsValidOrgId(filter.subtree_org)) {
    return InvalidArgument("org_id", "is not an org id");
  }
  if (!tenancy::Covers(actor.org_id, filter.subtree_org)) {
    return Denied("an operator of " + actor.org_id + " cannot list campaigns of " +
                  filter.subtree_org);
  }
  for (int state : request.states()) {
    if (!pb::CampaignState_IsValid(state) || state == pb::CAMPAIGN_STATE_UNSPECIFIED) {
      return InvalidArgument("states", "unknown state " + std::to_string(state));
    }
    filter.states.push_back(pb::CampaignState_Name(static_cast<pb::CampaignState>(state)));
  }
  if (request.type() != pb::CAMPAIGN_TYPE_UNSPECIFIED) {
    if (!pb::CampaignType_IsValid(request.type())) return InvalidArgument("type", "unknown type");
    filter.type = pb::CampaignType_Name(request.type());
  }
  filter.after_id = request.page().page_token();
  filter.limit = PageSize(request.page());
  MKT_ASSIGN_OR_RETURN(auto campaigns, store_.ListCampaigns(filter));
  pb::ListCampaignsResponse response;
  for (auto& c : campaigns) *response.add_campaigns() = std::move(c);
  if (static_cast<int>(campaigns.size()) == filter.limit) {
    response.mutable_page()->set_next_page_token(campaigns.back().id());
  }
  return response;
}

absl::StatusOr<pb::ValidateCampaignResponse> CampaignService::Validate(
    const Actor& actor, const pb::ValidateCampaignRequest& request) {
  MKT_ASSIGN_OR_RETURN(pb::Campaign campaign, LoadVisible(actor, request.campaign_id()));
  pb::ValidateCampaignResponse response;
  ValidateForSubmission(campaign.draft(), ContextFor(campaign.org_id()))
      .AddTo(response.mutable_errors());
  *response.mutable_forecast() =
      ForecastCost(campaign.draft(), segments_, benefits_, options_.default_uptake_bp, 0,
                   options_.points_unit_cost_fen);
  FieldErrors warnings;
  if (response.forecast().exceeds_budget()) {
    warnings.Add("budget_cap_fen", "the forecast cost " +
                                       std::to_string(response.forecast().forecast_cost_fen()) +
                                       " fen exceeds the budget cap");
  }
  for (const std::string& f : campaign.flagged_fields()) {
    warnings.Add(f, "copied from a template or another campaign: set this org's own value");
  }
  warnings.AddTo(response.mutable_warnings());
  return response;
}

absl::StatusOr<pb::CostForecast> CampaignService::Forecast(const Actor& actor,
                                                           const pb::ForecastCostRequest& request) {
  if (request.uptake_bp() < 0 || request.uptake_bp() > kFullProbabilityBp) {
    return InvalidArgument("uptake_bp", "must be between 0 and 10000");
  }
  MKT_ASSIGN_OR_RETURN(pb::Campaign campaign, LoadVisible(actor, request.campaign_id()));
  return ForecastCost(campaign.draft(), segments_, benefits_, options_.default_uptake_bp,
                      request.uptake_bp(), options_.points_unit_cost_fen);
}

absl::StatusOr<pb::ListVersionsResponse> CampaignService::ListVersions(
    const Actor& actor, const pb::ListVersionsRequest& request) {
  MKT_RETURN_IF_ERROR(LoadVisible(actor, request.campaign_id()).status());
  MKT_ASSIGN_OR_RETURN(auto versions, store_.ListVersions(request.campaign_id()));
  pb::ListVersionsResponse response;
  for (auto& v : versions) *response.add_versions() = std::move(v);
  return response;
}

// ---- Lifecycle ---------------------------------------------------------------------------------

absl::StatusOr<pb::Campaign> CampaignService::Act(const Actor& actor, Action action,
                                                  const pb::CampaignActionRequest& request,
                                                  const std::string& request_id) {
  MKT_RETURN_IF_ERROR(CheckRole(actor, action));
  if (action == Action::kReject && PrintableUtf8Length(request.comment()) <= 0) {
    return InvalidArgument("comment", "a rejection needs a reason for the submitter");
  }
  if (request.comment().size() > 2000) return InvalidArgument("comment", "at most 2000 bytes");
  // Stored in text columns (the version's decision, the audit trail), which hold no NUL.
  if (!IsWellFormedUtf8(request.comment())) {
    return InvalidArgument("comment", "must be well-formed UTF-8 without NUL characters");
  }
  MKT_RETURN_IF_ERROR(LoadVisible(actor, request.campaign_id()).status());
  return store_.UpdateCampaign(
      request.campaign_id(),
      [&](const pb::Campaign& current, CampaignUpdate* update) -> absl::Status {
        if (!CanSee(actor, current.org_id())) return NotFound("no campaign");
        if (request.expected_revision() != 0 && current.revision() != request.expected_revision()) {
          return StaleRevision(current.revision(), request.expected_revision());
        }
        const LifecycleState before{current.state(), current.change_state()};
        MKT_ASSIGN_OR_RETURN(LifecycleState next, Apply(before, action));
        pb::Campaign& after = update->after;
        switch (action) {
          case Action::kSubmit: {
            FieldErrors errors =
                ValidateForSubmission(current.draft(), ContextFor(current.org_id()));
            if (current.live_version() > 0) {
              errors.Append(CheckEditOfLive(current.live(), current.draft()));
            }
            MKT_RETURN_IF_ERROR(errors.ToStatus());
            // Decision 034: the submitted version carries the price its events will be charged
            // at, so the approver approves it and it never changes (versions are immutable).
            PriceEventRewards(after.mutable_draft(), options_.points_unit_cost_fen);
            pb::CampaignVersion version;
            version.set_version(current.latest_version() + 1);
            *version.mutable_config() = after.draft();
            version.set_submitted_by(actor.operator_id);
            update->new_version = std::move(version);
            after.set_latest_version(current.latest_version() + 1);
            after.set_pending_version(current.latest_version() + 1);
            after.set_submitted_by(actor.operator_id);
            after.clear_rejection_comment();
            break;
          }
          case Action::kApprove:
          case Action::kReject: {
            MKT_RETURN_IF_ERROR(CheckChecker(actor, current.org_id(), current.submitted_by()));
            const bool approve = action == Action::kApprove;
            update->decision = CampaignUpdate::Decision{current.pending_version(),
                                                        approve ? "APPROVED" : "REJECTED",
                                                        actor.operator_id, request.comment()};
            if (approve) {
              // The draft is frozen while pending, so it is the submitted version.
              after.set_live_version(current.pending_version());
              *after.mutable_live() = current.draft();
            } else {
              after.set_rejection_comment(request.comment());
            }
            after.set_pending_version(0);
            after.clear_submitted_by();
            break;
          }
          case Action::kEnd:
            if (current.pending_version() > 0) {
              update->decision = CampaignUpdate::Decision{current.pending_version(), "WITHDRAWN",
                                                          actor.operator_id, "campaign ended"};
              after.set_pending_version(0);
              after.clear_submitted_by();
            }
            if (IsPublished(current.state()) || current.state() == pb::APPROVED) {
              // An unapproved edit of an ended campaign is dropped; the draft shows what ran.
              *after.mutable_draft() = current.live();
            }
            break;
          default:
            break;
        }
        after.set_state(next.state);
        after.set_change_state(next.change);
        update->audit = Audit(actor, "campaign." + std::string(ActionName(action)),
                              request.comment(), request_id);
        if (EmitsChange(before, action)) {
          update->change.emplace();
          update->change->set_kind(KindOf(action));
        }
        return absl::OkStatus();
      });
}

absl::StatusOr<int> CampaignService::AdvanceDue(int limit) {
  const absl::Time now = clock_.Now();
  MKT_ASSIGN_OR_RETURN(std::vector<std::string> due, store_.ListDue(now, limit));
  const Actor system = tenancy::SystemActor("scheduler");
  int changed = 0;
  for (const std::string& id : due) {
    bool did_change = false;
    absl::StatusOr<pb::Campaign> result = store_.UpdateCampaign(
        id, [&](const pb::Campaign& current, CampaignUpdate* update) -> absl::Status {
          // Checked again under the row lock: another replica or an operator may have acted.
          const pb::CampaignConfig& live = current.live();
          const bool ended = live.has_end_time() && TimeOf(live.end_time()) <= now;
          const bool started = live.has_start_time() && TimeOf(live.start_time()) <= now;
          Action action;
          if (ended && (IsPublished(current.state()) || current.state() == pb::APPROVED)) {
            action = Action::kEnd;
          } else if (started && current.state() == pb::SCHEDULED) {
            action = Action::kStart;
          } else {
            update->unchanged = true;
            return absl::OkStatus();
          }
          const LifecycleState before{current.state(), current.change_state()};
          MKT_ASSIGN_OR_RETURN(LifecycleState next, Apply(before, action));
          pb::Campaign& after = update->after;
          if (action == Action::kEnd) {
            if (current.pending_version() > 0) {
              update->decision = CampaignUpdate::Decision{current.pending_version(), "WITHDRAWN",
                                                          system.operator_id, "window ended"};
              after.set_pending_version(0);
              after.clear_submitted_by();
            }
            *after.mutable_draft() = current.live();
          }
          after.set_state(next.state);
          after.set_change_state(next.change);
          update->audit = Audit(system, "campaign." + std::string(ActionName(action)),
                                action == Action::kEnd ? "window ended" : "window started", "");
          update->change.emplace();
          update->change->set_kind(KindOf(action));
          did_change = true;
          return absl::OkStatus();
        });
    if (!result.ok()) return result.status();
    if (did_change) ++changed;
  }
  return changed;
}

// ---- Templates and copies ----------------------------------------------------------------------

absl::StatusOr<pb::Template> CampaignService::LoadVisibleTemplate(const Actor& actor,
                                                                  const std::string& id) {
  absl::StatusOr<pb::Template> tmpl = store_.GetTemplate(id);
  if (tmpl.ok() && !tenancy::Covers(tmpl->org_id(), actor.org_id) &&
      !tenancy::Covers(actor.org_id, tmpl->org_id())) {
    return NotFound("no template \"" + id + "\"");
  }
  return tmpl;
}

absl::StatusOr<pb::Template> CampaignService::SaveAsTemplate(
    const Actor& actor, const pb::SaveAsTemplateRequest& request, const std::string& request_id) {
  MKT_RETURN_IF_ERROR(CheckRole(actor, Action::kEdit));
  MKT_ASSIGN_OR_RETURN(pb::Campaign campaign, LoadVisible(actor, request.campaign_id()));
  FieldErrors errors;
  const int name_length = PrintableUtf8Length(request.name());
  if (name_length <= 0 || name_length > kMaxNameLength) {
    errors.Add("name", "is required: 1..64 printable characters");
  }
  if (request.description().size() > 4 * kMaxDescriptionLength ||
      !IsWellFormedUtf8(request.description())) {
    errors.Add("description", "at most 2000 characters of UTF-8");
  }
  MKT_RETURN_IF_ERROR(errors.ToStatus());
  const std::string org_id = request.org_id().empty() ? campaign.org_id() : request.org_id();
  MKT_RETURN_IF_ERROR(CheckTargetOrg(actor, org_id));

  pb::Template tmpl;
  tmpl.set_id(NewId("tpl_"));
  tmpl.set_org_id(org_id);
  tmpl.set_name(request.name());
  tmpl.set_description(request.description());
  *tmpl.mutable_config() = campaign.live_version() > 0 ? campaign.live() : campaign.draft();
  tmpl.set_type(tmpl.config().type());
  for (const std::string& f : CopyFlaggedFields()) tmpl.add_flagged_fields(f);
  tmpl.set_source_campaign_id(campaign.id());
  tmpl.set_created_by(actor.operator_id);
  const absl::Time now = clock_.Now();
  tmpl.mutable_created_at()->set_seconds(absl::ToUnixSeconds(now));
  MKT_RETURN_IF_ERROR(
      store_.InsertTemplate(tmpl, Audit(actor, "template.create", campaign.id(), request_id)));
  return tmpl;
}

absl::StatusOr<pb::Template> CampaignService::GetTemplate(const Actor& actor,
                                                          const pb::GetTemplateRequest& request) {
  if (request.template_id().empty()) return Required("template_id");
  return LoadVisibleTemplate(actor, request.template_id());
}

absl::StatusOr<pb::ListTemplatesResponse> CampaignService::ListTemplates(
    const Actor& actor, const pb::ListTemplatesRequest& request) {
  std::string type;
  if (request.type() != pb::CAMPAIGN_TYPE_UNSPECIFIED) {
    if (!pb::CampaignType_IsValid(request.type())) return InvalidArgument("type", "unknown type");
    type = pb::CampaignType_Name(request.type());
  }
  const int limit = PageSize(request.page());
  MKT_ASSIGN_OR_RETURN(auto templates,
                       store_.ListTemplates(tenancy::SelfAndAncestors(actor.org_id), actor.org_id,
                                            type, request.page().page_token(), limit));
  pb::ListTemplatesResponse response;
  for (auto& t : templates) *response.add_templates() = std::move(t);
  if (static_cast<int>(templates.size()) == limit) {
    response.mutable_page()->set_next_page_token(templates.back().id());
  }
  return response;
}

absl::StatusOr<pb::Campaign> CampaignService::CreateCopy(
    const Actor& actor, const std::string& org_id, pb::CampaignConfig config,
    const std::string& name, const std::string& template_id, const std::string& campaign_id,
    const std::string& request_id) {
  if (!name.empty()) {
    const int n = PrintableUtf8Length(name);
    if (n <= 0 || n > kMaxNameLength) {
      return InvalidArgument("name", "1..64 printable characters");
    }
    config.set_name(name);
  }
  ClearFlaggedFields(&config);
  ClearRewardUnitCosts(&config);  // priced again when the copy is approved
  pb::Campaign campaign;
  campaign.set_id(NewId("cmp_"));
  campaign.set_org_id(org_id);
  campaign.set_state(pb::DRAFT);
  campaign.set_change_state(pb::NO_CHANGE);
  *campaign.mutable_draft() = std::move(config);
  for (const std::string& f : CopyFlaggedFields()) campaign.add_flagged_fields(f);
  campaign.set_source_template_id(template_id);
  campaign.set_source_campaign_id(campaign_id);
  campaign.set_created_by(actor.operator_id);
  return store_.InsertCampaign(
      std::move(campaign),
      Audit(actor, template_id.empty() ? "campaign.copy" : "campaign.create_from_template",
            template_id.empty() ? campaign_id : template_id, request_id));
}

absl::StatusOr<pb::Campaign> CampaignService::CreateFromTemplate(
    const Actor& actor, const pb::CreateFromTemplateRequest& request,
    const std::string& request_id) {
  MKT_RETURN_IF_ERROR(CheckRole(actor, Action::kEdit));
  if (request.template_id().empty()) return Required("template_id");
  absl::StatusOr<pb::Template> tmpl = LoadVisibleTemplate(actor, request.template_id());
  if (tmpl.status().code() == absl::StatusCode::kNotFound) {
    return InvalidArgument("template_id", "unknown template \"" + request.template_id() + "\"");
  }
  MKT_RETURN_IF_ERROR(tmpl.status());
  const std::string org_id = request.org_id().empty() ? actor.org_id : request.org_id();
  MKT_RETURN_IF_ERROR(CheckTargetOrg(actor, org_id));
  if (!tenancy::Covers(tmpl->org_id(), org_id) && !tenancy::Covers(org_id, tmpl->org_id())) {
    return InvalidArgument("template_id", "unknown template \"" + request.template_id() + "\"");
  }
  return CreateCopy(actor, org_id, tmpl->config(), request.name(), tmpl->id(), "", request_id);
}

absl::StatusOr<pb::Campaign> CampaignService::CopyCampaign(const Actor& actor,
                                                           const pb::CopyCampaignRequest& request,
                                                           const std::string& request_id) {
  MKT_RETURN_IF_ERROR(CheckRole(actor, Action::kEdit));
  if (request.source_campaign_id().empty()) return Required("source_campaign_id");
  MKT_ASSIGN_OR_RETURN(pb::Campaign source, LoadVisible(actor, request.source_campaign_id()));
  const std::string org_id = request.org_id().empty() ? actor.org_id : request.org_id();
  MKT_RETURN_IF_ERROR(CheckTargetOrg(actor, org_id));
  return CreateCopy(actor, org_id, source.live_version() > 0 ? source.live() : source.draft(),
                    request.name(), "", source.id(), request_id);
}

// ---- Audit -------------------------------------------------------------------------------------

absl::StatusOr<pb::ListAuditResponse> CampaignService::ListAudit(
    const Actor& actor, const pb::ListAuditRequest& request) {
  AuditFilter filter;
  filter.subtree_org = actor.org_id;
  if (!request.campaign_id().empty()) {
    MKT_RETURN_IF_ERROR(LoadVisible(actor, request.campaign_id()).status());
    filter.entity_id = request.campaign_id();
  }
  filter.actor_operator = request.actor_operator();
  if (request.has_since()) filter.since = TimeOf(request.since());
  if (request.has_until()) filter.until = TimeOf(request.until());
  if (!request.page().page_token().empty() &&
      !absl::SimpleAtoi(request.page().page_token(), &filter.before_id)) {
    return InvalidArgument("page.page_token", "is not a token this service issued");
  }
  filter.limit = PageSize(request.page());
  MKT_ASSIGN_OR_RETURN(auto entries, store_.ListAudit(filter));
  pb::ListAuditResponse response;
  for (auto& e : entries) *response.add_entries() = std::move(e);
  if (static_cast<int>(entries.size()) == filter.limit) {
    response.mutable_page()->set_next_page_token(std::to_string(entries.back().id()));
  }
  return response;
}

}  // namespace mkt::campaigns
