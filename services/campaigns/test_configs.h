// Configurations and reference data shared by the campaigns unit, integration and e2e tests.
#pragma once

#include <string>

#include "absl/time/time.h"
#include "marketing/campaigns/v1/campaigns.pb.h"
#include "services/campaigns/reference_data.h"

namespace mkt::campaigns::test {

namespace pb = ::marketing::campaigns::v1;

inline google::protobuf::Timestamp Ts(absl::Time t) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(absl::ToUnixSeconds(t));
  return ts;
}

// Segments, tags and benefit templates of the federation, bank-a and bank-b.
inline constexpr char kReferenceJson[] = R"({
  "segments": [
    {"id": "seg-fed", "org": "fed", "version": 1, "size": 100000},
    {"id": "seg-a1", "org": "bank-a", "version": 3, "size": 10000},
    {"id": "seg-a2", "org": "bank-a", "version": 1, "size": 2000},
    {"id": "seg-b1", "org": "bank-b", "version": 2, "size": 5000}
  ],
  "tags": [
    {"name": "age", "org": "fed"},
    {"name": "vip", "org": "bank-a"},
    {"name": "b_level", "org": "bank-b"}
  ],
  "benefits": [
    {"id": "bt-coupon-50", "org": "fed", "unit_cost_fen": 5000},
    {"id": "bt-points-100", "org": "fed", "unit_cost_fen": 100},
    {"id": "bt-a-gift", "org": "bank-a", "unit_cost_fen": 2000},
    {"id": "bt-b-gift", "org": "bank-b", "unit_cost_fen": 3000}
  ]
})";

// Step 1 only.
inline pb::CampaignConfig Basics(const std::string& name, pb::CampaignType type, absl::Time start,
                                 absl::Time end) {
  pb::CampaignConfig c;
  c.set_name(name);
  c.set_type(type);
  c.set_department("retail");
  *c.mutable_start_time() = Ts(start);
  *c.mutable_end_time() = Ts(end);
  c.set_priority(10);
  return c;
}

// A complete, valid coupon campaign of bank-a (segment seg-a1, a 50-yuan coupon).
inline pb::CampaignConfig CompleteCoupon(const std::string& name, absl::Time start, absl::Time end,
                                         const std::string& segment = "seg-a1") {
  pb::CampaignConfig c = Basics(name, pb::COUPON_CLAIM, start, end);
  auto* include = c.mutable_audience()->add_include();
  include->set_segment_id(segment);
  c.mutable_limits()->set_per_customer_total(1);
  auto* reward = c.add_rewards();
  reward->set_benefit_template_id("bt-coupon-50");
  reward->set_quantity(1);
  c.set_budget_cap_fen(10'000'000);
  auto* channel = c.add_channels();
  channel->set_channel("mobile_banking");
  channel->mutable_content()->set_title("50 yuan off");
  channel->mutable_content()->set_description("Claim a coupon");
  channel->mutable_content()->set_image_url("https://img.example.cn/c50.png");
  channel->mutable_content()->set_rules_text("One per customer.");
  return c;
}

}  // namespace mkt::campaigns::test
