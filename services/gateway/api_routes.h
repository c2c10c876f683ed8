// The gateway's REST API table: every /v1 (channel) and /admin/v1 (operator) endpoint as one row
// mapping a path to a backend RPC or a local call (events and tracking to Kafka, operators and
// sessions in the gateway's own database). A new endpoint is a new row here; the OpenAPI
// document follows from the table.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "libs/core/ids.h"
#include "libs/kafka/kafka.h"
#include "services/events/event_type_cache.h"
#include "services/gateway/admin_auth.h"
#include "services/gateway/api.h"
#include "services/gateway/backend.h"
#include "services/gateway/sold_out_boards.h"
#include "services/gateway/wallet_reads.h"

namespace mkt::gateway {

// What the rows call. Pointers may be null when the table is built only to be documented.
struct ApiDependencies {
  Backend* campaigns = nullptr;
  Backend* segments = nullptr;
  Backend* channels = nullptr;
  Backend* rewards = nullptr;
  Backend* events = nullptr;
  AdminAuth* admin = nullptr;
  // The audit trail of operator requests, for GET /admin/v1/audit/requests.
  AuditTrail* audit = nullptr;
  // The copy of the event type registry POST /v1/events checks events against (null: none).
  events::EventTypeCache* event_types = nullptr;
  kafka::Publisher* publisher = nullptr;
  const Clock* clock = nullptr;
  // When set, claims are refused from copies of the campaigns' sold-out boards (decision 023).
  SoldOutBoards* sold_out_boards = nullptr;
  // When set, the channel API's wallet reads go through it, gathered into GetWallets calls
  // (decision 029); otherwise each is a GetWallet call.
  WalletReads* wallet_reads = nullptr;
  std::string business_events_topic = "mkt.business-events.v1";
  std::string tracking_topic = "mkt.tracking.v1";
  absl::Duration publish_timeout = absl::Seconds(5);
};

// Adds every API route to `api` (and through it to `router`).
absl::Status RegisterApiRoutes(ApiService& api, Router& router, const ApiDependencies& deps);

}  // namespace mkt::gateway
