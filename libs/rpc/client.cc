#include "libs/rpc/client.h"

#include <chrono>

#include "libs/rpc/server.h"

namespace mkt::rpc {

std::shared_ptr<grpc::Channel> Connect(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  // Reconnect quickly after a backend restarts instead of backing off for up to two minutes.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

void PrepareClientContext(grpc::ClientContext& context, absl::Duration timeout,
                          std::string_view request_id) {
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  if (!request_id.empty()) context.AddMetadata(kRequestIdKey, std::string(request_id));
}

}  // namespace mkt::rpc
