#include "services/channels/channels_grpc.h"

#include "libs/rpc/server.h"
#include "marketing/channels/v1/channels.grpc.pb.h"

namespace mkt::channels {
namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

class ChannelRegistryService final : public pb::ChannelRegistry::CallbackService {
 public:
  ChannelRegistryService(ChannelRegistry& registry, WorkerPool& pool)
      : registry_(registry), pool_(pool) {}

  ServerUnaryReactor* CreateChannel(CallbackServerContext* ctx, const pb::CreateChannelRequest* req,
                                    pb::ChannelWithSecret* resp) override {
    return Run(ctx, resp, [=, this] { return registry_.Create(*req, rpc::RequestIdOf(*ctx)); });
  }
  ServerUnaryReactor* GetChannel(CallbackServerContext* ctx, const pb::GetChannelRequest* req,
                                 pb::Channel* resp) override {
    return Run(ctx, resp, [=, this] { return registry_.Get(*req); });
  }
  ServerUnaryReactor* ListChannels(CallbackServerContext* ctx, const pb::ListChannelsRequest* req,
                                   pb::ListChannelsResponse* resp) override {
    return Run(ctx, resp, [=, this] { return registry_.List(*req); });
  }
  ServerUnaryReactor* UpdateChannel(CallbackServerContext* ctx, const pb::UpdateChannelRequest* req,
                                    pb::Channel* resp) override {
    return Run(ctx, resp, [=, this] { return registry_.Update(*req, rpc::RequestIdOf(*ctx)); });
  }
  ServerUnaryReactor* DisableChannel(CallbackServerContext* ctx,
                                     const pb::SetChannelEnabledRequest* req,
                                     pb::Channel* resp) override {
    return Run(ctx, resp, [=, this] {
      return registry_.SetEnabled(req->id(), false, rpc::RequestIdOf(*ctx));
    });
  }
  ServerUnaryReactor* EnableChannel(CallbackServerContext* ctx,
                                    const pb::SetChannelEnabledRequest* req,
                                    pb::Channel* resp) override {
    return Run(ctx, resp,
               [=, this] { return registry_.SetEnabled(req->id(), true, rpc::RequestIdOf(*ctx)); });
  }
  ServerUnaryReactor* RotateSecret(CallbackServerContext* ctx, const pb::RotateSecretRequest* req,
                                   pb::ChannelWithSecret* resp) override {
    return Run(ctx, resp,
               [=, this] { return registry_.RotateSecret(*req, rpc::RequestIdOf(*ctx)); });
  }
  ServerUnaryReactor* GetCredential(CallbackServerContext* ctx, const pb::GetCredentialRequest* req,
                                    pb::ChannelCredential* resp) override {
    return Run(ctx, resp, [=, this] { return registry_.GetCredential(*req); });
  }

 private:
  template <class Response, class Call>
  ServerUnaryReactor* Run(CallbackServerContext* ctx, Response* response, Call call) {
    return rpc::RunBlockingInto(ctx, pool_, response, std::move(call));
  }

  ChannelRegistry& registry_;
  WorkerPool& pool_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewChannelRegistryService(ChannelRegistry& registry,
                                                         WorkerPool& pool) {
  return std::make_unique<ChannelRegistryService>(registry, pool);
}

}  // namespace mkt::channels
