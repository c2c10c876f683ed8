#include "services/gateway/wallet_reads.h"

#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "libs/core/status.h"
#include "libs/metrics/metrics.h"
#include "prometheus/counter.h"

namespace mkt::gateway {
namespace {

namespace gpb = ::google::protobuf;
namespace rpb = ::marketing::rewards::v1;

// Reads share a call when they would send the same org and roles: all the rewards service checks
// a wallet read against. The channels of one bank share calls that way.
std::string ActorKey(const std::optional<tenancy::Actor>& actor) {
  if (!actor) return "";
  std::string key = absl::StrCat(actor->org_id.size(), ":", actor->org_id);
  for (tenancy::Role role : actor->roles) absl::StrAppend(&key, ",", static_cast<int>(role));
  return key;
}

// The operator a call names for its reads: theirs when they share one (a channel's), otherwise
// the gateway's own.
constexpr char kSharedOperator[] = "gateway:wallet-reads";

prometheus::Family<prometheus::Counter>& WalletReadCounters() {
  static auto& family =
      prometheus::BuildCounter()
          .Name("mkt_gateway_wallet_reads_total")
          .Help(
              "wallet reads of the channel API (what=\"reads\") and the Benefits.GetWallets calls "
              "that carried them (what=\"calls\"); reads / calls is the mean batch")
          .Register(metrics::Registry());
  return family;
}

// How long reads go one by one after rewards answered GetWallets UNIMPLEMENTED.
constexpr absl::Duration kUnbatchedFor = absl::Seconds(60);

// Whether at least half the reads of an answer failed as the backend being unwell (its database
// down, say): the call then counts against the breaker as a failed one, as those reads would have
// one by one.
bool MostReadsFailed(const rpb::GetWalletsResponse& answer) {
  int failed = 0;
  for (const rpb::WalletRead& read : answer.reads()) {
    if (IsBackendFailure(ItemStatus(read))) ++failed;
  }
  return answer.reads_size() > 0 && 2 * failed >= answer.reads_size();
}

const gpb::MethodDescriptor* Method(const char* name) {
  const gpb::MethodDescriptor* method =
      gpb::DescriptorPool::generated_pool()->FindMethodByName(name);
  if (method == nullptr) std::abort();  // linked in with benefits.pb.h: cannot happen
  return method;
}

}  // namespace

struct WalletReads::Batch {
  std::string key;
  std::optional<tenancy::Actor> actor;
  std::vector<Waiting> reads;
  rpb::GetWalletsRequest request;
  rpb::GetWalletsResponse response;
};

WalletReads::WalletReads(Backend& rewards, WalletReadsOptions options)
    : rewards_(rewards),
      options_{.max_batch = std::clamp(options.max_batch, 1, 256),
               .max_in_flight = std::max(1, options.max_in_flight)},
      get_wallets_(Method("marketing.rewards.v1.Benefits.GetWallets")),
      get_wallet_(Method("marketing.rewards.v1.Benefits.GetWallet")),
      reads_(&WalletReadCounters().Add({{"what", "reads"}})),
      calls_(&WalletReadCounters().Add({{"what", "calls"}})) {}

WalletReads::~WalletReads() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* in_flight) { return *in_flight == 0; }, &in_flight_));
}

void WalletReads::Read(const rpb::GetWalletRequest& request, rpb::Wallet* wallet,
                       const CallerIdentity& caller, Backend::Done done) {
  reads_->Increment();
  if (absl::Now() < absl::FromUnixNanos(unbatched_until_.load(std::memory_order_relaxed))) {
    calls_->Increment();
    return rewards_.CallAsync(*get_wallet_, request, wallet, caller, std::move(done));
  }
  std::unique_ptr<Batch> batch;
  {
    absl::MutexLock lock(&mu_);
    std::string key = ActorKey(caller.actor);
    Group& group = groups_[key];
    if (group.waiting.empty() && group.in_flight == 0) group.actor = caller.actor;  // a new one
    group.waiting.push_back({request, wallet, caller.request_id,
                             caller.actor ? caller.actor->operator_id : std::string(),
                             std::move(done)});
    if (group.in_flight < options_.max_in_flight) {
      batch = TakeBatch(group);
      batch->key = std::move(key);
    }
  }
  if (batch != nullptr) Send(std::move(batch));
}

std::unique_ptr<WalletReads::Batch> WalletReads::TakeBatch(Group& group) {
  if (group.waiting.empty()) return nullptr;
  auto batch = std::make_unique<Batch>();
  batch->actor = group.actor;
  if (batch->actor) batch->actor->operator_id = group.waiting.front().operator_id;
  const size_t n = std::min(group.waiting.size(), static_cast<size_t>(options_.max_batch));
  batch->reads.reserve(n);
  batch->request.mutable_reads()->Reserve(static_cast<int>(n));
  for (size_t i = 0; i < n; ++i) {
    *batch->request.add_reads() = std::move(group.waiting[i].request);
    if (batch->actor && group.waiting[i].operator_id != batch->actor->operator_id) {
      batch->actor->operator_id = kSharedOperator;
    }
    batch->reads.push_back(std::move(group.waiting[i]));
  }
  group.waiting.erase(group.waiting.begin(), group.waiting.begin() + static_cast<ptrdiff_t>(n));
  ++group.in_flight;
  ++in_flight_;
  return batch;
}

void WalletReads::Send(std::unique_ptr<Batch> batch) {
  calls_->Increment();
  // The call carries the first read's request id; each read keeps its own in the gateway's log.
  const CallerIdentity caller{.request_id = batch->reads.front().request_id, .actor = batch->actor};
  Batch* raw = batch.release();
  rewards_.CallAsync(
      *get_wallets_, raw->request, &raw->response, caller,
      [this, raw](absl::Status status) {
        std::unique_ptr<Batch> owned(raw);
        // Counted off last, even if a read's `done` throws (gRPC swallows it): the destructor
        // waits for this count.
        absl::Cleanup counted = [this] {
          absl::MutexLock lock(&mu_);
          --in_flight_;
        };
        const bool unimplemented = status.code() == absl::StatusCode::kUnimplemented;
        if (unimplemented) {
          // A rewards service without GetWallets (a rolling upgrade): read one by one for a
          // while, then try again.
          unbatched_until_.store(absl::ToUnixNanos(absl::Now() + kUnbatchedFor),
                                 std::memory_order_relaxed);
        }
        // The next call of this org leaves before these reads are answered; without GetWallets,
        // every read waiting goes alone instead.
        std::unique_ptr<Batch> next;
        std::vector<Waiting> alone;
        {
          absl::MutexLock lock(&mu_);
          auto it = groups_.find(owned->key);
          Group& group = it->second;
          --group.in_flight;
          if (unimplemented) {
            alone.swap(group.waiting);
          } else {
            next = TakeBatch(group);
          }
          if (next != nullptr) {
            next->key = owned->key;
          } else if (group.in_flight == 0) {
            groups_.erase(it);
          }
        }
        if (next != nullptr) Send(std::move(next));
        for (Waiting& read : alone) ReadAlone(std::move(read), owned->actor);
        Answer(*owned, status);
      },
      [](const google::protobuf::Message& answer) {
        return MostReadsFailed(static_cast<const rpb::GetWalletsResponse&>(answer));
      });
}

void WalletReads::Answer(Batch& batch, const absl::Status& status) {
  if (status.code() == absl::StatusCode::kUnimplemented) {
    for (size_t i = 0; i < batch.reads.size(); ++i) {
      batch.reads[i].request.Swap(batch.request.mutable_reads(static_cast<int>(i)));
      ReadAlone(std::move(batch.reads[i]), batch.actor);
    }
    return;
  }
  if (status.ok() && batch.response.reads_size() != static_cast<int>(batch.reads.size())) {
    const absl::Status mismatch =
        Internal(absl::StrCat("rewards answered ", batch.response.reads_size(),
                              " wallet reads for ", batch.reads.size()));
    for (Waiting& read : batch.reads) read.done(mismatch);
    return;
  }
  for (size_t i = 0; i < batch.reads.size(); ++i) {
    Waiting& read = batch.reads[i];
    if (!status.ok()) {
      read.done(status);
      continue;
    }
    rpb::WalletRead& answer = *batch.response.mutable_reads(static_cast<int>(i));
    if (answer.code() == 0) read.wallet->Swap(answer.mutable_wallet());
    read.done(ItemStatus(answer));
  }
}

void WalletReads::ReadAlone(Waiting read, std::optional<tenancy::Actor> actor) {
  calls_->Increment();
  if (actor) actor->operator_id = read.operator_id;
  rewards_.CallAsync(*get_wallet_, read.request, read.wallet,
                     CallerIdentity{.request_id = read.request_id, .actor = std::move(actor)},
                     std::move(read.done));
}

}  // namespace mkt::gateway
