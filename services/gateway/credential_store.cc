#include "services/gateway/credential_store.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "libs/core/status.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "marketing/channels/v1/channels.grpc.pb.h"

namespace mkt::gateway {
namespace {

namespace pb = ::marketing::common::v1;
namespace channels_pb = ::marketing::channels::v1;

absl::Status ChannelUnknown() {
  return Error(absl::StatusCode::kUnauthenticated, pb::CHANNEL_UNKNOWN,
               "no channel is registered under this X-Channel-Id");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// GrpcCredentialSource

struct GrpcCredentialSource::Stub {
  std::unique_ptr<channels_pb::ChannelRegistry::Stub> registry;
};

GrpcCredentialSource::GrpcCredentialSource(std::shared_ptr<grpc::Channel> channel,
                                           absl::Duration timeout)
    : stub_(std::make_unique<Stub>(Stub{channels_pb::ChannelRegistry::NewStub(channel)})),
      timeout_(timeout) {}

GrpcCredentialSource::~GrpcCredentialSource() = default;

absl::StatusOr<Credential> GrpcCredentialSource::Fetch(std::string_view channel_id,
                                                       std::string_view request_id) {
  channels_pb::GetCredentialRequest request;
  request.set_id(std::string(channel_id));
  channels_pb::ChannelCredential response;
  grpc::ClientContext context;
  rpc::PrepareClientContext(context, timeout_, request_id);
  grpc::Status status = stub_->registry->GetCredential(&context, request, &response);
  if (!status.ok()) return rpc::FromGrpcStatus(status);
  if (response.secret().empty()) {
    return Internal("the channel registry returned a credential without a secret");
  }
  Credential credential;
  credential.channel_id = response.channel_id().empty() ? std::string(channel_id)
                                                        : std::move(*response.mutable_channel_id());
  credential.org_id = std::move(*response.mutable_org_id());
  credential.secret = std::move(*response.mutable_secret());
  credential.enabled = response.enabled();
  credential.version = response.version();
  credential.code = std::move(*response.mutable_code());
  return credential;
}

// ---------------------------------------------------------------------------------------------
// CredentialStore

CredentialStore::CredentialStore(CredentialSource& source, const Clock& clock,
                                 CredentialStoreOptions options)
    : source_(source), clock_(clock), options_(options) {}

std::optional<absl::StatusOr<Credential>> CredentialStore::FindFresh(std::string_view channel_id,
                                                                     absl::Time now) const {
  auto it = entries_.find(AsAbsl(channel_id));
  if (it == entries_.end() || it->second.expires_at <= now) return std::nullopt;
  if (!it->second.credential) return absl::StatusOr<Credential>(ChannelUnknown());
  return absl::StatusOr<Credential>(*it->second.credential);
}

std::optional<absl::StatusOr<Credential>> CredentialStore::Cached(
    std::string_view channel_id) const {
  const absl::Time now = clock_.Now();
  absl::ReaderMutexLock lock(&mu_);
  return FindFresh(channel_id, now);
}

absl::StatusOr<Credential> CredentialStore::Lookup(std::string_view channel_id,
                                                   std::string_view request_id) {
  const absl::Time now = clock_.Now();
  uint64_t invalidations_at_start;
  {
    absl::MutexLock lock(&mu_);
    if (auto fresh = FindFresh(channel_id, now)) return *std::move(fresh);
    invalidations_at_start = invalidations_;
  }

  absl::StatusOr<Credential> fetched = source_.Fetch(channel_id, request_id);
  const absl::StatusCode code = fetched.status().code();
  if (fetched.ok() || code == absl::StatusCode::kNotFound ||
      code == absl::StatusCode::kInvalidArgument) {
    Entry entry;
    if (fetched.ok()) {
      entry.credential = *fetched;
      entry.expires_at = now + options_.ttl;
    } else {
      entry.expires_at = now + options_.negative_ttl;
    }
    absl::MutexLock lock(&mu_);
    if (invalidations_ == invalidations_at_start) Store(std::string(channel_id), std::move(entry));
  }
  if (fetched.ok()) return fetched;

  const std::string why(fetched.status().message());
  switch (code) {
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kInvalidArgument:
      return ChannelUnknown();
    case absl::StatusCode::kUnavailable:
      return Error(absl::StatusCode::kUnavailable, pb::DEPENDENCY_UNAVAILABLE,
                   absl::StrCat("channel registry unavailable: ", why));
    case absl::StatusCode::kDeadlineExceeded:
      return Error(absl::StatusCode::kDeadlineExceeded, pb::DEADLINE_EXCEEDED,
                   absl::StrCat("channel registry did not answer in time: ", why));
    default:
      // Anything else (e.g. PERMISSION_DENIED between services) is our fault, not the caller's.
      return Internal(absl::StrCat("credential lookup failed: ", fetched.status().ToString()));
  }
}

void CredentialStore::Invalidate(std::string_view channel_id) {
  absl::MutexLock lock(&mu_);
  entries_.erase(AsAbsl(channel_id));
  ++invalidations_;
}

void CredentialStore::Put(const Credential& credential) {
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(credential.channel_id);
  if (it != entries_.end() && it->second.credential &&
      it->second.credential->version > credential.version) {
    return;
  }
  Store(credential.channel_id, Entry{credential, now + options_.ttl});
}

size_t CredentialStore::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

void CredentialStore::Store(std::string channel_id, Entry entry) {
  if (entries_.size() >= options_.max_entries && !entries_.contains(channel_id)) {
    MakeRoom(clock_.Now());
  }
  entries_.insert_or_assign(std::move(channel_id), std::move(entry));
}

void CredentialStore::MakeRoom(absl::Time now) {
  absl::erase_if(entries_, [now](const auto& kv) { return kv.second.expires_at <= now; });
  if (entries_.size() < options_.max_entries) return;
  absl::erase_if(entries_, [](const auto& kv) { return !kv.second.credential.has_value(); });
  if (entries_.size() < options_.max_entries) return;
  entries_.clear();
}

}  // namespace mkt::gateway
