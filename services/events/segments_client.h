// What the events service reads from the segments service for a batch of events, at once:
// - customer tags (Segments.BatchGetTagValues, decision 032): one call per org and per 1,000
//   customers;
// - campaign audiences (Segments.BatchIsMember, decision 033): one call per audience and per
//   1,000 customers.
// Both are answered from the segments service's in-memory index, each as the asking org may see
// it.
#pragma once

#include <memory>

#include "absl/time/time.h"
#include "services/events/event_types.h"
#include "services/events/rules.h"

namespace grpc {
class Channel;
}

namespace mkt::events {

// Returns CustomerTags reading from the segments service behind `channel`; each call waits at
// most `timeout`. A failed call fails the batch (the consumer retries it).
std::unique_ptr<CustomerTags> NewSegmentTags(std::shared_ptr<grpc::Channel> channel,
                                             absl::Duration timeout);

// Returns Audiences answered by the segments service behind `channel`; each call waits at most
// `timeout`. An unreachable service fails the batch (retried); an audience it refuses (a segment
// archived or deleted since approval: NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED) leaves its
// customers unknown, so the rule rewards none of them, and is logged.
std::unique_ptr<Audiences> NewSegmentAudiences(std::shared_ptr<grpc::Channel> channel,
                                               absl::Duration timeout);

}  // namespace mkt::events
