// The asset-growth tables of the campaigns database (decision 014): customers' end-of-day
// balances as reported by asset_balance events, the enrolments (written when an ASSET_GROWTH_TASK
// participation is recorded ENROLLED), and the tiers reached — each marked once and granted under
// its derived request id, PENDING until the rewards service answered, so a crash between the mark
// and the grant is retried with the same id and never loses or doubles a tier.
//
// A customer is (member bank, customer id): customer ids are a member bank's core-system ids, so
// two banks of the federation may both have a "c1". Balances and enrolments are keyed by the
// member bank of the customer's org (CustomerBank), so a report sent for "bank-a" and an
// enrolment made at "bank-a.branch-01" meet, while bank-b's "c1" never touches bank-a's.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "libs/pg/pool.h"
#include "marketing/campaigns/v1/participation.pb.h"
#include "services/campaigns/asset_growth.h"

namespace mkt::campaigns {

// The member bank whose customer ids a customer of `customer_org_id` has ("bank-a.branch-01" →
// "bank-a"; "fed" for the federation): the org half of a customer's identity here.
std::string CustomerBank(std::string_view customer_org_id);

// One end-of-day balance report; a later report of the same day (by as_of, then event_key)
// replaces an earlier one.
struct BalanceReport {
  // The org the event names (member bank or branch); a valid org id.
  std::string customer_org_id;
  std::string customer_id;
  absl::CivilDay day;
  int64_t balance_fen = 0;
  absl::Time as_of;
  std::string event_key;
};

struct Enrolment {
  std::string participation_id;
  std::string campaign_id;
  std::string org_id;  // the campaign's
  // The customer's org as enrolled (member bank or branch): with customer_id, who enrolled.
  std::string customer_org_id;
  std::string customer_id;
  absl::CivilDay enrolled_on;
  int64_t baseline_fen = 0;
  int baseline_days = 0;
  absl::Time window_end;
  int64_t average_fen = 0;
  int64_t growth_fen = 0;
  std::string evaluated_through;
  // Tiers marked (granted, being granted, or refused by the rewards service).
  std::set<int> tiers_marked;
};

// A tier reached, to be granted (or granted again after a crash) under request_id.
struct TierGrant {
  std::string participation_id;
  int tier = 0;
  std::string campaign_id;
  std::string customer_id;
  std::string org_id;
  std::string request_id;
  pb::GrowthTier config;
};

// Writes the enrolment row of an ENROLLED participation inside the caller's transaction (the one
// recording the participation). Idempotent.
void InsertEnrolment(pqxx::work& tx, const pb::Participation& enrolled, absl::Time window_end);

class PgAssetGrowthStore {
 public:
  explicit PgAssetGrowthStore(pg::Pool& pool) : pool_(pool) {}

  // Keeps the report if it is the latest of its day for the customer (of the report's member
  // bank); true when it changed the stored balance. INVALID_ARGUMENT for an invalid org id.
  absl::StatusOr<bool> RecordBalance(const BalanceReport& report);

  // The balances of a customer (of the member bank of `customer_org_id`) on days [from, to] and
  // the last one before `from`, sorted by day.
  absl::StatusOr<std::vector<DayBalance>> DailyBalances(const std::string& customer_org_id,
                                                        const std::string& customer_id,
                                                        absl::CivilDay from, absl::CivilDay to);

  // Enrolments of a customer (of the member bank of `customer_org_id`, whichever of its orgs they
  // enrolled at) whose window ended after `ended_after`.
  absl::StatusOr<std::vector<Enrolment>> EnrolmentsOf(const std::string& customer_org_id,
                                                      const std::string& customer_id,
                                                      absl::Time ended_after);
  // Enrolments of some campaigns of a customer (any window), for the eligibility list.
  absl::StatusOr<std::vector<Enrolment>> EnrolmentsIn(const std::string& customer_org_id,
                                                      const std::string& customer_id,
                                                      const std::vector<std::string>& campaigns);
  // A page of enrolments whose window ended after `ended_after`, by participation id.
  absl::StatusOr<std::vector<Enrolment>> ActiveEnrolments(absl::Time ended_after,
                                                          const std::string& after_id, int limit);

  // Records an evaluation: the progress of the enrolment (also in the participation's body) and
  // a PENDING grant per tier in `reached` that was not marked before. Returns the grants this
  // call marked (a concurrent evaluation marks each tier only once).
  absl::StatusOr<std::vector<TierGrant>> RecordEvaluation(const Enrolment& enrolment,
                                                          int64_t average_fen, int64_t growth_fen,
                                                          const std::string& evaluated_through,
                                                          const std::vector<TierGrant>& reached);

  // PENDING grants last touched before `older_than` (all of one enrolment when given).
  absl::StatusOr<std::vector<TierGrant>> PendingGrants(absl::Time older_than, int limit,
                                                       const std::string& participation_id = "");

  // Settles a PENDING grant as GRANTED or REJECTED (with the rewards service's reason); a GRANTED
  // tier is added to the participation's rewards and published on mkt.participations.v1 (event id
  // "participation:<id>:tier-<n>") in the same transaction. A grant already settled is left alone.
  absl::Status SettleGrant(const TierGrant& grant, bool granted, const std::string& reason);

  // The state of one grant ("" when it does not exist), for tests and operators.
  absl::StatusOr<std::string> GrantState(const std::string& participation_id, int tier);

 private:
  pg::Pool& pool_;
};

}  // namespace mkt::campaigns
