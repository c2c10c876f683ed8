// mkt-ledger-check HOST:PORT: asks a rewards service to verify the ledger's invariants
// (Ledger.CheckIntegrity, decision 006), prints one "ok|FAIL name: detail" line per check, and
// exits 0 only when every check passes (1 when one fails or the call fails, 2 on bad usage).
#include <iostream>

#include "libs/core/ids.h"
#include "libs/rpc/client.h"
#include "marketing/rewards/v1/ledger.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " HOST:PORT   (the rewards service's gRPC address)\n";
    return 2;
  }
  namespace pb = ::marketing::rewards::v1;
  auto stub = pb::Ledger::NewStub(mkt::rpc::Connect(argv[1]));
  grpc::ClientContext ctx;
  // The checks scan the whole ledger; give a large one time.
  mkt::rpc::PrepareClientContext(ctx, absl::Minutes(10), mkt::NewRequestId());
  pb::CheckIntegrityResponse resp;
  grpc::Status s = stub->CheckIntegrity(&ctx, pb::CheckIntegrityRequest(), &resp);
  if (!s.ok()) {
    std::cerr << "ledger check failed: " << argv[1] << " answered "
              << static_cast<int>(s.error_code()) << ": " << s.error_message() << "\n";
    return 1;
  }
  bool all_ok = resp.ok() && resp.checks_size() > 0;
  for (const pb::IntegrityCheck& check : resp.checks()) {
    std::cout << (check.ok() ? "ok" : "FAIL") << " " << check.name() << ": " << check.detail()
              << "\n";
    all_ok = all_ok && check.ok();
  }
  if (resp.checks_size() == 0) std::cout << "FAIL the service reported no checks\n";
  std::cout << (all_ok ? "ledger is consistent" : "LEDGER INCONSISTENT") << "\n";
  return all_ok ? 0 : 1;
}
