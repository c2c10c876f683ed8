// The channel registry's rules: validation, id and secret generation, secret encryption, and
// the lifecycle (create, update, disable/enable, rotate). Storage is behind ChannelRepository.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "libs/auth/crypto.h"
#include "marketing/channels/v1/channels.pb.h"
#include "services/channels/channel_repository.h"

namespace mkt::channels {

namespace pb = ::marketing::channels::v1;

class ChannelRegistry {
 public:
  ChannelRegistry(ChannelRepository& repository, auth::SecretBox secret_box)
      : repository_(repository), secret_box_(std::move(secret_box)) {}

  // Creates an enabled channel and returns it with its secret (the only time it is shown).
  absl::StatusOr<pb::ChannelWithSecret> Create(const pb::CreateChannelRequest& request,
                                               const std::string& request_id);
  absl::StatusOr<pb::Channel> Get(const pb::GetChannelRequest& request);
  absl::StatusOr<pb::ListChannelsResponse> List(const pb::ListChannelsRequest& request);
  absl::StatusOr<pb::Channel> Update(const pb::UpdateChannelRequest& request,
                                     const std::string& request_id);
  // Disabling a disabled channel (or enabling an enabled one) changes nothing and succeeds.
  absl::StatusOr<pb::Channel> SetEnabled(const std::string& id, bool enabled,
                                         const std::string& request_id);
  // Replaces the secret; the old one stops working as soon as the gateway sees the change.
  absl::StatusOr<pb::ChannelWithSecret> RotateSecret(const pb::RotateSecretRequest& request,
                                                     const std::string& request_id);
  // Returns what the gateway needs to verify signatures, secret included (internal callers only).
  absl::StatusOr<pb::ChannelCredential> GetCredential(const pb::GetCredentialRequest& request);

 private:
  absl::StatusOr<ChannelRecord> Load(const std::string& id);

  ChannelRepository& repository_;
  auth::SecretBox secret_box_;
};

// Validation shared with callers that want to check input early.
absl::Status ValidateCode(const std::string& code);
absl::Status ValidateDisplayName(const std::string& name);
absl::Status ValidateOrgId(const std::string& org_id);
bool IsWellFormedChannelId(const std::string& id);

}  // namespace mkt::channels
