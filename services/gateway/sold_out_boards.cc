#include "services/gateway/sold_out_boards.h"

#include <tuple>
#include <utility>

#include "libs/core/status.h"
#include "libs/metrics/metrics.h"
#include "libs/tenancy/tenancy.h"
#include "prometheus/counter.h"
#include "spdlog/spdlog.h"

namespace mkt::gateway {
namespace {

namespace cpb = ::marketing::campaigns::v1;
namespace gpb = ::google::protobuf;

prometheus::Counter& RefusedHere() {
  static prometheus::Counter* counter = &prometheus::BuildCounter()
                                             .Name("mkt_gateway_sold_out_refusals_total")
                                             .Help(
                                                 "Claims refused from the gateway's copy of a "
                                                 "campaign's sold-out board (decision 023)")
                                             .Register(metrics::Registry())
                                             .Add({});
  return *counter;
}

}  // namespace

SoldOutBoards::SoldOutBoards(const Clock& clock, size_t max_campaigns)
    : clock_(clock), max_campaigns_(max_campaigns) {}

std::optional<absl::Status> SoldOutBoards::Refusal(const std::string& campaign_id,
                                                   const std::string& idempotency_key,
                                                   const std::string& customer_org_id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(campaign_id);
  if (it == entries_.end() || !it->second.stored || it->second.until <= clock_.Now()) {
    return std::nullopt;
  }
  if (it->second.org_id.empty() || !tenancy::Covers(it->second.org_id, customer_org_id)) {
    return std::nullopt;
  }
  if (it->second.stored->MayContain(idempotency_key)) return std::nullopt;
  RefusedHere().Increment();
  return it->second.refusal;
}

bool SoldOutBoards::ShouldFetch(const std::string& campaign_id, const absl::Status& refusal) {
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(campaign_id);
  if (it == entries_.end()) {
    if (entries_.size() >= max_campaigns_) {
      // Make room from the copies that ended; when none did, this campaign is not copied.
      absl::erase_if(entries_,
                     [&](const auto& e) { return !e.second.fetching && e.second.until <= now; });
      if (entries_.size() >= max_campaigns_) return false;
    }
    it = entries_.try_emplace(campaign_id).first;
  }
  Entry& e = it->second;
  // The latest refusal is kept: once the service marked the campaign, its own sold-out answer
  // rather than the ledger's first one.
  e.refusal = refusal;
  if (e.fetching || (e.stored && e.until > now) || now - e.fetched < kRefetchAfter) return false;
  e.fetching = true;
  e.fetched = now;
  return true;
}

void SoldOutBoards::Store(const std::string& campaign_id, const cpb::SoldOutBoard& board) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(campaign_id);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  e.fetching = false;
  std::optional<BloomFilter> stored =
      board.sold_out() ? BloomFilter::FromBytes(board.filter(), board.filter_hashes())
                       : std::nullopt;
  if (!stored || board.valid_ms() <= 0 || board.org_id().empty()) {
    e.stored.reset();
    return;
  }
  e.stored = std::move(stored);
  e.org_id = board.org_id();
  // Counted from when the board was asked for, so that the copy never outlasts the mark.
  e.until = e.fetched + absl::Milliseconds(board.valid_ms());
}

void SoldOutBoards::Failed(const std::string& campaign_id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(campaign_id);
  if (it != entries_.end()) it->second.fetching = false;
}

FetchBoard FetchBoardFrom(Backend* campaigns) {
  return [campaigns](const std::string& campaign_id, const CallerIdentity& caller,
                     std::function<void(absl::StatusOr<cpb::SoldOutBoard>)> done) {
    static const gpb::MethodDescriptor* method =
        gpb::DescriptorPool::generated_pool()->FindMethodByName(
            "marketing.campaigns.v1.Participations.GetSoldOutBoard");
    if (campaigns == nullptr) return done(Unavailable("backend not configured"));
    cpb::GetSoldOutBoardRequest request;
    request.set_campaign_id(campaign_id);
    auto board = std::make_shared<cpb::SoldOutBoard>();
    // The claim's request id and actor, without its `replayed` flag: the fetch outlives the claim.
    campaigns->CallAsync(*method, request, board.get(),
                         CallerIdentity{.request_id = caller.request_id, .actor = caller.actor},
                         [board, done = std::move(done)](absl::Status status) {
                           if (!status.ok()) return done(std::move(status));
                           done(std::move(*board));
                         });
  };
}

void GuardWithSoldOutBoards(ApiRoute& route, FetchBoard fetch, SoldOutBoards& boards) {
  // The claim as the route built it: the idempotency key is the one the service stores
  // ("<channel id>:<key>", ApiRoute::idempotency_field).
  auto keys = [](const gpb::Message& request) {
    const auto& claim = static_cast<const cpb::ParticipateRequest&>(request);
    return std::tuple<const std::string&, const std::string&, const std::string&>(
        claim.campaign_id(), claim.idempotency_key(), claim.customer_org_id());
  };
  // After the service refused a claim as sold out: fetch the campaign's board, unless a copy
  // stands or a fetch is running.
  auto observe = [fetch = std::move(fetch), &boards](const std::string& campaign_id,
                                                     const ApiCall& call,
                                                     const absl::Status& status) {
    if (ReasonOf(status) != ::marketing::common::v1::STOCK_EXHAUSTED ||
        !boards.ShouldFetch(campaign_id, status)) {
      return;
    }
    fetch(campaign_id, call.caller,
          [&boards, campaign_id](absl::StatusOr<cpb::SoldOutBoard> board) {
            if (!board.ok()) {
              spdlog::warn("sold-out board of campaign {}: {}", campaign_id,
                           board.status().ToString());
              return boards.Failed(campaign_id);
            }
            boards.Store(campaign_id, *board);
          });
  };
  route.invoke = [invoke = std::move(route.invoke), keys, observe, &boards](
                     const ApiCall& call, const gpb::Message& request,
                     gpb::Message* response) -> absl::Status {
    const auto [campaign_id, key, org] = keys(request);
    if (std::optional<absl::Status> refusal = boards.Refusal(campaign_id, key, org)) {
      return *refusal;
    }
    absl::Status status = invoke(call, request, response);
    observe(campaign_id, call, status);
    return status;
  };
  if (!route.invoke_async) return;
  route.invoke_async = [invoke = std::move(route.invoke_async), keys, observe, &boards](
                           const ApiCall& call, const gpb::Message& request, gpb::Message* response,
                           std::function<void(absl::Status)> done) {
    const auto [campaign_id, key, org] = keys(request);
    if (std::optional<absl::Status> refusal = boards.Refusal(campaign_id, key, org)) {
      return done(*std::move(refusal));
    }
    invoke(call, request, response,
           [campaign_id = std::string(campaign_id), &call, observe,
            done = std::move(done)](absl::Status status) {
             observe(campaign_id, call, status);
             done(std::move(status));
           });
  };
}

}  // namespace mkt::gateway
