#include "services/segments/tag_index.h"

#include <algorithm>
#include <iterator>
#include <limits>

#include "libs/tenancy/tenancy.h"

namespace mkt::segments {
namespace {

constexpr int kMaxDepth = 32;

}  // namespace

// ---- Dictionary and customers ------------------------------------------------------------------

void TagIndex::DefineTag(const TagSchema& schema) {
  absl::MutexLock lock(&mu_);
  auto& column = columns_[schema.name];
  if (column == nullptr) {
    column = std::make_unique<Column>();
    if (schema.type == pb::TAG_TYPE_DECIMAL_FEN) {
      column->encoding = Encoding::kSlices;  // amounts: a wide domain, values rarely repeat
      column->slices.resize(64);
    } else if (schema.numeric()) {
      column->encoding = Encoding::kValues;
    }
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
  for (auto it = column.values.begin(); it != column.values.end(); ++it) {
    if (!it->second.customers.removeChecked(dense_id)) continue;
    if (--it->second.count == 0) column.values.erase(it);  // the domain counts live values only
    break;
  }
  for (int i = 0; i < 64 && !column.slices.empty(); ++i) {
    if (column.used_slices >> i & 1) column.slices[i].remove(dense_id);
  }
}

void TagIndex::SetLocked(uint32_t dense_id, Column& column, const Value& value) {
  if (column.encoding == Encoding::kValues) {
    auto it = column.values.find(value.number);
    if (it != column.values.end() && it->second.customers.contains(dense_id)) return;
    RemoveFrom(dense_id, column);
    ValueBitmap& bitmap = column.values[value.number];
    bitmap.customers.add(dense_id);
    ++bitmap.count;
    column.exists.add(dense_id);
    if (column.values.size() > kMaxValueBitmaps) ConvertToSlices(column);
    return;
  }
  if (column.encoding == Encoding::kSlices) {
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

void TagIndex::ConvertToSlices(Column& column) {
  column.slices.resize(64);
  for (auto& [number, bitmap] : column.values) {
    uint64_t u = SliceEncode(number);
    column.used_slices |= u;
    while (u != 0) {
      column.slices[__builtin_ctzll(u)] |= bitmap.customers;
      u &= u - 1;
    }
  }
  column.values.clear();
  column.encoding = Encoding::kSlices;
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
  if (column.encoding == Encoding::kValues) {
    for (const auto& [number, bitmap] : column.values) {
      if (bitmap.customers.contains(dense_id)) {
        v.number = number;
        break;
      }
    }
  } else if (column.encoding == Encoding::kSlices) {
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

constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

// The O'Neil-Quass comparison of a bit-sliced column against `x`: walks the slices from the most
// significant bit, keeping the customers still equal so far; returns the bitmap `op` asks for.
Roaring NumericCompare(Roaring eq, const std::vector<Roaring>& slices, uint64_t used_slices,
                       pb::Operator op, int64_t x) {
  const bool want_lt = op == pb::LT || op == pb::LE;
  const bool want_gt = op == pb::GT || op == pb::GE;
  const uint64_t u = SliceEncode(x);
  Roaring lt, gt;
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
    case pb::LT:
      return lt;
    case pb::LE:
      lt |= eq;
      return lt;
    case pb::GT:
      return gt;
    case pb::GE:
      gt |= eq;
      return gt;
    default:
      return eq;
  }
}

Roaring Union(std::vector<const Roaring*>& parts) {
  if (parts.empty()) return Roaring();
  if (parts.size() == 1) return *parts[0];
  return Roaring::fastunion(parts.size(), parts.data());
}

}  // namespace

std::optional<TagIndex::Interval> TagIndex::NumericInterval(const pb::Condition& rule,
                                                            const TagSchema& schema,
                                                            int32_t today) {
  switch (rule.kind_case()) {
    case pb::Condition::kCompare: {
      absl::StatusOr<Value> v = FromProto(schema, rule.compare().value(), "");
      if (!v.ok()) return std::nullopt;
      const int64_t x = v->number;
      switch (rule.compare().op()) {
        case pb::EQ:
          return Interval{x, x};
        case pb::NE:
          return Interval{x, x, true};
        case pb::LT:
          return x == kMin ? Interval{} : Interval{kMin, x - 1};
        case pb::LE:
          return Interval{kMin, x};
        case pb::GT:
          return x == kMax ? Interval{} : Interval{x + 1, kMax};
        case pb::GE:
          return Interval{x, kMax};
        default:
          return std::nullopt;
      }
    }
    case pb::Condition::kRange: {
      absl::StatusOr<Value> lo = FromProto(schema, rule.range().low(), "");
      absl::StatusOr<Value> hi = FromProto(schema, rule.range().high(), "");
      if (!lo.ok() || !hi.ok()) return std::nullopt;
      return Interval{lo->number, hi->number};  // low > high: empty
    }
    case pb::Condition::kRelativeDate: {
      const auto& r = rule.relative_date();
      if (schema.type != pb::TAG_TYPE_DATE || r.days() < 0) return std::nullopt;
      const int64_t since = int64_t{today} - r.days();
      if (r.kind() == pb::RelativeDate::WITHIN_LAST_DAYS) return Interval{since, today};
      if (r.kind() == pb::RelativeDate::MORE_THAN_DAYS_AGO) return Interval{kMin, since - 1};
      return std::nullopt;
    }
    default:
      return std::nullopt;
  }
}

Roaring TagIndex::InInterval(const Column& column, int64_t low, int64_t high,
                             const Roaring* within) {
  if (low > high) return Roaring();
  if (column.encoding == Encoding::kValues) {
    // The union of the values inside, or everyone with a value minus the union of the values
    // outside, whichever touches fewer customers.
    std::vector<const Roaring*> inside, outside;
    uint64_t in = 0, out = 0;
    for (auto it = column.values.begin(); it != column.values.end(); ++it) {
      const bool is_in = it->first >= low && it->first <= high;
      (is_in ? inside : outside).push_back(&it->second.customers);
      (is_in ? in : out) += it->second.count;
    }
    Roaring result;
    if (in <= out) {
      result = Union(inside);
    } else {
      result = within == nullptr ? column.exists : column.exists & *within;
      if (!outside.empty()) result -= Union(outside);
      return result;
    }
    if (within != nullptr) result &= *within;
    return result;
  }
  if (column.encoding != Encoding::kSlices) return Roaring();
  Roaring candidates = within == nullptr ? column.exists : column.exists & *within;
  if (low != kMin) {
    candidates =
        NumericCompare(std::move(candidates), column.slices, column.used_slices, pb::GE, low);
  }
  if (high != kMax) {
    candidates =
        NumericCompare(std::move(candidates), column.slices, column.used_slices, pb::LE, high);
  }
  return candidates;
}

Roaring TagIndex::EvaluateInterval(const Column& column, const Interval& interval,
                                   const Roaring* within) {
  if (!interval.negate) return InInterval(column, interval.low, interval.high, within);
  Roaring result = within == nullptr ? column.exists : column.exists & *within;
  result -= InInterval(column, interval.low, interval.high, within);
  return result;
}

bool TagIndex::MatchesInterval(const Column& column, uint32_t id, const Interval& interval) {
  if (!column.exists.contains(id)) return false;
  bool in = false;
  if (interval.low > interval.high) {
    in = false;
  } else if (column.encoding == Encoding::kValues) {
    // Probes the values on the side of the interval with fewer of them.
    const auto first = column.values.lower_bound(interval.low);
    const auto last = column.values.upper_bound(interval.high);
    const size_t inside = static_cast<size_t>(std::distance(first, last));
    if (inside * 2 <= column.values.size()) {
      for (auto it = first; it != last && !in; ++it) in = it->second.customers.contains(id);
    } else {
      in = true;
      for (auto it = column.values.begin(); it != first && in; ++it) {
        in = !it->second.customers.contains(id);
      }
      for (auto it = last; it != column.values.end() && in; ++it) {
        in = !it->second.customers.contains(id);
      }
    }
  } else if (column.encoding == Encoding::kSlices) {
    in = (interval.low == kMin || CompareValue(column, id, interval.low) >= 0) &&
         (interval.high == kMax || CompareValue(column, id, interval.high) <= 0);
  }
  return in != interval.negate;
}

Roaring TagIndex::Evaluate(const pb::Condition& rule, int32_t today) const {
  absl::ReaderMutexLock lock(&mu_);
  return EvaluateLocked(rule, today, 0, nullptr);
}

bool TagIndex::Matches(const pb::Condition& rule, uint32_t dense_id, int32_t today) const {
  absl::ReaderMutexLock lock(&mu_);
  if (!all_customers_.contains(dense_id)) return false;
  return MatchesLocked(rule, dense_id, today, 0);
}

uint64_t TagIndex::EstimateLocked(const pb::Condition& rule, int32_t today, int depth) const {
  const uint64_t everyone = all_customers_.cardinality();
  if (depth > kMaxDepth) return 0;
  auto column_of = [&](const std::string& tag) { return ColumnOf(tag); };
  switch (rule.kind_case()) {
    case pb::Condition::kAll: {
      uint64_t least = everyone;
      for (const auto& c : rule.all().conditions()) {
        least = std::min(least, EstimateLocked(c, today, depth + 1));
      }
      return least;
    }
    case pb::Condition::kAny: {
      uint64_t sum = 0;
      for (const auto& c : rule.any().conditions()) sum += EstimateLocked(c, today, depth + 1);
      return std::min(sum, everyone);
    }
    case pb::Condition::kNot:
      return everyone;  // rarely selective; evaluated last
    case pb::Condition::kCompare:
    case pb::Condition::kRange:
    case pb::Condition::kRelativeDate: {
      const std::string& tag = rule.kind_case() == pb::Condition::kCompare ? rule.compare().tag()
                               : rule.kind_case() == pb::Condition::kRange
                                   ? rule.range().tag()
                                   : rule.relative_date().tag();
      const Column* c = column_of(tag);
      if (c == nullptr) return 0;
      if (c->encoding == Encoding::kLabels) {
        if (rule.kind_case() != pb::Condition::kCompare) return 0;
        absl::StatusOr<Value> v = FromProto(c->schema, rule.compare().value(), "");
        if (!v.ok() || v->labels.size() != 1) return 0;
        auto it = c->labels.find(v->labels[0]);
        const uint64_t n = it == c->labels.end() ? 0 : it->second.cardinality();
        return rule.compare().op() == pb::NE ? c->exists.cardinality() - n : n;
      }
      std::optional<Interval> interval = NumericInterval(rule, c->schema, today);
      if (!interval) return 0;
      if (c->encoding == Encoding::kSlices) return c->exists.cardinality();  // unknown: assume all
      uint64_t in = 0, total = 0;
      for (const auto& [number, bitmap] : c->values) {
        total += bitmap.count;
        if (number >= interval->low && number <= interval->high) in += bitmap.count;
      }
      return interval->negate ? total - in : in;
    }
    case pb::Condition::kIn: {
      const Column* c = column_of(rule.in().tag());
      return c == nullptr ? 0 : c->exists.cardinality();
    }
    case pb::Condition::kExists: {
      const Column* c = column_of(rule.exists().tag());
      return c == nullptr ? 0 : c->exists.cardinality();
    }
    default:
      return 0;
  }
}

Roaring TagIndex::EvaluateLocked(const pb::Condition& rule, int32_t today, int depth,
                                 const Roaring* within) const {
  if (depth > kMaxDepth) return Roaring();
  auto restrict = [within](const Roaring& r) { return within == nullptr ? r : r & *within; };
  auto label_bitmap = [&](const Column& c, const std::string& label) {
    auto it = c.labels.find(label);
    return it == c.labels.end() ? Roaring() : restrict(it->second);
  };
  switch (rule.kind_case()) {
    case pb::Condition::kAll: {
      const int n = rule.all().conditions_size();
      if (n == 0) return Roaring();
      // The most selective condition first; each later one only looks at what is left.
      std::vector<std::pair<uint64_t, int>> order;
      order.reserve(n);
      for (int i = 0; i < n; ++i) {
        order.emplace_back(EstimateLocked(rule.all().conditions(i), today, depth + 1), i);
      }
      std::stable_sort(order.begin(), order.end());
      Roaring result =
          EvaluateLocked(rule.all().conditions(order[0].second), today, depth + 1, within);
      for (int k = 1; k < n && !result.isEmpty(); ++k) {
        result = EvaluateLocked(rule.all().conditions(order[k].second), today, depth + 1, &result);
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
    case pb::Condition::kNot: {
      Roaring result = restrict(all_customers_);
      result -= EvaluateLocked(rule.not_(), today, depth + 1, within);
      return result;
    }
    case pb::Condition::kCompare:
    case pb::Condition::kRange:
    case pb::Condition::kRelativeDate: {
      const std::string& tag = rule.kind_case() == pb::Condition::kCompare ? rule.compare().tag()
                               : rule.kind_case() == pb::Condition::kRange
                                   ? rule.range().tag()
                                   : rule.relative_date().tag();
      const Column* c = ColumnOf(tag);
      if (c == nullptr) return Roaring();
      if (c->encoding == Encoding::kLabels) {
        if (rule.kind_case() != pb::Condition::kCompare) return Roaring();
        absl::StatusOr<Value> v = FromProto(c->schema, rule.compare().value(), "");
        if (!v.ok() || v->labels.size() != 1) return Roaring();
        if (rule.compare().op() == pb::EQ) return label_bitmap(*c, v->labels[0]);
        if (rule.compare().op() == pb::NE) {
          Roaring result = restrict(c->exists);
          result -= label_bitmap(*c, v->labels[0]);
          return result;
        }
        return Roaring();
      }
      std::optional<Interval> interval = NumericInterval(rule, c->schema, today);
      return interval ? EvaluateInterval(*c, *interval, within) : Roaring();
    }
    case pb::Condition::kIn: {
      const Column* c = ColumnOf(rule.in().tag());
      if (c == nullptr) return Roaring();
      Roaring result;
      for (const auto& value : rule.in().values()) {
        absl::StatusOr<Value> v = FromProto(c->schema, value, "");
        if (!v.ok()) continue;
        if (c->schema.numeric()) {
          result |= InInterval(*c, v->number, v->number, within);
        } else {
          for (const auto& label : v->labels) result |= label_bitmap(*c, label);
        }
      }
      return result;
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
    case pb::Condition::kCompare:
    case pb::Condition::kRange:
    case pb::Condition::kRelativeDate: {
      const std::string& tag = rule.kind_case() == pb::Condition::kCompare ? rule.compare().tag()
                               : rule.kind_case() == pb::Condition::kRange
                                   ? rule.range().tag()
                                   : rule.relative_date().tag();
      const Column* c = ColumnOf(tag);
      if (c == nullptr || !c->exists.contains(id)) return false;
      if (c->encoding == Encoding::kLabels) {
        if (rule.kind_case() != pb::Condition::kCompare) return false;
        absl::StatusOr<Value> v = FromProto(c->schema, rule.compare().value(), "");
        if (!v.ok() || v->labels.size() != 1) return false;
        if (rule.compare().op() == pb::EQ) return has_label(*c, v->labels[0]);
        if (rule.compare().op() == pb::NE) return !has_label(*c, v->labels[0]);
        return false;
      }
      std::optional<Interval> interval = NumericInterval(rule, c->schema, today);
      return interval && MatchesInterval(*c, id, *interval);
    }
    case pb::Condition::kIn: {
      const Column* c = ColumnOf(rule.in().tag());
      if (c == nullptr || !c->exists.contains(id)) return false;
      for (const auto& value : rule.in().values()) {
        absl::StatusOr<Value> v = FromProto(c->schema, value, "");
        if (!v.ok()) continue;
        if (c->schema.numeric()) {
          if (MatchesInterval(*c, id, Interval{v->number, v->number})) return true;
        } else {
          for (const auto& label : v->labels) {
            if (has_label(*c, label)) return true;
          }
        }
      }
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
  if (column.encoding == Encoding::kValues) {
    std::map<int64_t, std::vector<uint32_t>> by_value;
    for (size_t k = 0; k < dense_ids.size(); ++k) {
      by_value[numbers[k]].push_back(dense_ids[k]);
      if (by_value.size() > kMaxValueBitmaps) break;
    }
    if (by_value.size() <= kMaxValueBitmaps) {
      column.exists.addMany(dense_ids.size(), dense_ids.data());
      for (auto& [number, ids] : by_value) {
        ValueBitmap& bitmap = column.values[number];
        bitmap.customers.addMany(ids.size(), ids.data());
        bitmap.count = bitmap.customers.cardinality();
      }
      return;
    }
    ConvertToSlices(column);  // a wide domain after all
  }
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

bool TagIndex::PerValue(std::string_view tag) const {
  absl::ReaderMutexLock lock(&mu_);
  const Column* column = ColumnOf(tag);
  return column != nullptr && column->encoding == Encoding::kValues;
}

void TagIndex::Optimize() {
  absl::MutexLock lock(&mu_);
  auto optimize = [](Roaring& r) {
    r.runOptimize();
    r.shrinkToFit();
  };
  for (auto& [name, column] : columns_) {
    optimize(column->exists);
    for (auto& [label, bitmap] : column->labels) optimize(bitmap);
    for (auto& [number, bitmap] : column->values) optimize(bitmap.customers);
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
    for (const auto& [number, bitmap] : column->values) {
      bytes += bitmap.customers.getSizeInBytes(false) + sizeof(bitmap) + 48;  // + the map node
    }
    for (const auto& slice : column->slices) bytes += slice.getSizeInBytes(false);
  }
  return bytes;
}

}  // namespace mkt::segments
