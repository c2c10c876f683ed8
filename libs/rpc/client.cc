#include "libs/rpc/client.h"

#include <grpcpp/generic/generic_stub.h>

#include <chrono>

#include "google/protobuf/unknown_field_set.h"
#include "libs/core/status.h"

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

namespace {

// Field numbers of grpc/reflection/v1alpha/reflection.proto. The generated classes live inside
// libgrpc++_reflection and cannot be linked a second time, so the messages are built and read
// as raw protobuf fields.
constexpr int kRequestListServices = 7;      // ServerReflectionRequest.list_services
constexpr int kResponseListServices = 6;     // ServerReflectionResponse.list_services_response
constexpr int kListServiceResponseItem = 1;  // ListServiceResponse.service
constexpr int kServiceResponseName = 1;      // ServiceResponse.name

std::string ByteBufferToString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ListServices(const std::shared_ptr<grpc::Channel>& channel,
                                                      absl::Duration timeout) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  // Runs one step of the call and waits for it.
  auto step = [&](auto&& start) {
    start();
    return cq.Next(&tag, &ok) && ok;
  };
  google::protobuf::UnknownFieldSet request;
  request.AddLengthDelimited(kRequestListServices, "");
  std::string request_bytes;
  request.SerializeToString(&request_bytes);
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer out(&slice, 1);
  grpc::ByteBuffer in;
  bool exchanged = step([&] { call->StartCall(reinterpret_cast<void*>(1)); }) &&
                   step([&] { call->Write(out, reinterpret_cast<void*>(2)); }) &&
                   step([&] { call->Read(&in, reinterpret_cast<void*>(3)); });
  step([&] { call->WritesDone(reinterpret_cast<void*>(4)); });
  grpc::Status status;
  step([&] { call->Finish(&status, reinterpret_cast<void*>(5)); });
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (!exchanged) {
    return Unavailable("reflection call failed: " +
                       (status.ok() ? std::string("stream closed") : status.error_message()));
  }
  google::protobuf::UnknownFieldSet response;
  if (!response.ParseFromString(ByteBufferToString(in))) {
    return Internal("reflection response does not parse");
  }
  std::vector<std::string> names;
  for (int i = 0; i < response.field_count(); ++i) {
    const auto& field = response.field(i);
    if (field.number() != kResponseListServices) continue;
    google::protobuf::UnknownFieldSet list;
    if (!list.ParseFromString(field.length_delimited())) continue;
    for (int j = 0; j < list.field_count(); ++j) {
      if (list.field(j).number() != kListServiceResponseItem) continue;
      google::protobuf::UnknownFieldSet item;
      if (!item.ParseFromString(list.field(j).length_delimited())) continue;
      for (int k = 0; k < item.field_count(); ++k) {
        if (item.field(k).number() == kServiceResponseName) {
          names.push_back(item.field(k).length_delimited());
        }
      }
    }
  }
  return names;
}

}  // namespace mkt::rpc
