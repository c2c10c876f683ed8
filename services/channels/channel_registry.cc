#include "services/channels/channel_registry.h"

#include "google/protobuf/util/time_util.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/core/text.h"

namespace mkt::channels {
namespace {

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 500;
constexpr char kPageTokenPrefix[] = "after:";

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

pb::ChannelWithSecret WithSecret(const ChannelRecord& record, std::string secret) {
  pb::ChannelWithSecret out;
  *out.mutable_channel() = ToProto(record);
  out.set_secret(std::move(secret));
  return out;
}

std::string NewSecret() { return RandomHex(32); }

}  // namespace

absl::Status ValidateCode(const std::string& code) {
  bool ok = code.size() >= 2 && code.size() <= 32 && code[0] >= 'a' && code[0] <= 'z';
  for (char c : code) ok = ok && (IsLowerAlnum(c) || c == '_');
  if (!ok) {
    return InvalidArgument("code",
                           "code must be 2 to 32 characters of lowercase letters, digits and '_', "
                           "starting with a letter (e.g. mobile_banking)");
  }
  return absl::OkStatus();
}

absl::Status ValidateDisplayName(const std::string& name) {
  int n = PrintableUtf8Length(name);
  if (n < 1 || n > 64) {
    return InvalidArgument("display_name",
                           "display_name must be 1 to 64 characters of valid UTF-8 text without "
                           "control characters");
  }
  return absl::OkStatus();
}

absl::Status ValidateOrgId(const std::string& org_id) {
  bool ok = !org_id.empty() && org_id.size() <= 64 && IsLowerAlnum(org_id[0]);
  for (char c : org_id) ok = ok && (IsLowerAlnum(c) || c == '-' || c == '.');
  if (!ok) {
    return InvalidArgument("org_id",
                           "org_id must be 1 to 64 characters of lowercase letters, digits, '-' "
                           "and '.' (e.g. fed, bank-a)");
  }
  return absl::OkStatus();
}

bool IsWellFormedChannelId(const std::string& id) {
  if (id.size() != 19 || id.rfind("ch_", 0) != 0) return false;
  for (size_t i = 3; i < id.size(); ++i) {
    if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'))) return false;
  }
  return true;
}

pb::Channel ToProto(const ChannelRecord& r) {
  using google::protobuf::util::TimeUtil;
  pb::Channel c;
  c.set_id(r.id);
  c.set_code(r.code);
  c.set_display_name(r.display_name);
  c.set_org_id(r.org_id);
  c.set_enabled(r.enabled);
  c.set_version(r.version);
  *c.mutable_created_at() = TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(r.created_at));
  *c.mutable_updated_at() = TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(r.updated_at));
  *c.mutable_secret_rotated_at() =
      TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(r.secret_rotated_at));
  return c;
}

absl::StatusOr<ChannelRecord> ChannelRegistry::Load(const std::string& id) {
  if (!IsWellFormedChannelId(id)) return NotFound("no channel with id \"" + id + "\"");
  return repository_.Get(id);
}

absl::StatusOr<pb::ChannelWithSecret> ChannelRegistry::Create(
    const pb::CreateChannelRequest& request, const std::string& request_id) {
  MKT_RETURN_IF_ERROR(ValidateCode(request.code()));
  MKT_RETURN_IF_ERROR(ValidateDisplayName(request.display_name()));
  MKT_RETURN_IF_ERROR(ValidateOrgId(request.org_id()));
  ChannelRecord record;
  record.id = "ch_" + RandomHex(8);
  record.org_id = request.org_id();
  record.code = request.code();
  record.display_name = request.display_name();
  std::string secret = NewSecret();
  record.sealed_secret = secret_box_.Seal(secret, record.id);
  MKT_ASSIGN_OR_RETURN(ChannelRecord stored, repository_.Insert(record, request_id));
  return WithSecret(stored, std::move(secret));
}

absl::StatusOr<pb::Channel> ChannelRegistry::Get(const pb::GetChannelRequest& request) {
  MKT_ASSIGN_OR_RETURN(ChannelRecord record, Load(request.id()));
  return ToProto(record);
}

absl::StatusOr<pb::ListChannelsResponse> ChannelRegistry::List(
    const pb::ListChannelsRequest& request) {
  if (!request.org_id().empty()) MKT_RETURN_IF_ERROR(ValidateOrgId(request.org_id()));
  int size = request.page().page_size();
  if (size < 0 || size > kMaxPageSize) {
    return InvalidArgument("page.page_size", "page_size must be between 0 and 500");
  }
  if (size == 0) size = kDefaultPageSize;
  std::string after;
  const std::string& token = request.page().page_token();
  if (!token.empty()) {
    if (token.rfind(kPageTokenPrefix, 0) != 0 ||
        !IsWellFormedChannelId(token.substr(sizeof(kPageTokenPrefix) - 1))) {
      return InvalidArgument("page.page_token",
                             "page_token is not one this service issued; start again without it");
    }
    after = token.substr(sizeof(kPageTokenPrefix) - 1);
  }
  MKT_ASSIGN_OR_RETURN(auto records, repository_.List(request.org_id(), after, size + 1));
  pb::ListChannelsResponse out;
  for (size_t i = 0; i < records.size() && static_cast<int>(i) < size; ++i) {
    *out.add_channels() = ToProto(records[i]);
  }
  if (static_cast<int>(records.size()) > size) {
    out.mutable_page()->set_next_page_token(kPageTokenPrefix + records[size - 1].id);
  }
  return out;
}

absl::StatusOr<pb::Channel> ChannelRegistry::Update(const pb::UpdateChannelRequest& request,
                                                    const std::string& request_id) {
  MKT_RETURN_IF_ERROR(ValidateDisplayName(request.display_name()));
  if (!IsWellFormedChannelId(request.id()))
    return NotFound("no channel with id \"" + request.id() + "\"");
  MKT_ASSIGN_OR_RETURN(ChannelRecord record, repository_.Update(
                                                 request.id(), pb::ChannelChanged::UPDATED,
                                                 [&](ChannelRecord& r) {
                                                   if (r.display_name == request.display_name())
                                                     return false;
                                                   r.display_name = request.display_name();
                                                   return true;
                                                 },
                                                 request_id));
  return ToProto(record);
}

absl::StatusOr<pb::Channel> ChannelRegistry::SetEnabled(const std::string& id, bool enabled,
                                                        const std::string& request_id) {
  if (!IsWellFormedChannelId(id)) return NotFound("no channel with id \"" + id + "\"");
  MKT_ASSIGN_OR_RETURN(ChannelRecord record,
                       repository_.Update(
                           id, enabled ? pb::ChannelChanged::ENABLED : pb::ChannelChanged::DISABLED,
                           [&](ChannelRecord& r) {
                             if (r.enabled == enabled) return false;
                             r.enabled = enabled;
                             return true;
                           },
                           request_id));
  return ToProto(record);
}

absl::StatusOr<pb::ChannelWithSecret> ChannelRegistry::RotateSecret(
    const pb::RotateSecretRequest& request, const std::string& request_id) {
  if (!IsWellFormedChannelId(request.id()))
    return NotFound("no channel with id \"" + request.id() + "\"");
  std::string secret = NewSecret();
  MKT_ASSIGN_OR_RETURN(ChannelRecord record, repository_.Update(
                                                 request.id(), pb::ChannelChanged::SECRET_ROTATED,
                                                 [&](ChannelRecord& r) {
                                                   r.sealed_secret = secret_box_.Seal(secret, r.id);
                                                   return true;
                                                 },
                                                 request_id));
  return WithSecret(record, std::move(secret));
}

absl::StatusOr<pb::ChannelCredential> ChannelRegistry::GetCredential(
    const pb::GetCredentialRequest& request) {
  MKT_ASSIGN_OR_RETURN(ChannelRecord record, Load(request.id()));
  absl::StatusOr<std::string> secret = secret_box_.Open(record.sealed_secret, record.id);
  if (!secret.ok()) {
    return Internal("the secret of channel " + record.id +
                    " cannot be decrypted: is the service running with the key it was created "
                    "with?");
  }
  pb::ChannelCredential out;
  out.set_channel_id(record.id);
  out.set_org_id(record.org_id);
  out.set_enabled(record.enabled);
  out.set_secret(*std::move(secret));
  out.set_version(record.version);
  out.set_code(record.code);
  return out;
}

}  // namespace mkt::channels
