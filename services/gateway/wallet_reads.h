// The channel API's wallet reads, gathered into Benefits.GetWallets calls (docs/decisions/029).
//
// A read goes out at once while fewer than `max_in_flight` calls of its org are running; the
// reads that arrive meanwhile wait, without a thread, and leave together in one call as soon as
// one of those ends. An idle gateway therefore sends each read alone, as soon as it comes, and a
// busy one sends them in batches as large as the load makes them (up to `max_batch`), each read
// waiting at most one call's round trip. Every call goes through the rewards Backend (deadline,
// circuit breaker, slots, metrics), and each read gets the answer GetWallet would have given it.
//
// A rewards service without GetWallets (an older version during a rolling upgrade) answers
// UNIMPLEMENTED; the reads of that call, those waiting, and every read of the next minute then go
// out one by one as GetWallet, and GetWallets is tried again after that.
//
// A read waits for at most one running call, which ends by the backend's deadline; the reads
// waiting are bounded by the HTTP server's own bound on requests in progress.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "marketing/rewards/v1/benefits.pb.h"
#include "services/gateway/backend.h"

namespace prometheus {
class Counter;
}  // namespace prometheus

namespace mkt::gateway {

struct WalletReadsOptions {
  // The most reads in one GetWallets call (the service takes up to 256).
  int max_batch = 64;
  // GetWallets calls of one org running at once; reads beyond them wait for one to end.
  int max_in_flight = 4;
};

class WalletReads {
 public:
  WalletReads(Backend& rewards, WalletReadsOptions options);
  // Waits for the calls still running (each ends by its deadline at the latest).
  ~WalletReads();
  WalletReads(const WalletReads&) = delete;
  WalletReads& operator=(const WalletReads&) = delete;

  // Reads one wallet, like Backend::CallAsync with Benefits.GetWallet: `done` runs once with the
  // outcome, after *wallet is filled, on one of gRPC's callback threads (or on this thread when
  // the breaker refuses); `wallet` must stay alive until then, `request` and `caller` only for
  // this call. `done` must not block.
  void Read(const ::marketing::rewards::v1::GetWalletRequest& request,
            ::marketing::rewards::v1::Wallet* wallet, const CallerIdentity& caller,
            Backend::Done done);

 private:
  struct Waiting {
    ::marketing::rewards::v1::GetWalletRequest request;
    ::marketing::rewards::v1::Wallet* wallet;
    std::string request_id;
    std::string operator_id;
    Backend::Done done;
  };
  // The reads of one org with the same roles (the channels of a bank): they can share a call.
  struct Group {
    std::optional<tenancy::Actor> actor;
    std::vector<Waiting> waiting;
    int in_flight = 0;
  };
  struct Batch;

  // Takes up to max_batch waiting reads of `group` into a new call (counted in flight); null when
  // none wait.
  std::unique_ptr<Batch> TakeBatch(Group& group) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Send(std::unique_ptr<Batch> batch);
  // Answers the reads of a finished call.
  void Answer(Batch& batch, const absl::Status& status);
  // One read as GetWallet, for a rewards service without GetWallets.
  void ReadAlone(Waiting read, std::optional<tenancy::Actor> actor);

  Backend& rewards_;
  const WalletReadsOptions options_;
  const google::protobuf::MethodDescriptor* get_wallets_;
  const google::protobuf::MethodDescriptor* get_wallet_;
  // Until when (Unix ns) reads go one by one as GetWallet: set for a while when rewards answers
  // GetWallets UNIMPLEMENTED.
  std::atomic<int64_t> unbatched_until_{0};
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Group> groups_ ABSL_GUARDED_BY(mu_);
  // Calls running, of every group; the destructor waits for 0.
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // mkt_gateway_wallet_reads_total and mkt_gateway_wallet_read_calls_total: their quotient is
  // the mean batch.
  prometheus::Counter* reads_;
  prometheus::Counter* calls_;
};

}  // namespace mkt::gateway
