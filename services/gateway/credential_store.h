// Channel credentials for request authentication: where they come from (the channel registry,
// over gRPC) and the in-memory cache in front of it. Entries live for a TTL; the channel-changes
// listener invalidates an entry as soon as its channel changes, so the TTL is only a safety net
// for a missed message. Unknown channel ids are remembered briefly so a caller repeating a bad id
// does not reach the registry on every request.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace mkt::gateway {

struct Credential {
  std::string channel_id;
  std::string org_id;
  std::string secret;
  bool enabled = false;
  // Increases with every change of the channel.
  int64_t version = 0;
  // The channel's code (mobile_banking, wecom, ...); empty from a registry too old to send it.
  std::string code;
};

// Where credentials come from.
class CredentialSource {
 public:
  virtual ~CredentialSource() = default;
  // Returns the channel's credential; NOT_FOUND when no such channel exists, UNAVAILABLE or
  // DEADLINE_EXCEEDED when the source cannot answer now.
  virtual absl::StatusOr<Credential> Fetch(std::string_view channel_id,
                                           std::string_view request_id) = 0;
};

// Asks the channels service (ChannelRegistry.GetCredential) with a deadline.
class GrpcCredentialSource final : public CredentialSource {
 public:
  GrpcCredentialSource(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout);
  ~GrpcCredentialSource() override;

  absl::StatusOr<Credential> Fetch(std::string_view channel_id,
                                   std::string_view request_id) override;

 private:
  struct Stub;
  std::unique_ptr<Stub> stub_;
  absl::Duration timeout_;
};

struct CredentialStoreOptions {
  // How long a fetched credential is used without asking again.
  absl::Duration ttl = absl::Seconds(60);
  // How long an unknown channel id is answered CHANNEL_UNKNOWN without asking again.
  absl::Duration negative_ttl = absl::Seconds(5);
  // Above this many entries, expired ones are dropped, then unknown ids are forgotten, so
  // requests with made-up channel ids cannot grow the cache without bound.
  size_t max_entries = 100000;
};

class CredentialStore {
 public:
  CredentialStore(CredentialSource& source, const Clock& clock,
                  CredentialStoreOptions options = {});

  // Returns the channel's credential, from the cache or the source. Errors carry the reason
  // the caller answers with: CHANNEL_UNKNOWN (401) for a channel that does not exist,
  // DEPENDENCY_UNAVAILABLE (503) or DEADLINE_EXCEEDED (504) when the source cannot answer.
  absl::StatusOr<Credential> Lookup(std::string_view channel_id, std::string_view request_id);

  // Returns what Lookup would answer from the cache alone, or nullopt when it would have to ask
  // the source (nothing cached, or the entry expired). Never blocks on the source.
  std::optional<absl::StatusOr<Credential>> Cached(std::string_view channel_id) const;

  // Forgets what is cached about the channel (known or unknown); the next lookup asks the
  // source. A fetch that was in flight when this was called is not cached.
  void Invalidate(std::string_view channel_id);

  // Caches `credential` unless a newer version of it is cached already.
  void Put(const Credential& credential);

  // Returns how many entries (known and unknown channels) are cached.
  size_t size() const;

 private:
  struct Entry {
    // Unset for an unknown channel.
    std::optional<Credential> credential;
    absl::Time expires_at;
  };

  // The fresh cached answer for `channel_id`, as Cached.
  std::optional<absl::StatusOr<Credential>> FindFresh(std::string_view channel_id,
                                                      absl::Time now) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Store(std::string channel_id, Entry entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MakeRoom(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  CredentialSource& source_;
  const Clock& clock_;
  const CredentialStoreOptions options_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  // Bumped by every Invalidate; a fetch that saw another value when it started is not cached,
  // so a credential read just before a change cannot outlive the change's invalidation.
  uint64_t invalidations_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace mkt::gateway
