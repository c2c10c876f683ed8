// The gRPC face of benefits (marketing.rewards.v1.Benefits). Channel-facing calls (wallet,
// checkout, QR) come through the gateway on a customer's behalf; template administration and
// the expiry job need an operator (libs/rpc/actor.h) whose org covers the template's.
// Defence in depth behind the gateway (decision 011, "Tenancy of the customer-facing calls"): the
// customer-facing calls require an actor and act only on coupons, redemptions, QR tokens and
// fulfilments in its lineage (its org covers the org holding the coupon, or that org covers its);
// anything else is answered exactly as if it did not exist. IssueCoupon checks the template's
// lineage when the caller names an actor and otherwise trusts the internal caller.
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
