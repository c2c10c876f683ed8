// The background runner of batch grants (issue 8 item 7). One thread per campaigns process looks
// for ONLINE BATCH_GRANT campaigns whose run is not finished, takes a run's lease (two replicas
// never run one batch at once) and works it:
//  1. Materialise: one segments snapshot per audience segment (excluded segments first), read
//     page by page into batch_grant_items; the cursor moves with each page, inserts ignore
//     customers already in, so a crash resumes where it stopped. The run becomes RUNNING only
//     once every page is in.
//  2. Grant: PENDING items are read 1,000 at a time and sent with many calls in flight, under the
//     ledger request id "batch:<campaign>:<customer>" (a digest when longer than 64 characters),
//     so a resend after a crash is answered idempotently by the ledger and nobody is granted
//     twice. A single points, cash or chance reward goes through the async Ledger.Grant (the
//     ledger group-commits them); anything else (coupons, several rewards) through the
//     RewardIssuer on a bounded pool of threads. Business refusals are recorded as FAILED with the
//     rewards service's reason; transport failures are retried with backoff. Outcomes are written
//     a chunk per statement.
//     Any other failure (INTERNAL, UNKNOWN...: the grant may or may not have happened) puts the
//     item off with a growing backoff, remembered by the runner per item; the batch goes on with
//     its other items, and once only such items are left the runner moves on to other batches
//     and comes back when they are due. After `unconfirmed_attempts` the item is recorded FAILED
//     only when the answer proves nothing was granted (UNIMPLEMENTED); otherwise it stays
//     PENDING ("stuck": logged as an error, its reason STUCK and the last answer on the item, the
//     run's last_error says how many), retried at the longest backoff until an operator settles
//     it. IDEMPOTENCY_KEY_REUSED (the rewards were edited while the batch ran: an earlier attempt
//     may have granted) is stuck at once, never FAILED. The items stay PENDING in the database
//     throughout, so a restart loses no grant (it only forgets the backoff).
// The campaign is re-read every second: paused stops sending until it is online again, ended or
// archived cancels what is left.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "services/campaigns/batch_grant_store.h"
#include "services/campaigns/pg_campaign_store.h"
#include "services/campaigns/reference_data.h"
#include "services/campaigns/reward_issuer.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace mkt::campaigns {

// One page of a segments snapshot.
struct SnapshotPage {
  std::vector<std::string> customer_ids;
  // Empty on the last page.
  std::string next_token;
};

// The recipients of a batch: the segments service's Materialize and ReadSnapshot.
class AudienceSnapshots {
 public:
  virtual ~AudienceSnapshots() = default;
  // Freezes the members of `segment` (at its pinned version) for `org_id`; returns the snapshot
  // id. UNAVAILABLE when segments cannot answer now.
  virtual absl::StatusOr<std::string> Materialize(const std::string& org_id,
                                                  const ::marketing::campaigns::v1::SegmentRef& seg,
                                                  const std::string& purpose) = 0;
  virtual absl::StatusOr<SnapshotPage> Read(const std::string& org_id,
                                            const std::string& snapshot_id,
                                            const std::string& page_token, int page_size) = 0;
};

// marketing.segments.v1.Segments/Materialize and ReadSnapshot over gRPC.
std::unique_ptr<AudienceSnapshots> NewSegmentsSnapshots(std::shared_ptr<grpc::Channel> channel,
                                                        absl::Duration timeout);

// Members per segment in memory (tests, and a stack without the segments service).
class InMemorySnapshots final : public AudienceSnapshots {
 public:
  void Set(const std::string& segment_id, std::vector<std::string> customers);
  // Materialize and Read fail with UNAVAILABLE (a segments outage): `down`, or after
  // `reads_left` more successful reads (negative: never).
  void SetDown(bool down, int reads_left = -1) {
    down_ = down;
    reads_left_ = reads_left;
  }
  absl::StatusOr<std::string> Materialize(const std::string& org_id,
                                          const ::marketing::campaigns::v1::SegmentRef& seg,
                                          const std::string& purpose) override;
  absl::StatusOr<SnapshotPage> Read(const std::string& org_id, const std::string& snapshot_id,
                                    const std::string& page_token, int page_size) override;

 private:
  absl::Mutex mu_;
  std::map<std::string, std::vector<std::string>> segments_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<std::string>> snapshots_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> down_{false};
  std::atomic<int> reads_left_{-1};
};

struct BatchGrantRunnerOptions {
  // Identifies this runner in the leases; stable across restarts of one instance (host and
  // address), so a restarted process takes its own batches back at once.
  std::string owner;
  absl::Duration lease = absl::Seconds(30);
  // How often ONLINE BATCH_GRANT campaigns are looked for.
  absl::Duration poll = absl::Seconds(1);
  // The async Ledger.Grant calls kept in flight; the RewardIssuer path uses issuer_threads.
  int max_in_flight = 256;
  int issuer_threads = 32;
  // PENDING items read per query, outcomes written per statement.
  int chunk = 1000;
  int snapshot_page = 5000;
  absl::Duration rpc_timeout = absl::Seconds(10);
  // Take each reward's cost from the campaign's budget (as participation does).
  bool charge_budget = true;
  absl::Duration progress_log_every = absl::Seconds(10);
  // Unconfirmed answers (not a refusal, not a transport failure) of one item: the first backoff,
  // doubled per attempt up to the longest; after `unconfirmed_attempts` the item is stuck.
  absl::Duration unconfirmed_backoff = absl::Seconds(1);
  absl::Duration unconfirmed_max_backoff = absl::Minutes(10);
  int unconfirmed_attempts = 10;
};

class BatchGrantRunner {
 public:
  // `ledger_channel` reaches marketing.rewards.v1.Ledger; `issuer` grants what Ledger.Grant
  // cannot (coupons, several rewards). All must outlive the runner.
  BatchGrantRunner(PgCampaignStore& campaigns, PgBatchGrantStore& store,
                   AudienceSnapshots& snapshots, const BenefitCatalog& benefits,
                   RewardIssuer& issuer, std::shared_ptr<grpc::Channel> ledger_channel,
                   BatchGrantRunnerOptions options);
  ~BatchGrantRunner();
  BatchGrantRunner(const BatchGrantRunner&) = delete;
  BatchGrantRunner& operator=(const BatchGrantRunner&) = delete;

  // Starts the runner thread; Stop() lets the calls in flight finish, records their outcomes,
  // gives the lease back and joins.
  void Start();
  void Stop();

  // One pass (tests): cancels runs of ended campaigns, then works every runnable batch until it
  // is finished, paused, the runner is stopped, or only items put off for later are left.
  absl::Status RunOnce();

  // The ledger request id of a recipient: "batch:<campaign>:<customer>", or "batch:" + 40 hex of
  // its SHA-256 when that is longer than 64 characters.
  static std::string RequestId(const std::string& campaign_id, const std::string& customer_id);

  struct Impl;

 private:
  absl::Status Work(const RunnableBatch& batch);
  // Sets the run's last_error to the count of its stuck items (none: nothing).
  void ReportStuck(const std::string& campaign_id);

  PgCampaignStore& campaigns_;
  PgBatchGrantStore& store_;
  AudienceSnapshots& snapshots_;
  const BenefitCatalog& benefits_;
  RewardIssuer& issuer_;
  const BatchGrantRunnerOptions options_;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace mkt::campaigns
