#include "services/events/grant_sender.h"

#include <grpcpp/grpcpp.h>

#include <vector>

#include "libs/core/status.h"
#include "libs/log/log.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace mkt::events {

namespace rpb = ::marketing::rewards::v1;

struct GrantSender::Impl {
  std::unique_ptr<rpb::Ledger::Stub> stub;
};

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

GrantSender::GrantSender(EventStore& store, GrantSenderOptions options)
    : store_(store), options_(std::move(options)), impl_(std::make_unique<Impl>()) {
  impl_->stub = rpb::Ledger::NewStub(rpc::Connect(options_.rewards_address));
}

GrantSender::~GrantSender() = default;

void GrantSender::Stop() {
  stop_ = true;
  Notify();
}

void GrantSender::Notify() {
  absl::MutexLock lock(&mu_);
  wake_ = true;
}

void GrantSender::Run() {
  absl::Duration backoff = options_.idle_poll;
  while (!stop_) {
    absl::StatusOr<int> handled = RunOnce();
    if (!handled.ok()) {
      spdlog::warn("grant sender pass failed (retrying): {}", handled.status());
    }
    if (handled.ok() && *handled > 0) {
      backoff = options_.idle_poll;
      continue;
    }
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&wake_), handled.ok() ? options_.idle_poll : backoff);
    wake_ = false;
    if (!handled.ok()) backoff = std::min(backoff * 2, absl::Seconds(5));
  }
}

absl::StatusOr<int> GrantSender::RunOnce() {
  MKT_ASSIGN_OR_RETURN(std::vector<GrantRow> rows, store_.ClaimDue(options_.claim_batch));
  if (rows.empty()) return 0;

  struct Call {
    const GrantRow* row;
    bool reverse;
    grpc::ClientContext context;
    rpb::GrantResponse grant_response;
    rpb::ReverseResponse reverse_response;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<rpb::GrantResponse>> grant_reader;
    std::unique_ptr<grpc::ClientAsyncResponseReader<rpb::ReverseResponse>> reverse_reader;
  };
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<Call>> calls;
  std::vector<GrantResult> results;
  size_t next = 0;
  int in_flight = 0;
  auto start = [&](const GrantRow& row) {
    auto call = std::make_unique<Call>();
    call->row = &row;
    call->reverse = row.state == "reverse_pending" && row.granted;
    rpc::PrepareClientContext(call->context, options_.rpc_timeout, row.grant_id);
    if (call->reverse) {
      rpb::ReverseRequest request;
      request.set_request_id(ReversalId(row.grant_id));
      request.set_batch_id(row.grant_id);
      request.set_reason("event reversed: " + row.event_key.substr(0, 200));
      call->reverse_reader = impl_->stub->AsyncReverse(&call->context, request, &cq);
      call->reverse_reader->Finish(&call->reverse_response, &call->status, call.get());
    } else {
      rpb::GrantRequest request;
      request.set_request_id(row.grant_id);
      request.set_org_id(row.org_id);
      request.set_campaign_id(row.campaign_id);
      request.set_customer_id(row.customer_id);
      request.set_asset(row.reward.asset());
      request.set_quantity(row.reward.quantity());
      request.set_budget_cost_fen(row.reward.budget_cost_fen());
      request.set_stock_template_id(row.reward.stock_template_id());
      request.set_stock_units(row.reward.stock_units());
      if (row.reward.asset() == rpb::POINTS) {
        request.mutable_expiry()->set_days_after_grant(row.reward.points_expiry_days());
      }
      request.set_event_id(row.event_key.substr(0, 128));
      (*request.mutable_metadata())["rule_id"] = row.rule_id;
      (*request.mutable_metadata())["tier"] = std::to_string(row.tier);
      call->grant_reader = impl_->stub->AsyncGrant(&call->context, request, &cq);
      call->grant_reader->Finish(&call->grant_response, &call->status, call.get());
    }
    calls.push_back(std::move(call));
    ++in_flight;
  };
  while (next < rows.size() && in_flight < options_.max_in_flight) start(rows[next++]);
  while (in_flight > 0) {
    void* tag = nullptr;
    bool ok = false;
    if (!cq.Next(&tag, &ok)) break;
    --in_flight;
    Call* call = static_cast<Call*>(tag);
    const absl::Status status = rpc::FromGrpcStatus(call->status);
    GrantResult result{call->row->grant_id, GrantResult::Kind::kRetry, ""};
    if (call->reverse) {
      if (status.ok() || status.code() == absl::StatusCode::kNotFound) {
        result.kind = GrantResult::Kind::kReversed;
      } else if (ClassifyGrantStatus(status) == GrantResult::Kind::kRejected) {
        // E.g. the customer already spent the points: recorded for operators, not retried.
        result.kind = GrantResult::Kind::kReverseFailed;
        result.reason = ReasonName(ReasonOf(status)) + ": " + std::string(status.message());
      } else {
        result.reason = std::string(status.message());
      }
    } else {
      result.kind = ClassifyGrantStatus(status);
      if (!status.ok()) {
        result.reason = ReasonName(ReasonOf(status)) + ": " + std::string(status.message());
      }
    }
    results.push_back(std::move(result));
    if (next < rows.size() && !stop_) start(rows[next++]);
  }
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  MKT_RETURN_IF_ERROR(store_.Finish(results));
  return static_cast<int>(results.size());
}

}  // namespace mkt::events
