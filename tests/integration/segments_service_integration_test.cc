// The segments service against a real PostgreSQL: CSV imports (good rows in, bad rows reported by
// line, no row and no failed import half-applied, rows of another bank's customers refused in the
// import's own transaction), tenant isolation of tags and segments (read, list, use in a rule,
// membership), segment versions pinned by callers, how deep compositions may nest, text checks
// on update, profile messages (dedupe, ordering, ownership), snapshots read in
// pages, RFM aggregates (bounded amounts, saturating sums) and scoring written back as tags, and
// the index rebuilt from the database matching the one kept current.
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "libs/core/ids.h"
#include "libs/core/money.h"
#include "libs/core/status.h"
#include "libs/kafka/outbox.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "libs/testing/testing.h"
#include "marketing/events/v1/business_event.pb.h"
#include "services/segments/pg_segment_store.h"
#include "services/segments/segment_service.h"
#include "services/segments/tag_index.h"

namespace mkt::segments {
namespace {

using ::marketing::common::v1::ErrorReason;

tenancy::Actor Operator(const std::string& org) {
  return {.org_id = org, .operator_id = "op-" + org, .roles = {tenancy::Role::kAdmin}};
}

pb::Condition Compare(const std::string& tag, pb::Operator op, int64_t value) {
  pb::Condition c;
  c.mutable_compare()->set_tag(tag);
  c.mutable_compare()->set_op(op);
  c.mutable_compare()->mutable_value()->set_int_value(value);
  return c;
}

pb::Condition BoolIs(const std::string& tag, bool value) {
  pb::Condition c;
  c.mutable_compare()->set_tag(tag);
  c.mutable_compare()->set_op(pb::EQ);
  c.mutable_compare()->mutable_value()->set_bool_value(value);
  return c;
}

pb::SegmentRef Ref(const std::string& id, int64_t version = 0) {
  pb::SegmentRef r;
  r.set_segment_id(id);
  r.set_version(version);
  return r;
}

pb::TagValue IntValue(const std::string& tag, int64_t v) {
  pb::TagValue t;
  t.set_tag(tag);
  t.set_int_value(v);
  return t;
}

class SegmentsServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pool = pg::Pool::Connect({.dsn = db_.dsn(), .size = 4});
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    ASSERT_TRUE(
        pg::ApplyMigrations(*pool_, {&kafka::OutboxMigrations(), &SegmentsMigrations()}).ok());
    store_ = std::make_unique<PgSegmentStore>(*pool_);
    service_ = std::make_unique<SegmentService>(*store_, index_, SystemClock());
    ASSERT_TRUE(service_->Rebuild().ok());
  }

  int64_t Sql(const std::string& query) {
    auto lease = pool_->Acquire();
    pqxx::work tx(**lease);
    pqxx::result r = tx.exec(query);
    tx.commit();
    return r.empty() || r[0][0].is_null() ? 0 : r[0][0].as<int64_t>();
  }

  pb::ImportTagValuesResponse Import(const std::string& org, const std::string& csv) {
    pb::ImportTagValuesRequest req;
    req.set_csv(csv);
    auto resp = service_->ImportTagValues(Operator(org), req);
    EXPECT_TRUE(resp.ok()) << resp.status();
    return resp.ok() ? *resp : pb::ImportTagValuesResponse();
  }

  std::string CreateRule(const std::string& org, const pb::Condition& rule) {
    pb::CreateSegmentRequest req;
    req.set_name("rule of " + org);
    *req.mutable_definition()->mutable_rule() = rule;
    auto s = service_->CreateSegment(Operator(org), req);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? s->id() : "";
  }

  absl::StatusOr<std::vector<bool>> Members(const std::string& org, const std::string& customer,
                                            const std::vector<pb::SegmentRef>& refs) {
    pb::IsMemberRequest req;
    req.set_org_id(org);
    req.set_customer_id(customer);
    for (const auto& r : refs) *req.add_segments() = r;
    MKT_ASSIGN_OR_RETURN(pb::IsMemberResponse resp, service_->IsMember(req));
    return std::vector<bool>(resp.member().begin(), resp.member().end());
  }

  absl::StatusOr<int64_t> CountOf(const std::string& org, const pb::SegmentRef& ref) {
    pb::CountRequest req;
    req.set_org_id(org);
    *req.mutable_segment() = ref;
    MKT_ASSIGN_OR_RETURN(pb::CountResponse resp, service_->Count(req));
    return resp.count();
  }

  // A segment `{"composed":{"op":"UNION","operands":[operand]}}` of fed; "" (and a failure) when
  // refused.
  std::string CreateUnion(const std::string& operand) {
    pb::CreateSegmentRequest req;
    req.set_name("union of " + operand);
    req.mutable_definition()->mutable_composed()->set_op(pb::Composition::UNION);
    *req.mutable_definition()->mutable_composed()->add_operands() = Ref(operand);
    auto s = service_->CreateSegment(Operator("fed"), req);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? s->id() : "";
  }

  kafka::IncomingMessage BusinessEventMessage(const std::string& customer_id, int64_t amount_fen,
                                              const std::string& event_id = NewEventId()) {
    marketing::events::v1::BusinessEvent ev;
    ev.set_source("card");
    ev.set_source_event_id(event_id);
    ev.set_event_type("credit_card.spend");
    ev.set_customer_id(customer_id);
    ev.set_org_id("bank-a");
    ev.set_amount_fen(amount_fen);
    ev.mutable_occurred_at()->set_seconds(absl::ToUnixSeconds(absl::Now()));
    auto envelope = kafka::MakeEnvelope("events.BusinessEvent", "bank-a", "t", ev);
    envelope.set_event_id(event_id);
    kafka::IncomingMessage m;
    m.topic = "mkt.business-events.v1";
    m.key = customer_id;
    m.value = envelope.SerializeAsString();
    return m;
  }

  // A business event of `org` for `customer_id`; a reversal when `original_event_id` is given.
  kafka::IncomingMessage EventOf(const std::string& org, const std::string& customer_id,
                                 int64_t amount_fen, const std::string& event_id,
                                 const std::string& original_event_id = "") {
    marketing::events::v1::BusinessEvent ev;
    ev.set_source("card");
    ev.set_source_event_id(event_id);
    ev.set_event_type(original_event_id.empty() ? "credit_card.spend" : "credit_card.refunded");
    ev.set_customer_id(customer_id);
    ev.set_org_id(org);
    ev.set_amount_fen(amount_fen);
    ev.mutable_occurred_at()->set_seconds(absl::ToUnixSeconds(absl::Now()));
    if (!original_event_id.empty()) {
      (*ev.mutable_attributes())["original_event_id"] = original_event_id;
    }
    auto envelope = kafka::MakeEnvelope("events.BusinessEvent", org, "t", ev);
    envelope.set_event_id(event_id);
    kafka::IncomingMessage m;
    m.topic = "mkt.business-events.v1";
    m.key = customer_id;
    m.value = envelope.SerializeAsString();
    return m;
  }

  kafka::IncomingMessage ProfileMessage(const pb::CustomerProfileChanged& profile,
                                        const std::string& event_id = NewEventId()) {
    auto envelope =
        kafka::MakeEnvelope("segments.CustomerProfileChanged", profile.org_id(), "t", profile);
    envelope.set_event_id(event_id);
    kafka::IncomingMessage m;
    m.topic = "mkt.customer-profiles.v1";
    m.key = profile.customer_id();
    m.value = envelope.SerializeAsString();
    return m;
  }

  testing::TestDatabase db_;
  std::unique_ptr<pg::Pool> pool_;
  std::unique_ptr<PgSegmentStore> store_;
  TagIndex index_;
  std::unique_ptr<SegmentService> service_;
};

// ---- CSV import --------------------------------------------------------------------------------

TEST_F(SegmentsServiceTest, CsvImportTakesGoodRowsAndReportsBadRowsByLine) {
  const std::string csv =
      "customer_id,age,gender,has_credit_card,aum_fen,last_login_date,product_holdings\n"
      "c-1,35,male,yes,1200.50,2026-11-20,deposit|loan\n"  // line 2: good
      "c-2,abc,female,no,10,2026-11-01,\n"                 // line 3: bad age
      "c-3,40,martian,no,10,2026-11-01,\n"                 // line 4: bad gender
      "c-4,41,female\n"                                    // line 5: too few fields
      "c-5,29,female,no,1.234,2026-02-30,deposit\n"        // line 6: bad fen and date
      "c-6,52,,n,,-,wealth\n"                              // line 7: good, sparse
      "\"\",30,male,no,1,2026-11-01,\n";                   // line 8: no customer id
  pb::ImportTagValuesResponse r = Import("fed", csv);
  EXPECT_EQ(r.rows_read(), 7);
  EXPECT_EQ(r.rows_imported(), 2);
  EXPECT_EQ(r.rows_rejected(), 5);
  std::map<int64_t, std::string> errors;
  for (const auto& e : r.errors()) errors[e.line()] = e.message();
  EXPECT_EQ((std::set<int64_t>{3, 4, 5, 6, 8}), [&] {
    std::set<int64_t> s;
    for (auto& [l, m] : errors) s.insert(l);
    return s;
  }());
  EXPECT_NE(errors[3].find("age"), std::string::npos) << errors[3];
  EXPECT_NE(errors[4].find("martian"), std::string::npos) << errors[4];
  EXPECT_NE(errors[6].find("aum_fen"), std::string::npos) << errors[6];
  EXPECT_NE(errors[6].find("last_login_date"), std::string::npos) << errors[6];

  // A bad row writes none of its values, not even the good cells (c-2's gender, c-3's age).
  EXPECT_EQ(Sql("SELECT count(*) FROM customers WHERE customer_id IN ('c-2','c-3','c-4','c-5')"),
            0);
  EXPECT_EQ(Sql("SELECT count(*) FROM tag_values"), 6 + 3);
  EXPECT_EQ(Sql("SELECT count(*) FROM tag_values v JOIN customers c USING (dense_id) "
                "WHERE c.customer_id = 'c-1' AND v.tag = 'aum_fen' AND v.value = '120050'"),
            1);
  ASSERT_TRUE(index_.Find("c-1").has_value());
  EXPECT_FALSE(index_.Find("c-2").has_value());
  EXPECT_EQ(index_.ValueOf(*index_.Find("c-1"), "aum_fen")->number, 120050);

  // The rows are usable in rules at once.
  std::string s = CreateRule("fed", Compare("age", pb::GE, 30));
  EXPECT_EQ(*CountOf("fed", Ref(s)), 2);

  // "-" removes a value; an empty cell leaves it.
  Import("fed", "customer_id,age,gender\nc-1,-,\n");
  EXPECT_FALSE(index_.ValueOf(*index_.Find("c-1"), "age").has_value());
  EXPECT_TRUE(index_.ValueOf(*index_.Find("c-1"), "gender").has_value());
  EXPECT_EQ(*CountOf("fed", Ref(s)), 1);
}

TEST_F(SegmentsServiceTest, FailedImportLeavesNothingBehind) {
  Import("fed", "customer_id,age\nc-1,20\n");
  // The database refuses one value in the middle of the file (as a constraint or a lost
  // connection would): the whole import must roll back, in PostgreSQL and in the index.
  Sql("CREATE FUNCTION refuse_999() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
      "IF NEW.value = '999' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$");
  Sql("CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON tag_values FOR EACH ROW "
      "EXECUTE FUNCTION refuse_999()");
  const int64_t values_before = Sql("SELECT count(*) FROM tag_values");
  const int64_t customers_before = Sql("SELECT count(*) FROM customers");
  pb::ImportTagValuesRequest req;
  req.set_csv("customer_id,age\nc-1,21\nc-2,22\nc-3,999\nc-4,23\n");
  auto resp = service_->ImportTagValues(Operator("fed"), req);
  EXPECT_FALSE(resp.ok());
  EXPECT_EQ(Sql("SELECT count(*) FROM tag_values"), values_before);
  EXPECT_EQ(Sql("SELECT count(*) FROM customers"), customers_before);
  EXPECT_EQ(index_.ValueOf(*index_.Find("c-1"), "age")->number, 20);
  EXPECT_FALSE(index_.Find("c-2").has_value());
}

TEST_F(SegmentsServiceTest, ImportRefusesTagsTheActorDoesNotOwn) {
  pb::ImportTagValuesRequest req;
  req.set_csv("customer_id,age\nc-1,20\n");
  auto resp = service_->ImportTagValues(Operator("bank-a"), req);  // "age" belongs to fed
  EXPECT_EQ(resp.status().code(), absl::StatusCode::kPermissionDenied) << resp.status();
  req.set_csv("customer_id,no_such_tag\nc-1,20\n");
  EXPECT_EQ(service_->ImportTagValues(Operator("fed"), req).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Sql("SELECT count(*) FROM customers"), 0);
}

// ---- Tenant isolation --------------------------------------------------------------------------

class TenancyTest : public SegmentsServiceTest {
 protected:
  void SetUp() override {
    SegmentsServiceTest::SetUp();
    pb::CreateTagRequest tag;
    tag.mutable_tag()->set_name("bank_a_vip");
    tag.mutable_tag()->set_type(pb::TAG_TYPE_BOOL);
    auto created = service_->CreateTag(Operator("bank-a"), tag);
    ASSERT_TRUE(created.ok()) << created.status();
    EXPECT_EQ(created->org_id(), "bank-a");
    Import("bank-a", "customer_id,bank_a_vip\na-1,true\na-2,false\na-3,true\n");
    // Federation tags are written by the federation; home orgs come from the first import.
    Import("bank-b", "customer_id\nb-1\nb-2\n");
    Import("fed", "customer_id,age\na-1,30\na-2,40\na-3,50\nb-1,35\nb-2,45\n");
    seg_a_ = CreateRule("bank-a", BoolIs("bank_a_vip", true));
    seg_fed_ = CreateRule("fed", Compare("age", pb::GE, 40));
  }
  std::string seg_a_, seg_fed_;
};

// A customer created in PostgreSQL by a business event of bank-b (no profile yet) and not yet in
// this replica's index keeps bank-b as home org when bank-a uploads a list naming it: it is not
// a member of bank-a's list and never enters bank-a's scope.
TEST_F(TenancyTest, AListDoesNotBringAnotherBanksCustomerIntoScope) {
  ASSERT_TRUE(service_->HandleBusinessEvent(EventOf("bank-b", "c9", 100, NewEventId())).ok());
  ASSERT_FALSE(index_.Find("c9").has_value());  // only in the database so far
  pb::CreateSegmentRequest list;
  list.set_name("uploaded by bank-a");
  list.mutable_definition()->mutable_list()->add_customer_ids("c9");
  list.mutable_definition()->mutable_list()->add_customer_ids("a-1");
  auto created = service_->CreateSegment(Operator("bank-a"), list);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->list_size(), 1);  // a-1 only
  EXPECT_EQ(Sql("SELECT count(*) FROM customers WHERE customer_id = 'c9' AND org_id = 'bank-b'"),
            1);
  ASSERT_TRUE(index_.Find("c9").has_value());
  EXPECT_TRUE(index_.InScope("bank-b", *index_.Find("c9")));
  EXPECT_FALSE(index_.InScope("bank-a", *index_.Find("c9")));

  pb::CreateSegmentRequest only_c9;
  only_c9.set_name("bank-b's customer");
  only_c9.mutable_definition()->mutable_list()->add_customer_ids("c9");
  auto c9_list = service_->CreateSegment(Operator("bank-a"), only_c9);
  ASSERT_TRUE(c9_list.ok()) << c9_list.status();
  EXPECT_EQ(c9_list->list_size(), 0);
  EXPECT_EQ(*CountOf("bank-a", Ref(c9_list->id())), 0);
  for (const std::string& id : {c9_list->id(), created->id()}) {
    pb::SampleRequest sample;
    sample.set_org_id("bank-a");
    *sample.mutable_segment() = Ref(id);
    sample.set_size(100);
    auto sampled = service_->Sample(sample);
    ASSERT_TRUE(sampled.ok()) << sampled.status();
    for (const auto& c : sampled->customer_ids()) EXPECT_NE(c, "c9");
  }
  EXPECT_EQ(*Members("bank-a", "c9", {Ref(c9_list->id())}), std::vector<bool>{false});
  // A federation rule seen by bank-a does not count c9 either.
  pb::Condition everyone;
  everyone.mutable_exists()->set_tag("age");
  Import("fed", "customer_id,age\nc9,33\n");
  const std::string fed_all = CreateRule("fed", everyone);
  EXPECT_EQ(*CountOf("bank-a", Ref(fed_all)), 3);
  EXPECT_EQ(*CountOf("bank-b", Ref(fed_all)), 3);
}

// An import writes only onto customers the importing org serves: a row naming another bank's
// customer is rejected by line, without saying whose the customer is, and writes nothing; the other
// rows commit, and new customers become the importing org's. The federation covers every bank.
TEST_F(TenancyTest, ImportRejectsRowsOfCustomersServedByAnotherBank) {
  const pb::ImportTagValuesResponse r = Import("bank-a",
                                               "customer_id,bank_a_vip\n"
                                               "a-1,false\n"    // line 2: bank-a's
                                               "b-1,true\n"     // line 3: bank-b's
                                               "a-new,true\n"   // line 4: new, becomes bank-a's
                                               "b-2,false\n");  // line 5: bank-b's
  EXPECT_EQ(r.rows_read(), 4);
  EXPECT_EQ(r.rows_imported(), 2);
  EXPECT_EQ(r.rows_rejected(), 2);
  EXPECT_EQ(r.values_written(), 2);
  ASSERT_EQ(r.errors_size(), 2);
  EXPECT_EQ(r.errors(0).line(), 3);
  EXPECT_EQ(r.errors(0).message(), "customer b-1 is served by another bank");
  EXPECT_EQ(r.errors(1).line(), 5);
  EXPECT_EQ(r.errors(1).message(), "customer b-2 is served by another bank");

  // Nothing of bank-a's on bank-b's customers, who stay bank-b's; the good rows are in.
  EXPECT_EQ(Sql("SELECT count(*) FROM tag_values v JOIN customers c USING (dense_id) "
                "WHERE c.customer_id IN ('b-1', 'b-2') AND v.tag = 'bank_a_vip'"),
            0);
  EXPECT_EQ(Sql("SELECT count(*) FROM customers WHERE customer_id IN ('b-1', 'b-2') "
                "AND org_id = 'bank-b'"),
            2);
  EXPECT_FALSE(index_.ValueOf(*index_.Find("b-1"), "bank_a_vip").has_value());
  EXPECT_EQ(index_.ValueOf(*index_.Find("a-1"), "bank_a_vip")->labels,
            std::vector<std::string>{"false"});
  EXPECT_EQ(Sql("SELECT count(*) FROM customers WHERE customer_id = 'a-new' AND org_id = 'bank-a'"),
            1);
  EXPECT_EQ(*CountOf("bank-a", Ref(seg_a_)), 2);  // a-3, a-new
  EXPECT_EQ(*CountOf("fed", Ref(seg_a_)), 2);

  // A file of nothing but other banks' customers writes nothing at all.
  const pb::ImportTagValuesResponse none = Import("bank-a", "customer_id,bank_a_vip\nb-1,true\n");
  EXPECT_EQ(none.rows_imported(), 0);
  EXPECT_EQ(none.rows_rejected(), 1);
  EXPECT_EQ(none.values_written(), 0);

  // The importing org decides, not the operator's: the federation importing for bank-a does not
  // reach bank-b's customers either.
  pb::ImportTagValuesRequest for_bank_a;
  for_bank_a.set_org_id("bank-a");
  for_bank_a.set_csv("customer_id,bank_a_vip\nb-1,true\n");
  auto via_fed = service_->ImportTagValues(Operator("fed"), for_bank_a);
  ASSERT_TRUE(via_fed.ok()) << via_fed.status();
  EXPECT_EQ(via_fed->rows_rejected(), 1);

  // A branch serves only its own customers; the message does not name the other office.
  pb::CreateTagRequest branch_tag;
  branch_tag.mutable_tag()->set_name("branch_vip");
  branch_tag.mutable_tag()->set_type(pb::TAG_TYPE_BOOL);
  ASSERT_TRUE(service_->CreateTag(Operator("bank-a.branch-01"), branch_tag).ok());
  const pb::ImportTagValuesResponse branch =
      Import("bank-a.branch-01", "customer_id,branch_vip\na-1,true\nbr-1,true\n");
  EXPECT_EQ(branch.rows_imported(), 1);
  ASSERT_EQ(branch.errors_size(), 1);
  EXPECT_EQ(branch.errors(0).line(), 2);
  EXPECT_EQ(branch.errors(0).message(), "customer a-1 is served by another office of the bank");

  // The federation serves everyone.
  const pb::ImportTagValuesResponse fed = Import("fed", "customer_id,age,bank_a_vip\nb-1,36,\n");
  EXPECT_EQ(fed.rows_imported(), 1);
  EXPECT_EQ(fed.rows_rejected(), 0);
  EXPECT_EQ(index_.ValueOf(*index_.Find("b-1"), "age")->number, 36);
  EXPECT_EQ(Sql("SELECT count(*) FROM tag_values v JOIN customers c USING (dense_id) "
                "WHERE c.customer_id IN ('b-1', 'b-2') AND v.tag = 'bank_a_vip'"),
            0);
}

// The home org is checked in the import's own transaction: a customer another bank creates while
// the import runs (its insert not committed when the import starts) is still refused.
TEST_F(TenancyTest, ImportChecksHomeOrgsInsideItsTransaction) {
  pqxx::connection other(db_.dsn());
  pqxx::work creating(other);
  creating.exec("INSERT INTO customers (customer_id, org_id) VALUES ('race-1', 'bank-b')");
  pb::ImportTagValuesResponse r;
  std::thread importing(
      [&] { r = Import("bank-a", "customer_id,bank_a_vip\nrace-1,true\na-2,true\n"); });
  // The import now waits for bank-b's uncommitted row.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (Sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
             "AND wait_event_type = 'Lock'") == 0 &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  creating.commit();
  importing.join();
  EXPECT_EQ(r.rows_imported(), 1);
  EXPECT_EQ(r.rows_rejected(), 1);
  ASSERT_EQ(r.errors_size(), 1);
  EXPECT_EQ(r.errors(0).line(), 2);
  EXPECT_EQ(r.errors(0).message(), "customer race-1 is served by another bank");
  EXPECT_EQ(Sql("SELECT count(*) FROM tag_values v JOIN customers c USING (dense_id) "
                "WHERE c.customer_id = 'race-1'"),
            0);
  EXPECT_EQ(index_.ValueOf(*index_.Find("a-2"), "bank_a_vip")->labels,
            std::vector<std::string>{"true"});
}

TEST_F(TenancyTest, ABankCannotReadAnotherBanksTagsOrSegments) {
  pb::GetTagRequest get_tag;
  get_tag.set_name("bank_a_vip");
  EXPECT_TRUE(service_->GetTag(Operator("bank-a"), get_tag).ok());
  EXPECT_TRUE(service_->GetTag(Operator("fed"), get_tag).ok());
  EXPECT_EQ(service_->GetTag(Operator("bank-b"), get_tag).status().code(),
            absl::StatusCode::kNotFound);
  get_tag.set_name("age");  // federation tags are readable by everyone
  EXPECT_TRUE(service_->GetTag(Operator("bank-b"), get_tag).ok());

  pb::GetSegmentRequest get_seg;
  *get_seg.mutable_segment() = Ref(seg_a_);
  EXPECT_TRUE(service_->GetSegment(Operator("bank-a"), get_seg).ok());
  EXPECT_EQ(service_->GetSegment(Operator("bank-b"), get_seg).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(service_->GetSegment(Operator("bank-ab"), get_seg).status().code(),
            absl::StatusCode::kNotFound);
  *get_seg.mutable_segment() = Ref(seg_fed_);
  EXPECT_TRUE(service_->GetSegment(Operator("bank-b"), get_seg).ok());
}

TEST_F(TenancyTest, ListsShowOwnAndFederationItemsOnly) {
  auto tags_b = service_->ListTags(Operator("bank-b"), pb::ListTagsRequest());
  ASSERT_TRUE(tags_b.ok());
  std::set<std::string> names;
  for (const auto& t : tags_b->tags()) names.insert(t.name());
  EXPECT_FALSE(names.count("bank_a_vip"));
  EXPECT_TRUE(names.count("age"));
  auto tags_a = service_->ListTags(Operator("bank-a"), pb::ListTagsRequest());
  names.clear();
  for (const auto& t : tags_a->tags()) names.insert(t.name());
  EXPECT_TRUE(names.count("bank_a_vip"));

  auto segs_b = service_->ListSegments(Operator("bank-b"), pb::ListSegmentsRequest());
  ASSERT_TRUE(segs_b.ok());
  std::set<std::string> ids;
  for (const auto& s : segs_b->segments()) ids.insert(s.id());
  EXPECT_EQ(ids, (std::set<std::string>{seg_fed_}));
  auto segs_fed = service_->ListSegments(Operator("fed"), pb::ListSegmentsRequest());
  EXPECT_EQ(segs_fed->segments_size(), 2);
}

TEST_F(TenancyTest, ABankCannotUseAnotherBanksTagOrSegmentInARule) {
  pb::CreateSegmentRequest req;
  req.set_name("steal");
  *req.mutable_definition()->mutable_rule() = BoolIs("bank_a_vip", true);
  auto s = service_->CreateSegment(Operator("bank-b"), req);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << s.status();

  pb::PreviewRequest preview;
  *preview.mutable_definition()->mutable_rule() = BoolIs("bank_a_vip", true);
  EXPECT_EQ(service_->Preview(Operator("bank-b"), preview).status().code(),
            absl::StatusCode::kInvalidArgument);

  pb::CreateSegmentRequest composed;
  composed.set_name("compose");
  auto* c = composed.mutable_definition()->mutable_composed();
  c->set_op(pb::Composition::INTERSECTION);
  *c->add_operands() = Ref(seg_fed_);
  *c->add_operands() = Ref(seg_a_);
  EXPECT_EQ(service_->CreateSegment(Operator("bank-b"), composed).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(service_->CreateSegment(Operator("bank-a"), composed).ok());

  // Creating for another org, or changing another bank's segment, is refused.
  req.set_org_id("bank-a");
  EXPECT_EQ(service_->CreateSegment(Operator("bank-b"), req).status().code(),
            absl::StatusCode::kPermissionDenied);
  pb::UpdateSegmentRequest update;
  update.set_segment_id(seg_a_);
  update.set_name("mine now");
  EXPECT_EQ(service_->UpdateSegment(Operator("bank-b"), update).status().code(),
            absl::StatusCode::kNotFound);
  update.set_segment_id(seg_fed_);
  EXPECT_EQ(service_->UpdateSegment(Operator("bank-b"), update).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(TenancyTest, MembershipIsScopedToTheAskingBank) {
  // bank-a's segment works for bank-a (and the federation) and does not exist for bank-b.
  EXPECT_EQ(*Members("bank-a", "a-1", {Ref(seg_a_)}), std::vector<bool>{true});
  EXPECT_EQ(*Members("bank-a", "a-2", {Ref(seg_a_)}), std::vector<bool>{false});
  EXPECT_EQ(Members("bank-b", "a-1", {Ref(seg_a_)}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(CountOf("bank-b", Ref(seg_a_)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*CountOf("bank-a", Ref(seg_a_)), 2);

  // A federation segment is usable by every bank, but each sees only its own customers.
  EXPECT_EQ(*CountOf("fed", Ref(seg_fed_)), 3);     // a-2, a-3, b-2
  EXPECT_EQ(*CountOf("bank-a", Ref(seg_fed_)), 2);  // a-2, a-3
  EXPECT_EQ(*CountOf("bank-b", Ref(seg_fed_)), 1);  // b-2
  EXPECT_EQ(*Members("bank-b", "b-2", {Ref(seg_fed_)}), std::vector<bool>{true});
  EXPECT_EQ(*Members("bank-b", "a-3", {Ref(seg_fed_)}), std::vector<bool>{false});
  EXPECT_EQ(*Members("fed", "a-3", {Ref(seg_fed_)}), std::vector<bool>{true});

  pb::SampleRequest sample;
  sample.set_org_id("bank-b");
  *sample.mutable_segment() = Ref(seg_fed_);
  sample.set_size(10);
  auto got = service_->Sample(sample);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(std::vector<std::string>(got->customer_ids().begin(), got->customer_ids().end()),
            std::vector<std::string>{"b-2"});

  // A snapshot of bank-a cannot be read by bank-b.
  pb::MaterializeRequest mat;
  mat.set_org_id("bank-a");
  *mat.mutable_segment() = Ref(seg_fed_);
  auto snap = service_->Materialize(mat);
  ASSERT_TRUE(snap.ok()) << snap.status();
  pb::ReadSnapshotRequest read;
  read.set_org_id("bank-b");
  read.set_snapshot_id(snap->id());
  EXPECT_EQ(service_->ReadSnapshot(read).status().code(), absl::StatusCode::kNotFound);
  read.set_org_id("bank-a");
  EXPECT_EQ(service_->ReadSnapshot(read)->customer_ids_size(), 2);
}

TEST_F(TenancyTest, TagValuesAreScopedToTheAskingBank) {
  pb::BatchGetTagValuesRequest req;
  req.set_org_id("bank-a");
  for (const char* c : {"a-1", "a-2", "b-1", "nobody"}) req.add_customer_ids(c);
  for (const char* t : {"age", "bank_a_vip", "no_such_tag"}) req.add_tags(t);
  const auto values = [&](const pb::BatchGetTagValuesResponse& resp) {
    std::map<std::string, std::string> out;  // customer/tag -> value
    for (const auto& row : resp.rows()) {
      for (const auto& v : row.values()) {
        out[row.customer_id() + "/" + v.tag()] = v.has_bool_value()
                                                     ? (v.bool_value() ? "true" : "false")
                                                     : std::to_string(v.int_value());
      }
    }
    return out;
  };
  pb::BatchGetTagValuesResponse a;
  ASSERT_TRUE(service_->BatchGetTagValuesInto(req, &a).ok());
  ASSERT_EQ(a.rows_size(), 4);  // one row per customer asked, in order
  EXPECT_EQ(a.rows(2).customer_id(), "b-1");
  EXPECT_EQ(values(a), (std::map<std::string, std::string>{{"a-1/age", "30"},
                                                           {"a-1/bank_a_vip", "true"},
                                                           {"a-2/age", "40"},
                                                           {"a-2/bank_a_vip", "false"}}));
  EXPECT_EQ(std::vector<std::string>(a.unknown_tags().begin(), a.unknown_tags().end()),
            std::vector<std::string>{"no_such_tag"});

  // bank-b reads the federation's tag of its own customers only, and not bank-a's tag at all.
  req.set_org_id("bank-b");
  pb::BatchGetTagValuesResponse b;
  ASSERT_TRUE(service_->BatchGetTagValuesInto(req, &b).ok());
  EXPECT_EQ(values(b), (std::map<std::string, std::string>{{"b-1/age", "35"}}));
  EXPECT_EQ(std::vector<std::string>(b.unknown_tags().begin(), b.unknown_tags().end()),
            (std::vector<std::string>{"bank_a_vip", "no_such_tag"}));

  // Malformed requests are refused by field.
  const auto refused = [&](const pb::BatchGetTagValuesRequest& bad) {
    pb::BatchGetTagValuesResponse out;
    absl::Status s = service_->BatchGetTagValuesInto(bad, &out);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    return std::string(s.message());
  };
  pb::BatchGetTagValuesRequest bad = req;
  bad.clear_tags();
  EXPECT_NE(refused(bad).find("1..64 tags"), std::string::npos);
  bad = req;
  bad.clear_customer_ids();
  EXPECT_NE(refused(bad).find("1..1000 customers"), std::string::npos);
  bad = req;
  bad.add_tags("Bad Name");
  refused(bad);
  bad = req;
  bad.set_org_id("");
  refused(bad);
  bad = req;
  bad.add_customer_ids("");
  refused(bad);
}

// ---- Versions, snapshots, profile messages -----------------------------------------------------

TEST_F(SegmentsServiceTest, CallersPinTheVersionTheyWereApprovedWith) {
  Import("fed", "customer_id,age\nc-30,30\nc-60,60\n");
  const std::string id = CreateRule("fed", Compare("age", pb::GE, 25));
  pb::UpdateSegmentRequest update;
  update.set_segment_id(id);
  *update.mutable_definition()->mutable_rule() = Compare("age", pb::GE, 50);
  update.set_expected_version(1);
  auto v2 = service_->UpdateSegment(Operator("fed"), update);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->version(), 2);
  // A stale edit conflicts.
  auto stale = service_->UpdateSegment(Operator("fed"), update);
  EXPECT_EQ(ReasonOf(stale.status()), marketing::common::v1::CONFLICT) << stale.status();

  EXPECT_EQ(*Members("fed", "c-30", {Ref(id, 1), Ref(id, 2), Ref(id, 0)}),
            (std::vector<bool>{true, false, false}));
  EXPECT_EQ(*CountOf("fed", Ref(id, 1)), 2);
  EXPECT_EQ(*CountOf("fed", Ref(id, 2)), 1);
  EXPECT_EQ(CountOf("fed", Ref(id, 3)).status().code(), absl::StatusCode::kNotFound);
  // A composition may not contain itself.
  pb::UpdateSegmentRequest loop;
  loop.set_segment_id(id);
  loop.mutable_definition()->mutable_composed()->set_op(pb::Composition::UNION);
  *loop.mutable_definition()->mutable_composed()->add_operands() = Ref(id, 1);
  EXPECT_EQ(service_->UpdateSegment(Operator("fed"), loop).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A campaign approves X@1 = UNION(Y): a later edit of Y (which needs no approval) must not change
// the audience X@1 stands for. Operands given as latest are pinned when X's version is written.
TEST_F(SegmentsServiceTest, AComposedVersionPinsItsOperands) {
  Import("fed", "customer_id,age\nc-40,40\nc-70,70\n");
  const std::string y = CreateRule("fed", Compare("age", pb::GE, 30));
  const std::string x = CreateUnion(y);  // operand given as Y@0
  // A composition stored before operands were pinned (operand still at version 0).
  SegmentVersion old;
  old.id = "seg-stored-unpinned";
  old.org_id = "fed";
  old.name = "stored before pinning";
  old.kind = pb::SEGMENT_KIND_COMPOSED;
  old.definition.mutable_composed()->set_op(pb::Composition::UNION);
  *old.definition.mutable_composed()->add_operands() = Ref(y);
  old.created_by = "op-fed";
  ASSERT_TRUE(store_->CreateSegment(old).ok());
  EXPECT_EQ(*Members("fed", "c-40", {Ref(x, 1), Ref(old.id, 1)}), (std::vector<bool>{true, true}));

  pb::UpdateSegmentRequest update;
  update.set_segment_id(y);
  *update.mutable_definition()->mutable_rule() = Compare("age", pb::GE, 60);
  ASSERT_TRUE(service_->UpdateSegment(Operator("fed"), update).ok());

  pb::GetSegmentRequest get;
  *get.mutable_segment() = Ref(x, 1);
  auto stored = service_->GetSegment(Operator("fed"), get);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->definition().composed().operands(0).version(), 1);
  // X@1 (and X, whose latest version is 1) keep meaning age >= 30; Y itself changed.
  EXPECT_EQ(*Members("fed", "c-40", {Ref(x, 1), Ref(x), Ref(y), Ref(old.id, 1)}),
            (std::vector<bool>{true, true, false, true}));
  EXPECT_EQ(*CountOf("fed", Ref(x, 1)), 2);
  // A fresh service (another replica, nothing cached) reads the same.
  TagIndex index;
  SegmentService other(*store_, index, SystemClock());
  ASSERT_TRUE(other.Rebuild().ok());
  pb::IsMemberRequest req;
  req.set_org_id("fed");
  req.set_customer_id("c-40");
  *req.add_segments() = Ref(x, 1);
  *req.add_segments() = Ref(old.id, 1);
  auto answer = other.IsMember(req);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(std::vector<bool>(answer->member().begin(), answer->member().end()),
            (std::vector<bool>{true, true}));
  // A new version of X takes Y as it is now.
  pb::UpdateSegmentRequest again;
  again.set_segment_id(x);
  again.mutable_definition()->mutable_composed()->set_op(pb::Composition::UNION);
  *again.mutable_definition()->mutable_composed()->add_operands() = Ref(y);
  auto x2 = service_->UpdateSegment(Operator("fed"), again);
  ASSERT_TRUE(x2.ok()) << x2.status();
  EXPECT_EQ(x2->definition().composed().operands(0).version(), 2);
  EXPECT_EQ(*Members("fed", "c-40", {Ref(x, 1), Ref(x, 2)}), (std::vector<bool>{true, false}));
}

// "c1 " or "\uFEFFc1" would be another customer than c1 (ids compare byte for byte): refused, with
// the entry or line named.
TEST_F(SegmentsServiceTest, CustomerIdsWithBlanksOrInvisibleCharactersAreRefused) {
  const int64_t customers = Sql("SELECT count(*) FROM customers");
  for (const std::string& bad : {std::string("c1 "), std::string(" c1"),
                                 std::string("\xEF\xBB\xBF"
                                             "c1"),
                                 std::string("c\xEF\xBB\xBF"
                                             "1"),
                                 std::string("c1\xE3\x80\x80"), std::string("c1\xE2\x80\x8B")}) {
    pb::CreateSegmentRequest list;
    list.set_name("uploaded");
    list.mutable_definition()->mutable_list()->add_customer_ids("c1");
    list.mutable_definition()->mutable_list()->add_customer_ids(bad);
    auto refused = service_->CreateSegment(Operator("fed"), list);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(FieldOf(refused.status()), "definition.list.customer_ids[1]") << refused.status();
    EXPECT_NE(refused.status().message().find("entry 2"), std::string::npos) << refused.status();
  }
  EXPECT_EQ(Sql("SELECT count(*) FROM customers"), customers);
  pb::ImportTagValuesResponse r = Import("fed",
                                         "customer_id,age\nc1,30\nc1 ,31\n\xEF\xBB\xBF"
                                         "c1,32\nc2,33\n");
  EXPECT_EQ(r.rows_imported(), 2);
  ASSERT_EQ(r.errors_size(), 2);
  EXPECT_EQ(r.errors(0).line(), 3);
  EXPECT_NE(r.errors(0).message().find("blank"), std::string::npos) << r.errors(0).message();
  EXPECT_EQ(r.errors(1).line(), 4);
  EXPECT_NE(r.errors(1).message().find("U+FEFF"), std::string::npos) << r.errors(1).message();
  EXPECT_EQ(Sql("SELECT count(*) FROM customers"), customers + 2);
  EXPECT_EQ(index_.ValueOf(*index_.Find("c1"), "age")->number, 30);
  // Also on the membership and event paths.
  pb::BatchGetTagValuesRequest values;
  values.set_org_id("fed");
  values.add_customer_ids("c1");
  values.add_customer_ids("c1 ");
  values.add_tags("age");
  pb::BatchGetTagValuesResponse out;
  absl::Status batch = service_->BatchGetTagValuesInto(values, &out);
  EXPECT_EQ(batch.code(), absl::StatusCode::kInvalidArgument) << batch;
  EXPECT_EQ(FieldOf(batch), "customer_ids[1]");
  EXPECT_EQ(service_->HandleBusinessEvent(EventOf("bank-a", "c1 ", 100, NewEventId())).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SegmentsServiceTest, ListAndComposedSegmentsAndSnapshotPages) {
  std::string csv = "customer_id,age\n";
  for (int i = 0; i < 2500; ++i) absl::StrAppend(&csv, "c", i, ",", i % 100, "\n");
  Import("fed", csv);
  pb::CreateSegmentRequest list;
  list.set_name("uploaded");
  for (int i = 0; i < 3000; i += 2) {
    list.mutable_definition()->mutable_list()->add_customer_ids(absl::StrCat("c", i));
  }
  auto listed = service_->CreateSegment(Operator("fed"), list);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->list_size(), 1500);  // 250 of them are new customers
  const std::string old = CreateRule("fed", Compare("age", pb::GE, 50));
  pb::CreateSegmentRequest composed;
  composed.set_name("old and uploaded, minus 90+");
  auto* c = composed.mutable_definition()->mutable_composed();
  c->set_op(pb::Composition::INTERSECTION);
  *c->add_operands() = Ref(listed->id());
  *c->add_operands() = Ref(old);
  auto both = service_->CreateSegment(Operator("fed"), composed);
  ASSERT_TRUE(both.ok()) << both.status();
  pb::CreateSegmentRequest excl;
  excl.set_name("minus");
  auto* e = excl.mutable_definition()->mutable_composed();
  e->set_op(pb::Composition::EXCLUSION);
  *e->add_operands() = Ref(both->id());
  *e->add_operands() = Ref(CreateRule("fed", Compare("age", pb::GE, 90)));
  auto minus = service_->CreateSegment(Operator("fed"), excl);
  ASSERT_TRUE(minus.ok()) << minus.status();

  std::set<std::string> want;
  for (int i = 0; i < 2500; i += 2) {
    if (i % 100 >= 50 && i % 100 < 90) want.insert(absl::StrCat("c", i));
  }
  EXPECT_EQ(*CountOf("fed", Ref(minus->id())), static_cast<int64_t>(want.size()));
  EXPECT_EQ(*Members("fed", "c52", {Ref(minus->id()), Ref(both->id())}),
            (std::vector<bool>{true, true}));
  EXPECT_EQ(*Members("fed", "c92", {Ref(minus->id()), Ref(both->id())}),
            (std::vector<bool>{false, true}));

  pb::OverlapRequest overlap;
  overlap.set_org_id("fed");
  *overlap.mutable_a() = Ref(listed->id());
  *overlap.mutable_b() = Ref(old);
  auto o = service_->Overlap(overlap);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->both(), 625);
  EXPECT_EQ(o->a_only(), 1500 - 625);

  pb::MaterializeRequest mat;
  mat.set_org_id("fed");
  *mat.mutable_segment() = Ref(minus->id());
  mat.set_purpose("campaign:test");
  auto snap = service_->Materialize(mat);
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->segment().version(), 1);
  std::set<std::string> got;
  pb::ReadSnapshotRequest read;
  read.set_org_id("fed");
  read.set_snapshot_id(snap->id());
  read.mutable_page()->set_page_size(37);
  int pages = 0;
  do {
    auto page = service_->ReadSnapshot(read);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& id : page->customer_ids()) EXPECT_TRUE(got.insert(id).second) << id;
    read.mutable_page()->set_page_token(page->page().next_page_token());
    ++pages;
  } while (!read.page().page_token().empty());
  EXPECT_EQ(got, want);
  EXPECT_EQ(pages, static_cast<int>((want.size() + 36) / 37));
}

TEST_F(SegmentsServiceTest, CompositionsNestAtMostEightLevels) {
  Import("fed", "customer_id,age\nc-30,30\n");
  // chain[0] is a rule; chain[k] is the union of chain[k-1], nesting k levels deep.
  std::vector<std::string> chain = {CreateRule("fed", Compare("age", pb::GE, 25))};
  for (int k = 1; k <= 8; ++k) chain.push_back(CreateUnion(chain.back()));
  EXPECT_EQ(*CountOf("fed", Ref(chain[8])), 1);
  const int64_t segments = Sql("SELECT count(*) FROM segment_versions");

  // A ninth level is refused on create, naming the operand and the depth; nothing is stored.
  pb::CreateSegmentRequest nine;
  nine.set_name("nine levels");
  nine.mutable_definition()->mutable_composed()->set_op(pb::Composition::UNION);
  *nine.mutable_definition()->mutable_composed()->add_operands() = Ref(chain[0]);
  *nine.mutable_definition()->mutable_composed()->add_operands() = Ref(chain[8]);
  auto refused = service_->CreateSegment(Operator("fed"), nine);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_EQ(FieldOf(refused.status()), "definition.composed.operands[1]");
  EXPECT_NE(refused.status().message().find(chain[8]), std::string::npos) << refused.status();
  EXPECT_NE(refused.status().message().find("9 levels"), std::string::npos) << refused.status();
  EXPECT_EQ(Sql("SELECT count(*) FROM segment_versions"), segments);
  // So is a preview of it.
  pb::PreviewRequest preview;
  preview.set_org_id("fed");
  *preview.mutable_definition() = nine.definition();
  auto previewed = service_->Preview(Operator("fed"), preview);
  EXPECT_EQ(previewed.status().code(), absl::StatusCode::kInvalidArgument) << previewed.status();
  EXPECT_EQ(FieldOf(previewed.status()), "definition.composed.operands[1]");

  // The segments that use `leaf` pinned its version when they were written (through the service;
  // or stored before pinning and read as of when they were written), so turning `leaf` into a
  // composition makes none of them deeper nor changes what they contain.
  const std::string leaf = CreateRule("fed", Compare("age", pb::GE, 50));
  std::vector<std::string> parents = {leaf};
  for (int k = 1; k <= 7; ++k) parents.push_back(CreateUnion(parents.back()));
  SegmentVersion unpinned;
  unpinned.id = "seg-unpinned";
  unpinned.org_id = "fed";
  unpinned.name = "stored before operands were pinned";
  unpinned.kind = pb::SEGMENT_KIND_COMPOSED;
  unpinned.definition.mutable_composed()->set_op(pb::Composition::UNION);
  *unpinned.definition.mutable_composed()->add_operands() = Ref(parents[7]);
  unpinned.created_by = "op-fed";
  ASSERT_TRUE(store_->CreateSegment(unpinned).ok());
  pb::UpdateSegmentRequest deeper;
  deeper.set_segment_id(leaf);
  deeper.mutable_definition()->mutable_composed()->set_op(pb::Composition::UNION);
  *deeper.mutable_definition()->mutable_composed()->add_operands() = Ref(chain[7]);
  auto updated = service_->UpdateSegment(Operator("fed"), deeper);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->definition().composed().operands(0).version(), 1);
  EXPECT_EQ(*CountOf("fed", Ref(leaf)), 1);
  EXPECT_EQ(*CountOf("fed", Ref(parents[7])), 0);
  EXPECT_EQ(*CountOf("fed", Ref(unpinned.id)), 0);
  EXPECT_EQ(*Members("fed", "c-30", {Ref(leaf), Ref(parents[7]), Ref(unpinned.id)}),
            (std::vector<bool>{true, false, false}));
  // A new version of a parent takes `leaf` as it is now, and is checked for depth with it.
  pb::UpdateSegmentRequest parent;
  parent.set_segment_id(parents[1]);
  parent.mutable_definition()->mutable_composed()->set_op(pb::Composition::UNION);
  *parent.mutable_definition()->mutable_composed()->add_operands() = Ref(leaf);
  auto refused_parent = service_->UpdateSegment(Operator("fed"), parent);
  ASSERT_EQ(refused_parent.status().code(), absl::StatusCode::kInvalidArgument)
      << refused_parent.status();
  EXPECT_NE(refused_parent.status().message().find("9 levels"), std::string::npos)
      << refused_parent.status();

  // A composition stored too deep before these checks is a FAILED_PRECONDITION naming it
  // wherever it is evaluated, and cannot be used in a new composition.
  SegmentVersion old;
  old.id = "seg-too-deep";
  old.org_id = "fed";
  old.name = "stored before the depth check";
  old.kind = pb::SEGMENT_KIND_COMPOSED;
  old.definition.mutable_composed()->set_op(pb::Composition::UNION);
  *old.definition.mutable_composed()->add_operands() = Ref(chain[8]);
  old.created_by = "op-fed";
  ASSERT_TRUE(store_->CreateSegment(old).ok());
  absl::Status count = CountOf("fed", Ref(old.id)).status();
  EXPECT_EQ(count.code(), absl::StatusCode::kFailedPrecondition) << count;
  EXPECT_NE(count.message().find(old.id), std::string::npos) << count;
  absl::Status member = Members("fed", "c-30", {Ref(chain[8]), Ref(old.id)}).status();
  EXPECT_EQ(member.code(), absl::StatusCode::kFailedPrecondition) << member;
  EXPECT_NE(member.message().find(old.id), std::string::npos) << member;
  *preview.mutable_definition()->mutable_composed()->mutable_operands(1) = Ref(old.id);
  previewed = service_->Preview(Operator("fed"), preview);
  EXPECT_EQ(previewed.status().code(), absl::StatusCode::kInvalidArgument) << previewed.status();
  EXPECT_EQ(FieldOf(previewed.status()), "definition.composed.operands[1]");
}

TEST_F(SegmentsServiceTest, UpdateChecksTextLikeCreate) {
  const std::string id = CreateRule("fed", Compare("age", pb::GE, 25));
  for (const std::string& bad :
       {std::string("bell\x07"), std::string("nul\0x", 5), std::string("\xff")}) {
    pb::CreateSegmentRequest create;
    create.set_name("fine");
    create.set_description(bad);
    *create.mutable_definition()->mutable_rule() = Compare("age", pb::GE, 25);
    auto created = service_->CreateSegment(Operator("fed"), create);
    EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument) << created.status();
    EXPECT_EQ(FieldOf(created.status()), "description");

    pb::UpdateSegmentRequest update;
    update.set_segment_id(id);
    update.set_description(bad);
    auto updated = service_->UpdateSegment(Operator("fed"), update);
    EXPECT_EQ(updated.status().code(), absl::StatusCode::kInvalidArgument) << updated.status();
    EXPECT_EQ(FieldOf(updated.status()), "description");
    update.set_description("");
    update.set_name(bad);
    updated = service_->UpdateSegment(Operator("fed"), update);
    EXPECT_EQ(updated.status().code(), absl::StatusCode::kInvalidArgument) << updated.status();
    EXPECT_EQ(FieldOf(updated.status()), "name");
  }
  EXPECT_EQ(Sql("SELECT count(*) FROM segment_versions"), 1);
  pb::UpdateSegmentRequest good;
  good.set_segment_id(id);
  good.set_description("customers aged 25 and over");
  auto updated = service_->UpdateSegment(Operator("fed"), good);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->description(), "customers aged 25 and over");
}

TEST_F(SegmentsServiceTest, ProfileMessagesDedupeOrderAndOwnership) {
  const std::string seg = CreateRule("fed", Compare("age", pb::GE, 30));
  pb::CustomerProfileChanged p;
  p.set_customer_id("k-1");
  p.set_org_id("bank-a");
  p.set_version(5);
  *p.add_set_values() = IntValue("age", 35);
  ASSERT_TRUE(service_->HandleProfileMessage(ProfileMessage(p, "ev-1")).ok());
  EXPECT_EQ(*Members("bank-a", "k-1", {Ref(seg)}), std::vector<bool>{true});
  // The same event id again changes nothing, even with other content.
  p.mutable_set_values(0)->set_int_value(20);
  ASSERT_TRUE(service_->HandleProfileMessage(ProfileMessage(p, "ev-1")).ok());
  EXPECT_EQ(*Members("bank-a", "k-1", {Ref(seg)}), std::vector<bool>{true});
  // An older version arriving late is ignored; a newer one applies.
  p.set_version(4);
  ASSERT_TRUE(service_->HandleProfileMessage(ProfileMessage(p)).ok());
  EXPECT_EQ(*Members("bank-a", "k-1", {Ref(seg)}), std::vector<bool>{true});
  p.set_version(6);
  ASSERT_TRUE(service_->HandleProfileMessage(ProfileMessage(p)).ok());
  EXPECT_EQ(*Members("bank-a", "k-1", {Ref(seg)}), std::vector<bool>{false});
  // Removal.
  pb::CustomerProfileChanged removal;
  removal.set_customer_id("k-1");
  removal.set_org_id("bank-a");
  removal.set_version(7);
  removal.add_removed_tags("age");
  ASSERT_TRUE(service_->HandleProfileMessage(ProfileMessage(removal)).ok());
  EXPECT_EQ(Sql("SELECT count(*) FROM tag_values"), 0);

  // Wrong types, unknown tags and another bank's tags are permanent errors (dead-lettered).
  pb::CreateTagRequest tag;
  tag.mutable_tag()->set_name("bank_a_score");
  tag.mutable_tag()->set_type(pb::TAG_TYPE_INT);
  ASSERT_TRUE(service_->CreateTag(Operator("bank-a"), tag).ok());
  pb::CustomerProfileChanged bad;
  bad.set_customer_id("k-2");
  bad.set_org_id("bank-b");
  *bad.add_set_values() = IntValue("bank_a_score", 1);
  absl::Status s = service_->HandleProfileMessage(ProfileMessage(bad));
  EXPECT_TRUE(kafka::IsPermanent(s)) << s;
  bad.mutable_set_values(0)->set_tag("gender");
  EXPECT_TRUE(kafka::IsPermanent(service_->HandleProfileMessage(ProfileMessage(bad))));
  bad.mutable_set_values(0)->set_tag("nope");
  EXPECT_TRUE(kafka::IsPermanent(service_->HandleProfileMessage(ProfileMessage(bad))));
  kafka::IncomingMessage garbage;
  garbage.value = "not an envelope";
  EXPECT_TRUE(kafka::IsPermanent(service_->HandleProfileMessage(garbage)));
  EXPECT_FALSE(index_.Find("k-2").has_value());
}

// A refund (or cancel) names the event it reverses in the attribute original_event_id: it is not
// spending. Rule chosen: its amount is given back from the sum (not below 0); the count and the
// last day stay. So a spend of 100 and its full refund: count 1, amount 0.
TEST_F(SegmentsServiceTest, RfmReversalsAreNotSpending) {
  auto aggregate = [&](const std::string& what) {
    return Sql("SELECT " + what +
               " FROM rfm_aggregates a JOIN customers c USING (dense_id) "
               "WHERE c.customer_id = 'r-1'");
  };
  ASSERT_TRUE(service_->HandleBusinessEvent(EventOf("bank-a", "r-1", 100, "tx-1")).ok());
  const std::string refund = NewEventId();
  ASSERT_TRUE(service_->HandleBusinessEvent(EventOf("bank-a", "r-1", 100, refund, "tx-1")).ok());
  EXPECT_EQ(aggregate("txn_count"), 1);
  EXPECT_EQ(aggregate("amount_fen"), 0);
  // Redelivered: applied once.
  ASSERT_TRUE(service_->HandleBusinessEvent(EventOf("bank-a", "r-1", 100, refund, "tx-1")).ok());
  ASSERT_TRUE(service_->HandleBusinessEvent(EventOf("bank-a", "r-1", 500, "tx-2")).ok());
  EXPECT_EQ(aggregate("txn_count"), 2);
  EXPECT_EQ(aggregate("amount_fen"), 500);
  // A partial refund takes its part; a refund larger than the sum stops at 0.
  ASSERT_TRUE(
      service_->HandleBusinessEvent(EventOf("bank-a", "r-1", 200, NewEventId(), "tx-2")).ok());
  EXPECT_EQ(aggregate("amount_fen"), 300);
  ASSERT_TRUE(
      service_->HandleBusinessEvent(EventOf("bank-a", "r-1", 900, NewEventId(), "tx-2")).ok());
  EXPECT_EQ(aggregate("amount_fen"), 0);
  EXPECT_EQ(aggregate("txn_count"), 2);
  // A reversal for a customer without transactions creates nothing.
  ASSERT_TRUE(
      service_->HandleBusinessEvent(EventOf("bank-a", "r-2", 100, NewEventId(), "tx-9")).ok());
  EXPECT_EQ(Sql("SELECT count(*) FROM rfm_aggregates"), 1);
}

TEST_F(SegmentsServiceTest, RfmScoresBecomeTagsUsableInRules) {
  // 10 customers: customer i made i+1 purchases of (i+1)*1000 fen, the last one i days ago.
  const absl::Time now = absl::Now();
  for (int i = 0; i < 10; ++i) {
    for (int k = 0; k <= i; ++k) {
      marketing::events::v1::BusinessEvent ev;
      ev.set_source("card");
      ev.set_source_event_id(absl::StrCat("tx-", i, "-", k));
      ev.set_event_type("credit_card.spend");
      ev.set_customer_id(absl::StrCat("r-", i));
      ev.set_org_id("bank-a");
      ev.set_amount_fen((i + 1) * 1000);
      ev.mutable_occurred_at()->set_seconds(absl::ToUnixSeconds(now - absl::Hours(24 * (i + k))));
      auto env = kafka::MakeEnvelope("events.BusinessEvent", "bank-a", "t", ev);
      kafka::IncomingMessage m;
      m.value = env.SerializeAsString();
      ASSERT_TRUE(service_->HandleBusinessEvent(m).ok());
      if (k == 0) {
        ASSERT_TRUE(service_->HandleBusinessEvent(m).ok());  // a duplicate
      }
    }
  }
  EXPECT_EQ(Sql("SELECT sum(txn_count) FROM rfm_aggregates"), 55);
  auto scored = service_->RecomputeRfm(Operator("fed"));
  ASSERT_TRUE(scored.ok()) << scored.status();
  EXPECT_EQ(scored->customers_scored(), 10);
  EXPECT_EQ(service_->RecomputeRfm(Operator("bank-a")).status().code(),
            absl::StatusCode::kPermissionDenied);
  // r-0: most recent, fewest, smallest → general_develop; r-9: oldest, most, biggest →
  // important_retain.
  auto value = [&](const std::string& c, const std::string& tag) {
    return index_.ValueOf(*index_.Find(c), tag);
  };
  EXPECT_EQ(value("r-0", "rfm_r_score")->number, 5);
  EXPECT_EQ(value("r-9", "rfm_f_score")->number, 5);
  EXPECT_EQ(value("r-0", "rfm_group")->labels[0], "general_develop");
  EXPECT_EQ(value("r-9", "rfm_group")->labels[0], "important_retain");
  pb::Condition rule;
  rule.mutable_compare()->set_tag("rfm_group");
  rule.mutable_compare()->set_op(pb::EQ);
  rule.mutable_compare()->mutable_value()->set_enum_value("important_retain");
  const std::string seg = CreateRule("bank-a", rule);
  EXPECT_EQ(*Members("bank-a", "r-9", {Ref(seg)}), std::vector<bool>{true});
  EXPECT_EQ(*Members("bank-a", "r-0", {Ref(seg)}), std::vector<bool>{false});
}

TEST_F(SegmentsServiceTest, RfmAggregatesRefuseOutOfRangeEventsAndHoldAtTheMaximum) {
  auto amount = [&] { return Sql("SELECT amount_fen FROM rfm_aggregates"); };
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  // Amounts outside 0..kMaxEventAmountFen and malformed text are permanent errors (the consumer
  // dead-letters them and goes on) that change nothing; the next event is applied.
  const std::vector<std::pair<kafka::IncomingMessage, std::string>> refused = {
      {BusinessEventMessage("r-1", kMaxEventAmountFen + 1), "amount_fen"},
      {BusinessEventMessage("r-1", kMax), "amount_fen"},
      {BusinessEventMessage("r-1", -100), "amount_fen"},
      {BusinessEventMessage("r-1", 100, std::string("ev\0nul", 6)), "event_id"},
      {BusinessEventMessage(std::string("r-\0", 3), 100), "customer_id"},
      // Not UTF-8: protobuf may already refuse to parse it; either way it is refused.
      {BusinessEventMessage("r-\xc3\x28", 100), ""},
  };
  for (const auto& [message, field] : refused) {
    absl::Status s = service_->HandleBusinessEvent(message);
    EXPECT_TRUE(kafka::IsPermanent(s)) << s;
    if (!field.empty()) {
      EXPECT_EQ(FieldOf(s), field) << s;
    }
    EXPECT_EQ(Sql("SELECT count(*) FROM rfm_aggregates"), 0);
  }
  EXPECT_EQ(Sql("SELECT count(*) FROM processed_events"), 0);
  ASSERT_TRUE(service_->HandleBusinessEvent(BusinessEventMessage("r-1", kMaxEventAmountFen)).ok());
  EXPECT_EQ(amount(), kMaxEventAmountFen);

  // An aggregate already near the maximum (older data) holds there instead of overflowing.
  Sql("UPDATE rfm_aggregates SET amount_fen = 9223372036854775000");
  for (int i = 0; i < 2; ++i) {
    absl::Status s = service_->HandleBusinessEvent(BusinessEventMessage("r-1", kMaxEventAmountFen));
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(amount(), kMax);
  }
  EXPECT_EQ(Sql("SELECT txn_count FROM rfm_aggregates"), 3);
  // Whatever reaches the store directly saturates too.
  for (const char* event : {"direct-1", "direct-2"}) {
    auto recorded = store_->RecordTransaction(kRfmConsumer, event, "r-2", "bank-a", kMax, 20000);
    ASSERT_TRUE(recorded.ok()) << recorded.status();
  }
  EXPECT_EQ(Sql("SELECT min(amount_fen) FROM rfm_aggregates"), kMax);
  auto scored = service_->ScoreRfm();
  ASSERT_TRUE(scored.ok()) << scored.status();
  EXPECT_EQ(*scored, 2);
}

TEST_F(SegmentsServiceTest, RebuiltIndexAnswersLikeTheLiveOne) {
  std::string csv = "customer_id,age,region_county,product_holdings,last_login_date\n";
  for (int i = 0; i < 500; ++i) {
    absl::StrAppend(&csv, "c", i, ",", i % 80, ",county-0", 1 + i % 9, ",",
                    i % 3 ? "deposit|fund" : "loan", ",2026-", (1 + i % 12) / 10, (1 + i % 12) % 10,
                    "-1", i % 10, "\n");
  }
  Import("bank-a", "customer_id\n");  // nothing: header only
  EXPECT_EQ(Import("fed", csv).rows_imported(), 500);
  pb::Condition rule;
  auto* all = rule.mutable_all();
  *all->add_conditions() = Compare("age", pb::GT, 30);
  auto* in = all->add_conditions()->mutable_in();
  in->set_tag("product_holdings");
  in->add_values()->set_enum_value("fund");
  auto* range = all->add_conditions()->mutable_range();
  range->set_tag("last_login_date");
  range->mutable_low()->set_date_value("2026-03-01");
  range->mutable_high()->set_date_value("2026-09-30");
  const std::string seg = CreateRule("fed", rule);
  const int64_t live = *CountOf("fed", Ref(seg));
  EXPECT_GT(live, 0);

  TagIndex rebuilt;
  SegmentService restarted(*store_, rebuilt, SystemClock());
  ASSERT_TRUE(restarted.Rebuild().ok());
  pb::CountRequest count;
  count.set_org_id("fed");
  *count.mutable_segment() = Ref(seg);
  EXPECT_EQ(restarted.Count(count)->count(), live);
  EXPECT_EQ(rebuilt.customer_count(), index_.customer_count());
}

}  // namespace
}  // namespace mkt::segments
