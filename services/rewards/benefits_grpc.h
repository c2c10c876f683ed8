// The gRPC face of benefits (marketing.rewards.v1.Benefits). Channel-facing calls (wallet,
// checkout, QR) come through the gateway on a customer's behalf; template administration and
// the expiry job need an operator (libs/rpc/actor.h) whose org covers the template's.
#pragma once

#include <memory>

#include "grpcpp/grpcpp.h"
#include "libs/core/worker_pool.h"
#include "services/rewards/benefits.h"
#include "services/rewards/fulfilment.h"
#include "services/rewards/payouts.h"

namespace mkt::rewards {

// `fulfilments` may be null (GetFulfilment then answers UNAVAILABLE).
std::unique_ptr<grpc::Service> NewBenefitsGrpcService(Benefits& benefits, Payouts& payouts,
                                                      WorkerPool& pool,
                                                      Fulfilments* fulfilments = nullptr);

}  // namespace mkt::rewards
