// Several segments replicas on one real PostgreSQL database (decision 037): what one replica
// writes - CSV imports, RFM tags, customers created by a list or a business event, tags and their
// allowed values - reaches every other replica's index through the change log, also when writers
// commit out of order; an older state never replaces a newer one in an index; change rows are
// pruned after the retention and a replica that fell further behind re-reads every customer. The
// last test runs two mkt-segments processes and asks the one that did not import.
#include <csignal>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/rpc/actor.h"
#include "libs/rpc/client.h"
#include "libs/rpc/server.h"
#include "libs/testing/testing.h"
#include "marketing/events/v1/business_event.pb.h"
#include "marketing/segments/v1/segments.grpc.pb.h"
#include "services/segments/pg_segment_store.h"
#include "services/segments/segment_service.h"
#include "services/segments/tag_index.h"

namespace mkt::segments {
namespace {

tenancy::Actor Operator(const std::string& org) {
  return {.org_id = org, .operator_id = "op-" + org, .roles = {tenancy::Role::kAdmin}};
}

pb::SegmentRef Ref(const std::string& id) {
  pb::SegmentRef r;
  r.set_segment_id(id);
  return r;
}

pb::Condition AgeAtLeast(int64_t age) {
  pb::Condition c;
  c.mutable_compare()->set_tag("age");
  c.mutable_compare()->set_op(pb::GE);
  c.mutable_compare()->mutable_value()->set_int_value(age);
  return c;
}

// One replica: its own connections, index and service over the shared database.
struct Replica {
  Replica(const std::string& dsn, const Clock& clock) {
    auto connected = pg::Pool::Connect({.dsn = dsn, .size = 3});
    EXPECT_TRUE(connected.ok()) << connected.status();
    pool = *std::move(connected);
    store = std::make_unique<PgSegmentStore>(*pool);
    service = std::make_unique<SegmentService>(*store, index, clock);
    absl::Status rebuilt = service->Rebuild();
    EXPECT_TRUE(rebuilt.ok()) << rebuilt;
  }

  // Catches up with every write committed before the call; returns how many customers were
  // re-read. A transaction open elsewhere on the cluster (a test running alongside) holds catching
  // up back until it ends, so this calls CatchUp until the replica has read past the call's
  // pg_snapshot_xmax.
  int64_t CatchUp() {
    const uint64_t target = Xmax();
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    int64_t read = 0;
    while (true) {
      absl::StatusOr<int64_t> n = service->CatchUp();
      EXPECT_TRUE(n.ok()) << n.status();
      if (!n.ok()) return -1;
      read += *n;
      if (service->CaughtUpTo() >= target) return read;
      if (absl::Now() > deadline) {
        ADD_FAILURE() << "did not catch up within 60 s";
        return read;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  // The first transaction id not assigned yet: every committed transaction is below it.
  uint64_t Xmax() {
    auto lease = pool->Acquire();
    pqxx::work tx(**lease);
    const uint64_t xmax =
        tx.exec1("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")[0].as<uint64_t>();
    tx.commit();
    return xmax;
  }

  pb::ImportTagValuesResponse Import(const std::string& org, const std::string& csv) {
    pb::ImportTagValuesRequest req;
    req.set_csv(csv);
    auto resp = service->ImportTagValues(Operator(org), req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() ? *resp : pb::ImportTagValuesResponse();
  }

  std::string CreateRule(const std::string& org, const pb::Condition& rule) {
    pb::CreateSegmentRequest req;
    req.set_name("rule of " + org);
    *req.mutable_definition()->mutable_rule() = rule;
    auto s = service->CreateSegment(Operator(org), req);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? s->id() : "";
  }

  bool IsMember(const std::string& org, const std::string& customer, const std::string& segment) {
    pb::IsMemberRequest req;
    req.set_org_id(org);
    req.set_customer_id(customer);
    *req.add_segments() = Ref(segment);
    auto resp = service->IsMember(req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() && resp->member(0);
  }

  int64_t Count(const std::string& org, const std::string& segment) {
    pb::CountRequest req;
    req.set_org_id(org);
    *req.mutable_segment() = Ref(segment);
    auto resp = service->Count(req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() ? resp->count() : -1;
  }

  // The customer's value of `tag` as the index holds it ("" when none; labels joined by '|').
  std::string Value(const std::string& customer, const std::string& tag) {
    std::optional<uint32_t> dense = index.Find(customer);
    if (!dense) return "";
    std::optional<segments::Value> v = index.ValueOf(*dense, tag);
    if (!v) return "";
    if (v->labels.empty()) return std::to_string(v->number);
    std::string out;
    for (const auto& label : v->labels) absl::StrAppend(&out, out.empty() ? "" : "|", label);
    return out;
  }

  std::unique_ptr<pg::Pool> pool;
  std::unique_ptr<PgSegmentStore> store;
  TagIndex index;
  std::unique_ptr<SegmentService> service;
};

class ReplicasTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pool = pg::Pool::Connect({.dsn = db_.dsn(), .size = 3});
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    ASSERT_TRUE(
        pg::ApplyMigrations(*pool_, {&kafka::OutboxMigrations(), &SegmentsMigrations()}).ok());
    a_ = std::make_unique<Replica>(db_.dsn(), SystemClock());
    b_ = std::make_unique<Replica>(db_.dsn(), SystemClock());
  }

  int64_t Sql(const std::string& query) {
    auto lease = pool_->Acquire();
    pqxx::work tx(**lease);
    pqxx::result r = tx.exec(query);
    tx.commit();
    return r.empty() || r[0][0].is_null() ? 0 : r[0][0].as<int64_t>();
  }

  // Waits until a backend of this database waits for `wait_event` (e.g. PgSleep), up to 20 s.
  bool WaitForBackend(const std::string& wait_event) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      if (Sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
              "wait_event = '" +
              wait_event + "'") > 0) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }

  kafka::IncomingMessage Spend(const std::string& org, const std::string& customer,
                               int64_t amount_fen, int days_ago) {
    marketing::events::v1::BusinessEvent ev;
    ev.set_source("card");
    ev.set_source_event_id(NewEventId());
    ev.set_event_type("credit_card.spend");
    ev.set_customer_id(customer);
    ev.set_org_id(org);
    ev.set_amount_fen(amount_fen);
    ev.mutable_occurred_at()->set_seconds(
        absl::ToUnixSeconds(absl::Now() - absl::Hours(24 * days_ago)));
    auto envelope = kafka::MakeEnvelope("events.BusinessEvent", org, "t", ev);
    kafka::IncomingMessage m;
    m.key = customer;
    m.value = envelope.SerializeAsString();
    return m;
  }

  testing::TestDatabase db_;
  std::unique_ptr<pg::Pool> pool_;
  std::unique_ptr<Replica> a_, b_;
};

TEST_F(ReplicasTest, AnImportOnOneReplicaIsAnsweredByTheOthers) {
  const std::string seg = a_->CreateRule("fed", AgeAtLeast(30));
  EXPECT_EQ(
      a_->Import("fed", "customer_id,age,gender\nc-1,35,male\nc-2,25,female\n").rows_imported(), 2);
  EXPECT_EQ(a_->Count("fed", seg), 1);
  EXPECT_EQ(b_->CatchUp(), 2);
  EXPECT_TRUE(b_->IsMember("fed", "c-1", seg));
  EXPECT_FALSE(b_->IsMember("fed", "c-2", seg));
  EXPECT_EQ(b_->Count("fed", seg), 1);
  EXPECT_EQ(b_->Value("c-2", "gender"), "female");

  // Changes and removals too; nothing changed, nothing re-read.
  a_->Import("fed", "customer_id,age,gender\nc-1,20,-\nc-2,40,\n");
  b_->CatchUp();
  EXPECT_FALSE(b_->IsMember("fed", "c-1", seg));
  EXPECT_TRUE(b_->IsMember("fed", "c-2", seg));
  EXPECT_EQ(b_->Value("c-1", "gender"), "");
  EXPECT_EQ(b_->Value("c-2", "gender"), "female");
  EXPECT_EQ(b_->CatchUp(), 0);
  // The writer catches up with its own write harmlessly.
  a_->CatchUp();
  EXPECT_EQ(a_->Count("fed", seg), 1);
  EXPECT_EQ(b_->index.customer_count(), a_->index.customer_count());
}

TEST_F(ReplicasTest, RfmTagsWrittenByOneReplicaReachTheOthers) {
  // Business events are consumed by one replica of the shared group; the scores are written by
  // the replica that runs the timer.
  for (int i = 0; i < 10; ++i) {
    for (int k = 0; k <= i; ++k) {
      ASSERT_TRUE(
          b_->service
              ->HandleBusinessEvent(Spend("bank-a", absl::StrCat("r-", i), (i + 1) * 1000, i + k))
              .ok());
    }
  }
  auto scored = a_->service->ScoreRfm();
  ASSERT_TRUE(scored.ok()) << scored.status();
  ASSERT_EQ(*scored, 10);
  EXPECT_EQ(a_->Value("r-9", "rfm_group"), "important_retain");
  b_->CatchUp();
  for (int i = 0; i < 10; ++i) {
    const std::string c = absl::StrCat("r-", i);
    for (const char* tag : {"rfm_r_score", "rfm_f_score", "rfm_m_score", "rfm_group"}) {
      EXPECT_EQ(b_->Value(c, tag), a_->Value(c, tag)) << c << " " << tag;
      EXPECT_NE(b_->Value(c, tag), "") << c << " " << tag;
    }
  }
  pb::Condition retain;
  retain.mutable_compare()->set_tag("rfm_group");
  retain.mutable_compare()->set_op(pb::EQ);
  retain.mutable_compare()->mutable_value()->set_enum_value("important_retain");
  const std::string seg = a_->CreateRule("bank-a", retain);
  EXPECT_TRUE(b_->IsMember("bank-a", "r-9", seg));
  EXPECT_EQ(b_->Count("bank-a", seg), a_->Count("bank-a", seg));
}

// Customers without values still count: a list names them, a `not` rule covers them.
TEST_F(ReplicasTest, CustomersCreatedByAListOrAnEventOnOneReplicaAreKnownToTheOthers) {
  pb::CreateSegmentRequest list;
  list.set_name("uploaded");
  list.mutable_definition()->mutable_list()->add_customer_ids("l-1");
  list.mutable_definition()->mutable_list()->add_customer_ids("l-2");
  auto created = a_->service->CreateSegment(Operator("bank-a"), list);
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_TRUE(a_->service->HandleBusinessEvent(Spend("bank-b", "e-1", 100, 0)).ok());
  pb::Condition no_age;
  no_age.mutable_not_()->mutable_exists()->set_tag("age");
  const std::string nobody_aged = a_->CreateRule("fed", no_age);

  b_->CatchUp();
  EXPECT_TRUE(b_->IsMember("bank-a", "l-1", created->id()));
  EXPECT_EQ(b_->Count("bank-a", created->id()), 2);
  EXPECT_TRUE(b_->index.Find("e-1").has_value());
  EXPECT_TRUE(b_->index.InScope("bank-b", *b_->index.Find("e-1")));
  EXPECT_FALSE(b_->index.InScope("bank-a", *b_->index.Find("e-1")));
  EXPECT_EQ(b_->Count("fed", nobody_aged), 3);
  EXPECT_EQ(b_->Count("bank-b", nobody_aged), 1);
}

// A writer that took its transaction id first and commits last (a long import) is not skipped by
// a replica that read a later writer's change meanwhile.
TEST_F(ReplicasTest, ChangesCommittedOutOfOrderAreNotSkipped) {
  a_->Import("fed", "customer_id,age\nslow,1\nfast,1\n");
  b_->CatchUp();
  // The database holds the slow import's value 77 for two seconds, inside its transaction.
  Sql("CREATE FUNCTION hold_77() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
      "IF NEW.value = '77' THEN PERFORM pg_sleep(2); END IF; RETURN NEW; END $$");
  Sql("CREATE TRIGGER hold BEFORE INSERT ON tag_values FOR EACH ROW "
      "EXECUTE FUNCTION hold_77()");
  std::thread slow([&] { a_->Import("fed", "customer_id,age\nslow,77\n"); });
  ASSERT_TRUE(WaitForBackend("PgSleep"));
  a_->Import("fed", "customer_id,age\nfast,2\n");
  ASSERT_TRUE(b_->service->CatchUp().ok());  // while the slow import is still open
  slow.join();
  b_->CatchUp();
  EXPECT_EQ(b_->Value("slow", "age"), "77");
  EXPECT_EQ(b_->Value("fast", "age"), "2");
}

// Two appliers of one customer (an import's thread, the profile consumer, catching up) may apply
// in the reverse order of their commits: the index keeps the newer state.
TEST_F(ReplicasTest, AnOlderStateNeverReplacesANewerOne) {
  a_->Import("fed", "customer_id,age\nk-1,30\n");
  const uint32_t k1 = *a_->index.Find("k-1");
  auto older = a_->store->WriteValues({{k1, "age", "31"}});
  auto newer = a_->store->WriteValues({{k1, "age", "32"}});
  ASSERT_TRUE(older.ok() && newer.ok());
  ASSERT_LT(older->at(0).revision, newer->at(0).revision);
  ASSERT_TRUE(a_->service->ApplyState(newer->at(0)).ok());
  ASSERT_TRUE(a_->service->ApplyState(older->at(0)).ok());
  EXPECT_EQ(a_->Value("k-1", "age"), "32");

  // A profile moving the customer to another bank is a newer state too.
  pb::CustomerProfileChanged moved;
  moved.set_customer_id("k-1");
  moved.set_org_id("bank-b");
  moved.set_version(1);
  auto envelope = kafka::MakeEnvelope("segments.CustomerProfileChanged", "bank-b", "t", moved);
  kafka::IncomingMessage m;
  m.value = envelope.SerializeAsString();
  ASSERT_TRUE(a_->service->HandleProfileMessage(m).ok());
  ASSERT_TRUE(a_->service->ApplyState(newer->at(0)).ok());
  EXPECT_TRUE(a_->index.InScope("bank-b", k1));
  EXPECT_EQ(a_->Value("k-1", "age"), "32");

  // Catching up applies the newest state; a late applier of an older one changes nothing.
  b_->CatchUp();
  ASSERT_TRUE(b_->service->ApplyState(older->at(0)).ok());
  EXPECT_EQ(b_->Value("k-1", "age"), "32");
  EXPECT_TRUE(b_->index.InScope("bank-b", *b_->index.Find("k-1")));
}

// A tag created on one replica, and a value added to it, are usable on the others: their values
// are applied, profiles carrying the new value are not dead-lettered, rules may use it.
TEST_F(ReplicasTest, TagsCreatedOrChangedOnOneReplicaAreUsableOnTheOthers) {
  pb::CreateTagRequest tag;
  tag.mutable_tag()->set_name("bank_a_tier");
  tag.mutable_tag()->set_type(pb::TAG_TYPE_ENUM);
  tag.mutable_tag()->add_allowed_values("gold");
  ASSERT_TRUE(a_->service->CreateTag(Operator("bank-a"), tag).ok());
  a_->Import("bank-a", "customer_id,bank_a_tier\na-1,gold\n");
  b_->CatchUp();
  EXPECT_EQ(b_->Value("a-1", "bank_a_tier"), "gold");

  pb::UpdateTagRequest add;
  add.set_name("bank_a_tier");
  add.add_add_allowed_values("platinum");
  ASSERT_TRUE(a_->service->UpdateTag(Operator("bank-a"), add).ok());
  // A profile with the new value reaches every replica from Kafka, maybe before catching up.
  pb::CustomerProfileChanged profile;
  profile.set_customer_id("a-2");
  profile.set_org_id("bank-a");
  profile.set_version(1);
  profile.add_set_values()->set_tag("bank_a_tier");
  profile.mutable_set_values(0)->set_enum_value("platinum");
  auto envelope = kafka::MakeEnvelope("segments.CustomerProfileChanged", "bank-a", "t", profile);
  kafka::IncomingMessage m;
  m.value = envelope.SerializeAsString();
  absl::Status handled = b_->service->HandleProfileMessage(m);
  EXPECT_TRUE(handled.ok()) << handled;
  EXPECT_EQ(b_->Value("a-2", "bank_a_tier"), "platinum");

  add.clear_add_allowed_values();
  add.add_add_allowed_values("silver");
  ASSERT_TRUE(a_->service->UpdateTag(Operator("bank-a"), add).ok());
  b_->CatchUp();
  pb::Condition silver;
  silver.mutable_compare()->set_tag("bank_a_tier");
  silver.mutable_compare()->set_op(pb::EQ);
  silver.mutable_compare()->mutable_value()->set_enum_value("silver");
  pb::PreviewRequest preview;
  *preview.mutable_definition()->mutable_rule() = silver;
  auto previewed = b_->service->Preview(Operator("bank-a"), preview);
  EXPECT_TRUE(previewed.ok()) << previewed.status();
}

// Change rows stay for the retention after their transaction ended, then go; a replica that has
// not read that far re-reads every customer instead of missing changes, one that has does not.
TEST_F(ReplicasTest, ChangesArePrunedAfterTheRetentionAndALaggingReplicaReadsEveryone) {
  testing::ManualClock clock;
  Replica pruner(db_.dsn(), clock);
  const absl::Duration retention = ServiceOptions().changes_retention;
  pruner.Import("fed", "customer_id,age\np-1,41\n");
  // Until every transaction below p-1's has ended (tests alongside may hold one open), the
  // remembered point would lie below p-1's change.
  const int64_t p1_xid = Sql("SELECT max(xid)::text FROM tag_changes");
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (Sql("SELECT pg_snapshot_xmin(pg_current_snapshot())::text") <= p1_xid &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  auto pruned = pruner.service->PruneChanges();  // remembers where transactions stand now
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 0);
  Replica current(db_.dsn(), SystemClock());  // reads past that point from the start

  clock.Advance(retention / 2);
  pruner.Import("fed", "customer_id,age\np-2,42\n");
  EXPECT_EQ(*pruner.service->PruneChanges(), 0);
  EXPECT_EQ(Sql("SELECT count(*) FROM tag_changes"), 2);
  clock.Advance(retention / 2);
  pruned = pruner.service->PruneChanges();
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, 1);  // p-1's
  EXPECT_EQ(Sql("SELECT count(*) FROM tag_changes"), 1);

  pruner.Import("fed", "customer_id,age\np-3,43\n");
  // b_ started before p-1 was written and never caught up: p-1's change is gone, so it re-reads
  // every customer (p-3's change may be read once more after that).
  EXPECT_GE(b_->CatchUp(), 3);
  EXPECT_EQ(b_->Value("p-1", "age"), "41");
  EXPECT_EQ(b_->Value("p-2", "age"), "42");
  EXPECT_EQ(b_->Value("p-3", "age"), "43");
  EXPECT_EQ(b_->CatchUp(), 0);
  EXPECT_EQ(current.CatchUp(), 2);  // p-2, p-3
  EXPECT_EQ(current.Value("p-3", "age"), "43");
}

// ---- Two processes -----------------------------------------------------------------------------

class SegmentsProcess {
 public:
  SegmentsProcess(const std::string& dsn, const std::string& topic)
      : port_(testing::FreePort()),
        log_(::testing::TempDir() + "segments_replica_" + RandomHex(4) + ".log") {
    std::map<std::string, std::string> env = {
        {"MKT_SEGMENTS_PG_DSN", dsn},
        {"MKT_SEGMENTS_KAFKA_BOOTSTRAP", testing::KafkaBootstrap()},
        {"MKT_SEGMENTS_GRPC_ADDRESS", absl::StrCat("127.0.0.1:", port_)},
        {"MKT_SEGMENTS_METRICS_ADDRESS", absl::StrCat("127.0.0.1:", testing::FreePort())},
        {"MKT_SEGMENTS_PROFILES_TOPIC", topic},
        {"MKT_SEGMENTS_BUSINESS_EVENTS_TOPIC", ""},
        {"MKT_SEGMENTS_DEAD_LETTER_TOPIC", topic + ".dead"},
        {"MKT_SEGMENTS_REPLICA_ID", "replica-" + RandomHex(4)},
        {"MKT_SEGMENTS_RFM_INTERVAL_S", "0"},
        {"MKT_SEGMENTS_CHANGES_POLL_MS", "200"},
        {"MKT_SEGMENTS_LOG_FORMAT", "text"},
    };
    process_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{testing::BinDir() + "/services/segments/mkt-segments"}, env, log_);
  }

  bool WaitUntilServing() {
    auto channel = rpc::Connect(absl::StrCat("127.0.0.1:", port_));
    if (!testing::WaitForPort(port_, absl::Seconds(60)) ||
        !testing::WaitForGrpcHealth(channel, absl::Seconds(30))) {
      ADD_FAILURE() << "mkt-segments did not start; its log:\n" << testing::Tail(log_, 40);
      return false;
    }
    stub_ = pb::Segments::NewStub(channel);
    return true;
  }

  template <class Req, class Resp, class Method>
  absl::Status Call(Method method, const Req& req, Resp* resp, const tenancy::Actor* actor) {
    grpc::ClientContext ctx;
    rpc::PrepareClientContext(ctx, absl::Seconds(10), NewRequestId());
    if (actor != nullptr) rpc::AttachActor(ctx, *actor);
    return rpc::FromGrpcStatus(((*stub_).*method)(&ctx, req, resp));
  }

  ~SegmentsProcess() { EXPECT_EQ(process_->Kill(SIGTERM), 0) << testing::Tail(log_, 20); }

 private:
  int port_;
  std::string log_;
  std::unique_ptr<testing::ChildProcess> process_;
  std::unique_ptr<pb::Segments::Stub> stub_;
};

// As deployed: each replica its own process. An import through one is answered by the other
// (which reads the change log every 200 ms here).
TEST(SegmentsProcessesTest, AnImportThroughOneProcessIsAnsweredByTheOther) {
  testing::TestDatabase db;
  const std::string topic = testing::NewTopic("segments-replicas-profiles", 1);
  SegmentsProcess writer(db.dsn(), topic);
  ASSERT_TRUE(writer.WaitUntilServing());
  SegmentsProcess reader(db.dsn(), topic);
  ASSERT_TRUE(reader.WaitUntilServing());

  const tenancy::Actor fed = Operator("fed");
  pb::CreateSegmentRequest create;
  create.set_name("aged 30 and over");
  *create.mutable_definition()->mutable_rule() = AgeAtLeast(30);
  pb::Segment segment;
  ASSERT_TRUE(writer.Call(&pb::Segments::Stub::CreateSegment, create, &segment, &fed).ok());
  pb::ImportTagValuesRequest import;
  import.set_csv("customer_id,age\nc-1,35\nc-2,25\n");
  pb::ImportTagValuesResponse imported;
  ASSERT_TRUE(writer.Call(&pb::Segments::Stub::ImportTagValues, import, &imported, &fed).ok());
  ASSERT_EQ(imported.rows_imported(), 2);

  pb::IsMemberRequest ask;
  ask.set_org_id("fed");
  ask.set_customer_id("c-1");
  *ask.add_segments() = Ref(segment.id());
  // Typically within one poll (200 ms here); a transaction left open elsewhere on the cluster (a
  // test running alongside) may hold it back until it ends, hence the generous bound.
  const absl::Time imported_at = absl::Now();
  bool member = false;
  while (!member && absl::Now() - imported_at < absl::Seconds(20)) {
    pb::IsMemberResponse answer;
    ASSERT_TRUE(reader.Call(&pb::Segments::Stub::IsMember, ask, &answer, nullptr).ok());
    member = answer.member(0);
    if (!member) absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(member) << "the other process did not see the import within 20 s";
  pb::CountRequest count;
  count.set_org_id("fed");
  *count.mutable_segment() = Ref(segment.id());
  pb::CountResponse counted;
  ASSERT_TRUE(reader.Call(&pb::Segments::Stub::Count, count, &counted, nullptr).ok());
  EXPECT_EQ(counted.count(), 1);
}

}  // namespace
}  // namespace mkt::segments
