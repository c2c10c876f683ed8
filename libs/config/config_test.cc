#include "libs/config/config.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mkt::config {
namespace {

struct DemoConfig {
  std::string grpc_address = "127.0.0.1:20061";
  std::string secret_key;
  int64_t pool_size = 8;
  bool metrics_enabled = true;
  double ratio = 0.5;
};

Schema<DemoConfig> DemoSchema() {
  Schema<DemoConfig> s("demo-svc");
  s.Field("grpc_address", &DemoConfig::grpc_address, "gRPC listen address")
      .Secret("secret_key", &DemoConfig::secret_key, "encryption key")
      .Field("pool_size", &DemoConfig::pool_size, "connections")
      .Field("metrics_enabled", &DemoConfig::metrics_enabled, "serve /metrics")
      .Field("ratio", &DemoConfig::ratio, "a ratio");
  return s;
}

class Env {
 public:
  explicit Env(std::vector<std::string> entries) : entries_(std::move(entries)) {
    for (auto& e : entries_) ptrs_.push_back(e.data());
    ptrs_.push_back(nullptr);
  }
  char** get() { return ptrs_.data(); }

 private:
  std::vector<std::string> entries_;
  std::vector<char*> ptrs_;
};

// Each test process writes its own files: ctest runs tests of this binary in parallel.
std::string WriteFile(const std::string& text) {
  static int counter = 0;
  std::string path = ::testing::TempDir() + "/config_test_" + std::to_string(getpid()) + "_" +
                     std::to_string(++counter) + ".json";
  std::ofstream(path) << text;
  return path;
}

TEST(ConfigTest, DefaultsWhenNothingIsGiven) {
  Env env({"PATH=/usr/bin", "MKT_OTHER_POOL_SIZE=zzz"});
  auto cfg = DemoSchema().Load("", env.get());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->grpc_address, "127.0.0.1:20061");
  EXPECT_EQ(cfg->pool_size, 8);
}

TEST(ConfigTest, FileThenEnvironmentOverride) {
  std::string path = WriteFile(R"({"pool_size": 16, "grpc_address": "0.0.0.0:1", "ratio": 0.25,
                                   "metrics_enabled": false})");
  Env env({"MKT_DEMO_SVC_POOL_SIZE=32"});
  auto cfg = DemoSchema().Load(path, env.get());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->pool_size, 32);
  EXPECT_EQ(cfg->grpc_address, "0.0.0.0:1");
  EXPECT_FALSE(cfg->metrics_enabled);
  EXPECT_DOUBLE_EQ(cfg->ratio, 0.25);
}

TEST(ConfigTest, UnknownKeysAndBadValuesAreListedTogether) {
  std::string path = WriteFile(R"({"pool_sise": 16, "metrics_enabled": "maybe"})");
  Env env({"MKT_DEMO_SVC_GRPC_ADRESS=x", "MKT_DEMO_SVC_POOL_SIZE=12abc"});
  auto cfg = DemoSchema().Load(path, env.get());
  ASSERT_FALSE(cfg.ok());
  std::string msg(cfg.status().message());
  EXPECT_NE(msg.find("unknown key \"pool_sise\" in config file"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bad value for \"metrics_enabled\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("environment variable MKT_DEMO_SVC_GRPC_ADRESS"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected an integer, got \"12abc\""), std::string::npos) << msg;
}

TEST(ConfigTest, BrokenFileIsAClearError) {
  Env env({});
  auto missing = DemoSchema().Load("/nonexistent/x.json", env.get());
  EXPECT_NE(std::string(missing.status().message()).find("cannot read config file"),
            std::string::npos);
  auto bad = DemoSchema().Load(WriteFile("{not json"), env.get());
  EXPECT_NE(std::string(bad.status().message()).find("not valid JSON"), std::string::npos);
  auto nested = DemoSchema().Load(WriteFile(R"({"pool_size": {"a": 1}})"), env.get());
  EXPECT_FALSE(nested.ok());
}

TEST(ConfigTest, DescribeNamesEnvVariablesAndHidesSecrets) {
  DemoConfig cfg;
  cfg.secret_key = "topsecret";
  std::string text = DemoSchema().Describe(cfg);
  EXPECT_NE(text.find("MKT_DEMO_SVC_GRPC_ADDRESS"), std::string::npos);
  EXPECT_EQ(text.find("topsecret"), std::string::npos);
  EXPECT_NE(text.find("<secret>"), std::string::npos);
}

TEST(ConfigTest, CommandLine) {
  const char* argv1[] = {"svc", "--config", "a.json", "--describe-config"};
  auto cl = ParseCommandLine(4, const_cast<char**>(argv1));
  ASSERT_TRUE(cl.ok());
  EXPECT_EQ(cl->config_path, "a.json");
  EXPECT_TRUE(cl->describe);
  const char* argv2[] = {"svc", "--port"};
  EXPECT_FALSE(ParseCommandLine(2, const_cast<char**>(argv2)).ok());
}

}  // namespace
}  // namespace mkt::config
