// The bitmap index against a straightforward reference: random customers with random values of
// every tag type, random rule trees, and for each rule the set Evaluate() returns and the answer
// Matches() gives per customer must equal what a plain loop over the values computes.
#include "services/segments/tag_index.h"

#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mkt::segments {
namespace {

TagSchema MakeTag(std::string name, pb::TagType type, std::vector<std::string> allowed = {},
                  bool multi = false) {
  TagSchema s;
  s.name = std::move(name);
  s.type = type;
  s.org_id = "fed";
  s.allowed_values = std::move(allowed);
  s.multi_valued = multi;
  return s;
}

std::vector<TagSchema> Tags() {
  return {
      MakeTag("has_card", pb::TAG_TYPE_BOOL),
      MakeTag("level", pb::TAG_TYPE_ENUM, {"normal", "silver", "gold", "diamond"}),
      MakeTag("products", pb::TAG_TYPE_ENUM, {"deposit", "loan", "card", "wealth"}, true),
      MakeTag("age", pb::TAG_TYPE_INT),
      MakeTag("visits", pb::TAG_TYPE_INT),  // never negative: most high bit slices stay unused
      MakeTag("balance", pb::TAG_TYPE_DECIMAL_FEN),
      // Wider than kMaxValueBitmaps: starts with one bitmap per value, becomes bit-sliced while
      // the customers are being set.
      MakeTag("points", pb::TAG_TYPE_INT),
      MakeTag("last_login", pb::TAG_TYPE_DATE),
  };
}

constexpr int32_t kToday = 20000;

// ---- The reference evaluation: a loop over plain values ----------------------------------------

using Customer = std::map<std::string, Value>;

// The reference converts each literal of a rule once (per rule) rather than once per customer.
std::map<const pb::TagValue*, Value>& LiteralCache() {
  static std::map<const pb::TagValue*, Value> cache;
  return cache;
}

Value Literal(const TagSchema& s, const pb::TagValue& v) {
  auto [it, inserted] = LiteralCache().try_emplace(&v);
  if (inserted) it->second = *FromProto(s, v, "");
  return it->second;
}

bool Ref(const pb::Condition& c, const Customer& cust, const std::map<std::string, TagSchema>& tags,
         int32_t today) {
  auto value_of = [&](const std::string& tag) -> const Value* {
    auto it = cust.find(tag);
    return it == cust.end() ? nullptr : &it->second;
  };
  auto holds = [](const Value& v, const std::string& label) {
    return std::find(v.labels.begin(), v.labels.end(), label) != v.labels.end();
  };
  switch (c.kind_case()) {
    case pb::Condition::kAll:
      if (c.all().conditions().empty()) return false;
      for (const auto& x : c.all().conditions()) {
        if (!Ref(x, cust, tags, today)) return false;
      }
      return true;
    case pb::Condition::kAny:
      for (const auto& x : c.any().conditions()) {
        if (Ref(x, cust, tags, today)) return true;
      }
      return false;
    case pb::Condition::kNot:
      return !Ref(c.not_(), cust, tags, today);
    case pb::Condition::kCompare: {
      const Value* v = value_of(c.compare().tag());
      if (v == nullptr) return false;
      const TagSchema& s = tags.at(c.compare().tag());
      Value x = Literal(s, c.compare().value());
      if (!s.numeric()) {
        return c.compare().op() == pb::EQ ? holds(*v, x.labels[0]) : !holds(*v, x.labels[0]);
      }
      switch (c.compare().op()) {
        case pb::EQ:
          return v->number == x.number;
        case pb::NE:
          return v->number != x.number;
        case pb::LT:
          return v->number < x.number;
        case pb::LE:
          return v->number <= x.number;
        case pb::GT:
          return v->number > x.number;
        case pb::GE:
          return v->number >= x.number;
        default:
          return false;
      }
    }
    case pb::Condition::kRange: {
      const Value* v = value_of(c.range().tag());
      if (v == nullptr) return false;
      const TagSchema& s = tags.at(c.range().tag());
      return Literal(s, c.range().low()).number <= v->number &&
             v->number <= Literal(s, c.range().high()).number;
    }
    case pb::Condition::kIn: {
      const Value* v = value_of(c.in().tag());
      if (v == nullptr) return false;
      const TagSchema& s = tags.at(c.in().tag());
      for (const auto& pv : c.in().values()) {
        Value x = Literal(s, pv);
        if (s.numeric() ? v->number == x.number : holds(*v, x.labels[0])) return true;
      }
      return false;
    }
    case pb::Condition::kRelativeDate: {
      const Value* v = value_of(c.relative_date().tag());
      if (v == nullptr) return false;
      const int64_t lo = today - c.relative_date().days();
      return c.relative_date().kind() == pb::RelativeDate::WITHIN_LAST_DAYS
                 ? (lo <= v->number && v->number <= today)
                 : v->number < lo;
    }
    case pb::Condition::kExists:
      return value_of(c.exists().tag()) != nullptr;
    default:
      return false;
  }
}

// ---- Random data and rules ---------------------------------------------------------------------

class Random {
 public:
  explicit Random(uint32_t seed) : rng_(seed) {}
  int Int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  template <class T>
  const T& Pick(const std::vector<T>& v) {
    return v[Int(0, static_cast<int>(v.size()) - 1)];
  }

  // Values near a few hot spots so that equality and boundaries are hit often; negatives too.
  int64_t Number(const TagSchema& s) {
    switch (s.type) {
      case pb::TAG_TYPE_INT:
        if (s.name == "points") return Chance(0.5) ? Int(-3, 3) : Int(-100000, 100000);
        return s.name == "visits" ? Int(0, 50) : Int(-5, 100);
      case pb::TAG_TYPE_DECIMAL_FEN:
        return Chance(0.1) ? -int64_t{Int(0, 100000)} : int64_t{Int(0, 20)} * 500000 + Int(0, 3);
      default:
        return kToday - Int(-3, 400);
    }
  }

  // A literal for a rule: usually near the data, sometimes far above every stored value (so the
  // comparison meets bits no customer has).
  int64_t LiteralNumber(const TagSchema& s) {
    // The edges of the domains (ranges starting or ending exactly there) and values outside them.
    if (s.type == pb::TAG_TYPE_INT && Chance(0.1)) {
      return Pick(std::vector<int64_t>{-5, 100, 0, 50, -6, 101, 51, -1000, 100000});
    }
    if (s.type == pb::TAG_TYPE_DATE && Chance(0.1)) {
      return kToday - Pick(std::vector<int64_t>{-3, 400, -4, 401, 0});
    }
    int64_t n = Number(s);
    if (Chance(0.15)) n = s.type == pb::TAG_TYPE_DATE ? n + Int(0, 1000000) : n * 64 + Int(0, 63);
    return n;
  }

  Value RandomValue(const TagSchema& s) {
    Value v;
    if (s.numeric()) {
      v.number = Number(s);
    } else if (s.type == pb::TAG_TYPE_BOOL) {
      v.labels = {Chance(0.5) ? "true" : "false"};
    } else if (s.multi_valued) {
      std::set<std::string> set;
      for (int i = Int(1, 3); i > 0; --i) set.insert(Pick(s.allowed_values));
      v.labels.assign(set.begin(), set.end());
    } else {
      v.labels = {Pick(s.allowed_values)};
    }
    return v;
  }

  pb::TagValue ProtoValue(const TagSchema& s) {
    Value v = RandomValue(s);
    if (s.numeric()) v.number = LiteralNumber(s);
    if (!s.numeric() && s.multi_valued) v.labels.resize(1);
    pb::TagValue out = ToProto(s, v);
    if (s.multi_valued) out.set_enum_value(v.labels[0]);
    return out;
  }

  pb::Condition Leaf(const std::vector<TagSchema>& tags) {
    const TagSchema& s = Pick(tags);
    pb::Condition c;
    int kind = Int(0, 9);
    if (!s.numeric()) kind = kind % 3;  // compare EQ/NE, in, exists
    switch (kind) {
      case 0: {
        auto* cmp = c.mutable_compare();
        cmp->set_tag(s.name);
        if (s.numeric()) {
          cmp->set_op(static_cast<pb::Operator>(Int(1, 6)));
        } else {
          cmp->set_op(Chance(0.5) ? pb::EQ : pb::NE);
        }
        *cmp->mutable_value() = ProtoValue(s);
        break;
      }
      case 1: {
        auto* in = c.mutable_in();
        in->set_tag(s.name);
        for (int i = Int(1, 4); i > 0; --i) *in->add_values() = ProtoValue(s);
        break;
      }
      case 2:
        c.mutable_exists()->set_tag(s.name);
        break;
      case 3:
      case 4:
      case 5: {
        auto* r = c.mutable_range();
        r->set_tag(s.name);
        int64_t a = LiteralNumber(s), b = LiteralNumber(s);
        if (a > b) std::swap(a, b);
        *r->mutable_low() = ToProto(s, Value{.number = a});
        *r->mutable_high() = ToProto(s, Value{.number = b});
        break;
      }
      default: {
        const TagSchema& d = tags.back();  // the date tag (or the last numeric tag)
        if (d.type != pb::TAG_TYPE_DATE) return Leaf(tags);
        auto* r = c.mutable_relative_date();
        r->set_tag(d.name);
        r->set_kind(Chance(0.5) ? pb::RelativeDate::WITHIN_LAST_DAYS
                                : pb::RelativeDate::MORE_THAN_DAYS_AGO);
        r->set_days(Int(0, 400));
        break;
      }
    }
    return c;
  }

  pb::Condition Rule(const std::vector<TagSchema>& tags, int depth) {
    if (depth >= 3 || Chance(0.35)) return Leaf(tags);
    pb::Condition c;
    switch (Int(0, 2)) {
      case 0:
        for (int i = Int(1, 4); i > 0; --i)
          *c.mutable_all()->add_conditions() = Rule(tags, depth + 1);
        break;
      case 1:
        for (int i = Int(1, 4); i > 0; --i)
          *c.mutable_any()->add_conditions() = Rule(tags, depth + 1);
        break;
      default:
        *c.mutable_not_() = Rule(tags, depth + 1);
    }
    return c;
  }

 private:
  std::mt19937 rng_;
};

TEST(TagIndexTest, RandomRulesMatchTheReferenceEvaluation) {
  const std::vector<TagSchema> tags = Tags();
  std::map<std::string, TagSchema> by_name;
  TagIndex index;
  for (const auto& t : tags) {
    index.DefineTag(t);
    by_name[t.name] = t;
  }
  Random random(20261126);
  constexpr int kCustomers = 3000;
  std::vector<Customer> customers(kCustomers);
  for (uint32_t id = 0; id < kCustomers; ++id) {
    index.PutCustomer(id, "c" + std::to_string(id), "bank-a");
    for (const auto& t : tags) {
      if (random.Chance(0.8)) {
        customers[id][t.name] = random.RandomValue(t);
        index.Set(id, t.name, customers[id][t.name]);
      }
    }
  }
  // Overwrite and remove some values, so stale bits would show.
  for (int i = 0; i < 2000; ++i) {
    uint32_t id = random.Int(0, kCustomers - 1);
    const TagSchema& t = random.Pick(tags);
    if (random.Chance(0.3)) {
      customers[id].erase(t.name);
      index.Remove(id, t.name);
    } else {
      customers[id][t.name] = random.RandomValue(t);
      index.Set(id, t.name, customers[id][t.name]);
    }
  }
  // Both encodings of numeric tags are exercised.
  EXPECT_TRUE(index.PerValue("age"));
  EXPECT_TRUE(index.PerValue("last_login"));
  EXPECT_FALSE(index.PerValue("points"));
  EXPECT_FALSE(index.PerValue("balance"));
  for (uint32_t id = 0; id < kCustomers; id += 97) {
    for (const auto& t : tags) {
      auto it = customers[id].find(t.name);
      std::optional<Value> got = index.ValueOf(id, t.name);
      ASSERT_EQ(got.has_value(), it != customers[id].end()) << t.name;
      if (got) {
        EXPECT_EQ(*got, it->second) << t.name;
      }
    }
  }

  int nonempty = 0, non_full = 0;
  for (int r = 0; r < 4000; ++r) {
    if (r == 2000) {
      // The second half with cumulative steps: built from the bitmaps, then kept current by more
      // overwrites and removals (stale step bits would show).
      index.BuildSteps(kToday);
      for (int i = 0; i < 2000; ++i) {
        uint32_t id = random.Int(0, kCustomers - 1);
        const TagSchema& t = random.Pick(tags);
        if (random.Chance(0.3)) {
          customers[id].erase(t.name);
          index.Remove(id, t.name);
        } else {
          customers[id][t.name] = random.RandomValue(t);
          index.Set(id, t.name, customers[id][t.name]);
        }
      }
    }
    pb::Condition rule = random.Rule(tags, 0);
    Roaring got = index.Evaluate(rule, kToday);
    Roaring want;
    LiteralCache().clear();
    for (uint32_t id = 0; id < kCustomers; ++id) {
      if (Ref(rule, customers[id], by_name, kToday)) want.add(id);
    }
    ASSERT_TRUE(got == want) << "rule " << r << ": " << rule.ShortDebugString() << "\n got "
                             << got.cardinality() << " want " << want.cardinality();
    for (int k = 0; k < 5; ++k) {
      uint32_t id = random.Int(0, kCustomers - 1);
      ASSERT_EQ(index.Matches(rule, id, kToday), want.contains(id))
          << "rule " << rule.ShortDebugString() << " customer " << id;
    }
    nonempty += !want.isEmpty();
    non_full += want.cardinality() < kCustomers;
  }
  // The generator must produce rules that discriminate, or the comparison proves little.
  EXPECT_GT(nonempty, 2000);
  EXPECT_GT(non_full, 2000);
}

TEST(TagIndexTest, BitSlicedComparisonsAtExtremes) {
  TagIndex index;
  TagSchema t = MakeTag("n", pb::TAG_TYPE_INT);
  index.DefineTag(t);
  const std::vector<int64_t> values = {INT64_MIN, -1, 0, 1, 42, INT64_MAX};
  for (uint32_t i = 0; i < values.size(); ++i) {
    index.PutCustomer(i, "c" + std::to_string(i), "bank-a");
    index.Set(i, "n", Value{.number = values[i]});
  }
  for (int64_t x : values) {
    for (int op = pb::EQ; op <= pb::GE; ++op) {
      pb::Condition c;
      c.mutable_compare()->set_tag("n");
      c.mutable_compare()->set_op(static_cast<pb::Operator>(op));
      c.mutable_compare()->mutable_value()->set_int_value(x);
      Roaring got = index.Evaluate(c, kToday);
      for (uint32_t i = 0; i < values.size(); ++i) {
        bool want = false;
        switch (op) {
          case pb::EQ:
            want = values[i] == x;
            break;
          case pb::NE:
            want = values[i] != x;
            break;
          case pb::LT:
            want = values[i] < x;
            break;
          case pb::LE:
            want = values[i] <= x;
            break;
          case pb::GT:
            want = values[i] > x;
            break;
          case pb::GE:
            want = values[i] >= x;
            break;
        }
        EXPECT_EQ(got.contains(i), want) << values[i] << " op " << op << " " << x;
        EXPECT_EQ(index.Matches(c, i, kToday), want);
      }
    }
  }
}

TEST(TagIndexTest, ScopeFollowsTheOrgTree) {
  TagIndex index;
  index.PutCustomer(0, "a0", "bank-a");
  index.PutCustomer(1, "a1", "bank-a.branch-01");
  index.PutCustomer(2, "b0", "bank-b");
  index.PutCustomer(3, "ab0", "bank-ab");
  EXPECT_EQ(index.Scope("bank-a").cardinality(), 2u);
  EXPECT_EQ(index.Scope("bank-a.branch-01").cardinality(), 1u);
  EXPECT_EQ(index.Scope("fed").cardinality(), 4u);
  EXPECT_TRUE(index.InScope("bank-a", 1));
  EXPECT_FALSE(index.InScope("bank-a", 2));
  EXPECT_FALSE(index.InScope("bank-a", 3));
  // A customer who moves to another bank leaves the first bank's scope.
  index.PutCustomer(1, "a1", "bank-b");
  EXPECT_FALSE(index.InScope("bank-a", 1));
  EXPECT_TRUE(index.InScope("bank-b", 1));
  EXPECT_EQ(index.Find("b0"), std::optional<uint32_t>(2));
  EXPECT_EQ(index.CustomerId(3), "ab0");
  EXPECT_FALSE(index.Find("nobody").has_value());
}

TEST(TagValueTest, CellsAndCanonicalText) {
  TagSchema fen = MakeTag("aum", pb::TAG_TYPE_DECIMAL_FEN);
  EXPECT_EQ(ParseCell(fen, "1234.5")->number, 123450);
  EXPECT_EQ(ParseCell(fen, "-0.07")->number, -7);
  EXPECT_FALSE(ParseCell(fen, "1.234").ok());
  EXPECT_FALSE(ParseCell(fen, "abc").ok());
  TagSchema date = MakeTag("d", pb::TAG_TYPE_DATE);
  EXPECT_EQ(ParseCell(date, "1970-01-02")->number, 1);
  EXPECT_FALSE(ParseCell(date, "2026-02-30").ok());
  EXPECT_EQ(FormatDate(*ParseDate("2026-11-26")), "2026-11-26");
  TagSchema multi = MakeTag("p", pb::TAG_TYPE_ENUM, {"a", "b"}, true);
  Value v = *ParseCell(multi, "b|a");
  EXPECT_EQ(v.labels, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(*DecodeValue(multi, EncodeValue(multi, v)), v);
  EXPECT_FALSE(ParseCell(multi, "a|c").ok());
  TagSchema b = MakeTag("b", pb::TAG_TYPE_BOOL);
  EXPECT_EQ(ParseCell(b, "YES")->labels[0], "true");
  EXPECT_FALSE(ParseCell(b, "maybe").ok());
}

}  // namespace
}  // namespace mkt::segments

namespace mkt::segments {
namespace {

TEST(TagIndexTest, BulkLoadingBuildsTheSameIndexAsSettingValues) {
  TagSchema n = MakeTag("n", pb::TAG_TYPE_INT);
  TagSchema e = MakeTag("e", pb::TAG_TYPE_ENUM, {"x", "y", "z"});
  TagSchema d = MakeTag("d", pb::TAG_TYPE_DATE);  // a small domain: one bitmap per value
  TagIndex bulk, single;
  for (TagIndex* index : {&bulk, &single}) {
    index->DefineTag(n);
    index->DefineTag(e);
    index->DefineTag(d);
  }
  std::vector<int64_t> days;
  Random random(7);
  std::vector<uint32_t> ids;
  std::vector<int64_t> numbers;
  std::vector<uint16_t> label_of;
  const std::vector<std::string> labels = {"x", "y", "z"};
  bulk.LoadCustomers(
      0, 5000, [](uint32_t i) { return "c" + std::to_string(i); }, "bank-a");
  for (uint32_t i = 0; i < 5000; ++i) {
    single.PutCustomer(i, "c" + std::to_string(i), "bank-a");
    if (random.Chance(0.7)) {
      ids.push_back(i);
      numbers.push_back(random.Int(-1000, 1000000));
      label_of.push_back(static_cast<uint16_t>(random.Int(0, 2)));
      single.Set(i, "n", Value{.number = numbers.back()});
      single.Set(i, "e", Value{.labels = {labels[label_of.back()]}});
      days.push_back(kToday - random.Int(-3, 400));
      single.Set(i, "d", Value{.number = days.back()});
    }
  }
  bulk.LoadNumeric("n", ids, numbers);
  bulk.LoadLabels("e", ids, label_of, labels);
  bulk.LoadNumeric("d", ids, days);
  EXPECT_FALSE(bulk.PerValue("n"));
  EXPECT_TRUE(bulk.PerValue("d"));
  EXPECT_EQ(bulk.Find("c4999"), std::optional<uint32_t>(4999));
  EXPECT_TRUE(bulk.InScope("bank-a", 4999));
  EXPECT_EQ(bulk.Scope("bank-a").cardinality(), 5000u);
  const std::vector<TagSchema> tags = {e, n, d};
  for (int r = 0; r < 600; ++r) {
    // Bulk loading built steps from the loaded numbers (dates anchored at the real today); the
    // second half compares steps built from the bitmaps and anchored at kToday with no steps.
    if (r == 300) bulk.BuildSteps(kToday);
    pb::Condition rule = random.Rule(tags, 0);
    const Roaring want = single.Evaluate(rule, kToday);
    ASSERT_TRUE(bulk.Evaluate(rule, kToday) == want) << rule.ShortDebugString();
    const uint32_t id = random.Int(0, 4999);
    ASSERT_EQ(bulk.Matches(rule, id, kToday), want.contains(id)) << rule.ShortDebugString();
  }
}

// One bitmap per value: moving customers between values, emptying a value, and outgrowing the
// domain limit (the column becomes bit-sliced and answers the same).
TEST(TagIndexTest, PerValueColumnsFollowUpdatesAndBecomeBitSlicedWhenWide) {
  TagIndex index;
  index.DefineTag(MakeTag("n", pb::TAG_TYPE_INT));
  constexpr uint32_t kCustomers = 3 * TagIndex::kMaxValueBitmaps;
  std::vector<std::optional<int64_t>> want(kCustomers);
  for (uint32_t i = 0; i < kCustomers; ++i) index.PutCustomer(i, "c" + std::to_string(i), "bank-a");
  auto check = [&](const std::string& when) {
    for (int64_t lo : {-2, 0, 5, 6, 1000}) {
      for (int64_t hi : {-1, 0, 5, 9, 4000}) {
        pb::Condition c;
        c.mutable_range()->set_tag("n");
        c.mutable_range()->mutable_low()->set_int_value(lo);
        c.mutable_range()->mutable_high()->set_int_value(hi);
        pb::Condition ne;
        ne.mutable_compare()->set_tag("n");
        ne.mutable_compare()->set_op(pb::NE);
        ne.mutable_compare()->mutable_value()->set_int_value(lo);
        Roaring got = index.Evaluate(c, kToday), got_ne = index.Evaluate(ne, kToday);
        for (uint32_t i = 0; i < kCustomers; ++i) {
          const bool in = want[i] && lo <= *want[i] && *want[i] <= hi;
          ASSERT_EQ(got.contains(i), in) << when << " [" << lo << "," << hi << "] customer " << i;
          ASSERT_EQ(index.Matches(c, i, kToday), in) << when;
          ASSERT_EQ(got_ne.contains(i), want[i] && *want[i] != lo) << when;
        }
      }
    }
  };
  for (uint32_t i = 0; i < kCustomers; ++i) {
    want[i] = i % 10;
    index.Set(i, "n", Value{.number = *want[i]});
  }
  EXPECT_TRUE(index.PerValue("n"));
  check("ten values");
  // Everyone at 5 moves to 6 (5 is left empty), a few lose their value.
  for (uint32_t i = 5; i < kCustomers; i += 10) {
    want[i] = 6;
    index.Set(i, "n", Value{.number = 6});
  }
  for (uint32_t i = 0; i < kCustomers; i += 7) {
    want[i].reset();
    index.Remove(i, "n");
  }
  for (uint32_t i = 3; i < kCustomers; i += 70) EXPECT_EQ(index.ValueOf(i, "n")->number, *want[i]);
  EXPECT_TRUE(index.PerValue("n"));
  check("after moves and removals");
  for (uint32_t i = 0; i < kCustomers; ++i) {
    want[i] = static_cast<int64_t>(i);
    index.Set(i, "n", Value{.number = i});
  }
  EXPECT_FALSE(index.PerValue("n"));
  for (uint32_t i = 0; i < kCustomers; i += 50) EXPECT_EQ(index.ValueOf(i, "n")->number, i);
  check("bit-sliced");
}

}  // namespace
}  // namespace mkt::segments

namespace mkt::segments {
namespace {

// Dense columns (most 65,536-customer chunks hold thousands of values, so bitmaps are dense
// containers, which the in-place AND / ANDNOT of conjunctions handles itself): conjunctions of
// ranges, thresholds and relative dates against a plain loop, after bulk loading and after
// updates.
TEST(TagIndexTest, DenseConjunctionsMatchAPlainLoop) {
  constexpr uint32_t kCustomers = 200'000;
  TagIndex index;
  index.DefineTag(MakeTag("age", pb::TAG_TYPE_INT));
  index.DefineTag(MakeTag("aum", pb::TAG_TYPE_DECIMAL_FEN));
  index.DefineTag(MakeTag("login", pb::TAG_TYPE_DATE));
  index.LoadCustomers(
      0, kCustomers, [](uint32_t i) { return "c" + std::to_string(i); }, "bank-a");
  std::mt19937 rng(42);
  std::vector<std::optional<int64_t>> age(kCustomers), aum(kCustomers), login(kCustomers);
  std::vector<uint32_t> ids;
  std::vector<int64_t> ages, aums, logins;
  for (uint32_t i = 0; i < kCustomers; ++i) {
    if (rng() % 10 == 0) continue;
    ids.push_back(i);
    age[i] = 18 + rng() % 72;
    aum[i] = static_cast<int64_t>(rng() % 100000) << (rng() % 24);
    login[i] = kToday - static_cast<int64_t>(rng() % 365);
    ages.push_back(*age[i]);
    aums.push_back(*aum[i]);
    logins.push_back(*login[i]);
  }
  index.LoadNumeric("age", ids, ages);
  index.LoadNumeric("aum", ids, aums);
  index.LoadNumeric("login", ids, logins);
  index.Optimize();  // run containers too

  auto check = [&](int round) {
    std::mt19937 pick(round);
    for (int r = 0; r < 40; ++r) {
      const int64_t lo = 18 + pick() % 72, hi = lo + pick() % 30;
      const int64_t threshold = r % 2 ? 5'000'000 : static_cast<int64_t>(pick() % 20'000'000);
      const int days = r % 3 ? 30 : static_cast<int>(pick() % 400);
      const bool negate_age = r % 5 == 0;
      pb::Condition rule;
      auto* all = rule.mutable_all();
      pb::Condition* age_leaf = all->add_conditions();
      pb::Condition* range_leaf = negate_age ? age_leaf->mutable_not_() : age_leaf;
      range_leaf->mutable_range()->set_tag("age");
      range_leaf->mutable_range()->mutable_low()->set_int_value(lo);
      range_leaf->mutable_range()->mutable_high()->set_int_value(hi);
      auto* cmp = all->add_conditions()->mutable_compare();
      cmp->set_tag("aum");
      cmp->set_op(r % 4 == 3 ? pb::LT : pb::GE);
      cmp->mutable_value()->set_int_value(threshold);
      auto* rel = all->add_conditions()->mutable_relative_date();
      rel->set_tag("login");
      rel->set_kind(r % 7 == 6 ? pb::RelativeDate::MORE_THAN_DAYS_AGO
                               : pb::RelativeDate::WITHIN_LAST_DAYS);
      rel->set_days(days);
      Roaring want;
      for (uint32_t i = 0; i < kCustomers; ++i) {
        const bool in_age = age[i] && *age[i] >= lo && *age[i] <= hi;
        if (negate_age ? in_age : !in_age) continue;
        if (!aum[i] || (r % 4 == 3 ? *aum[i] >= threshold : *aum[i] < threshold)) continue;
        if (!login[i]) continue;
        const bool recent = *login[i] >= kToday - days && *login[i] <= kToday;
        if (r % 7 == 6 ? *login[i] >= kToday - days : !recent) continue;
        want.add(i);
      }
      const Roaring got = index.Evaluate(rule, kToday);
      ASSERT_TRUE(got == want) << "round " << round << " rule " << rule.ShortDebugString()
                               << " got " << got.cardinality() << " want " << want.cardinality();
      for (uint32_t i = r; i < kCustomers; i += 9973) {
        ASSERT_EQ(index.Matches(rule, i, kToday), want.contains(i)) << rule.ShortDebugString();
      }
    }
  };
  check(0);  // steps built by the bulk load (dates anchored at the real today)
  index.BuildSteps(kToday);
  check(1);
  // Updates keep the steps exact: move a quarter of the customers, remove some values.
  for (uint32_t i = 0; i < kCustomers; i += 4) {
    if (rng() % 8 == 0) {
      age[i].reset();
      index.Remove(i, "age");
    } else {
      age[i] = 18 + rng() % 72;
      index.Set(i, "age", Value{.number = *age[i]});
    }
    aum[i] = static_cast<int64_t>(rng() % 100000) << (rng() % 24);
    index.Set(i, "aum", Value{.number = *aum[i]});
    login[i] = kToday - static_cast<int64_t>(rng() % 365);
    index.Set(i, "login", Value{.number = *login[i]});
  }
  check(2);
}

}  // namespace
}  // namespace mkt::segments
