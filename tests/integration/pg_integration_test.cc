// The PostgreSQL library against the real server: migrations, transactions and their retries,
// error mapping, and the pool's limits. Each test gets a database of its own.
#include <atomic>
#include <chrono>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/core/status.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/pg/prepared.h"
#include "libs/pg/reads.h"
#include "libs/testing/testing.h"

namespace mkt::pg {
namespace {

namespace pb = ::marketing::common::v1;
using ::testing::HasSubstr;
using ::testing::Not;

class PgTest : public ::testing::Test {
 protected:
  std::unique_ptr<Pool> NewPool(int size = 4, absl::Duration timeout = absl::Seconds(5)) {
    absl::StatusOr<std::unique_ptr<Pool>> pool =
        Pool::Connect({.dsn = db_.dsn(), .size = size, .acquire_timeout = timeout});
    EXPECT_TRUE(pool.ok()) << pool.status();
    return pool.ok() ? *std::move(pool) : nullptr;
  }

  // Runs one statement on a connection outside any pool and returns the first field.
  std::string Scalar(const std::string& sql) {
    pqxx::connection conn(db_.dsn());
    pqxx::nontransaction tx(conn);
    pqxx::result r = tx.exec(sql);
    return r.empty() || r[0][0].is_null() ? "" : r[0][0].as<std::string>();
  }

  bool TableExists(const std::string& table) {
    return Scalar("SELECT to_regclass('" + table + "') IS NOT NULL") == "t";
  }

  mkt::testing::TestDatabase db_;
};

MigrationSet Shop() {
  return {"shop",
          {{1, "V001__items.sql", "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);"},
           {2, "V002__orders.sql",
            "CREATE TABLE orders (id int PRIMARY KEY, item int NOT NULL REFERENCES items(id));\n"
            "CREATE INDEX orders_item ON orders (item);"}}};
}

TEST_F(PgTest, MigrationsAreAppliedOnceAndRecorded) {
  auto pool = NewPool();
  MigrationSet shop = Shop();
  ASSERT_TRUE(ApplyMigrations(*pool, {&shop}).ok());
  EXPECT_TRUE(TableExists("items"));
  EXPECT_TRUE(TableExists("orders"));
  EXPECT_EQ(Scalar("SELECT count(*) FROM schema_migrations WHERE component = 'shop'"), "2");
  EXPECT_EQ(
      Scalar("SELECT checksum FROM schema_migrations WHERE component = 'shop' AND version = 2"),
      MigrationChecksum(shop.migrations[1].sql));

  // A second run applies nothing: re-running the CREATE TABLEs would fail.
  absl::Status again = ApplyMigrations(*pool, {&shop});
  EXPECT_TRUE(again.ok()) << again;
  EXPECT_EQ(Scalar("SELECT count(*) FROM schema_migrations"), "2");

  // A later binary with one more migration applies just that one.
  shop.migrations.push_back({3, "V003__price.sql", "ALTER TABLE items ADD COLUMN price int;"});
  ASSERT_TRUE(ApplyMigrations(*pool, {&shop}).ok());
  EXPECT_EQ(Scalar("SELECT count(*) FROM schema_migrations"), "3");
  EXPECT_EQ(Scalar("SELECT count(*) FROM information_schema.columns "
                   "WHERE table_name = 'items' AND column_name = 'price'"),
            "1");
  // No advisory lock is left behind on the pooled connection.
  EXPECT_EQ(
      Scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
             "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
      "0");
}

TEST_F(PgTest, SeveralComponentsShareTheTable) {
  auto pool = NewPool();
  MigrationSet shop = Shop();
  MigrationSet audit{"audit", {{1, "V001__audit.sql", "CREATE TABLE audit (id int);"}}};
  ASSERT_TRUE(ApplyMigrations(*pool, {&shop, &audit}).ok());
  EXPECT_TRUE(TableExists("audit"));
  EXPECT_EQ(Scalar("SELECT count(*) FROM schema_migrations WHERE component = 'audit'"), "1");
}

TEST_F(PgTest, EditedMigrationIsRefused) {
  auto pool = NewPool();
  MigrationSet shop = Shop();
  shop.migrations.pop_back();
  ASSERT_TRUE(ApplyMigrations(*pool, {&shop}).ok());

  MigrationSet edited = Shop();
  edited.migrations[0].sql = "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);";
  absl::Status status = ApplyMigrations(*pool, {&edited});
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(),
              HasSubstr("migration shop V1 (V001__items.sql) was changed after it was applied"));
  // Nothing after the refusal ran.
  EXPECT_FALSE(TableExists("orders"));
  EXPECT_EQ(
      Scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
             "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
      "0");
}

TEST_F(PgTest, DatabaseNewerThanTheBinaryIsRefused) {
  auto pool = NewPool();
  MigrationSet shop = Shop();
  ASSERT_TRUE(ApplyMigrations(*pool, {&shop}).ok());

  MigrationSet older = Shop();
  older.migrations.pop_back();
  absl::Status status = ApplyMigrations(*pool, {&older});
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(),
              HasSubstr("database schema of shop is at V2, newer than this binary knows"));
}

TEST_F(PgTest, FailingMigrationStopsAndIsNotRecorded) {
  auto pool = NewPool();
  MigrationSet shop = Shop();
  shop.migrations.push_back({3, "V003__broken.sql", "ALTER TABLE nowhere ADD COLUMN x int;"});
  shop.migrations.push_back({4, "V004__after.sql", "CREATE TABLE after_broken (id int);"});
  absl::Status status = ApplyMigrations(*pool, {&shop});
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("shop V3 (V003__broken.sql)"));
  EXPECT_EQ(Scalar("SELECT max(version) FROM schema_migrations"), "2");
  EXPECT_FALSE(TableExists("after_broken"));
  EXPECT_EQ(
      Scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
             "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
      "0");
}

// Replicas starting together: each has its own pool; the advisory lock makes them take turns.
TEST_F(PgTest, ConcurrentApplyAppliesEachMigrationOnce) {
  MigrationSet shop = Shop();
  // Slow enough that the runs would overlap without the lock; a second CREATE TABLE would fail.
  shop.migrations[0].sql += "\nSELECT pg_sleep(0.2);";
  constexpr int kReplicas = 3;
  std::vector<std::unique_ptr<Pool>> pools;
  for (int i = 0; i < kReplicas; ++i) pools.push_back(NewPool(2));
  std::latch start(kReplicas);
  std::vector<absl::Status> results(kReplicas);
  std::vector<std::thread> threads;
  for (int i = 0; i < kReplicas; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[i] = ApplyMigrations(*pools[i], {&shop});
    });
  }
  for (auto& t : threads) t.join();
  for (const absl::Status& s : results) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(Scalar("SELECT count(*) FROM schema_migrations"), "2");
  EXPECT_TRUE(TableExists("orders"));
}

TEST_F(PgTest, PoolOfOneCanApplyMigrations) {
  auto pool = NewPool(1, absl::Milliseconds(200));
  MigrationSet shop = Shop();
  absl::Status status = ApplyMigrations(*pool, {&shop});
  EXPECT_TRUE(status.ok()) << status;
}

class TxTest : public PgTest {
 protected:
  void SetUp() override {
    pool_ = NewPool(4);
    ASSERT_NE(pool_, nullptr);
    shop_ = Shop();
    ASSERT_TRUE(ApplyMigrations(*pool_, {&shop_}).ok());
  }
  std::unique_ptr<Pool> pool_;
  MigrationSet shop_;
};

TEST_F(TxTest, CommitsWhenTheBodySucceeds) {
  absl::Status status = WithTransaction(*pool_, [](pqxx::work& tx) {
    tx.exec_params("INSERT INTO items (id, name) VALUES ($1, $2)", 1, "tea");
    return absl::OkStatus();
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(Scalar("SELECT name FROM items WHERE id = 1"), "tea");
}

TEST_F(TxTest, RollsBackWhenTheBodyFails) {
  absl::Status status = WithTransaction(*pool_, [](pqxx::work& tx) {
    tx.exec_params("INSERT INTO items (id, name) VALUES ($1, $2)", 1, "tea");
    return NotFound("the order vanished");
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "the order vanished");
  EXPECT_EQ(Scalar("SELECT count(*) FROM items"), "0");
}

TEST_F(TxTest, SetsTheRequestedIsolation) {
  std::string level;
  absl::Status status =
      WithTransaction(*pool_,
                      [&](pqxx::work& tx) {
                        level = tx.exec("SHOW transaction_isolation")[0][0].as<std::string>();
                        return absl::OkStatus();
                      },
                      {.isolation = Isolation::kSerializable});
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(level, "serializable");
}

TEST_F(TxTest, UniqueViolationIsAlreadyExistsAndNotRetried) {
  auto insert = [](pqxx::work& tx) {
    tx.exec_params("INSERT INTO items (id, name) VALUES ($1, $2)", 7, "tea");
    return absl::OkStatus();
  };
  ASSERT_TRUE(WithTransaction(*pool_, insert).ok());
  int runs = 0;
  absl::Status status = WithTransaction(*pool_, [&](pqxx::work& tx) {
    ++runs;
    return insert(tx);
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists) << status;
  EXPECT_EQ(ReasonOf(status), pb::ALREADY_EXISTS);
  EXPECT_EQ(runs, 1);
}

TEST_F(TxTest, ForeignKeyViolationIsFailedPrecondition) {
  absl::Status status = WithTransaction(*pool_, [](pqxx::work& tx) {
    tx.exec_params("INSERT INTO orders (id, item) VALUES ($1, $2)", 1, 404);
    return absl::OkStatus();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), Not(HasSubstr("404")));  // the DETAIL line quotes the value
}

TEST_F(TxTest, StatementTimeoutIsDeadlineExceeded) {
  absl::Status status = WithTransaction(*pool_, [](pqxx::work& tx) {
    tx.exec("SET LOCAL statement_timeout = '50ms'");
    tx.exec("SELECT pg_sleep(2)");
    return absl::OkStatus();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
}

// Two SERIALIZABLE transactions read the same row and both write it back; PostgreSQL aborts
// one with a serialization failure, WithTransaction runs it again, and no update is lost.
TEST_F(TxTest, RetriesRealSerializationFailures) {
  ASSERT_TRUE(WithTransaction(*pool_, [](pqxx::work& tx) {
                tx.exec("INSERT INTO items (id, name) VALUES (1, '0')");
                return absl::OkStatus();
              }).ok());
  std::latch both_read(2);
  std::atomic<int> runs{0};
  auto add = [&](int amount) {
    bool first = true;
    return WithTransaction(
        *pool_,
        [&](pqxx::work& tx) {
          ++runs;
          const int value =
              std::stoi(tx.exec("SELECT name FROM items WHERE id = 1")[0][0].as<std::string>());
          if (first) {
            first = false;
            both_read.arrive_and_wait();  // both have read before either writes
          }
          tx.exec_params("UPDATE items SET name = $1 WHERE id = 1", std::to_string(value + amount));
          return absl::OkStatus();
        },
        {.isolation = Isolation::kSerializable, .max_attempts = 5});
  };
  absl::Status a, b;
  std::thread ta([&] { a = add(10); });
  std::thread tb([&] { b = add(32); });
  ta.join();
  tb.join();
  EXPECT_TRUE(a.ok()) << a;
  EXPECT_TRUE(b.ok()) << b;
  EXPECT_EQ(Scalar("SELECT name FROM items WHERE id = 1"), "42");
  EXPECT_GT(runs.load(), 2);
}

TEST_F(TxTest, GivesUpAfterMaxAttempts) {
  int runs = 0;
  absl::Status status = WithTransaction(*pool_,
                                        [&](pqxx::work&) -> absl::Status {
                                          ++runs;
                                          throw pqxx::deadlock_detected("deadlock detected");
                                        },
                                        {.max_attempts = 3});
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
  EXPECT_EQ(runs, 3);
}

// A connection the server killed mid-transaction: the body runs again on a fresh connection.
TEST_F(TxTest, RetriesOnAFreshConnectionWhenTheConnectionBreaks) {
  int runs = 0;
  std::vector<int> backends;
  absl::Status status = WithTransaction(*pool_, [&](pqxx::work& tx) {
    ++runs;
    backends.push_back(tx.conn().backendpid());
    if (runs == 1) tx.exec("SELECT pg_terminate_backend(pg_backend_pid())");
    tx.exec("INSERT INTO items (id, name) VALUES (1, 'tea')");
    return absl::OkStatus();
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(runs, 2);
  ASSERT_EQ(backends.size(), 2u);
  EXPECT_NE(backends[0], backends[1]);
  EXPECT_EQ(Scalar("SELECT count(*) FROM items"), "1");
}

TEST_F(PgTest, AcquireTimesOutWhenAllConnectionsAreLeased) {
  auto pool = NewPool(2, absl::Milliseconds(100));
  absl::StatusOr<Lease> first = pool->Acquire();
  absl::StatusOr<Lease> second = pool->Acquire();
  ASSERT_TRUE(first.ok() && second.ok());
  const auto started = std::chrono::steady_clock::now();
  absl::StatusOr<Lease> third = pool->Acquire();
  const auto waited = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(third.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(third.status().message(), HasSubstr("all 2 connections"));
  EXPECT_GE(waited, std::chrono::milliseconds(100));
}

TEST_F(PgTest, AWaitingAcquireGetsAReturnedConnection) {
  auto pool = NewPool(1, absl::Seconds(5));
  std::optional<absl::StatusOr<Lease>> held(pool->Acquire());
  ASSERT_TRUE(held->ok());
  const int pid = (**held)->backendpid();
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    held.reset();
  });
  absl::StatusOr<Lease> next = pool->Acquire();
  releaser.join();
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ((*next)->backendpid(), pid);  // the same connection, reused
}

TEST_F(PgTest, BrokenConnectionIsDroppedOnReturn) {
  auto pool = NewPool(1, absl::Milliseconds(500));
  int old_pid = 0;
  {
    absl::StatusOr<Lease> lease = pool->Acquire();
    ASSERT_TRUE(lease.ok());
    old_pid = (*lease)->backendpid();
    Scalar(absl::StrCat("SELECT pg_terminate_backend(", old_pid, ")"));
    EXPECT_THROW(pqxx::nontransaction(**lease).exec("SELECT 1"), pqxx::broken_connection);
  }
  absl::StatusOr<Lease> lease = pool->Acquire();  // the slot was freed, a new one opened
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_TRUE((*lease)->is_open());
  EXPECT_NE((*lease)->backendpid(), old_pid);
  EXPECT_EQ(pqxx::nontransaction(**lease).exec("SELECT 1")[0][0].as<int>(), 1);
}

TEST_F(PgTest, SessionSettingsApplyToEveryConnectionOfThePool) {
  absl::StatusOr<std::unique_ptr<Pool>> pool = Pool::Connect(
      {.dsn = db_.dsn(),
       .size = 2,
       .session_settings = {{"synchronous_commit", "off"}, {"application_name", "relaxed pool"}}});
  ASSERT_TRUE(pool.ok()) << pool.status();
  // Two leases at once: the first connection and one opened on demand.
  absl::StatusOr<Lease> a = (*pool)->Acquire();
  absl::StatusOr<Lease> b = (*pool)->Acquire();
  ASSERT_TRUE(a.ok() && b.ok());
  for (Lease* lease : {&*a, &*b}) {
    pqxx::nontransaction tx(**lease);
    EXPECT_EQ(tx.exec("SHOW synchronous_commit")[0][0].as<std::string>(), "off");
    EXPECT_EQ(tx.exec("SHOW application_name")[0][0].as<std::string>(), "relaxed pool");
  }
  // A pool without settings keeps the server's default.
  std::unique_ptr<Pool> plain = NewPool(1);
  ASSERT_NE(plain, nullptr);
  absl::StatusOr<Lease> c = plain->Acquire();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(pqxx::nontransaction(**c).exec("SHOW synchronous_commit")[0][0].as<std::string>(),
            "on");
  // A setting the server does not know fails the connection with a clear error.
  absl::StatusOr<std::unique_ptr<Pool>> bad =
      Pool::Connect({.dsn = db_.dsn(), .session_settings = {{"no_such_setting", "1"}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("no_such_setting"));
}

TEST_F(PgTest, AStatementWithoutATransactionCommitsOnItsOwn) {
  std::unique_ptr<Pool> pool = NewPool(1);
  ASSERT_NE(pool, nullptr);
  ASSERT_TRUE(WithStatement(*pool, [](pqxx::nontransaction& st) {
                st.exec("CREATE TABLE notes (id int PRIMARY KEY)");
                st.exec("INSERT INTO notes VALUES (1)");
                return absl::OkStatus();
              }).ok());
  EXPECT_EQ(Scalar("SELECT count(*) FROM notes"), "1");
  // A failing statement changes nothing and becomes a status; what committed before stays.
  absl::Status failed = WithStatement(*pool, [](pqxx::nontransaction& st) {
    st.exec("INSERT INTO notes VALUES (2)");
    st.exec("INSERT INTO notes VALUES (1)");
    return absl::OkStatus();
  });
  EXPECT_EQ(failed.code(), absl::StatusCode::kAlreadyExists) << failed;
  EXPECT_EQ(Scalar("SELECT string_agg(id::text, ',' ORDER BY id) FROM notes"), "1,2");
}

TEST_F(PgTest, APreparedStatementIsPreparedOncePerConnectionAndRunsAnywhere) {
  std::unique_ptr<Pool> pool = NewPool(2);
  ASSERT_NE(pool, nullptr);
  ASSERT_TRUE(WithStatement(*pool, [](pqxx::nontransaction& st) {
                st.exec("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)");
                return absl::OkStatus();
              }).ok());
  static constexpr Prepared kInsert{"test.insert_note",
                                    "INSERT INTO notes VALUES ($1, $2) RETURNING id"};
  // The same name, run many times in transactions and on its own, on both connections at once.
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const int id = t * 1000 + i;
        absl::Status s = i % 2 == 0
                             ? WithTransaction(*pool,
                                               [&](pqxx::work& tx) {
                                                 ExecPrepared(tx, kInsert, id, "in a transaction");
                                                 return absl::OkStatus();
                                               })
                             : WithStatement(*pool, [&](pqxx::nontransaction& st) {
                                 ExecPrepared(st, kInsert, id, "on its own");
                                 return absl::OkStatus();
                               });
        if (!s.ok()) failures.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(Scalar("SELECT count(*) FROM notes"), "100");
  // One server-side statement per connection, not one per call.
  ASSERT_TRUE(WithReads(*pool, [](pqxx::nontransaction& st) {
                EXPECT_EQ(st.exec("SELECT count(*) FROM pg_prepared_statements WHERE name = "
                                  "'test.insert_note'")[0][0]
                              .as<int>(),
                          1);
                return absl::OkStatus();
              }).ok());
  // A failing execution is an ordinary error, and the statement still works afterwards.
  absl::Status dup = WithStatement(*pool, [](pqxx::nontransaction& st) {
    ExecPrepared(st, kInsert, 0, "again");
    return absl::OkStatus();
  });
  EXPECT_EQ(dup.code(), absl::StatusCode::kAlreadyExists) << dup;
  EXPECT_TRUE(WithTransaction(*pool, [](pqxx::work& tx) {
                EXPECT_EQ(ExecPrepared(tx, kInsert, 5000, "after the error")[0][0].as<int>(), 5000);
                return absl::OkStatus();
              }).ok());
}

TEST(PoolConnectTest, ClosedPortIsUnavailableWithoutThePassword) {
  const int port = mkt::testing::FreePort();
  absl::StatusOr<std::unique_ptr<Pool>> pool =
      Pool::Connect({.dsn = absl::StrCat("host=127.0.0.1 port=", port,
                                         " user=postgres password=s3cr3t-Passw0rd dbname=shop"),
                     .size = 2});
  ASSERT_FALSE(pool.ok());
  EXPECT_EQ(pool.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(pool.status().message(),
              HasSubstr(absl::StrCat("cannot connect to PostgreSQL at 127.0.0.1:", port, "/shop")));
  EXPECT_THAT(pool.status().ToString(), Not(HasSubstr("s3cr3t-Passw0rd")));
}

TEST(PoolConnectTest, UriDsnIsDescribedWithoutThePassword) {
  const int port = mkt::testing::FreePort();
  absl::StatusOr<std::unique_ptr<Pool>> pool = Pool::Connect(
      {.dsn = absl::StrCat("postgresql://postgres:s3cr3t-Passw0rd@127.0.0.1:", port, "/shop")});
  ASSERT_FALSE(pool.ok());
  EXPECT_THAT(pool.status().message(), HasSubstr(absl::StrCat("127.0.0.1:", port, "/shop")));
  EXPECT_THAT(pool.status().ToString(), Not(HasSubstr("s3cr3t-Passw0rd")));
}

}  // namespace
}  // namespace mkt::pg
