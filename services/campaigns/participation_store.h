// The participation records in the campaigns database (decision 013), written by group commit:
// the requests of a few hundred microseconds share one transaction, so a campaign launch is not
// limited to one commit per claim. A reservation with counters only (a coupon claim, a points
// exchange) is one prepared statement and undoes itself on a refusal; one with an exclusion group
// or a lottery draw runs in its own savepoint (decision 017). A reservation takes
// the limit counters (one conditional upsert each; the row lock makes "limit 1 per customer" hold
// across replicas), the exclusion-group claim, the lottery prize's stock and daily cap, and
// inserts the PENDING participation; finishing records the outcome, gives the counters back on a
// rejection, and appends the mkt.participations.v1 fact to the outbox in the same transaction.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/pool.h"
#include "marketing/campaigns/v1/participation.pb.h"

namespace mkt::campaigns {

namespace pb = ::marketing::campaigns::v1;

inline constexpr char kParticipationsTopic[] = "mkt.participations.v1";
inline constexpr char kParticipationRecordedType[] = "campaigns.ParticipationRecorded";

// Runs bodies in shared transactions: up to `max_items` queued bodies per transaction, each lane
// one writer thread and one connection. Bodies submitted with the same lane key run in order on
// one writer, so writers never wait for each other's row locks on one campaign's counters.
class GroupCommitter {
 public:
  struct Options {
    int lanes = 2;
    int max_items = 128;
    // How long a writer waits for company after the first body arrived.
    absl::Duration linger = absl::Microseconds(300);
    size_t max_queued = 50000;
  };
  // A body writes in `tx` and may append facts to `outbox`; its status is its caller's answer.
  // A body that throws a libpqxx exception fails its whole transaction (all its bodies), so
  // bodies that may fail alone use a pqxx::subtransaction.
  using Body = std::function<absl::Status(pqxx::work& tx, std::vector<kafka::OutboxMessage>&)>;

  GroupCommitter(pg::Pool& pool, Options options);
  ~GroupCommitter();

  // Runs `body` in the next transaction of lane hash(lane_key) and returns its status once the
  // transaction committed (or the transaction's error). RESOURCE_EXHAUSTED when the queue is full.
  absl::Status Run(const std::string& lane_key, Body body);

 private:
  struct Item {
    Body body;
    // Set once the item's transaction committed or failed. Only its own caller waits on `done_cv`
    // (one condition variable for all callers woke every one of them at every commit).
    std::mutex done_mu;
    std::condition_variable done_cv;
    bool done = false;
    absl::Status result;
  };
  struct Lane {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Item*> queue;
    std::thread writer;
  };
  void RunLane(Lane& lane);

  pg::Pool& pool_;
  const Options options_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  bool stopping_ = false;
};

// A limit counter to take: its key and the cap it may not exceed.
struct CounterTake {
  std::string counter;
  int64_t cap = 0;
};

// What a new participation reserves.
struct Reservation {
  // Status PENDING, with the planned rewards (and, for a lottery, the draw as drawn).
  pb::Participation participation;
  std::string request_hash;
  std::vector<CounterTake> counters;
  // Exclusion group of the campaign's owner org; empty: none.
  std::string exclusion_org;
  std::string exclusion_group;
  // LOTTERY: true; the draw in `participation` is completed with what was awarded.
  bool lottery = false;
  // LOTTERY: the customer's free draws of the day; taken when there is one left (the draw is
  // then free), else the draw is paid with `chances_per_draw` chances.
  std::optional<CounterTake> free_draw;
  int64_t chances_per_draw = 1;
  // LOTTERY: the counters of each candidate prize, tried in order (the drawn prize, then the
  // fallback); the first whose counters all fit is awarded. `prize_rewards[i]` are the rewards
  // of candidate i. No candidates: the draw selected no prize.
  std::vector<int> prize_candidates;
  std::vector<std::vector<CounterTake>> prize_counters;
  std::vector<std::vector<pb::GrantedReward>> prize_rewards;
};

struct ReserveResult {
  pb::Participation participation;
  // True when a participation with this key existed already (it is returned as stored).
  bool replay = false;
  std::string stored_request_hash;
};

// Limit counters of one customer in one campaign, for the eligibility list.
struct CounterValue {
  std::string campaign_id;
  std::string counter;
  int64_t n = 0;
};

class PgParticipationStore {
 public:
  PgParticipationStore(pg::Pool& pool, GroupCommitter& reserve, GroupCommitter& finish)
      : pool_(pool), reserve_(reserve), finish_(finish) {}

  // Reserves (see the header comment) or returns the stored participation of the same key.
  // LIMIT_REACHED naming the counter that is full; NOT_ELIGIBLE for another campaign of the
  // exclusion group.
  absl::StatusOr<ReserveResult> Reserve(const Reservation& reservation);

  // Records the outcome of a PENDING participation (GRANTED, NO_PRIZE or REJECTED with a reason)
  // and publishes it; gives the counters and the exclusion claim back on REJECTED. A
  // participation that is no longer PENDING (a concurrent replay finished it) is left as it is
  // and returned as stored.
  // An ENROLLED outcome (asset-growth task) also writes its enrolment row, with `window_end`
  // (the campaign's end_time), in the same transaction.
  absl::StatusOr<pb::Participation> Finish(const pb::Participation& outcome,
                                           absl::Time window_end = absl::InfiniteFuture());

  // The stored participation of a key and the hash of the request that created it.
  struct Stored {
    pb::Participation participation;
    std::string request_hash;
  };
  absl::StatusOr<std::optional<Stored>> Get(const std::string& campaign_id,
                                            const std::string& idempotency_key);
  // The idempotency keys of a campaign's participations (any status), at most `limit`.
  absl::StatusOr<std::vector<std::string>> StoredKeys(const std::string& campaign_id,
                                                      int64_t limit);
  // PENDING participations created before `older_than` whose next recovery attempt is due at
  // `now`, the longest due first, for the recovery sweep; with the attempts each already had.
  struct StalePending {
    pb::Participation participation;
    int attempts = 0;
  };
  absl::StatusOr<std::vector<StalePending>> ListStalePending(absl::Time older_than, absl::Time now,
                                                             int limit);
  // Records a recovery attempt that left the participation PENDING and when the next one is due,
  // so the sweep moves on to others meanwhile. Returns the attempts so far (0 when the
  // participation is no longer PENDING).
  absl::StatusOr<int> DeferRecovery(const std::string& participation_id, absl::Time next_attempt);
  // The configuration of one of a campaign's versions (immutable, decision 009): what a
  // participation made under it is granted by, whatever the live version is now. NOT_FOUND when
  // the campaign has no such version.
  absl::StatusOr<pb::CampaignConfig> VersionConfig(const std::string& campaign_id, int64_t version);

  absl::StatusOr<std::vector<CounterValue>> ReadCounters(
      const std::vector<std::string>& campaign_ids, const std::vector<std::string>& counters);
  // Exclusion claims of a customer: (org, group) → campaign id.
  absl::StatusOr<std::vector<std::vector<std::string>>> ReadExclusionClaims(
      const std::string& customer_id);

  absl::StatusOr<pb::DrawStats> DrawStats(const std::string& campaign_id, int prize_count);

  // The database the records live in (the asset-growth tables share it).
  pg::Pool& pool() { return pool_; }

 private:
  pg::Pool& pool_;
  GroupCommitter& reserve_;
  GroupCommitter& finish_;
};

}  // namespace mkt::campaigns
