// The campaigns service's sold-out boards, copied into the gateway (decision 023), so that the
// rush of claims after a coupon campaign sells out is refused here, from memory, without a call.
//
// A copy is fetched (Participations.GetSoldOutBoard) after the campaigns service refuses a claim
// with STOCK_EXHAUSTED, and holds for as long as the service's own mark: whether the campaign is
// sold out, and a Bloom filter of the idempotency keys with a stored participation. A claim whose
// key is not in the filter gets the refusal the service gave (the same status, reason and
// message); a key that may be stored goes to the service, which answers it as stored. The service
// hands a board out only when it refuses every other key from memory itself, so the copy answers
// exactly what the service would.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/core/bloom_filter.h"
#include "marketing/campaigns/v1/participation.pb.h"
#include "services/gateway/api.h"
#include "services/gateway/backend.h"

namespace mkt::gateway {

class SoldOutBoards {
 public:
  // At most `max_campaigns` copies are held; the rest are not copied.
  explicit SoldOutBoards(const Clock& clock, size_t max_campaigns = 10'000);

  // The refusal to answer for a claim, when the campaign's copy stands and the key has no stored
  // participation (counted in mkt_gateway_sold_out_refusals_total).
  // Only for a customer of an org the campaign's org covers: another bank's claim goes to the
  // service, which answers it as an unknown campaign (no sold-out answer tells it exists).
  std::optional<absl::Status> Refusal(const std::string& campaign_id,
                                      const std::string& idempotency_key,
                                      const std::string& customer_org_id);
  // Whether to fetch the campaign's board now, after the service refused a claim with
  // `refusal` (STOCK_EXHAUSTED): no copy stands and no fetch ran in the last `kRefetchAfter`. The
  // caller then fetches and calls Store (or Failed).
  bool ShouldFetch(const std::string& campaign_id, const absl::Status& refusal);
  void Store(const std::string& campaign_id, const ::marketing::campaigns::v1::SoldOutBoard& board);
  void Failed(const std::string& campaign_id);

  // A board the service would not hand out yet (claims still running) is asked for again after
  // this long, on the next refusal.
  static constexpr absl::Duration kRefetchAfter = absl::Milliseconds(200);

 private:
  struct Entry {
    absl::Time until = absl::InfinitePast();
    std::optional<BloomFilter> stored;
    std::string org_id;  // the campaign's (SoldOutBoard.org_id)
    // The service's latest sold-out answer; given to the claims refused here.
    absl::Status refusal;
    bool fetching = false;
    absl::Time fetched = absl::InfinitePast();
  };
  const Clock& clock_;
  const size_t max_campaigns_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

// Fetches a campaign's board as `caller`; `done` runs once, on any thread, and must not block.
using FetchBoard = std::function<void(
    const std::string& campaign_id, const CallerIdentity& caller,
    std::function<void(absl::StatusOr<::marketing::campaigns::v1::SoldOutBoard>)> done)>;
// Participations.GetSoldOutBoard on `campaigns`, without a waiting thread.
FetchBoard FetchBoardFrom(Backend* campaigns);

// Wraps the Participate route's invokers: a claim the board copy refuses is answered without
// calling the service; a STOCK_EXHAUSTED answer from the service fetches the campaign's board.
void GuardWithSoldOutBoards(ApiRoute& route, FetchBoard fetch, SoldOutBoards& boards);

}  // namespace mkt::gateway
