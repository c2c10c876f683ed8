#include "services/events/grant_sender.h"

#include <grpc/support/time.h>
#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <deque>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/log/log.h"
#include "libs/metrics/metrics.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace mkt::events {

namespace rpb = ::marketing::rewards::v1;

namespace {

// The completion-queue tag of the alarm that wakes the dispatcher (rows queued, or Stop()).
char kWakeTag;

// The most grants the ledger takes in one GrantMany call.
constexpr int kMaxGrantsPerCall = 500;

metrics::OperationMetrics& LedgerCallMetrics() {
  static auto* m = new metrics::OperationMetrics("mkt_events_ledger_call",
                                                 "ledger calls made by the events grant sender");
  return *m;
}

gpr_timespec DeadlineIn(absl::Duration d) {
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_micros(absl::ToInt64Microseconds(d), GPR_TIMESPAN));
}

// A ledger call in flight; its address is the completion-queue tag. A reversal or a unary Grant
// carries one row; a GrantMany call carries one or more grant rows.
struct Call {
  enum class Kind { kGrant, kGrantMany, kReverse } kind = Kind::kGrant;
  std::vector<GrantRow> rows;
  absl::Time started;
  grpc::ClientContext context;
  rpb::GrantResponse grant_response;
  rpb::GrantManyResponse many_response;
  rpb::ReverseResponse reverse_response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<rpb::GrantResponse>> grant_reader;
  std::unique_ptr<grpc::ClientAsyncResponseReader<rpb::GrantManyResponse>> many_reader;
  std::unique_ptr<grpc::ClientAsyncResponseReader<rpb::ReverseResponse>> reverse_reader;
};

rpb::GrantRequest GrantRequestOf(const GrantRow& r) {
  rpb::GrantRequest request;
  request.set_request_id(r.grant_id);
  request.set_org_id(r.org_id);
  request.set_campaign_id(r.campaign_id);
  request.set_customer_id(r.customer_id);
  request.set_asset(r.reward.asset());
  request.set_quantity(r.reward.quantity());
  request.set_budget_cost_fen(r.reward.budget_cost_fen());
  request.set_stock_template_id(r.reward.stock_template_id());
  request.set_stock_units(r.reward.stock_units());
  if (r.reward.asset() == rpb::POINTS) {
    request.mutable_expiry()->set_days_after_grant(r.reward.points_expiry_days());
  }
  request.set_event_id(StorableText(r.event_key, 128));
  (*request.mutable_metadata())["rule_id"] = r.rule_id;
  (*request.mutable_metadata())["tier"] = std::to_string(r.tier);
  return request;
}

// A row whose grant's send outcome is unknown (never acknowledged) is first granted,
// idempotently, then reversed on a later read.
bool IsReversal(const GrantRow& r) { return r.state == "reverse_pending" && r.granted; }

// What operators read for a refusal: "BUDGET_EXHAUSTED: the campaign budget is exhausted".
std::string RefusalText(const absl::Status& status) {
  return ReasonName(ReasonOf(status)) + ": " + std::string(status.message());
}

// How a Grant of `row` that ended with `status` is recorded. ACCOUNT_NOT_FOUND for a pending
// grant says that the campaign's budget (or stock) is not funded yet: rewards creates it when its
// own consumer handles the campaign's change, which may lag behind ours (a restart, a
// rebalance). Such a grant is retried, with the outbox's backoff, until `unfunded_retry` after
// the ledger first refused it so (the row's unfunded_since; a row never refused so far starts its
// window now), and only then recorded as refused. The window is not counted from the row's
// creation: a row that waited for the ledger (rewards down, its sends failing with UNAVAILABLE)
// would otherwise be refused for good at once when rewards, back, has not funded the budget yet.
GrantResult GrantOutcome(const GrantRow& row, const absl::Status& status,
                         absl::Duration unfunded_retry) {
  GrantResult result{row.grant_id, ClassifyGrantStatus(status), ""};
  if (status.ok()) return result;
  result.reason = RefusalText(status);
  if (result.kind == GrantResult::Kind::kRejected && row.state == "pending" &&
      ReasonOf(status) == ::marketing::common::v1::ACCOUNT_NOT_FOUND) {
    const absl::Duration unfunded_for =
        row.unfunded_since.has_value() ? absl::Now() - *row.unfunded_since : absl::ZeroDuration();
    if (unfunded_for < unfunded_retry) {
      result.kind = GrantResult::Kind::kRetry;
      result.unfunded = true;
      result.reason += " (retried until the budget is funded)";
    }
  }
  return result;
}

GrantResult ReverseOutcome(const std::string& grant_id, const absl::Status& status) {
  GrantResult result{grant_id, GrantResult::Kind::kRetry, ""};
  if (status.ok() || status.code() == absl::StatusCode::kNotFound) {
    result.kind = GrantResult::Kind::kReversed;
  } else if (ClassifyGrantStatus(status) == GrantResult::Kind::kRejected) {
    // E.g. the customer already spent the points: recorded for operators, not retried.
    result.kind = GrantResult::Kind::kReverseFailed;
    result.reason = RefusalText(status);
  } else {
    result.reason = std::string(status.message());
  }
  return result;
}

// One outcome per row of `call`, in order.
std::vector<GrantResult> OutcomesOf(const Call& call, absl::Duration unfunded_retry) {
  const absl::Status status = rpc::FromGrpcStatus(call.status);
  std::vector<GrantResult> results;
  results.reserve(call.rows.size());
  if (call.kind == Call::Kind::kReverse) {
    results.push_back(ReverseOutcome(call.rows[0].grant_id, status));
    return results;
  }
  if (call.kind == Call::Kind::kGrant) {
    results.push_back(GrantOutcome(call.rows[0], status, unfunded_retry));
    return results;
  }
  const auto& outcomes = call.many_response.outcomes();
  if (!status.ok() || outcomes.size() != static_cast<int>(call.rows.size())) {
    // The call as a whole failed (transport, deadline, the ledger down), or the answer is not
    // what the ledger promises: nothing is known about these grants, so each is sent again.
    const std::string reason = !status.ok() ? std::string(status.message())
                                            : "the ledger answered a different number of outcomes";
    for (const GrantRow& row : call.rows) {
      results.push_back({row.grant_id, GrantResult::Kind::kRetry, reason});
    }
    return results;
  }
  for (size_t i = 0; i < call.rows.size(); ++i) {
    const rpb::GrantOutcome& o = outcomes[static_cast<int>(i)];
    absl::Status grant_status;
    if (o.request_id() != call.rows[i].grant_id) {
      grant_status = absl::InternalError("the ledger answered the outcomes out of order");
    } else {
      grant_status = ItemStatus(o);
    }
    results.push_back(GrantOutcome(call.rows[i], grant_status, unfunded_retry));
  }
  return results;
}

}  // namespace

GrantResult::Kind ClassifyGrantStatus(const absl::Status& status) {
  if (status.ok()) return GrantResult::Kind::kGranted;
  switch (status.code()) {
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kPermissionDenied:
      return GrantResult::Kind::kRejected;
    default:
      return GrantResult::Kind::kRetry;
  }
}

struct GrantSender::Impl {
  struct Outcome {
    int64_t seq;
    GrantResult result;
  };

  explicit Impl(const GrantSenderOptions& o) : options(o), batch_calls(o.grants_per_call > 1) {}

  // Wakes the dispatcher out of its completion queue (no-op while it is not running).
  void WakeDispatcherLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (cq == nullptr || alarm_set) return;
    alarm_set = true;
    alarm->Set(cq, gpr_now(GPR_CLOCK_MONOTONIC), &kWakeTag);
  }

  // Queues `rows` for sending, except rows already held (never read twice).
  void QueueRows(std::vector<GrantRow> rows) {
    if (rows.empty()) return;
    absl::MutexLock lock(&mu);
    for (GrantRow& row : rows) {
      if (held.insert(row.seq).second) queue.push_back(std::move(row));
    }
    WakeDispatcherLocked();
  }

  // Starts one call for `rows`: a reversal (one row), a Grant (one row) or a GrantMany.
  void StartCall(grpc::CompletionQueue& cq_ref, std::vector<GrantRow> rows, Call::Kind kind);
  // The dispatcher thread: keeps the window of calls full until Stop() and the calls drained.
  void Dispatch(grpc::CompletionQueue& cq_ref);

  const GrantSenderOptions options;
  std::unique_ptr<rpb::Ledger::Stub> stub;

  absl::Mutex mu;
  bool stop ABSL_GUARDED_BY(mu) = false;
  bool notified ABSL_GUARDED_BY(mu) = false;
  bool dispatcher_done ABSL_GUARDED_BY(mu) = false;
  // Rows read and not started yet.
  std::deque<GrantRow> queue ABSL_GUARDED_BY(mu);
  // Outcomes not recorded yet.
  std::vector<Outcome> outcomes ABSL_GUARDED_BY(mu);
  // Seqs of every row queued, in flight or with an outcome not recorded yet: the rows the
  // outbox must not hand out again.
  std::unordered_set<int64_t> held ABSL_GUARDED_BY(mu);
  int in_flight ABSL_GUARDED_BY(mu) = 0;  // rows
  // GrantMany calls (set false, for good, when the ledger does not know the method: an older
  // rewards service; the rows then go one Grant each).
  std::atomic<bool> batch_calls;
  int64_t calls_started ABSL_GUARDED_BY(mu) = 0;
  int64_t outcomes_recorded ABSL_GUARDED_BY(mu) = 0;
  // Set while Run() owns them.
  grpc::CompletionQueue* cq ABSL_GUARDED_BY(mu) = nullptr;
  grpc::Alarm* alarm ABSL_GUARDED_BY(mu) = nullptr;
  bool alarm_set ABSL_GUARDED_BY(mu) = false;
};

void GrantSender::Impl::StartCall(grpc::CompletionQueue& cq_ref, std::vector<GrantRow> rows,
                                  Call::Kind kind) {
  auto* call = new Call;
  call->kind = kind;
  call->rows = std::move(rows);
  call->started = absl::Now();
  const GrantRow& first = call->rows.front();
  rpc::PrepareClientContext(call->context, options.rpc_timeout, first.grant_id);
  switch (kind) {
    case Call::Kind::kReverse: {
      rpb::ReverseRequest request;
      request.set_request_id(ReversalId(first.grant_id));
      request.set_batch_id(first.grant_id);
      request.set_reason("event reversed: " + StorableText(first.event_key, 200));
      call->reverse_reader = stub->AsyncReverse(&call->context, request, &cq_ref);
      call->reverse_reader->Finish(&call->reverse_response, &call->status, call);
      break;
    }
    case Call::Kind::kGrant:
      call->grant_reader = stub->AsyncGrant(&call->context, GrantRequestOf(first), &cq_ref);
      call->grant_reader->Finish(&call->grant_response, &call->status, call);
      break;
    case Call::Kind::kGrantMany: {
      rpb::GrantManyRequest request;
      request.mutable_grants()->Reserve(static_cast<int>(call->rows.size()));
      for (const GrantRow& row : call->rows) *request.add_grants() = GrantRequestOf(row);
      call->many_reader = stub->AsyncGrantMany(&call->context, request, &cq_ref);
      call->many_reader->Finish(&call->many_response, &call->status, call);
      break;
    }
  }
}

void GrantSender::Impl::Dispatch(grpc::CompletionQueue& cq_ref) {
  const int max_in_flight = std::max(1, options.max_in_flight);
  const int per_call = std::clamp(options.grants_per_call, 1, kMaxGrantsPerCall);
  int calls = 0;    // calls started and not completed
  int running = 0;  // their rows (mirrored into `in_flight` for Stats)
  struct ToStart {
    std::vector<GrantRow> rows;
    Call::Kind kind;
  };
  std::vector<ToStart> to_start;
  while (true) {
    to_start.clear();
    {
      absl::MutexLock lock(&mu);
      if (stop && calls == 0) {
        // Rows queued and not sent stay due in the outbox.
        for (const GrantRow& row : queue) held.erase(row.seq);
        queue.clear();
        dispatcher_done = true;
        return;
      }
      // Rows are taken in order; consecutive grants share a GrantMany call, so one call carries
      // what is queued now (up to per_call) and nothing waits for a call to fill up.
      const bool batch = batch_calls.load();
      int taken = 0;
      while (!stop && running + taken < max_in_flight && !queue.empty()) {
        GrantRow row = std::move(queue.front());
        queue.pop_front();
        ++taken;
        if (IsReversal(row)) {
          to_start.push_back({{std::move(row)}, Call::Kind::kReverse});
        } else if (!batch) {
          to_start.push_back({{std::move(row)}, Call::Kind::kGrant});
        } else if (!to_start.empty() && to_start.back().kind == Call::Kind::kGrantMany &&
                   static_cast<int>(to_start.back().rows.size()) < per_call) {
          to_start.back().rows.push_back(std::move(row));
        } else {
          to_start.push_back({{}, Call::Kind::kGrantMany});
          to_start.back().rows.push_back(std::move(row));
        }
      }
      in_flight = running + taken;
      calls_started += static_cast<int64_t>(to_start.size());
    }
    for (ToStart& next : to_start) {
      running += static_cast<int>(next.rows.size());
      ++calls;
      StartCall(cq_ref, std::move(next.rows), next.kind);
    }
    void* tag = nullptr;
    bool ok = false;
    const grpc::CompletionQueue::NextStatus next_status =
        cq_ref.AsyncNext(&tag, &ok, DeadlineIn(options.idle_poll));
    if (next_status == grpc::CompletionQueue::TIMEOUT) continue;
    if (next_status == grpc::CompletionQueue::SHUTDOWN) {
      absl::MutexLock lock(&mu);
      dispatcher_done = true;
      return;
    }
    if (tag == &kWakeTag) {
      absl::MutexLock lock(&mu);
      alarm_set = false;
      continue;
    }
    std::unique_ptr<Call> call(static_cast<Call*>(tag));
    --calls;
    running -= static_cast<int>(call->rows.size());
    const char* method = call->kind == Call::Kind::kReverse ? "Reverse"
                         : call->kind == Call::Kind::kGrant ? "Grant"
                                                            : "GrantMany";
    LedgerCallMetrics().Record(
        method,
        call->status.ok() ? "" : absl::StatusCodeToString(rpc::FromGrpcStatus(call->status).code()),
        absl::ToDoubleSeconds(absl::Now() - call->started));
    if (call->kind == Call::Kind::kGrantMany &&
        call->status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      // An older ledger: its rows go again, first in line, one Grant each (still held, so no read
      // hands them out meanwhile).
      spdlog::warn("the rewards ledger does not know GrantMany; sending one Grant per row");
      batch_calls.store(false);
      absl::MutexLock lock(&mu);
      for (auto it = call->rows.rbegin(); it != call->rows.rend(); ++it) {
        queue.push_front(std::move(*it));
      }
      in_flight = running;
      continue;
    }
    std::vector<GrantResult> results = OutcomesOf(*call, options.unfunded_retry);
    absl::MutexLock lock(&mu);
    for (size_t i = 0; i < results.size(); ++i) {
      outcomes.push_back({call->rows[i].seq, std::move(results[i])});
    }
    in_flight = running;
  }
}

GrantSender::GrantSender(EventStore& store, GrantSenderOptions options)
    : store_(store), options_(std::move(options)), impl_(std::make_unique<Impl>(options_)) {
  impl_->stub = rpb::Ledger::NewStub(rpc::Connect(options_.rewards_address));
}

GrantSender::~GrantSender() = default;

void GrantSender::Stop() {
  absl::MutexLock lock(&impl_->mu);
  impl_->stop = true;
  impl_->WakeDispatcherLocked();
}

void GrantSender::Notify() {
  absl::MutexLock lock(&impl_->mu);
  impl_->notified = true;
}

GrantSenderStats GrantSender::Stats() {
  absl::MutexLock lock(&impl_->mu);
  return {.calls_started = impl_->calls_started,
          .outcomes_recorded = impl_->outcomes_recorded,
          .in_flight = impl_->in_flight,
          .queued = static_cast<int>(impl_->queue.size()),
          .held = static_cast<int>(impl_->held.size())};
}

void GrantSender::Run() {
  Impl& im = *impl_;
  const absl::Duration max_backoff = absl::Seconds(5);
  auto stopped = [&im] {
    absl::MutexLock lock(&im.mu);
    return im.stop;
  };
  auto sleep_unless_stopped = [&im](absl::Duration d) {
    absl::MutexLock lock(&im.mu);
    im.mu.AwaitWithTimeout(absl::Condition(&im.stop), d);
  };

  // Rows above this seq were created after this process started: nobody sent them before.
  int64_t started_after = 0;
  absl::Duration backoff = options_.idle_poll;
  while (true) {
    if (stopped()) return;
    absl::StatusOr<int64_t> max_seq = store_.MaxGrantSeq();
    if (max_seq.ok()) {
      started_after = *max_seq;
      break;
    }
    spdlog::warn("grant sender cannot read the outbox (retrying): {}", max_seq.status());
    sleep_unless_stopped(backoff);
    backoff = std::min(backoff * 2, max_backoff);
  }

  grpc::CompletionQueue cq;
  grpc::Alarm alarm;
  {
    absl::MutexLock lock(&im.mu);
    im.cq = &cq;
    im.alarm = &alarm;
  }
  std::thread dispatcher([&im, &cq] { im.Dispatch(cq); });

  const size_t low_water = static_cast<size_t>(std::max(1, options_.max_in_flight));
  const int claim_batch = std::max(1, options_.claim_batch);
  const size_t finish_batch = static_cast<size_t>(std::max(1, options_.finish_batch));
  int64_t cursor = 0;             // the highest seq read
  bool more_after_cursor = true;  // the last read above the cursor came back full
  absl::Time next_poll = absl::Now();
  absl::Time store_retry_at = absl::InfinitePast();
  backoff = options_.idle_poll;

  auto store_failed = [&](std::string_view what, const absl::Status& status) {
    spdlog::warn("grant sender cannot {} (retrying in {} ms): {}", what,
                 absl::ToInt64Milliseconds(backoff), status);
    store_retry_at = absl::Now() + backoff;
    backoff = std::min(backoff * 2, max_backoff);
  };

  while (true) {
    std::vector<Impl::Outcome> to_record;
    std::vector<int64_t> held_snapshot;
    bool read_new = false, read_again = false;
    {
      absl::MutexLock lock(&im.mu);
      const absl::Time before = absl::Now();
      const bool store_ok = before >= store_retry_at;
      auto has_work = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(im.mu) {
        if (im.dispatcher_done && im.outcomes.empty()) return true;
        if (!store_ok) return false;
        if (!im.outcomes.empty()) return true;
        return !im.stop && im.queue.size() < low_water &&
               (im.notified || more_after_cursor || absl::Now() >= next_poll);
      };
      // A poll that is due waits for the queue to run low, not for a deadline.
      const absl::Time deadline = !store_ok            ? store_retry_at
                                  : next_poll > before ? next_poll
                                                       : before + options_.idle_poll;
      im.mu.AwaitWithDeadline(absl::Condition(&has_work), deadline);
      const absl::Time now = absl::Now();
      if (im.dispatcher_done && im.outcomes.empty()) break;
      if (now >= store_retry_at) {
        const size_t n = std::min(finish_batch, im.outcomes.size());
        to_record.assign(std::make_move_iterator(im.outcomes.begin()),
                         std::make_move_iterator(im.outcomes.begin() + n));
        im.outcomes.erase(im.outcomes.begin(), im.outcomes.begin() + n);
        if (!im.stop && im.queue.size() < low_water) {
          const bool poll_due = now >= next_poll;
          read_new = im.notified || more_after_cursor || poll_due;
          read_again = poll_due;
          if (read_new) im.notified = false;
          if (read_again) held_snapshot.assign(im.held.begin(), im.held.end());
        }
      }
    }

    if (!to_record.empty()) {
      std::vector<GrantResult> results;
      results.reserve(to_record.size());
      for (const Impl::Outcome& o : to_record) results.push_back(o.result);
      const absl::Status status = store_.Finish(results);
      absl::MutexLock lock(&im.mu);
      if (status.ok()) {
        // Only now may the rows be read again (a retry after its backoff, a reversal).
        for (const Impl::Outcome& o : to_record) im.held.erase(o.seq);
        im.outcomes_recorded += static_cast<int64_t>(to_record.size());
        backoff = options_.idle_poll;
      } else {
        im.outcomes.insert(im.outcomes.begin(), std::make_move_iterator(to_record.begin()),
                           std::make_move_iterator(to_record.end()));
        store_failed("record grant outcomes", status);
        continue;
      }
    }
    if (read_new) {
      absl::StatusOr<std::vector<GrantRow>> rows =
          store_.ClaimDueAfter(cursor, started_after, claim_batch);
      if (!rows.ok()) {
        store_failed("read the grant outbox", rows.status());
        continue;
      }
      more_after_cursor = static_cast<int>(rows->size()) == claim_batch;
      if (!rows->empty()) cursor = std::max(cursor, rows->back().seq);
      im.QueueRows(*std::move(rows));
    }
    if (read_again) {
      absl::StatusOr<std::vector<GrantRow>> rows =
          store_.ClaimDueAgain(cursor, held_snapshot, started_after, claim_batch);
      if (!rows.ok()) {
        store_failed("read the grant outbox", rows.status());
        continue;
      }
      // A full read means more are due: look again as soon as the queue runs low.
      next_poll = static_cast<int>(rows->size()) == claim_batch ? absl::Now()
                                                                : absl::Now() + options_.idle_poll;
      im.QueueRows(*std::move(rows));
    }
  }

  dispatcher.join();
  bool alarm_pending = false;
  {
    absl::MutexLock lock(&im.mu);
    im.cq = nullptr;
    im.alarm = nullptr;
    alarm_pending = im.alarm_set;
  }
  if (alarm_pending) alarm.Cancel();
  cq.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace mkt::events
