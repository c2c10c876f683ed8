#include "services/rewards/batcher.h"

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"

namespace mkt::rewards {
namespace {

using ::testing::Each;
using ::testing::ElementsAre;

using ApplyFn =
    std::function<absl::StatusOr<std::vector<BatchResult>>(const std::vector<LinkedBatch>&)>;

// A store whose Apply answers each batch with one transfer carrying the batch's first spec id
// (so a caller can tell its own answer), records the sizes of the calls, and can be scripted.
class ScriptedStore final : public LedgerStore {
 public:
  absl::StatusOr<std::vector<BatchResult>> Apply(const std::vector<LinkedBatch>& batches) override {
    int call;
    ApplyFn script;
    {
      std::lock_guard<std::mutex> lock(mu_);
      call = static_cast<int>(call_sizes_.size());
      call_sizes_.push_back(static_cast<int>(batches.size()));
      std::vector<std::string> ids;
      for (const auto& b : batches) ids.push_back(b.batch_id);
      call_batches_.push_back(ids);
      script = scripts_.count(call) ? scripts_[call] : default_script_;
    }
    cv_.notify_all();
    if (script) return script(batches);
    return Echo(batches);
  }

  static std::vector<BatchResult> Echo(const std::vector<LinkedBatch>& batches) {
    std::vector<BatchResult> out;
    for (const auto& b : batches) {
      pb::Transfer t;
      t.set_id(b.transfers.empty() ? "" : b.transfers[0].id());
      t.set_batch_id(b.batch_id);
      out.push_back(AppliedBatch{.transfers = {t}});
    }
    return out;
  }

  // Scripts the `call`-th Apply (0-based); the others echo (or run SetDefault's script).
  void Script(int call, ApplyFn fn) {
    std::lock_guard<std::mutex> lock(mu_);
    scripts_[call] = std::move(fn);
  }
  void SetDefault(ApplyFn fn) {
    std::lock_guard<std::mutex> lock(mu_);
    default_script_ = std::move(fn);
  }
  // Waits until Apply has been entered `n` times.
  void WaitForCalls(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return static_cast<int>(call_sizes_.size()) >= n; });
  }
  std::vector<int> call_sizes() {
    std::lock_guard<std::mutex> lock(mu_);
    return call_sizes_;
  }
  std::vector<std::vector<std::string>> call_batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return call_batches_;
  }

  absl::StatusOr<pb::Transfer> ResolvePending(const std::string&, const std::string&,
                                              bool) override {
    return absl::UnimplementedError("not in this test");
  }
  absl::StatusOr<int> VoidTimedOutPending(absl::Time, int) override { return 0; }
  absl::StatusOr<pb::RunExpiryResponse> ExpireLots(absl::Time, int) override {
    return pb::RunExpiryResponse();
  }
  absl::StatusOr<pb::Account> GetAccount(const pb::AccountRef&) override {
    return absl::UnimplementedError("not in this test");
  }
  absl::StatusOr<std::vector<pb::Account>> GetCustomerAccounts(const std::string&,
                                                               const std::string&) override {
    return std::vector<pb::Account>{};
  }
  absl::StatusOr<pb::ListExpiringLotsResponse> ListExpiringLots(const std::string&,
                                                                const std::string&,
                                                                absl::Time) override {
    return pb::ListExpiringLotsResponse();
  }
  absl::StatusOr<pb::ListHistoryResponse> ListHistory(const std::string&, const std::string&,
                                                      const std::string&, int) override {
    return pb::ListHistoryResponse();
  }
  absl::StatusOr<pb::GetStatementResponse> GetStatement(const pb::AccountRef&, absl::Time,
                                                        absl::Time, const std::string&,
                                                        int) override {
    return pb::GetStatementResponse();
  }
  absl::StatusOr<std::vector<pb::Transfer>> GetBatch(const std::string&) override {
    return std::vector<pb::Transfer>{};
  }
  absl::StatusOr<pb::Transfer> GetTransfer(const std::string&) override {
    return absl::UnimplementedError("not in this test");
  }
  absl::StatusOr<std::vector<LotExpiry>> GetLotExpiries(const std::string&) override {
    return std::vector<LotExpiry>{};
  }
  absl::StatusOr<pb::CheckIntegrityResponse> CheckIntegrity() override {
    return pb::CheckIntegrityResponse();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> call_sizes_;
  std::vector<std::vector<std::string>> call_batches_;
  std::map<int, ApplyFn> scripts_;
  ApplyFn default_script_;
};

// A one-shot gate a scripted Apply waits on, to hold a writer inside the store.
class Gate {
 public:
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Counts down callbacks; Wait returns when all arrived.
class Latch {
 public:
  explicit Latch(int n) : n_(n) {}
  void CountDown() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--n_ == 0) cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return n_ <= 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_;
};

LinkedBatch Batch(const std::string& id) {
  pb::TransferSpec spec;
  spec.set_id(id + ":leg");
  return LinkedBatch{.batch_id = id, .transfers = {spec}};
}

// Holds the batcher's only writer inside the first Apply until the returned gate opens.
std::shared_ptr<Gate> Plug(ScriptedStore& store, GrantBatcher& batcher, Latch* plug_done) {
  auto gate = std::make_shared<Gate>();
  store.Script(0, [gate](const std::vector<LinkedBatch>& batches) {
    gate->Wait();
    return absl::StatusOr<std::vector<BatchResult>>(ScriptedStore::Echo(batches));
  });
  batcher.Submit(Batch("plug"), [plug_done](BatchResult r) {
    EXPECT_TRUE(r.ok()) << r.status();
    plug_done->CountDown();
  });
  store.WaitForCalls(1);
  return gate;
}

TEST(GrantBatcherTest, ManyThreadsEachGetTheirOwnResultExactlyOnceAndRequestsAreGrouped) {
  ScriptedStore store;
  // A transaction takes a moment, as a real commit does; meanwhile requests pile up.
  store.SetDefault([](const std::vector<LinkedBatch>& batches) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return absl::StatusOr<std::vector<BatchResult>>(ScriptedStore::Echo(batches));
  });
  constexpr int kThreads = 8;
  constexpr int kPerThread = 150;
  constexpr int kTotal = kThreads * kPerThread;
  std::vector<std::atomic<int>> calls(kTotal);
  std::atomic<int> wrong{0};
  std::atomic<int> blocking_ok{0};
  {
    GrantBatcher batcher(
        store,
        {.writers = 2, .max_batches = 64, .linger = absl::Milliseconds(2), .max_queued = kTotal});
    Latch all(kTotal / 2);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          int n = t * kPerThread + i;
          std::string id = "r" + std::to_string(n);
          if (n % 2 == 0) {
            // Half wait for their answer (the way LedgerService calls) ...
            calls[n]++;
            BatchResult r = batcher.Apply(Batch(id));
            if (!r.ok() || r->transfers.size() != 1 || r->transfers[0].id() != id + ":leg") wrong++;
            blocking_ok++;
          } else {
            // ... and half are answered through their callback.
            batcher.Submit(Batch(id), [&, n, id](BatchResult r) {
              calls[n]++;
              if (!r.ok() || r->transfers.size() != 1 || r->transfers[0].batch_id() != id) wrong++;
              all.CountDown();
            });
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    all.Wait();
  }
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(blocking_ok.load(), kTotal / 2);
  for (int n = 0; n < kTotal; ++n) ASSERT_EQ(calls[n].load(), 1) << "request " << n;
  std::vector<int> sizes = store.call_sizes();
  int sum = 0;
  for (int s : sizes) {
    EXPECT_LE(s, 64);
    sum += s;
  }
  EXPECT_EQ(sum, kTotal);
  EXPECT_LT(sizes.size(), static_cast<size_t>(kTotal) / 4)
      << "group commit should carry several requests per transaction";
}

TEST(GrantBatcherTest, LingerGathersRequestsThatArriveShortlyAfterTheFirst) {
  ScriptedStore store;
  {
    GrantBatcher batcher(store, {.writers = 1, .max_batches = 256, .linger = absl::Seconds(1)});
    Latch done(5);
    for (int i = 0; i < 5; ++i) {
      batcher.Submit(Batch("b" + std::to_string(i)), [&](BatchResult r) {
        EXPECT_TRUE(r.ok());
        done.CountDown();
      });
    }
    done.Wait();
  }
  EXPECT_THAT(store.call_sizes(), ElementsAre(5));
}

TEST(GrantBatcherTest, AFullBatchDoesNotWaitForTheLinger) {
  ScriptedStore store;
  absl::Time start = absl::Now();
  {
    GrantBatcher batcher(store, {.writers = 1, .max_batches = 3, .linger = absl::Seconds(30)});
    Latch done(3);
    for (int i = 0; i < 3; ++i) {
      batcher.Submit(Batch("b" + std::to_string(i)), [&](BatchResult) { done.CountDown(); });
    }
    done.Wait();
  }
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_THAT(store.call_sizes(), ElementsAre(3));
}

TEST(GrantBatcherTest, MaxBatchesBoundsEachCall) {
  ScriptedStore store;
  {
    GrantBatcher batcher(store, {.writers = 1, .max_batches = 4, .linger = absl::ZeroDuration()});
    Latch plug_done(1);
    auto gate = Plug(store, batcher, &plug_done);
    Latch done(10);
    for (int i = 0; i < 10; ++i) {
      batcher.Submit(Batch("b" + std::to_string(i)), [&](BatchResult) { done.CountDown(); });
    }
    gate->Open();
    done.Wait();
    plug_done.Wait();
  }
  EXPECT_THAT(store.call_sizes(), ElementsAre(1, 4, 4, 2));
  // In arrival order.
  EXPECT_THAT(store.call_batches()[1], ElementsAre("b0", "b1", "b2", "b3"));
}

TEST(GrantBatcherTest, AFailedApplyReachesEveryCallerOfThatCallAndOnlyThem) {
  ScriptedStore store;
  store.Script(1, [](const std::vector<LinkedBatch>&) {
    return absl::StatusOr<std::vector<BatchResult>>(Unavailable("database is down"));
  });
  std::vector<absl::Status> results(10);
  {
    GrantBatcher batcher(store, {.writers = 1, .max_batches = 256, .linger = absl::ZeroDuration()});
    Latch plug_done(1);
    auto gate = Plug(store, batcher, &plug_done);
    Latch done(10);
    for (int i = 0; i < 10; ++i) {
      batcher.Submit(Batch("b" + std::to_string(i)), [&, i](BatchResult r) {
        results[i] = r.status();
        done.CountDown();
      });
    }
    gate->Open();
    done.Wait();
    plug_done.Wait();
    // The next call works again.
    EXPECT_TRUE(batcher.Apply(Batch("after")).ok());
  }
  EXPECT_THAT(store.call_sizes(), ElementsAre(1, 10, 1));
  for (const auto& s : results) {
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_EQ(s.message(), "database is down");
  }
}

TEST(GrantBatcherTest, ABatchRefusedByTheStoreFailsAlone) {
  ScriptedStore store;
  store.SetDefault([](const std::vector<LinkedBatch>& batches) {
    std::vector<BatchResult> out = ScriptedStore::Echo(batches);
    for (size_t i = 0; i < batches.size(); ++i) {
      if (batches[i].batch_id == "bad") {
        out[i] = Error(absl::StatusCode::kFailedPrecondition,
                       ::marketing::common::v1::STOCK_EXHAUSTED, "no stock left", "transfers[0]");
      }
    }
    return absl::StatusOr<std::vector<BatchResult>>(std::move(out));
  });
  std::vector<absl::Status> results(3);
  {
    GrantBatcher batcher(store, {.writers = 1, .linger = absl::ZeroDuration()});
    Latch plug_done(1);
    auto gate = Plug(store, batcher, &plug_done);
    Latch done(3);
    const std::vector<std::string> ids = {"good1", "bad", "good2"};
    for (int i = 0; i < 3; ++i) {
      batcher.Submit(Batch(ids[i]), [&, i](BatchResult r) {
        results[i] = r.status();
        done.CountDown();
      });
    }
    gate->Open();
    done.Wait();
    plug_done.Wait();
  }
  EXPECT_THAT(store.call_sizes(), ElementsAre(1, 3));
  EXPECT_TRUE(results[0].ok());
  EXPECT_EQ(ReasonOf(results[1]), ::marketing::common::v1::STOCK_EXHAUSTED);
  EXPECT_TRUE(results[2].ok());
}

TEST(GrantBatcherTest, AStoreThatThrowsOrAnswersTooLittleFailsItsCallersWithInternal) {
  ScriptedStore store;
  store.Script(0, [](const std::vector<LinkedBatch>&) -> absl::StatusOr<std::vector<BatchResult>> {
    throw std::runtime_error("boom");
  });
  store.Script(1, [](const std::vector<LinkedBatch>&) {
    return absl::StatusOr<std::vector<BatchResult>>(std::vector<BatchResult>{});
  });
  GrantBatcher batcher(store, {.writers = 1, .linger = absl::ZeroDuration()});
  EXPECT_EQ(batcher.Apply(Batch("a")).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(batcher.Apply(Batch("b")).status().code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(batcher.Apply(Batch("c")).ok());
}

TEST(GrantBatcherTest, AFullQueueAnswersResourceExhaustedAtOnce) {
  ScriptedStore store;
  std::vector<absl::Status> results(2);
  {
    GrantBatcher batcher(
        store, {.writers = 1, .max_batches = 1, .linger = absl::ZeroDuration(), .max_queued = 2});
    Latch plug_done(1);
    auto gate = Plug(store, batcher, &plug_done);
    Latch done(2);
    for (int i = 0; i < 2; ++i) {
      batcher.Submit(Batch("q" + std::to_string(i)), [&, i](BatchResult r) {
        results[i] = r.status();
        done.CountDown();
      });
    }
    bool answered = false;
    std::thread::id answered_on;
    batcher.Submit(Batch("overflow"), [&](BatchResult r) {
      answered = true;
      answered_on = std::this_thread::get_id();
      EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
      EXPECT_EQ(r.status().message(), "ledger overloaded, retry");
    });
    EXPECT_TRUE(answered) << "a refusal must not wait for the writers";
    EXPECT_EQ(answered_on, std::this_thread::get_id());
    gate->Open();
    done.Wait();
    plug_done.Wait();
  }
  EXPECT_THAT(results, Each(absl::OkStatus()));
  EXPECT_THAT(store.call_batches(),
              ElementsAre(ElementsAre("plug"), ElementsAre("q0"), ElementsAre("q1")));
}

TEST(GrantBatcherTest, DestructionCommitsWhatIsQueuedWithoutWaitingForTheLinger) {
  ScriptedStore store;
  std::atomic<int> ok{0};
  std::atomic<int> answered{0};
  absl::Time start = absl::Now();
  {
    GrantBatcher batcher(store, {.writers = 2, .max_batches = 1000, .linger = absl::Seconds(30)});
    for (int i = 0; i < 20; ++i) {
      batcher.Submit(Batch("d" + std::to_string(i)), [&](BatchResult r) {
        answered++;
        if (r.ok()) ok++;
      });
    }
  }
  EXPECT_EQ(answered.load(), 20);
  EXPECT_EQ(ok.load(), 20);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  int sum = 0;
  for (int s : store.call_sizes()) sum += s;
  EXPECT_EQ(sum, 20);
}

}  // namespace
}  // namespace mkt::rewards
