// Storage of the channel registry. Every change is stored together with the fact announcing it
// (outbox) in one transaction, so the gateway's caches never miss a change.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "marketing/channels/v1/channels.pb.h"

namespace mkt::channels {

struct ChannelRecord {
  std::string id;
  std::string org_id;
  std::string code;
  std::string display_name;
  bool enabled = true;
  int64_t version = 1;
  std::string sealed_secret;
  absl::Time created_at;
  absl::Time updated_at;
  absl::Time secret_rotated_at;
};

using Change = ::marketing::channels::v1::ChannelChanged::Change;

class ChannelRepository {
 public:
  virtual ~ChannelRepository() = default;

  // Stores a new channel (version 1) and its CREATED fact; ALREADY_EXISTS when the org already
  // has a channel with that code. Returns the stored record (timestamps set).
  virtual absl::StatusOr<ChannelRecord> Insert(const ChannelRecord& record,
                                               const std::string& request_id) = 0;

  virtual absl::StatusOr<ChannelRecord> Get(const std::string& id) = 0;

  // Returns up to `limit` channels with id > `after_id`, of `org_id` (all orgs when empty),
  // in id order.
  virtual absl::StatusOr<std::vector<ChannelRecord>> List(const std::string& org_id,
                                                          const std::string& after_id,
                                                          int limit) = 0;

  // Locks the channel, lets `mutate` change it, and stores it with version + 1 and the `change`
  // fact. When `mutate` returns false nothing is written (e.g. disabling a disabled channel) and
  // the current record is returned. NOT_FOUND for an unknown id.
  virtual absl::StatusOr<ChannelRecord> Update(const std::string& id, Change change,
                                               const std::function<bool(ChannelRecord&)>& mutate,
                                               const std::string& request_id) = 0;
};

// The topic channel changes are published on (key: channel id).
inline constexpr char kChannelChangesTopic[] = "mkt.channel-changes.v1";

// Returns the public view of a record (never the secret).
::marketing::channels::v1::Channel ToProto(const ChannelRecord& record);

}  // namespace mkt::channels
