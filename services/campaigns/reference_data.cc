#include "services/campaigns/reference_data.h"

#include <fstream>
#include <sstream>

#include "libs/core/status.h"
#include "nlohmann/json.hpp"

namespace mkt::campaigns {

void InMemorySegmentDirectory::Put(std::string id, SegmentInfo info) {
  absl::MutexLock lock(&mu_);
  segments_[std::move(id)] = std::move(info);
}

absl::StatusOr<SegmentInfo> InMemorySegmentDirectory::Lookup(std::string_view segment_id) const {
  absl::MutexLock lock(&mu_);
  auto it = segments_.find(segment_id);
  if (it == segments_.end()) return NotFound("unknown segment '" + std::string(segment_id) + "'");
  return it->second;
}

absl::StatusOr<TagInfo> SegmentDirectory::LookupTag(std::string_view) const {
  return absl::UnimplementedError("this directory does not know tags");
}

void InMemorySegmentDirectory::PutTag(std::string name, TagInfo info) {
  absl::MutexLock lock(&mu_);
  knows_tags_ = true;
  tags_[std::move(name)] = std::move(info);
}

void InMemorySegmentDirectory::KnowTags() {
  absl::MutexLock lock(&mu_);
  knows_tags_ = true;
}

absl::StatusOr<TagInfo> InMemorySegmentDirectory::LookupTag(std::string_view name) const {
  absl::MutexLock lock(&mu_);
  if (!knows_tags_) return SegmentDirectory::LookupTag(name);
  auto it = tags_.find(name);
  if (it == tags_.end()) return NotFound("unknown tag '" + std::string(name) + "'");
  return it->second;
}

void InMemoryBenefitCatalog::Put(std::string id, BenefitInfo info) {
  absl::MutexLock lock(&mu_);
  benefits_[std::move(id)] = std::move(info);
}

absl::StatusOr<BenefitInfo> InMemoryBenefitCatalog::Lookup(std::string_view template_id) const {
  absl::MutexLock lock(&mu_);
  auto it = benefits_.find(template_id);
  if (it == benefits_.end()) {
    return NotFound("unknown benefit template '" + std::string(template_id) + "'");
  }
  return it->second;
}

std::string_view DemoReferenceDataJson() {
  return R"({
  "segments": [
    {"id": "seg-fed-all-adults", "org": "fed", "version": 1, "size": 500000},
    {"id": "seg-a-payroll", "org": "bank-a", "version": 3, "size": 12000},
    {"id": "seg-a-new-customers", "org": "bank-a", "version": 1, "size": 3000},
    {"id": "seg-a-dormant", "org": "bank-a", "version": 2, "size": 800},
    {"id": "seg-b-farmers", "org": "bank-b", "version": 2, "size": 20000},
    {"id": "seg-b-merchants", "org": "bank-b", "version": 1, "size": 1500}
  ],
  "tags": [
    {"name": "age", "org": "fed"}, {"name": "gender", "org": "fed"},
    {"name": "region_county", "org": "fed"}, {"name": "customer_level", "org": "fed"},
    {"name": "aum_band", "org": "fed"}, {"name": "aum_fen", "org": "fed"},
    {"name": "has_credit_card", "org": "fed"}, {"name": "has_loan", "org": "fed"},
    {"name": "payroll_customer", "org": "fed"}, {"name": "mobile_active_days_30d", "org": "fed"},
    {"name": "last_login_date", "org": "fed"}, {"name": "risk_rating", "org": "fed"},
    {"name": "rfm_group", "org": "fed"}
  ],
  "benefits": [
    {"id": "bt-fed-coupon-50", "org": "fed", "unit_cost_fen": 5000, "kind": "REWARD_KIND_COUPON"},
    {"id": "bt-fed-points-100", "org": "fed", "unit_cost_fen": 1, "kind": "REWARD_KIND_POINTS"},
    {"id": "bt-fed-red-envelope-888", "org": "fed", "unit_cost_fen": 1,
     "kind": "REWARD_KIND_CASH_FEN"},
    {"id": "bt-a-coupon-20", "org": "bank-a", "unit_cost_fen": 2000, "kind": "REWARD_KIND_COUPON"},
    {"id": "bt-b-rice-gift", "org": "bank-b", "unit_cost_fen": 3500, "kind": "REWARD_KIND_COUPON"}
  ]
})";
}

absl::StatusOr<ReferenceData> ParseReferenceData(std::string_view text) {
  ReferenceData data{std::make_unique<InMemorySegmentDirectory>(),
                     std::make_unique<InMemoryBenefitCatalog>()};
  try {
    auto json = nlohmann::json::parse(text.begin(), text.end());
    for (const auto& s : json.value("segments", nlohmann::json::array())) {
      data.segments->Put(s.at("id").get<std::string>(),
                         {s.at("org").get<std::string>(), s.value("version", int64_t{1}),
                          s.value("size", int64_t{0})});
    }
    if (json.contains("tags")) {
      data.segments->KnowTags();
      for (const auto& t : json.at("tags")) {
        data.segments->PutTag(t.at("name").get<std::string>(), {t.at("org").get<std::string>()});
      }
    }
    for (const auto& b : json.value("benefits", nlohmann::json::array())) {
      BenefitInfo info{b.at("org").get<std::string>(), b.at("unit_cost_fen").get<int64_t>()};
      if (b.contains("kind")) {  // optional: without it the reward's kind is not checked
        const std::string name = b.at("kind").get<std::string>();
        marketing::campaigns::v1::RewardKind kind;
        if (!marketing::campaigns::v1::RewardKind_Parse(name, &kind)) {
          return InvalidArgument("catalog_file", "benefit '" + b.at("id").get<std::string>() +
                                                     "': unknown kind '" + name + "'");
        }
        info.kind = kind;
        info.type = name;
      }
      data.benefits->Put(b.at("id").get<std::string>(), std::move(info));
    }
  } catch (const std::exception& e) {
    return InvalidArgument("catalog_file", std::string("malformed reference data: ") + e.what());
  }
  return data;
}

absl::StatusOr<ReferenceData> LoadReferenceData(const std::string& path) {
  if (path.empty()) return ParseReferenceData(DemoReferenceDataJson());
  std::ifstream in(path);
  if (!in) return InvalidArgument("catalog_file", "cannot read " + path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return ParseReferenceData(buffer.str());
}

}  // namespace mkt::campaigns
