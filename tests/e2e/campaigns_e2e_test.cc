// mkt-campaigns as its own process, on the real clock, against a fresh database and the real
// Kafka: configured from the environment (catalog file, a short scheduler interval), it takes a
// campaign through maker-checker to SCHEDULED, starts and ends it by itself at the window's
// edges, publishes each change on mkt.campaign-changes.v1, serves /metrics, and exits 0 on
// SIGTERM.
#include <csignal>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/rpc/client.h"
#include "libs/testing/testing.h"
#include "services/campaigns/campaigns_test_client.h"
#include "services/campaigns/test_configs.h"

namespace mkt::campaigns {
namespace {

using tenancy::Actor;
using tenancy::Role;

TEST(CampaignsE2eTest, ACampaignGoesOnlineAndOfflineByItselfAndEveryChangeIsPublished) {
  testing::TestDatabase database;
  const std::string bank = "bank-" + RandomHex(3) + "e";
  const std::string catalog = ::testing::TempDir() + "campaigns_catalog_" + RandomHex(4) + ".json";
  {
    std::ofstream out(catalog);
    out << absl::StrReplaceAll(test::kReferenceJson, {{"\"bank-a\"", "\"" + bank + "\""}});
  }
  const int port = testing::FreePort();
  const int metrics_port = testing::FreePort();
  const std::string log = ::testing::TempDir() + "campaigns_e2e_" + RandomHex(4) + ".log";
  testing::ChildProcess process(
      {testing::BinDir() + "/services/campaigns/mkt-campaigns"},
      {{"MKT_CAMPAIGNS_PG_DSN", database.dsn()},
       {"MKT_CAMPAIGNS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
       {"MKT_CAMPAIGNS_GRPC_ADDRESS", absl::StrCat("127.0.0.1:", port)},
       {"MKT_CAMPAIGNS_METRICS_ADDRESS", absl::StrCat("127.0.0.1:", metrics_port)},
       {"MKT_CAMPAIGNS_SCHEDULER_INTERVAL_MS", "200"},
       {"MKT_CAMPAIGNS_REFERENCE_SOURCE", "catalog"},
       {"MKT_CAMPAIGNS_CATALOG_FILE", catalog},
       {"MKT_CAMPAIGNS_LOG_FORMAT", "json"}},
      log);
  ASSERT_TRUE(testing::WaitForPort(port, absl::Seconds(60))) << testing::Tail(log, 40);
  ASSERT_TRUE(
      testing::WaitForGrpcHealth(rpc::Connect(absl::StrCat("127.0.0.1:", port)), absl::Seconds(30)))
      << testing::Tail(log, 40);
  test::CampaignsClient client(absl::StrCat("127.0.0.1:", port));
  const absl::Time since = absl::Now() - absl::Seconds(2);

  const Actor root{"fed", "root", {Role::kAdmin}};
  const Actor planner{bank, "alice", {Role::kPlanner}};
  const Actor approver{bank, "bob", {Role::kApprover}};
  ASSERT_TRUE(client.CreateOrg(root, bank, "E2E bank").ok());

  // Whole seconds: the window is stored at second precision by test::Ts.
  const absl::Time start = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()) + 3);
  const absl::Time end = start + absl::Seconds(3);
  auto created = client.Create(planner, test::CompleteCoupon("E2E coupons", start, end));
  ASSERT_TRUE(created.ok()) << created.status();
  const std::string id = created->id();
  ASSERT_TRUE(client.Submit(planner, id).ok());
  EXPECT_EQ(client.Approve(planner, id).status().code(), absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(client.Approve(approver, id).ok());
  auto published = client.Publish(planner, id);
  ASSERT_TRUE(published.ok()) << published.status();
  EXPECT_EQ(published->state(), pb::SCHEDULED);

  auto wait_for = [&](pb::CampaignState state, absl::Time by) {
    while (absl::Now() < by) {
      auto c = client.Get(approver, id);
      if (c.ok() && c->state() == state) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  };
  ASSERT_TRUE(wait_for(pb::ONLINE, end)) << "not online before the window's end";
  EXPECT_GE(absl::Now(), start);
  ASSERT_TRUE(wait_for(pb::ENDED, end + absl::Seconds(10))) << testing::Tail(log, 20);

  // The change events of this campaign, in revision order: published, started, ended.
  auto envelopes = test::ReadChanges({bank}, since, 3, absl::Seconds(30));
  std::vector<std::pair<int64_t, pb::ChangeKind>> changes;
  for (const auto& envelope : envelopes) {
    pb::CampaignChanged change;
    ASSERT_TRUE(envelope.payload().UnpackTo(&change));
    if (change.campaign_id() != id) continue;
    EXPECT_EQ(change.config().name(), "E2E coupons");
    EXPECT_EQ(change.version(), 1);
    changes.emplace_back(change.revision(), change.kind());
  }
  std::sort(changes.begin(), changes.end());
  ASSERT_EQ(changes.size(), 3u);
  EXPECT_EQ(changes[0].second, pb::PUBLISHED);
  EXPECT_EQ(changes[1].second, pb::STARTED);
  EXPECT_EQ(changes[2].second, pb::ENDED_CHANGE);

  EXPECT_TRUE(testing::WaitForHttp(metrics_port, "/metrics", absl::Seconds(5)));
  EXPECT_EQ(process.Kill(SIGTERM), 0) << testing::Tail(log, 20);
}

}  // namespace
}  // namespace mkt::campaigns
