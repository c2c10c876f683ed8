#include "libs/tenancy/tenancy.h"

#include <gtest/gtest.h>

#include <regex>
#include <string>

namespace mkt::tenancy {
namespace {

TEST(OrgIdTest, AcceptsTheTreeShapes) {
  EXPECT_TRUE(IsValidOrgId("fed"));
  EXPECT_TRUE(IsValidOrgId("bank-a"));
  EXPECT_TRUE(IsValidOrgId("bank-a.branch-01"));
  EXPECT_TRUE(IsValidOrgId("bank-a.branch-01.sub-3"));
}

// The pattern API documents carry says what IsValidOrgId says, except that it cannot refuse a
// member bank named "fed".
TEST(OrgIdTest, ThePatternAgreesWithTheCheck) {
  const std::regex pattern(OrgIdPattern(), std::regex::ECMAScript);
  const std::string s32(32, 'a');
  const std::string s33(33, 'a');
  for (const std::string& id :
       {std::string("fed"), std::string("bank-a"), std::string("bank-a.branch-01"),
        std::string("9.8.7.6"), std::string("a.b.c.d.e"), std::string(""), std::string("Bank-A"),
        std::string("bank-a."), std::string(".bank-a"), std::string("bank-a..b"),
        std::string("-bank"), std::string("bank.-x"), std::string("bank_a"), std::string("bank a"),
        s32, s33, s32 + "." + s32.substr(0, 31), s32 + "." + s32}) {
    EXPECT_EQ(std::regex_match(id, pattern) && id.size() <= kMaxOrgIdLength, IsValidOrgId(id))
        << "\"" << id << "\"";
  }
  EXPECT_TRUE(std::regex_match(std::string("fed.x"), pattern));
  EXPECT_FALSE(IsValidOrgId("fed.x"));
}

TEST(OrgIdTest, RejectsMalformedIds) {
  EXPECT_FALSE(IsValidOrgId(""));
  EXPECT_FALSE(IsValidOrgId("Bank-A"));
  EXPECT_FALSE(IsValidOrgId("bank-a."));
  EXPECT_FALSE(IsValidOrgId(".bank-a"));
  EXPECT_FALSE(IsValidOrgId("bank-a..b"));
  EXPECT_FALSE(IsValidOrgId("-bank"));
  EXPECT_FALSE(IsValidOrgId("fed.bank-a"));  // the federation is implicit above member banks
  EXPECT_FALSE(IsValidOrgId("a.b.c.d.e"));
  EXPECT_FALSE(IsValidOrgId("bank a"));
  EXPECT_FALSE(IsValidOrgId(std::string(65, 'a')));
}

TEST(OrgTreeTest, ParentsAndAncestors) {
  EXPECT_EQ(ParentOf("bank-a.branch-01"), "bank-a");
  EXPECT_EQ(ParentOf("bank-a"), "fed");
  EXPECT_EQ(ParentOf("fed"), "");
  EXPECT_EQ(SelfAndAncestors("bank-a.branch-01"),
            (std::vector<std::string>{"bank-a.branch-01", "bank-a", "fed"}));
  EXPECT_EQ(MemberBankOf("bank-a.branch-01.sub-3"), "bank-a");
  EXPECT_EQ(MemberBankOf("fed"), "fed");
}

TEST(OrgTreeTest, AnOrgCoversItselfAndItsDescendantsOnly) {
  EXPECT_TRUE(Covers("fed", "bank-a"));
  EXPECT_TRUE(Covers("fed", "bank-a.branch-01"));
  EXPECT_TRUE(Covers("bank-a", "bank-a"));
  EXPECT_TRUE(Covers("bank-a", "bank-a.branch-01"));
  EXPECT_FALSE(Covers("bank-a", "bank-b"));
  EXPECT_FALSE(Covers("bank-a", "bank-ab"));  // a prefix of the name is not an ancestor
  EXPECT_FALSE(Covers("bank-a.branch-01", "bank-a"));
  EXPECT_FALSE(Covers("bank-a", "fed"));
  EXPECT_FALSE(Covers("", "bank-a"));
}

TEST(RoleTest, NamesRoundTrip) {
  for (Role role :
       {Role::kAdmin, Role::kPlanner, Role::kApprover, Role::kAnalyst, Role::kAuditor}) {
    auto parsed = ParseRole(RoleName(role));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, role);
  }
  EXPECT_FALSE(ParseRole("root").ok());
  Actor actor{"bank-a", "op-1", {Role::kPlanner}};
  EXPECT_TRUE(actor.Has(Role::kPlanner));
  EXPECT_FALSE(actor.Has(Role::kApprover));
  EXPECT_TRUE(SystemActor("expiry").Has(Role::kApprover));
}

}  // namespace
}  // namespace mkt::tenancy
