#include "services/campaigns/batch_grant_runner.h"

#include <grpc/support/time.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "libs/auth/crypto.h"
#include "libs/core/status.h"
#include "libs/log/log.h"
#include "libs/metrics/metrics.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/tenancy/tenancy.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"
#include "marketing/segments/v1/segments.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace mkt::campaigns {
namespace {

namespace rpb = ::marketing::rewards::v1;
namespace spb = ::marketing::segments::v1;
namespace common = ::marketing::common::v1;

constexpr char kExcludePrefix[] = "exclude:";
constexpr char kIncludePrefix[] = "include:";

metrics::OperationMetrics& CallMetrics() {
  static auto* m = new metrics::OperationMetrics("mkt_campaigns_batch_grant_call",
                                                 "grants sent by the batch-grant runner, by path");
  return *m;
}

prometheus::Family<prometheus::Counter>& ItemCounters() {
  static auto& family = prometheus::BuildCounter()
                            .Name("mkt_campaigns_batch_grant_items_total")
                            .Help("batch-grant recipients by outcome (granted, failed, retried)")
                            .Register(metrics::Registry());
  return family;
}

void CountItems(const char* outcome, double n) {
  if (n > 0) ItemCounters().Add({{"outcome", outcome}}).Increment(n);
}

gpr_timespec DeadlineIn(absl::Duration d) {
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_micros(absl::ToInt64Microseconds(d), GPR_TIMESPAN));
}

// What the rewards service answered, as the batch records it.
// - kRetry: a transport failure (the call may not have arrived): sent again after a short
//   backoff, as long as it takes.
// - kUnconfirmed: any other failure (INTERNAL, UNKNOWN...): whether it granted is not known; put
//   off with a growing backoff, stuck after a number of attempts.
// - kHold: IDEMPOTENCY_KEY_REUSED: an earlier attempt sent other content under this id (the
//   rewards were edited while the batch ran) and may have granted: left for an operator.
enum class Verdict { kGranted, kFailed, kRetry, kUnconfirmed, kHold };

// ACCOUNT_NOT_FOUND: the ledger refused the whole grant (nothing granted) because an account of
// the campaign does not exist yet. The rewards service creates the budget account when its own
// consumer of mkt.campaign-changes.v1 funds it, which may lag the campaign going ONLINE by
// seconds (a restart, a rebalance) or minutes; a batch starting in that window must not fail its
// recipients for good. Put off like an unconfirmed answer, and FAILED only after the attempts
// (about 17 minutes with the default backoff), when it is a real data problem.
bool NotFundedYet(const absl::Status& status) {
  return ReasonOf(status) == common::ACCOUNT_NOT_FOUND;
}

Verdict VerdictOf(const absl::Status& status) {
  if (status.ok()) return Verdict::kGranted;
  if (ReasonOf(status) == common::IDEMPOTENCY_KEY_REUSED) return Verdict::kHold;
  if (NotFundedYet(status)) return Verdict::kUnconfirmed;
  if (IsBusinessRefusal(ReasonOf(status))) return Verdict::kFailed;
  switch (status.code()) {
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kPermissionDenied:
      return Verdict::kFailed;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled:
      return Verdict::kRetry;
    default:
      return Verdict::kUnconfirmed;
  }
}

// Whether an unconfirmed answer proves nothing was granted: the rewards service does not have
// the method at all, or refused the grant whole for a missing account. Every other one (an
// INTERNAL after a hold was voided, after a coupon was issued...) may follow a partial or complete
// grant.
bool GrantedNothing(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnimplemented || NotFundedYet(status);
}

std::string ReasonText(const absl::Status& status) {
  const common::ErrorReason reason = ReasonOf(status);
  if (reason != common::ERROR_REASON_UNSPECIFIED) return ReasonName(reason);
  return std::string(absl::StatusCodeToString(status.code()));
}

struct SendResult {
  std::string customer_id;
  absl::Status status;
};

// Sends grants and hands their answers back; at most capacity() in flight.
class Sender {
 public:
  virtual ~Sender() = default;
  virtual void Start(const std::string& customer_id) = 0;
  // Waits up to `wait` for at least one answer; returns every answer that arrived.
  virtual std::vector<SendResult> Poll(absl::Duration wait) = 0;
  virtual int in_flight() const = 0;
  virtual int capacity() const = 0;
};

// One points, cash or chance reward: the async Ledger.Grant, many calls in flight.
class LedgerSender final : public Sender {
 public:
  LedgerSender(rpb::Ledger::Stub& stub, rpb::GrantRequest prototype, int capacity,
               absl::Duration timeout)
      : stub_(stub), prototype_(std::move(prototype)), capacity_(capacity), timeout_(timeout) {}

  ~LedgerSender() override {
    cq_.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) delete static_cast<Call*>(tag);
  }

  void Start(const std::string& customer_id) override {
    auto* call = new Call;
    call->customer_id = customer_id;
    call->started = absl::Now();
    rpb::GrantRequest request = prototype_;
    request.set_request_id(BatchGrantRunner::RequestId(prototype_.campaign_id(), customer_id));
    request.set_customer_id(customer_id);
    rpc::PrepareClientContext(call->context, timeout_, request.request_id());
    call->reader = stub_.AsyncGrant(&call->context, request, &cq_);
    call->reader->Finish(&call->response, &call->status, call);
    ++in_flight_;
  }

  std::vector<SendResult> Poll(absl::Duration wait) override {
    std::vector<SendResult> out;
    if (in_flight_ == 0) {
      absl::SleepFor(wait);  // nothing to wait for (all backing off): do not spin
      return out;
    }
    gpr_timespec deadline = DeadlineIn(wait);
    while (in_flight_ > 0) {
      void* tag = nullptr;
      bool ok = false;
      if (cq_.AsyncNext(&tag, &ok, deadline) != grpc::CompletionQueue::GOT_EVENT) break;
      std::unique_ptr<Call> call(static_cast<Call*>(tag));
      --in_flight_;
      absl::Status status = rpc::FromGrpcStatus(call->status);
      CallMetrics().Record("Ledger.Grant",
                           status.ok() ? "" : absl::StatusCodeToString(status.code()),
                           absl::ToDoubleSeconds(absl::Now() - call->started));
      out.push_back({std::move(call->customer_id), std::move(status)});
      deadline = gpr_now(GPR_CLOCK_MONOTONIC);  // take what else is there, do not wait again
    }
    return out;
  }

  int in_flight() const override { return in_flight_; }
  int capacity() const override { return capacity_; }

 private:
  struct Call {
    std::string customer_id;
    absl::Time started;
    grpc::ClientContext context;
    rpb::GrantResponse response;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<rpb::GrantResponse>> reader;
  };
  rpb::Ledger::Stub& stub_;
  const rpb::GrantRequest prototype_;
  const int capacity_;
  const absl::Duration timeout_;
  grpc::CompletionQueue cq_;
  int in_flight_ = 0;
};

// Coupons and several rewards: the blocking RewardIssuer on a bounded pool of threads.
class IssuerSender final : public Sender {
 public:
  IssuerSender(RewardIssuer& issuer, IssueRequest prototype, int threads)
      : issuer_(issuer), prototype_(std::move(prototype)), capacity_(std::max(1, threads)) {
    for (int i = 0; i < capacity_; ++i) threads_.emplace_back([this] { Loop(); });
  }

  ~IssuerSender() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void Start(const std::string& customer_id) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(customer_id);
    }
    ++in_flight_;
    work_cv_.notify_one();
  }

  std::vector<SendResult> Poll(absl::Duration wait) override {
    std::unique_lock<std::mutex> lock(mu_);
    // With nothing in flight this only sleeps (all backing off): no spinning.
    done_cv_.wait_for(lock, absl::ToChronoMilliseconds(wait), [this] { return !done_.empty(); });
    std::vector<SendResult> out = std::move(done_);
    done_.clear();
    in_flight_ -= static_cast<int>(out.size());
    return out;
  }

  int in_flight() const override { return in_flight_; }
  int capacity() const override { return capacity_; }

 private:
  void Loop() {
    while (true) {
      std::string customer;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        customer = std::move(queue_.front());
        queue_.pop_front();
      }
      IssueRequest request = prototype_;
      request.request_id = BatchGrantRunner::RequestId(prototype_.campaign_id, customer);
      request.customer_id = customer;
      const absl::Time started = absl::Now();
      absl::Status status = issuer_.Issue(request);
      CallMetrics().Record("RewardIssuer.Issue",
                           status.ok() ? "" : absl::StatusCodeToString(status.code()),
                           absl::ToDoubleSeconds(absl::Now() - started));
      {
        std::lock_guard<std::mutex> lock(mu_);
        done_.push_back({std::move(customer), std::move(status)});
      }
      done_cv_.notify_one();
    }
  }

  RewardIssuer& issuer_;
  const IssueRequest prototype_;
  const int capacity_;
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<std::string> queue_;
  std::vector<SendResult> done_;
  bool stop_ = false;
  std::atomic<int> in_flight_{0};
  std::vector<std::thread> threads_;
};

class SegmentsSnapshots final : public AudienceSnapshots {
 public:
  SegmentsSnapshots(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
      : stub_(spb::Segments::NewStub(std::move(channel))), timeout_(timeout) {}

  absl::StatusOr<std::string> Materialize(const std::string& org_id, const pb::SegmentRef& seg,
                                          const std::string& purpose) override {
    spb::MaterializeRequest request;
    request.set_org_id(org_id);
    request.mutable_segment()->set_segment_id(seg.segment_id());
    request.mutable_segment()->set_version(seg.version());
    request.set_purpose(purpose);
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, timeout_, log::CurrentRequestId());
    rpc::AttachActor(context, tenancy::SystemActor("campaigns"));
    spb::Snapshot snapshot;
    grpc::Status status = stub_->Materialize(&context, request, &snapshot);
    if (!status.ok()) return rpc::FromGrpcStatus(status);
    return snapshot.id();
  }

  absl::StatusOr<SnapshotPage> Read(const std::string& org_id, const std::string& snapshot_id,
                                    const std::string& page_token, int page_size) override {
    spb::ReadSnapshotRequest request;
    request.set_org_id(org_id);
    request.set_snapshot_id(snapshot_id);
    request.mutable_page()->set_page_size(page_size);
    request.mutable_page()->set_page_token(page_token);
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, timeout_, log::CurrentRequestId());
    rpc::AttachActor(context, tenancy::SystemActor("campaigns"));
    spb::ReadSnapshotResponse response;
    grpc::Status status = stub_->ReadSnapshot(&context, request, &response);
    if (!status.ok()) return rpc::FromGrpcStatus(status);
    SnapshotPage page;
    page.customer_ids.assign(response.customer_ids().begin(), response.customer_ids().end());
    page.next_token = response.page().next_page_token();
    return page;
  }

 private:
  std::unique_ptr<spb::Segments::Stub> stub_;
  const absl::Duration timeout_;
};

}  // namespace

std::unique_ptr<AudienceSnapshots> NewSegmentsSnapshots(std::shared_ptr<grpc::Channel> channel,
                                                        absl::Duration timeout) {
  return std::make_unique<SegmentsSnapshots>(std::move(channel), timeout);
}

void InMemorySnapshots::Set(const std::string& segment_id, std::vector<std::string> customers) {
  absl::MutexLock lock(&mu_);
  segments_[segment_id] = std::move(customers);
}

absl::StatusOr<std::string> InMemorySnapshots::Materialize(const std::string&,
                                                           const pb::SegmentRef& seg,
                                                           const std::string&) {
  if (down_) return Unavailable("segments is down");
  absl::MutexLock lock(&mu_);
  auto it = segments_.find(seg.segment_id());
  if (it == segments_.end()) return NotFound("no segment " + seg.segment_id());
  std::vector<std::string> members = it->second;
  std::sort(members.begin(), members.end());
  const std::string id = absl::StrCat("snap-", snapshots_.size() + 1);
  snapshots_[id] = std::move(members);
  return id;
}

absl::StatusOr<SnapshotPage> InMemorySnapshots::Read(const std::string&,
                                                     const std::string& snapshot_id,
                                                     const std::string& page_token, int page_size) {
  if (down_ || reads_left_ == 0) return Unavailable("segments is down");
  if (reads_left_ > 0) --reads_left_;
  absl::MutexLock lock(&mu_);
  auto it = snapshots_.find(snapshot_id);
  if (it == snapshots_.end()) return NotFound("no snapshot " + snapshot_id);
  size_t offset = page_token.empty() ? 0 : std::stoul(page_token);
  SnapshotPage page;
  const size_t end = std::min(it->second.size(), offset + static_cast<size_t>(page_size));
  for (size_t i = offset; i < end; ++i) page.customer_ids.push_back(it->second[i]);
  if (end < it->second.size()) page.next_token = std::to_string(end);
  return page;
}

struct BatchGrantRunner::Impl {
  std::unique_ptr<rpb::Ledger::Stub> ledger;
  // Items put off after unconfirmed answers, by campaign then customer. Only the runner's thread
  // (or a test's RunOnce) touches it; the items themselves stay PENDING in the database.
  struct Deferred {
    int attempts = 0;
    absl::Time due;
    bool stuck = false;
    std::string error;
  };
  std::map<std::string, std::map<std::string, Deferred>> deferred;
  // Batches left with only put-off items: not worked again before this time.
  std::map<std::string, absl::Time> resume_at;
};

BatchGrantRunner::BatchGrantRunner(PgCampaignStore& campaigns, PgBatchGrantStore& store,
                                   AudienceSnapshots& snapshots, const BenefitCatalog& benefits,
                                   RewardIssuer& issuer,
                                   std::shared_ptr<grpc::Channel> ledger_channel,
                                   BatchGrantRunnerOptions options)
    : campaigns_(campaigns),
      store_(store),
      snapshots_(snapshots),
      benefits_(benefits),
      issuer_(issuer),
      options_(std::move(options)),
      impl_(std::make_unique<Impl>()) {
  impl_->ledger = rpb::Ledger::NewStub(std::move(ledger_channel));
}

BatchGrantRunner::~BatchGrantRunner() { Stop(); }

std::string BatchGrantRunner::RequestId(const std::string& campaign_id,
                                        const std::string& customer_id) {
  std::string id = "batch:" + campaign_id + ":" + customer_id;
  if (id.size() > 64) id = "batch:" + auth::Sha256Hex(id).substr(0, 40);
  return id;
}

void BatchGrantRunner::Start() {
  thread_ = std::thread([this] {
    spdlog::info("batch-grant runner {} started", options_.owner);
    while (!stop_) {
      if (absl::Status s = RunOnce(); !s.ok()) {
        spdlog::warn("batch-grant runner pass failed (retried): {}", s);
      }
      for (absl::Duration slept; slept < options_.poll && !stop_;
           slept += absl::Milliseconds(100)) {
        absl::SleepFor(absl::Milliseconds(100));
      }
    }
  });
}

void BatchGrantRunner::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

absl::Status BatchGrantRunner::RunOnce() {
  MKT_ASSIGN_OR_RETURN(std::vector<std::string> ended, store_.CancelEnded());
  for (const std::string& id : ended) {
    spdlog::info("batch grant {} cancelled: the campaign ended", id);
  }
  MKT_ASSIGN_OR_RETURN(std::vector<RunnableBatch> batches, store_.ListRunnable(100));
  // Forget the put-off items of batches that finished or were cancelled meanwhile.
  if (batches.size() < 100) {
    std::set<std::string> runnable;
    for (const RunnableBatch& b : batches) runnable.insert(b.campaign_id);
    std::erase_if(impl_->deferred, [&](const auto& e) { return !runnable.count(e.first); });
    std::erase_if(impl_->resume_at, [&](const auto& e) { return !runnable.count(e.first); });
  }
  absl::Status first;
  for (const RunnableBatch& batch : batches) {
    if (stop_) break;
    if (auto r = impl_->resume_at.find(batch.campaign_id);
        r != impl_->resume_at.end() && absl::Now() < r->second) {
      continue;  // only items put off until later are left
    }
    impl_->resume_at.erase(batch.campaign_id);
    absl::Status s = Work(batch);
    if (!s.ok()) {
      spdlog::warn("batch grant {}: {}", batch.campaign_id, s);
      if (absl::Status e = store_.SetLastError(batch.campaign_id, std::string(s.message()));
          !e.ok()) {
        spdlog::warn("batch grant {}: cannot record the error: {}", batch.campaign_id, e);
      }
      if (first.ok()) first = s;
    }
  }
  return first;
}

absl::Status BatchGrantRunner::Work(const RunnableBatch& batch) {
  const std::string& id = batch.campaign_id;
  MKT_ASSIGN_OR_RETURN(std::optional<BatchGrantRun> acquired,
                       store_.Acquire(id, batch.org_id, options_.owner, options_.lease));
  if (!acquired) return absl::OkStatus();  // another replica runs it, or it just finished
  BatchGrantRun run = *std::move(acquired);
  // Every way out gives the lease back unless the run finished (which clears it itself).
  struct Releaser {
    PgBatchGrantStore& store;
    const std::string& id;
    const std::string& owner;
    ~Releaser() { (void)store.Release(id, owner); }
  } releaser{store_, id, options_.owner};

  MKT_ASSIGN_OR_RETURN(pb::Campaign campaign, campaigns_.GetCampaign(id));
  if (campaign.state() != pb::ONLINE) return absl::OkStatus();
  const pb::CampaignConfig& config = campaign.live();
  absl::Time renewed = absl::Now();
  auto keep_lease = [&]() -> absl::Status {
    if (absl::Now() - renewed < options_.lease / 3) return absl::OkStatus();
    MKT_RETURN_IF_ERROR(store_.Renew(id, options_.owner, options_.lease));
    renewed = absl::Now();
    return absl::OkStatus();
  };

  // 1. Materialise the audience.
  if (run.state == kRunMaterialising) {
    if (run.snapshot_ids.empty()) {
      std::vector<std::string> ids;
      const std::string purpose = "batch-grant:" + id;
      for (const auto& seg : config.audience().exclude()) {
        MKT_ASSIGN_OR_RETURN(std::string snap, snapshots_.Materialize(run.org_id, seg, purpose));
        ids.push_back(kExcludePrefix + snap);
      }
      for (const auto& seg : config.audience().include()) {
        MKT_ASSIGN_OR_RETURN(std::string snap, snapshots_.Materialize(run.org_id, seg, purpose));
        ids.push_back(kIncludePrefix + snap);
      }
      MKT_RETURN_IF_ERROR(store_.SetSnapshots(id, options_.owner, ids));
      run.snapshot_ids = ids;
      run.cursor_snapshot = 0;
      run.cursor_token.clear();
      spdlog::info("batch grant {}: audience frozen in {} snapshots", id, ids.size());
    }
    for (int i = run.cursor_snapshot; i < static_cast<int>(run.snapshot_ids.size()); ++i) {
      const std::string& tagged = run.snapshot_ids[i];
      const bool exclude = absl::StartsWith(tagged, kExcludePrefix);
      const std::string snap =
          tagged.substr(exclude ? sizeof(kExcludePrefix) - 1 : sizeof(kIncludePrefix) - 1);
      std::string token = i == run.cursor_snapshot ? run.cursor_token : "";
      while (true) {
        if (stop_) return absl::OkStatus();
        MKT_RETURN_IF_ERROR(keep_lease());
        MKT_ASSIGN_OR_RETURN(SnapshotPage page,
                             snapshots_.Read(run.org_id, snap, token, options_.snapshot_page));
        const bool last = page.next_token.empty();
        MKT_RETURN_IF_ERROR(store_.AddPage(id, options_.owner, page.customer_ids,
                                           exclude ? "EXCLUDED" : "PENDING", last ? i + 1 : i,
                                           page.next_token));
        if (last) break;
        token = page.next_token;
      }
    }
    MKT_RETURN_IF_ERROR(store_.FinishMaterialising(id, options_.owner));
    MKT_ASSIGN_OR_RETURN(std::optional<BatchGrantRun> now_running, store_.Get(id));
    if (now_running) run = *std::move(now_running);
    spdlog::info("batch grant {}: {} recipients materialised, granting", id, run.total);
  }

  // 2. Grant. How: one non-coupon reward through the group-committed Ledger.Grant, else the
  // RewardIssuer.
  std::unique_ptr<Sender> sender;
  {
    IssueRequest prototype;
    prototype.org_id = run.org_id;
    prototype.campaign_id = id;
    for (const auto& reward : config.rewards()) {
      RewardGrant grant;
      grant.kind = reward.kind();
      grant.benefit_template_id = reward.benefit_template_id();
      grant.quantity = reward.quantity() > 0 ? reward.quantity() : 1;
      if (reward.points_valid_days() > 0) grant.points_valid_days = reward.points_valid_days();
      if (options_.charge_budget) {
        absl::StatusOr<BenefitInfo> info = benefits_.Lookup(reward.benefit_template_id());
        if (!info.ok()) {
          return Error(absl::StatusCode::kUnavailable, common::DEPENDENCY_UNAVAILABLE,
                       "cannot read the unit cost of benefit template " +
                           reward.benefit_template_id() + ": " +
                           std::string(info.status().message()));
        }
        grant.cost_fen = info->unit_cost_fen * grant.quantity;
      }
      prototype.rewards.push_back(std::move(grant));
    }
    if (prototype.rewards.size() == 1 && prototype.rewards[0].kind != pb::REWARD_KIND_COUPON) {
      const RewardGrant& g = prototype.rewards[0];
      rpb::GrantRequest request;
      request.set_org_id(run.org_id);
      request.set_campaign_id(id);
      request.set_asset(AssetOf(g.kind));
      request.set_quantity(g.quantity);
      request.set_budget_cost_fen(g.cost_fen);
      if (request.asset() == rpb::POINTS) {
        request.mutable_expiry()->set_days_after_grant(g.points_valid_days);
      }
      request.set_event_id("batch-grant:" + id);
      (*request.mutable_metadata())["batch_grant"] = id;
      (*request.mutable_metadata())["benefit_template_id"] = g.benefit_template_id;
      sender =
          std::make_unique<LedgerSender>(*impl_->ledger, std::move(request),
                                         std::max(1, options_.max_in_flight), options_.rpc_timeout);
    } else {
      sender =
          std::make_unique<IssuerSender>(issuer_, std::move(prototype), options_.issuer_threads);
    }
  }

  const int chunk = std::max(1, options_.chunk);
  std::string cursor;
  bool more = true;
  std::deque<std::string> queue;
  // By due time.
  std::multimap<absl::Time, std::string> retries;
  std::map<std::string, int> attempts;
  std::map<std::string, Impl::Deferred>& deferred = impl_->deferred[id];
  bool yielded = false;
  std::vector<BatchGrantOutcome> outcomes;
  bool active = true, ended = false, finished = false;
  // last_check in the past: the campaign is read again before the first grant is sent, since a
  // long materialisation gives an operator time to pause or end it.
  absl::Time last_record = absl::Now(), last_check = absl::InfinitePast(), last_log = absl::Now();
  absl::Time read_retry_at = absl::InfinitePast(), record_retry_at = absl::InfinitePast();
  std::string last_error;
  absl::Time last_error_saved = absl::InfinitePast();
  int64_t granted_here = 0, failed_here = 0;

  auto record = [&]() {
    if (outcomes.empty() || absl::Now() < record_retry_at) return;
    absl::Status s = store_.Record(id, outcomes);
    if (!s.ok()) {
      spdlog::warn("batch grant {}: cannot record {} outcomes (retrying): {}", id, outcomes.size(),
                   s);
      record_retry_at = absl::Now() + absl::Seconds(1);
      return;
    }
    outcomes.clear();
    last_record = absl::Now();
  };

  while (true) {
    const absl::Time now = absl::Now();
    if (stop_) active = false;
    // The campaign and the lease, once a second.
    if (active && now - last_check >= absl::Seconds(1)) {
      last_check = now;
      // Renewed every second (not only when due) so a cancellation stops sending at once.
      absl::Status s = store_.Renew(id, options_.owner, options_.lease);
      if (s.ok()) renewed = now;
      if (!s.ok()) {
        spdlog::warn("batch grant {}: stopping: {}", id, s);
        active = false;
      } else if (absl::StatusOr<pb::Campaign> c = campaigns_.GetCampaign(id); c.ok()) {
        if (c->state() != pb::ONLINE) {
          active = false;
          ended = c->state() == pb::ENDED || c->state() == pb::ARCHIVED;
          spdlog::info("batch grant {}: the campaign is {}, stopping", id,
                       pb::CampaignState_Name(c->state()));
        }
      }
    }
    if (active && more && queue.size() < static_cast<size_t>(sender->capacity()) &&
        now >= read_retry_at) {
      absl::StatusOr<std::vector<PendingItem>> page = store_.PendingAfter(id, cursor, chunk);
      if (!page.ok()) {
        spdlog::warn("batch grant {}: cannot read pending items (retrying): {}", id, page.status());
        read_retry_at = now + absl::Seconds(1);
      } else {
        more = static_cast<int>(page->size()) == chunk;
        if (!page->empty()) cursor = page->back().customer_id;
        for (PendingItem& item : *page) {
          std::string& c = item.customer_id;
          auto d = deferred.find(c);
          if (item.stuck && (d == deferred.end() || !d->second.stuck)) {
            // Marked stuck by a runner that forgot it since (a restart, another replica, a pause
            // in between): sent once now, then every max backoff, each time only while PENDING.
            Impl::Deferred& remembered = deferred[c];
            remembered.stuck = true;
            remembered.attempts = std::max(remembered.attempts, options_.unconfirmed_attempts);
            remembered.due = now;
            d = deferred.find(c);
          }
          if (d != deferred.end() && d->second.due > now) {
            retries.emplace(d->second.due, std::move(c));
          } else {
            queue.push_back(std::move(c));
          }
        }
      }
    }
    while (!retries.empty() && retries.begin()->first <= now) {
      std::string customer = std::move(retries.begin()->second);
      retries.erase(retries.begin());
      if (!active) continue;
      // A stuck item may have been settled by an operator meanwhile (through any replica): it is
      // never sent again then, whatever the ledger would answer now.
      if (auto d = deferred.find(customer); d != deferred.end() && d->second.stuck) {
        absl::StatusOr<bool> pending = store_.StillPending(id, customer);
        if (!pending.ok()) {
          retries.emplace(now + absl::Seconds(1), std::move(customer));
          break;
        }
        if (!*pending) {
          spdlog::info("batch grant {}: the stuck grant to {} was settled; not sent again", id,
                       customer);
          deferred.erase(d);
          attempts.erase(customer);
          continue;
        }
      }
      queue.push_front(std::move(customer));
    }
    while (active && sender->in_flight() < sender->capacity() && !queue.empty()) {
      sender->Start(queue.front());
      queue.pop_front();
    }
    // A grant refused for good, or proven not to have granted: recorded FAILED.
    const auto record_failure = [&](SendResult& r) {
      ++failed_here;
      attempts.erase(r.customer_id);
      deferred.erase(r.customer_id);
      outcomes.push_back(
          {std::move(r.customer_id), false, ReasonText(r.status), std::string(r.status.message())});
    };
    for (SendResult& r : sender->Poll(absl::Milliseconds(50))) {
      switch (VerdictOf(r.status)) {
        case Verdict::kGranted:
          ++granted_here;
          attempts.erase(r.customer_id);
          deferred.erase(r.customer_id);
          outcomes.push_back({std::move(r.customer_id), true, "", ""});
          break;
        case Verdict::kFailed:
          record_failure(r);
          break;
        case Verdict::kRetry: {
          CountItems("retried", 1);
          const int n = ++attempts[r.customer_id];
          const absl::Duration backoff =
              std::min(absl::Milliseconds(100) * (1 << std::min(n, 6)), absl::Seconds(5));
          last_error =
              absl::StrCat("rewards did not confirm grants (retrying): ",
                           absl::StatusCodeToString(r.status.code()), ": ", r.status.message());
          retries.emplace(absl::Now() + backoff, std::move(r.customer_id));
          break;
        }
        case Verdict::kUnconfirmed:
        case Verdict::kHold: {
          CountItems("retried", 1);
          const bool hold = VerdictOf(r.status) == Verdict::kHold;
          Impl::Deferred& d = deferred[r.customer_id];
          ++d.attempts;
          d.error = absl::StrCat(ReasonText(r.status), ": ", r.status.message());
          const bool exhausted = hold || d.attempts >= std::max(1, options_.unconfirmed_attempts);
          if (exhausted && !hold && GrantedNothing(r.status)) {
            // Proven not granted: a failure like any refusal.
            record_failure(r);
            break;
          }
          absl::Duration backoff = options_.unconfirmed_max_backoff;
          if (!exhausted) {
            backoff = std::min(options_.unconfirmed_backoff * (1 << std::min(d.attempts - 1, 20)),
                               options_.unconfirmed_max_backoff);
          }
          if (exhausted && !d.stuck) {
            d.stuck = true;
            spdlog::error(
                "batch grant {}: the grant to {} ({}) could not be confirmed after {} attempts "
                "({}); it stays PENDING (it may have been granted) until an operator settles it",
                id, r.customer_id, RequestId(id, r.customer_id), d.attempts, d.error);
            if (absl::Status m = store_.MarkStuck(id, r.customer_id, kStuckReason, d.error);
                !m.ok()) {
              spdlog::warn("batch grant {}: cannot mark {} stuck: {}", id, r.customer_id, m);
            }
          } else if (!exhausted) {
            spdlog::warn(
                "batch grant {}: the grant to {} was not confirmed (attempt {}, again in "
                "{}): {}",
                id, r.customer_id, d.attempts, absl::FormatDuration(backoff), d.error);
          }
          d.due = absl::Now() + backoff;
          last_error = absl::StrCat("rewards did not confirm grants (put off): ", d.error);
          retries.emplace(d.due, std::move(r.customer_id));
          break;
        }
      }
    }
    if (outcomes.size() >= static_cast<size_t>(chunk) ||
        (!outcomes.empty() && absl::Now() - last_record >= absl::Milliseconds(500)) ||
        (!active && sender->in_flight() == 0)) {
      const double g = static_cast<double>(std::count_if(
          outcomes.begin(), outcomes.end(), [](const BatchGrantOutcome& o) { return o.granted; }));
      const double f = static_cast<double>(outcomes.size()) - g;
      const size_t before = outcomes.size();
      record();
      if (outcomes.size() < before) {
        CountItems("granted", g);
        CountItems("failed", f);
        if (!last_error.empty()) {
          (void)store_.SetLastError(id, last_error);
          last_error.clear();
          last_error_saved = absl::Now();
        }
      }
    } else if (outcomes.empty() && !last_error.empty() &&
               absl::Now() - last_error_saved >= absl::Seconds(1)) {
      // Nothing to record (every item put off, e.g. the budget not funded yet): the operator
      // still sees why the batch does not move, once a second at most.
      (void)store_.SetLastError(id, last_error);
      last_error.clear();
      last_error_saved = absl::Now();
    }
    if (absl::Now() - last_log >= options_.progress_log_every) {
      last_log = absl::Now();
      if (absl::StatusOr<std::optional<BatchGrantRun>> p = store_.Get(id); p.ok() && *p) {
        spdlog::info("batch grant {} {}/{} granted, {} failed, {} in flight, {} retrying", id,
                     (*p)->granted, (*p)->total, (*p)->failed, sender->in_flight(), retries.size());
      }
    }
    if (!active) {
      if (sender->in_flight() == 0 && outcomes.empty()) break;
      if (sender->in_flight() == 0 && absl::Now() >= record_retry_at && stop_) {
        // Stopping and the database refuses the last outcomes: they stay PENDING and are sent
        // again (same ids) by the next runner.
        record();
        if (!outcomes.empty()) break;
      }
      continue;
    }
    if (!more && queue.empty() && !retries.empty() && sender->in_flight() == 0 &&
        outcomes.empty() && retries.begin()->first - absl::Now() > absl::Seconds(1)) {
      // Only items put off for a while are left: other batches get the runner meanwhile; the
      // next pass comes back to these when they are due.
      yielded = true;
      break;
    }
    if (!more && queue.empty() && retries.empty() && sender->in_flight() == 0 && outcomes.empty()) {
      absl::StatusOr<bool> done = store_.CompleteIfDone(id, options_.owner);
      if (done.ok() && *done) {
        finished = true;
        break;
      }
      if (!done.ok()) {
        spdlog::warn("batch grant {}: cannot complete (retrying): {}", id, done.status());
        absl::SleepFor(absl::Seconds(1));
      }
      // Items still PENDING behind the cursor (a read raced with a cancellation...): again.
      cursor.clear();
      more = true;
    }
  }
  if (finished || ended) impl_->deferred.erase(id);
  if (yielded) {
    impl_->resume_at[id] = retries.begin()->first;
    ReportStuck(id);
    spdlog::debug("batch grant {}: {} items put off, back later", id, retries.size());
  }
  if (finished) {
    MKT_ASSIGN_OR_RETURN(std::optional<BatchGrantRun> done, store_.Get(id));
    if (done) {
      spdlog::info("batch grant {} completed: {}/{} granted, {} failed", id, done->granted,
                   done->total, done->failed);
    }
  } else if (ended) {
    absl::StatusOr<BatchGrantRun> c = store_.Cancel(id, run.org_id, "system", "the campaign ended");
    if (c.ok()) spdlog::info("batch grant {} cancelled: the campaign ended", id);
  }
  spdlog::debug("batch grant {}: this pass granted {}, failed {}", id, granted_here, failed_here);
  return absl::OkStatus();
}

void BatchGrantRunner::ReportStuck(const std::string& campaign_id) {
  auto it = impl_->deferred.find(campaign_id);
  if (it == impl_->deferred.end()) return;
  int stuck = 0;
  std::string first;
  for (const auto& [customer, d] : it->second) {
    if (!d.stuck) continue;
    if (stuck++ == 0) first = customer + ": " + d.error;
  }
  if (stuck == 0) return;
  const std::string error = absl::StrCat(
      stuck,
      " recipients stuck PENDING: their grants could not be confirmed and may have been "
      "made; an operator must settle them (first ",
      first, ")");
  if (absl::Status s = store_.SetLastError(campaign_id, error); !s.ok()) {
    spdlog::warn("batch grant {}: cannot record the stuck items: {}", campaign_id, s);
  }
}

}  // namespace mkt::campaigns
