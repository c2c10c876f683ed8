#include "services/segments/tag_index.h"

#include <algorithm>

#include "libs/tenancy/tenancy.h"

namespace mkt::segments {
namespace {

constexpr int kMaxDepth = 32;

bool Compare(pb::Operator op, int64_t a, int64_t b) {
  switch (op) {
    case pb::EQ:
      return a == b;
    case pb::NE:
      return a != b;
    case pb::LT:
      return a < b;
    case pb::LE:
      return a <= b;
    case pb::GT:
      return a > b;
    case pb::GE:
      return a >= b;
    default:
      return false;
  }
}

}  // namespace

// ---- Dictionary and customers ------------------------------------------------------------------

void TagIndex::DefineTag(const TagSchema& schema) {
  absl::MutexLock lock(&mu_);
  auto& column = columns_[schema.name];
  if (column == nullptr) {
    column = std::make_unique<Column>();
    if (schema.numeric()) column->slices.resize(64);
  }
  column->schema = schema;
}

std::optional<TagSchema> TagIndex::Schema(std::string_view tag) const {
  absl::ReaderMutexLock lock(&mu_);
  const Column* column = ColumnOf(tag);
  if (column == nullptr) return std::nullopt;
  return column->schema;
}

const TagIndex::Column* TagIndex::ColumnOf(std::string_view tag) const {
  auto it = columns_.find(absl::string_view(tag.data(), tag.size()));
  return it == columns_.end() ? nullptr : it->second.get();
}

void TagIndex::PutCustomer(uint32_t dense_id, std::string_view customer_id,
                           std::string_view home_org) {
  absl::MutexLock lock(&mu_);
  directory_.Put(dense_id, customer_id);
  all_customers_.add(dense_id);
  if (home_org_.size() <= dense_id) home_org_.resize(static_cast<size_t>(dense_id) + 1, 0);
  if (org_names_.empty()) {
    org_names_.emplace_back();  // 0: no home org
    customers_by_org_.emplace_back();
  }
  if (home_org.empty() || org_names_[home_org_[dense_id]] == home_org) return;
  auto it = std::find(org_names_.begin(), org_names_.end(), home_org);
  uint16_t org = static_cast<uint16_t>(it - org_names_.begin());
  if (it == org_names_.end()) {
    org_names_.emplace_back(home_org);
    customers_by_org_.emplace_back();
  }
  customers_by_org_[home_org_[dense_id]].remove(dense_id);
  customers_by_org_[org].add(dense_id);
  home_org_[dense_id] = org;
}

std::optional<uint32_t> TagIndex::Find(std::string_view customer_id) const {
  absl::ReaderMutexLock lock(&mu_);
  return directory_.Find(customer_id);
}

std::string TagIndex::CustomerId(uint32_t dense_id) const {
  absl::ReaderMutexLock lock(&mu_);
  return std::string(directory_.CustomerId(dense_id));
}

std::vector<std::string> TagIndex::CustomerIds(const std::vector<uint32_t>& dense_ids) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<std::string> out;
  out.reserve(dense_ids.size());
  for (uint32_t id : dense_ids) out.emplace_back(directory_.CustomerId(id));
  return out;
}

size_t TagIndex::customer_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return directory_.size();
}

Roaring TagIndex::Scope(std::string_view org) const {
  absl::ReaderMutexLock lock(&mu_);
  if (org == tenancy::kFederation) return all_customers_;
  std::vector<const Roaring*> parts;
  for (size_t i = 1; i < org_names_.size(); ++i) {
    if (tenancy::Covers(org, org_names_[i])) parts.push_back(&customers_by_org_[i]);
  }
  if (parts.empty()) return Roaring();
  return Roaring::fastunion(parts.size(), parts.data());
}

bool TagIndex::InScope(std::string_view org, uint32_t dense_id) const {
  absl::ReaderMutexLock lock(&mu_);
  if (!all_customers_.contains(dense_id)) return false;
  if (org == tenancy::kFederation) return true;
  if (dense_id >= home_org_.size() || home_org_[dense_id] == 0) return false;
  return tenancy::Covers(org, org_names_[home_org_[dense_id]]);
}

// ---- Values ------------------------------------------------------------------------------------

void TagIndex::RemoveFrom(uint32_t dense_id, Column& column) {
  if (!column.exists.removeChecked(dense_id)) return;
  for (auto& [label, bitmap] : column.labels) bitmap.remove(dense_id);
  for (int i = 0; i < 64 && !column.slices.empty(); ++i) {
    if (column.used_slices >> i & 1) column.slices[i].remove(dense_id);
  }
}

void TagIndex::SetLocked(uint32_t dense_id, Column& column, const Value& value) {
  if (column.schema.numeric()) {
    const uint64_t u = SliceEncode(value.number);
    for (int i = 0; i < 64; ++i) {
      if (u >> i & 1) {
        column.slices[i].add(dense_id);
        column.used_slices |= uint64_t{1} << i;
      } else if (column.used_slices >> i & 1) {
        column.slices[i].remove(dense_id);
      }
    }
  } else {
    if (column.exists.contains(dense_id)) {
      for (auto& [label, bitmap] : column.labels) bitmap.remove(dense_id);
    }
    for (const std::string& label : value.labels) column.labels[label].add(dense_id);
  }
  column.exists.add(dense_id);
}

void TagIndex::Set(uint32_t dense_id, std::string_view tag, const Value& value) {
  absl::MutexLock lock(&mu_);
  auto it = columns_.find(absl::string_view(tag.data(), tag.size()));
  if (it == columns_.end()) return;
  SetLocked(dense_id, *it->second, value);
}

void TagIndex::Remove(uint32_t dense_id, std::string_view tag) {
  absl::MutexLock lock(&mu_);
  auto it = columns_.find(absl::string_view(tag.data(), tag.size()));
  if (it == columns_.end()) return;
  RemoveFrom(dense_id, *it->second);
}

void TagIndex::ReplaceCustomer(uint32_t dense_id,
                               const std::vector<std::pair<std::string, Value>>& values) {
  absl::MutexLock lock(&mu_);
  for (auto& [name, column] : columns_) {
    auto it = std::find_if(values.begin(), values.end(),
                           [&name = name](const auto& v) { return v.first == name; });
    if (it == values.end()) {
      RemoveFrom(dense_id, *column);
    } else {
      SetLocked(dense_id, *column, it->second);
    }
  }
}

std::optional<Value> TagIndex::ValueIn(const Column& column, uint32_t dense_id) {
  if (!column.exists.contains(dense_id)) return std::nullopt;
  Value v;
  if (column.schema.numeric()) {
    uint64_t u = 0;
    for (int i = 0; i < 64; ++i) {
      if ((column.used_slices >> i & 1) && column.slices[i].contains(dense_id))
        u |= uint64_t{1} << i;
    }
    v.number = SliceDecode(u);
  } else {
    for (const auto& [label, bitmap] : column.labels) {
      if (bitmap.contains(dense_id)) v.labels.push_back(label);
    }
  }
  return v;
}

int TagIndex::CompareValue(const Column& column, uint32_t dense_id, int64_t x) {
  // Walks the bits from the top and stops at the first one that differs: a few probes instead of
  // reading every slice.
  const uint64_t u = SliceEncode(x);
  for (int i = 63; i >= 0; --i) {
    const bool xb = u >> i & 1;
    const bool cb = (column.used_slices >> i & 1) && column.slices[i].contains(dense_id);
    if (cb != xb) return cb ? 1 : -1;
  }
  return 0;
}

std::optional<Value> TagIndex::ValueOf(uint32_t dense_id, std::string_view tag) const {
  absl::ReaderMutexLock lock(&mu_);
  const Column* column = ColumnOf(tag);
  if (column == nullptr) return std::nullopt;
  return ValueIn(*column, dense_id);
}

// ---- Rules over bitmaps ------------------------------------------------------------------------

namespace {

// The O'Neil-Quass comparison of a bit-sliced column against `x`: walks the slices from the most
// significant bit, keeping the customers still equal so far; returns the bitmap `op` asks for.
Roaring NumericCompare(const Roaring& exists, const std::vector<Roaring>& slices,
                       uint64_t used_slices, pb::Operator op, int64_t x, const Roaring* within) {
  const bool want_lt = op == pb::LT || op == pb::LE;
  const bool want_gt = op == pb::GT || op == pb::GE;
  const uint64_t u = SliceEncode(x);
  // Restricting the walk to the candidates left by earlier conditions makes every step cheaper.
  Roaring lt, gt, eq = within == nullptr ? exists : exists & *within;
  for (int i = 63; i >= 0 && !eq.isEmpty(); --i) {
    const bool used = used_slices >> i & 1;
    if (u >> i & 1) {
      if (!used) {  // nobody has this bit: everyone still equal is smaller
        if (want_lt) lt |= eq;
        eq = Roaring();
        break;
      }
      if (want_lt) lt |= eq - slices[i];
      eq &= slices[i];
    } else if (used) {
      if (want_gt) gt |= eq & slices[i];
      eq -= slices[i];
    }
  }
  switch (op) {
    case pb::EQ:
      return eq;
    case pb::NE:
      return (within == nullptr ? exists : exists & *within) - eq;
    case pb::LT:
      return lt;
    case pb::LE:
      return lt | eq;
    case pb::GT:
      return gt;
    case pb::GE:
      return gt | eq;
    default:
      return Roaring();
  }
}

}  // namespace

Roaring TagIndex::Evaluate(const pb::Condition& rule, int32_t today) const {
  absl::ReaderMutexLock lock(&mu_);
  return EvaluateLocked(rule, today, 0, nullptr);
}

bool TagIndex::Matches(const pb::Condition& rule, uint32_t dense_id, int32_t today) const {
  absl::ReaderMutexLock lock(&mu_);
  if (!all_customers_.contains(dense_id)) return false;
  return MatchesLocked(rule, dense_id, today, 0);
}

Roaring TagIndex::EvaluateLocked(const pb::Condition& rule, int32_t today, int depth,
                                 const Roaring* within) const {
  if (depth > kMaxDepth) return Roaring();
  auto restrict = [within](Roaring r) {
    if (within != nullptr) r &= *within;
    return r;
  };
  auto numeric = [&](const Column& c, pb::Operator op, int64_t x, const Roaring* w) {
    return NumericCompare(c.exists, c.slices, c.used_slices, op, x, w);
  };
  auto label_bitmap = [&](const Column& c, const std::string& label) {
    auto it = c.labels.find(label);
    return it == c.labels.end() ? Roaring() : restrict(it->second);
  };
  switch (rule.kind_case()) {
    case pb::Condition::kAll: {
      if (rule.all().conditions().empty()) return Roaring();
      // Each condition only looks at the customers the previous ones left.
      Roaring result = EvaluateLocked(rule.all().conditions(0), today, depth + 1, within);
      for (int i = 1; i < rule.all().conditions_size() && !result.isEmpty(); ++i) {
        result = EvaluateLocked(rule.all().conditions(i), today, depth + 1, &result);
      }
      return result;
    }
    case pb::Condition::kAny: {
      Roaring result;
      for (const auto& c : rule.any().conditions()) {
        result |= EvaluateLocked(c, today, depth + 1, within);
      }
      return result;
    }
    case pb::Condition::kNot:
      return restrict(all_customers_) - EvaluateLocked(rule.not_(), today, depth + 1, within);
    case pb::Condition::kCompare: {
      const Column* c = ColumnOf(rule.compare().tag());
      if (c == nullptr) return Roaring();
      absl::StatusOr<Value> v = FromProto(c->schema, rule.compare().value(), "");
      if (!v.ok()) return Roaring();
      if (c->schema.numeric()) return numeric(*c, rule.compare().op(), v->number, within);
      if (v->labels.size() != 1) return Roaring();
      if (rule.compare().op() == pb::EQ) return label_bitmap(*c, v->labels[0]);
      if (rule.compare().op() == pb::NE)
        return restrict(c->exists) - label_bitmap(*c, v->labels[0]);
      return Roaring();
    }
    case pb::Condition::kRange: {
      const Column* c = ColumnOf(rule.range().tag());
      if (c == nullptr || !c->schema.numeric()) return Roaring();
      absl::StatusOr<Value> lo = FromProto(c->schema, rule.range().low(), "");
      absl::StatusOr<Value> hi = FromProto(c->schema, rule.range().high(), "");
      if (!lo.ok() || !hi.ok() || lo->number > hi->number) return Roaring();
      Roaring at_least = numeric(*c, pb::GE, lo->number, within);
      return numeric(*c, pb::LE, hi->number, &at_least);
    }
    case pb::Condition::kIn: {
      const Column* c = ColumnOf(rule.in().tag());
      if (c == nullptr) return Roaring();
      Roaring result;
      for (const auto& value : rule.in().values()) {
        absl::StatusOr<Value> v = FromProto(c->schema, value, "");
        if (!v.ok()) continue;
        if (c->schema.numeric()) {
          result |= numeric(*c, pb::EQ, v->number, within);
        } else {
          for (const auto& label : v->labels) result |= label_bitmap(*c, label);
        }
      }
      return result;
    }
    case pb::Condition::kRelativeDate: {
      const auto& r = rule.relative_date();
      const Column* c = ColumnOf(r.tag());
      if (c == nullptr || c->schema.type != pb::TAG_TYPE_DATE || r.days() < 0) return Roaring();
      if (r.kind() == pb::RelativeDate::WITHIN_LAST_DAYS) {
        Roaring since = numeric(*c, pb::GE, int64_t{today} - r.days(), within);
        return numeric(*c, pb::LE, today, &since);
      }
      if (r.kind() == pb::RelativeDate::MORE_THAN_DAYS_AGO) {
        return numeric(*c, pb::LT, int64_t{today} - r.days(), within);
      }
      return Roaring();
    }
    case pb::Condition::kExists: {
      const Column* c = ColumnOf(rule.exists().tag());
      return c == nullptr ? Roaring() : restrict(c->exists);
    }
    default:
      return Roaring();
  }
}

bool TagIndex::MatchesLocked(const pb::Condition& rule, uint32_t id, int32_t today,
                             int depth) const {
  if (depth > kMaxDepth) return false;
  auto has_label = [id](const Column& c, const std::string& label) {
    auto it = c.labels.find(label);
    return it != c.labels.end() && it->second.contains(id);
  };
  switch (rule.kind_case()) {
    case pb::Condition::kAll:
      if (rule.all().conditions().empty()) return false;
      for (const auto& c : rule.all().conditions()) {
        if (!MatchesLocked(c, id, today, depth + 1)) return false;
      }
      return true;
    case pb::Condition::kAny:
      for (const auto& c : rule.any().conditions()) {
        if (MatchesLocked(c, id, today, depth + 1)) return true;
      }
      return false;
    case pb::Condition::kNot:
      return !MatchesLocked(rule.not_(), id, today, depth + 1);
    case pb::Condition::kCompare: {
      const Column* c = ColumnOf(rule.compare().tag());
      if (c == nullptr || !c->exists.contains(id)) return false;
      absl::StatusOr<Value> v = FromProto(c->schema, rule.compare().value(), "");
      if (!v.ok()) return false;
      if (c->schema.numeric())
        return Compare(rule.compare().op(), CompareValue(*c, id, v->number), 0);
      if (v->labels.size() != 1) return false;
      if (rule.compare().op() == pb::EQ) return has_label(*c, v->labels[0]);
      if (rule.compare().op() == pb::NE) return !has_label(*c, v->labels[0]);
      return false;
    }
    case pb::Condition::kRange: {
      const Column* c = ColumnOf(rule.range().tag());
      if (c == nullptr || !c->schema.numeric() || !c->exists.contains(id)) return false;
      absl::StatusOr<Value> lo = FromProto(c->schema, rule.range().low(), "");
      absl::StatusOr<Value> hi = FromProto(c->schema, rule.range().high(), "");
      if (!lo.ok() || !hi.ok()) return false;
      return CompareValue(*c, id, lo->number) >= 0 && CompareValue(*c, id, hi->number) <= 0;
    }
    case pb::Condition::kIn: {
      const Column* c = ColumnOf(rule.in().tag());
      if (c == nullptr || !c->exists.contains(id)) return false;
      std::optional<int64_t> x;
      for (const auto& value : rule.in().values()) {
        absl::StatusOr<Value> v = FromProto(c->schema, value, "");
        if (!v.ok()) continue;
        if (c->schema.numeric()) {
          if (!x) x = ValueIn(*c, id)->number;
          if (*x == v->number) return true;
        } else {
          for (const auto& label : v->labels) {
            if (has_label(*c, label)) return true;
          }
        }
      }
      return false;
    }
    case pb::Condition::kRelativeDate: {
      const auto& r = rule.relative_date();
      const Column* c = ColumnOf(r.tag());
      if (c == nullptr || c->schema.type != pb::TAG_TYPE_DATE || r.days() < 0 ||
          !c->exists.contains(id)) {
        return false;
      }
      const int64_t since = int64_t{today} - r.days();
      if (r.kind() == pb::RelativeDate::WITHIN_LAST_DAYS) {
        return CompareValue(*c, id, since) >= 0 && CompareValue(*c, id, today) <= 0;
      }
      if (r.kind() == pb::RelativeDate::MORE_THAN_DAYS_AGO) return CompareValue(*c, id, since) < 0;
      return false;
    }
    case pb::Condition::kExists: {
      const Column* c = ColumnOf(rule.exists().tag());
      return c != nullptr && c->exists.contains(id);
    }
    default:
      return false;
  }
}

// ---- Bulk loading ------------------------------------------------------------------------------

namespace {

// Appends ascending ids to a bitmap in batches.
class Appender {
 public:
  explicit Appender(Roaring* target) : target_(target) { buffer_.reserve(kBatch); }
  ~Appender() { Flush(); }
  void Add(uint32_t id) {
    buffer_.push_back(id);
    if (buffer_.size() == kBatch) Flush();
  }
  void Flush() {
    if (!buffer_.empty()) target_->addMany(buffer_.size(), buffer_.data());
    buffer_.clear();
  }

 private:
  static constexpr size_t kBatch = 8192;
  Roaring* target_;
  std::vector<uint32_t> buffer_;
};

}  // namespace

void TagIndex::LoadNumeric(std::string_view tag, const std::vector<uint32_t>& dense_ids,
                           const std::vector<int64_t>& numbers) {
  absl::MutexLock lock(&mu_);
  auto it = columns_.find(absl::string_view(tag.data(), tag.size()));
  if (it == columns_.end() || !it->second->schema.numeric()) return;
  Column& column = *it->second;
  std::vector<std::unique_ptr<Appender>> slices;
  for (auto& slice : column.slices) slices.push_back(std::make_unique<Appender>(&slice));
  Appender exists(&column.exists);
  uint64_t used = 0;
  for (size_t k = 0; k < dense_ids.size(); ++k) {
    uint64_t u = SliceEncode(numbers[k]);
    used |= u;
    exists.Add(dense_ids[k]);
    while (u != 0) {
      const int bit = __builtin_ctzll(u);
      slices[bit]->Add(dense_ids[k]);
      u &= u - 1;
    }
  }
  column.used_slices |= used;
}

void TagIndex::LoadLabels(std::string_view tag, const std::vector<uint32_t>& dense_ids,
                          const std::vector<uint16_t>& label_of,
                          const std::vector<std::string>& labels) {
  absl::MutexLock lock(&mu_);
  auto it = columns_.find(absl::string_view(tag.data(), tag.size()));
  if (it == columns_.end() || it->second->schema.numeric()) return;
  Column& column = *it->second;
  std::vector<std::unique_ptr<Appender>> per_label;
  for (const auto& label : labels)
    per_label.push_back(std::make_unique<Appender>(&column.labels[label]));
  Appender exists(&column.exists);
  for (size_t k = 0; k < dense_ids.size(); ++k) {
    exists.Add(dense_ids[k]);
    per_label[label_of[k]]->Add(dense_ids[k]);
  }
}

// ---- Housekeeping ------------------------------------------------------------------------------

void TagIndex::Optimize() {
  absl::MutexLock lock(&mu_);
  auto optimize = [](Roaring& r) {
    r.runOptimize();
    r.shrinkToFit();
  };
  for (auto& [name, column] : columns_) {
    optimize(column->exists);
    for (auto& [label, bitmap] : column->labels) optimize(bitmap);
    for (auto& slice : column->slices) optimize(slice);
  }
  for (auto& r : customers_by_org_) optimize(r);
  optimize(all_customers_);
}

size_t TagIndex::MemoryBytes() const {
  absl::ReaderMutexLock lock(&mu_);
  size_t bytes = directory_.MemoryBytes() + home_org_.capacity() * sizeof(uint16_t) +
                 all_customers_.getSizeInBytes(false);
  for (const auto& r : customers_by_org_) bytes += r.getSizeInBytes(false);
  for (const auto& [name, column] : columns_) {
    bytes += column->exists.getSizeInBytes(false);
    for (const auto& [label, bitmap] : column->labels) bytes += bitmap.getSizeInBytes(false);
    for (const auto& slice : column->slices) bytes += slice.getSizeInBytes(false);
  }
  return bytes;
}

}  // namespace mkt::segments
