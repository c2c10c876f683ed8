#include "services/events/event_type_cache.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mkt::events {
namespace {

namespace epb = ::marketing::events::v1;
using ::testing::HasSubstr;

epb::EventType LoanDisbursed() {
  epb::EventType type;
  type.set_name("loan.disbursed");
  type.set_amount_required(true);
  auto* contract = type.add_attributes();
  contract->set_name("contract_id");
  contract->set_type(epb::STRING);
  contract->set_required(true);
  auto* tenor = type.add_attributes();
  tenor->set_name("tenor_months");
  tenor->set_type(epb::INT);
  return type;
}

epb::BusinessEvent Event(const std::string& type) {
  epb::BusinessEvent e;
  e.set_source("ch-1");
  e.set_source_event_id("tx-1");
  e.set_event_type(type);
  e.set_customer_id("C1");
  e.set_org_id("bank-a");
  e.set_amount_fen(100000);
  e.mutable_occurred_at()->set_seconds(1'800'000'000);
  if (type == "loan.disbursed") (*e.mutable_attributes())["contract_id"] = "LC-1";
  return e;
}

class EventTypeCacheTest : public ::testing::Test {
 protected:
  // A clock the test moves.
  class FakeClock final : public Clock {
   public:
    absl::Time Now() const override { return now_; }
    void Advance(absl::Duration d) { now_ += d; }

   private:
    absl::Time now_ = absl::FromUnixSeconds(1'800'000'000);
  };
  FakeClock clock_;
  EventTypeCache cache_{[this]() -> absl::StatusOr<std::vector<epb::EventType>> {
                          ++loads_;
                          if (!up_) return absl::UnavailableError("events service down");
                          return types_;
                        },
                        clock_, absl::Seconds(30), absl::Seconds(1)};
  std::vector<epb::EventType> types_ = {LoanDisbursed()};
  bool up_ = true;
  int loads_ = 0;
};

TEST_F(EventTypeCacheTest, RefusesWhatTheEventsServiceWouldDeadLetterNamingTheField) {
  EXPECT_TRUE(cache_.Check(Event("loan.disbursed"), "gw-1").ok());

  absl::Status unknown = cache_.Check(Event("loan.disbursd"), "gw-1");
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.message()), HasSubstr("unknown event type \"loan.disbursd\""));

  epb::BusinessEvent missing = Event("loan.disbursed");
  missing.mutable_attributes()->erase("contract_id");
  EXPECT_THAT(std::string(cache_.Check(missing, "gw-1").message()),
              HasSubstr("required attribute contract_id of loan.disbursed is missing"));

  epb::BusinessEvent wrong_type = Event("loan.disbursed");
  (*wrong_type.mutable_attributes())["tenor_months"] = "twelve";
  EXPECT_EQ(cache_.Check(wrong_type, "gw-1").code(), absl::StatusCode::kInvalidArgument);

  epb::BusinessEvent stranger = Event("loan.disbursed");
  (*stranger.mutable_attributes())["colour"] = "red";
  EXPECT_THAT(std::string(cache_.Check(stranger, "gw-1").message()),
              HasSubstr("attribute \"colour\" is not in the schema of loan.disbursed"));

  epb::BusinessEvent no_amount = Event("loan.disbursed");
  no_amount.set_amount_fen(0);
  EXPECT_EQ(cache_.Check(no_amount, "gw-1").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EventTypeCacheTest, ARefusalIsCheckedAgainstAFreshCopyAtMostOnceASecond) {
  ASSERT_TRUE(cache_.Check(Event("loan.disbursed"), "gw-1").ok());
  EXPECT_EQ(loads_, 1);
  // Defined in the registry after the gateway's copy was loaded.
  epb::EventType visit;
  visit.set_name("branch.visit");
  types_.push_back(visit);
  // Within a second of the last load the copy is trusted.
  EXPECT_FALSE(cache_.Check(Event("branch.visit"), "gw-1").ok());
  EXPECT_EQ(loads_, 1);
  clock_.Advance(absl::Seconds(2));
  EXPECT_TRUE(cache_.Check(Event("branch.visit"), "gw-1").ok());
  EXPECT_EQ(loads_, 2);
  // Events that fit do not reload until the copy is 30 s old.
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(cache_.Check(Event("branch.visit"), "gw-1").ok());
  EXPECT_EQ(loads_, 2);
  clock_.Advance(absl::Seconds(31));
  EXPECT_TRUE(cache_.Check(Event("branch.visit"), "gw-1").ok());
  EXPECT_EQ(loads_, 3);
}

TEST_F(EventTypeCacheTest, WithoutAnyCopyEventsAreAcceptedAndALaterCopyIsKeptWhenTheServiceGoes) {
  up_ = false;
  EXPECT_TRUE(cache_.Check(Event("anything.at.all"), "gw-1").ok());
  EXPECT_TRUE(cache_.Check(Event("anything.at.all"), "gw-1").ok());
  EXPECT_EQ(loads_, 1);  // not retried on every event
  up_ = true;
  clock_.Advance(absl::Seconds(31));
  EXPECT_FALSE(cache_.Check(Event("anything.at.all"), "gw-1").ok());
  up_ = false;
  clock_.Advance(absl::Seconds(31));
  EXPECT_FALSE(cache_.Check(Event("anything.at.all"), "gw-1").ok());  // the last copy holds
  EXPECT_TRUE(cache_.Check(Event("loan.disbursed"), "gw-1").ok());
}

}  // namespace
}  // namespace mkt::events
