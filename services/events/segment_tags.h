// The customer tags of the segments service, read for a batch of events at once
// (Segments.BatchGetTagValues, decision 032): one call per org and per 1,000 customers, answered
// from the segments service's in-memory index. Each bank's events see only the tags and customers
// the segments service lets that bank see.
#pragma once

#include <memory>

#include "absl/time/time.h"
#include "services/events/event_types.h"

namespace grpc {
class Channel;
}

namespace mkt::events {

// Returns CustomerTags reading from the segments service behind `channel`; each call waits at
// most `timeout`. A failed call fails the batch (the consumer retries it).
std::unique_ptr<CustomerTags> NewSegmentTags(std::shared_ptr<grpc::Channel> channel,
                                             absl::Duration timeout);

}  // namespace mkt::events
