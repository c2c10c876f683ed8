#include "services/segments/segment_service.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "libs/core/money.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/kafka/outbox.h"
#include "libs/log/log.h"
#include "marketing/events/v1/business_event.pb.h"
#include "services/segments/csv.h"
#include "spdlog/spdlog.h"

namespace mkt::segments {
namespace {

using ::marketing::common::v1::CONFLICT;
using ::marketing::common::v1::PERMISSION_DENIED;

constexpr int kMaxRuleDepth = 16;
constexpr int kMaxRuleLeaves = 200;
constexpr int kMaxComposeDepth = 8;
constexpr int kMaxListSize = 1000000;
constexpr int kDefaultPage = 50;
constexpr int kMaxPage = 500;
// Customers whose states are read back per statement when catching up (about 50 values each).
constexpr size_t kStatesPerRead = 5000;

absl::Status Denied(std::string_view message) {
  return Error(absl::StatusCode::kPermissionDenied, PERMISSION_DENIED, message);
}

absl::Status RequireWriter(const tenancy::Actor& actor) {
  if (actor.Has(tenancy::Role::kAdmin) || actor.Has(tenancy::Role::kPlanner)) {
    return absl::OkStatus();
  }
  return Denied("changing tags and segments takes the admin or planner role");
}

absl::Status CheckOrg(std::string_view org, std::string_view field) {
  if (!tenancy::IsValidOrgId(org)) return InvalidArgument(field, "not a valid org id");
  return absl::OkStatus();
}

// Decodes the code point at `s[i]` of well-formed UTF-8 (checked by the caller) and its length.
char32_t CodePointAt(std::string_view s, size_t i, size_t* len) {
  const auto b = [&](size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[k])); };
  const char32_t c = b(i);
  if (c < 0x80) {
    *len = 1;
    return c;
  }
  if (c < 0xE0) {
    *len = 2;
    return ((c & 0x1F) << 6) | (b(i + 1) & 0x3F);
  }
  if (c < 0xF0) {
    *len = 3;
    return ((c & 0x0F) << 12) | ((b(i + 1) & 0x3F) << 6) | (b(i + 2) & 0x3F);
  }
  *len = 4;
  return ((c & 0x07) << 18) | ((b(i + 1) & 0x3F) << 12) | ((b(i + 2) & 0x3F) << 6) |
         (b(i + 3) & 0x3F);
}

// Blank characters (ASCII space, no-break and ideographic spaces, the Unicode space separators).
bool IsBlank(char32_t c) {
  return c == 0x20 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Invisible characters that make two ids look the same: the byte order mark / zero-width no-break
// space, zero-width spaces and joiners, direction marks and the word joiner.
bool IsInvisible(char32_t c) {
  return c == 0xFEFF || (c >= 0x200B && c <= 0x200F) || c == 0x2060 || (c >= 0x202A && c <= 0x202E);
}

// Why `id` is not a customer id ("" when it is one). Ids are compared byte for byte, so "c1 " or
// "\uFEFFc1" would be another (phantom) customer than c1: refused rather than trimmed.
std::string CustomerIdProblem(std::string_view id) {
  const int n = PrintableUtf8Length(id);
  if (n < 1 || n > 64) return "a customer id is 1..64 printable characters";
  char32_t first = 0, last = 0;
  for (size_t i = 0, len = 0; i < id.size(); i += len) {
    const char32_t c = CodePointAt(id, i, &len);
    if (IsInvisible(c)) {
      return "a customer id has no invisible characters (byte order mark U+FEFF, zero-width or "
             "direction marks)";
    }
    if (i == 0) first = c;
    last = c;
  }
  if (IsBlank(first) || IsBlank(last)) return "a customer id has no leading or trailing blanks";
  return "";
}

absl::Status CheckCustomerId(std::string_view id, std::string_view field) {
  if (std::string problem = CustomerIdProblem(id); !problem.empty()) {
    return InvalidArgument(field, problem);
  }
  return absl::OkStatus();
}

int PageSize(int requested, int default_size, int max_size) {
  if (requested <= 0) return default_size;
  return std::min(requested, max_size);
}

// Returns up to `size` distinct members picked with `seed`, in ascending order.
std::vector<uint32_t> SampleOf(const Roaring& members, int size, uint64_t seed) {
  const uint64_t n = members.cardinality();
  std::vector<uint32_t> out;
  if (size <= 0 || n == 0) return out;
  std::set<uint64_t> ranks;
  if (static_cast<uint64_t>(size) >= n) {
    for (uint64_t i = 0; i < n; ++i) ranks.insert(i);
  } else {
    std::mt19937_64 rng(seed);
    // Floyd's algorithm: exactly `size` distinct ranks.
    for (uint64_t j = n - size; j < n; ++j) {
      uint64_t t = std::uniform_int_distribution<uint64_t>(0, j)(rng);
      if (!ranks.insert(t).second) ranks.insert(j);
    }
  }
  for (uint64_t rank : ranks) {
    uint32_t element = 0;
    if (members.select(static_cast<uint32_t>(rank), &element)) out.push_back(element);
  }
  return out;
}

std::string Serialize(const Roaring& r) {
  std::string bytes(r.getSizeInBytes(true), '\0');
  r.write(bytes.data(), true);
  return bytes;
}

// The envelope's event id becomes the dedupe key in PostgreSQL, which refuses NUL and malformed
// UTF-8 (an error that would be retried forever).
absl::Status CheckEventId(std::string_view event_id) {
  if (!IsWellFormedUtf8(event_id)) {
    return InvalidArgument("event_id", "the envelope's event_id is not UTF-8 text without NUL");
  }
  return absl::OkStatus();
}

// Where evaluation meets compositions nested deeper than kMaxComposeDepth (stored before that was
// checked on every write): the data, not the question, is at fault.
absl::Status TooDeep(std::string_view root) {
  return Error(absl::StatusCode::kFailedPrecondition, CONFLICT,
               absl::StrCat(root.empty() ? "the previewed definition"
                                         : absl::StrCat("segment ", AsAbsl(root)),
                            " nests compositions more than ", kMaxComposeDepth,
                            " levels deep and cannot be evaluated; change it or the segments it "
                            "uses so that it nests at most ",
                            kMaxComposeDepth, " levels"));
}

// How deep compositions nest, over the stored ones: a rule or list segment is 0 levels deep, a
// composition one more than its deepest operand; evaluation goes down at most kMaxComposeDepth
// levels. A reference with version 0 follows its segment's latest version.
class NestingDepths {
 public:
  // The depth reported for a composition that reaches itself.
  static constexpr int kCycle = 1 << 20;

  explicit NestingDepths(const StoredCompositions& stored) : latest_(stored.latest) {
    for (const auto& v : stored.versions) nodes_[{v.id, v.version}] = &v.composed;
  }

  // Makes `composed` the latest version of segment `id` (a change not stored yet).
  void Assume(const std::string& id, const pb::Composition& composed) {
    nodes_[{id, kPending}] = &composed;
    latest_[id] = kPending;
    memo_.clear();
  }

  int Of(const pb::SegmentRef& ref) {
    std::optional<Key> key = KeyOf(ref);
    return key ? OfStored(*key) : 0;
  }
  int Of(const std::string& id, int64_t version) {
    return nodes_.contains({id, version}) ? OfStored({id, version}) : 0;
  }

 private:
  using Key = std::pair<std::string, int64_t>;
  static constexpr int64_t kPending = std::numeric_limits<int64_t>::max();

  // The stored composition `ref` names; nullopt for rule and list segments (depth 0).
  std::optional<Key> KeyOf(const pb::SegmentRef& ref) const {
    int64_t version = ref.version();
    if (version == 0) {
      auto it = latest_.find(ref.segment_id());
      if (it == latest_.end()) return std::nullopt;
      version = it->second;
    }
    Key key{ref.segment_id(), version};
    if (!nodes_.contains(key)) return std::nullopt;
    return key;
  }

  // Depth-first without recursion: chains stored before the limit may be long.
  int OfStored(const Key& root) {
    if (auto it = memo_.find(root); it != memo_.end()) return it->second;
    struct Frame {
      Key key;
      int next = 0;
      int deepest = 0;  // of the operands seen so far
    };
    std::vector<Frame> stack = {{root}};
    std::set<Key> open = {root};
    while (true) {
      Frame& top = stack.back();
      const pb::Composition& c = *nodes_.at(top.key);
      if (top.next < c.operands_size()) {
        std::optional<Key> child = KeyOf(c.operands(top.next++));
        if (!child) continue;
        if (open.contains(*child)) {
          top.deepest = kCycle;
        } else if (auto it = memo_.find(*child); it != memo_.end()) {
          top.deepest = std::max(top.deepest, it->second);
        } else {
          open.insert(*child);
          stack.push_back({*child});
        }
        continue;
      }
      const int depth = std::min(top.deepest + 1, kCycle);
      memo_[top.key] = depth;
      open.erase(top.key);
      stack.pop_back();
      if (stack.empty()) return depth;
      stack.back().deepest = std::max(stack.back().deepest, depth);
    }
  }

  std::map<Key, const pb::Composition*> nodes_;
  std::map<std::string, int64_t, std::less<>> latest_;
  std::map<Key, int> memo_;
};

// Checks that `composed` - a new definition of segment `self_id`, or of a new segment or a preview
// when self_id is empty - nests at most kMaxComposeDepth levels, and so does every stored
// composition that uses segment `self_id` through its latest version. Errors name the deepest
// operand; segments that `viewer_org` cannot read are not named.
absl::Status CheckNesting(const StoredCompositions& stored, const std::string& self_id,
                          const pb::Composition& composed, std::string_view viewer_org) {
  if (composed.operands().empty()) return absl::OkStatus();
  NestingDepths after(stored);
  int deepest = -1, at = 0;
  for (int i = 0; i < composed.operands_size(); ++i) {
    const int d = after.Of(composed.operands(i));
    if (d > deepest) {
      deepest = d;
      at = i;
    }
  }
  const std::string field = absl::StrCat("definition.composed.operands[", at, "]");
  const std::string& operand = composed.operands(at).segment_id();
  if (deepest >= NestingDepths::kCycle) {
    return InvalidArgument(
        field, absl::StrCat("segment ", operand, " contains itself and cannot be used"));
  }
  const int depth = deepest + 1;
  if (depth > kMaxComposeDepth) {
    return InvalidArgument(
        field, absl::StrCat("segment ", operand, " nests ", deepest,
                            " levels deep, so this composition would nest ", depth,
                            " levels; segments nest at most ", kMaxComposeDepth, " levels"));
  }
  if (self_id.empty()) return absl::OkStatus();
  // The segments that use this one through its latest version get deeper with it.
  after.Assume(self_id, composed);
  NestingDepths before(stored);
  const StoredCompositions::Version* worst = nullptr;
  int worst_depth = 0;
  for (const auto& v : stored.versions) {
    const int now = after.Of(v.id, v.version);
    if (now <= kMaxComposeDepth || now <= before.Of(v.id, v.version)) continue;
    if (worst == nullptr || now > worst_depth ||
        (now == worst_depth && std::tie(v.id, v.version) < std::tie(worst->id, worst->version))) {
      worst = &v;
      worst_depth = now;
    }
  }
  if (worst == nullptr) return absl::OkStatus();
  if (worst_depth >= NestingDepths::kCycle) {
    return InvalidArgument(field, "a segment cannot contain itself");
  }
  const std::string user =
      Readable(viewer_org, worst->org_id)
          ? absl::StrCat("segment ", worst->id, " (version ", worst->version, ")")
          : std::string("a segment of another org");
  return InvalidArgument(
      field, absl::StrCat(user, " uses this segment and would nest ", worst_depth,
                          " levels deep with this composition (", depth, " levels through segment ",
                          operand, "); segments nest at most ", kMaxComposeDepth, " levels"));
}

// For a write of `segment` by `actor`: the check, run in the write's transaction, that no
// composition would nest deeper than evaluation goes; null when the segment is not a composition
// (only compositions get deeper).
CompositionCheck NestingCheck(const tenancy::Actor& actor, const SegmentVersion& segment) {
  if (segment.kind != pb::SEGMENT_KIND_COMPOSED) return nullptr;
  return [id = segment.id, composed = segment.definition.composed(),
          viewer = actor.org_id](const StoredCompositions& stored) {
    return CheckNesting(stored, id, composed, viewer);
  };
}

}  // namespace

bool Readable(std::string_view actor_org, std::string_view owner_org) {
  return owner_org == tenancy::kFederation || tenancy::Covers(actor_org, owner_org);
}

std::string RfmGroup(int r, int f, int m, double mean_r, double mean_f, double mean_m) {
  const bool hr = r > mean_r, hf = f > mean_f, hm = m > mean_m;
  if (hm) {
    if (hr && hf) return "important_value";
    if (hr) return "important_develop";
    if (hf) return "important_retain";
    return "important_recall";
  }
  if (hr && hf) return "general_value";
  if (hr) return "general_develop";
  if (hf) return "general_retain";
  return "general_recall";
}

SegmentService::SegmentService(PgSegmentStore& store, TagIndex& index, const Clock& clock,
                               ServiceOptions options)
    : store_(store), index_(index), clock_(clock), options_(options) {}

absl::Status SegmentService::Rebuild() {
  MKT_ASSIGN_OR_RETURN(std::vector<pb::Tag> tags, store_.ListTags());
  std::map<std::string, TagSchema, std::less<>> schemas;
  for (const auto& tag : tags) {
    schemas[tag.name()] = SchemaOf(tag);
    index_.DefineTag(SchemaOf(tag));
  }
  int64_t customers = 0, values = 0, bad = 0;
  // Customers with a value of a tag created after the dictionary was read: applied again below,
  // once the tag is read (their revision would otherwise mark the value as applied).
  std::vector<uint32_t> unread;
  uint64_t changes_from = 0;
  {
    absl::MutexLock applying(&apply_mu_);
    // Called while the lock is held (LoadIndex calls back on this thread).
    auto on_customer = [&](uint32_t dense_id, std::string_view customer_id, std::string_view org,
                           int64_t revision) {
      index_.PutCustomer(dense_id, customer_id, org);
      GrowApplied(dense_id);
      applied_[dense_id] = revision;
      ++customers;
    };
    auto on_value = [&](uint32_t dense_id, std::string_view tag, std::string_view text) {
      auto it = schemas.find(tag);
      if (it == schemas.end()) {
        if (dense_id < applied_.size()) applied_[dense_id] = 0;
        unread.push_back(dense_id);
        return;
      }
      absl::StatusOr<Value> v = DecodeValue(it->second, text);
      if (!v.ok()) {
        ++bad;
        return;
      }
      index_.Set(dense_id, tag, *v);
      ++values;
    };
    MKT_ASSIGN_OR_RETURN(changes_from, store_.LoadIndex(on_customer, on_value));
  }
  std::sort(unread.begin(), unread.end());
  unread.erase(std::unique(unread.begin(), unread.end()), unread.end());
  MKT_RETURN_IF_ERROR(ApplyStatesOf(unread));
  {
    absl::MutexLock lock(&changes_mu_);
    changes_from_ = changes_from;
  }
  index_.Optimize();
  spdlog::info("index rebuilt: {} tags, {} customers, {} values ({} unreadable), {} MB",
               tags.size(), customers, values, bad, index_.MemoryBytes() >> 20);
  return absl::OkStatus();
}

absl::Status SegmentService::ApplyState(const CustomerState& state) {
  std::vector<std::pair<std::string, Value>> values;
  for (const auto& [tag, text] : state.values) {
    // A tag created on another replica is read, not skipped: the state is marked applied below,
    // so a value left out now would stay out.
    MKT_ASSIGN_OR_RETURN(TagSchema schema, TagFor(tag));
    absl::StatusOr<Value> v = DecodeValue(schema, text);
    if (v.ok()) values.emplace_back(tag, *std::move(v));
  }
  absl::MutexLock lock(&apply_mu_);
  if (state.dense_id < applied_.size() && applied_[state.dense_id] >= state.revision) {
    return absl::OkStatus();  // the index holds this state or a newer one
  }
  GrowApplied(state.dense_id);
  applied_[state.dense_id] = state.revision;
  index_.PutCustomer(state.dense_id, state.customer_id, state.org_id);
  index_.ReplaceCustomer(state.dense_id, values);
  return absl::OkStatus();
}

void SegmentService::GrowApplied(uint32_t dense_id) {
  const size_t size = static_cast<size_t>(dense_id) + 1;
  if (applied_.size() >= size) return;
  // An eighth more room rather than the vector's doubling, which at 10 M customers would hold
  // 80 MB unused.
  if (applied_.capacity() < size) applied_.reserve(size + size / 8);
  applied_.resize(size, 0);
}

void SegmentService::ApplyCommitted(const std::vector<CustomerState>& states) {
  for (const CustomerState& state : states) {
    if (absl::Status s = ApplyState(state); !s.ok()) {
      spdlog::warn("customer {} committed but not applied yet (catching up will): {}",
                   state.dense_id, s);
    }
  }
}

absl::Status SegmentService::ApplyStatesOf(const std::vector<uint32_t>& dense_ids) {
  for (size_t at = 0; at < dense_ids.size(); at += kStatesPerRead) {
    const std::vector<uint32_t> batch(
        dense_ids.begin() + static_cast<std::ptrdiff_t>(at),
        dense_ids.begin() +
            static_cast<std::ptrdiff_t>(std::min(at + kStatesPerRead, dense_ids.size())));
    MKT_ASSIGN_OR_RETURN(std::vector<CustomerState> states, store_.ReadStates(batch));
    for (const CustomerState& state : states) MKT_RETURN_IF_ERROR(ApplyState(state));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SegmentService::CatchUp() {
  absl::MutexLock lock(&changes_mu_);
  MKT_ASSIGN_OR_RETURN(ChangedCustomers changes, store_.ReadChanges(changes_from_));
  if (changes.tags_version != tags_version_) {
    // Tags created or changed (allowed values added) on any replica: validation of profiles,
    // imports and rules here must know them.
    MKT_ASSIGN_OR_RETURN(std::vector<pb::Tag> tags, store_.ListTags());
    for (const pb::Tag& tag : tags) index_.DefineTag(SchemaOf(tag));
    tags_version_ = changes.tags_version;
  }
  if (changes.missed) {
    spdlog::warn(
        "changes of other replicas were pruned before this replica read them (it fell more than "
        "the retention behind): re-reading all {} customers",
        changes.dense_ids.size());
  }
  MKT_RETURN_IF_ERROR(ApplyStatesOf(changes.dense_ids));
  changes_from_ = std::max(changes_from_, changes.next);
  return static_cast<int64_t>(changes.dense_ids.size());
}

uint64_t SegmentService::CaughtUpTo() {
  absl::MutexLock lock(&changes_mu_);
  return changes_from_;
}

absl::StatusOr<int64_t> SegmentService::PruneChanges() {
  absl::MutexLock lock(&prune_mu_);
  const absl::Time now = clock_.Now();
  if (prune_marks_.empty() || now - prune_marks_.back().first >= options_.changes_retention / 6) {
    MKT_ASSIGN_OR_RETURN(uint64_t xmin, store_.CurrentXmin());
    prune_marks_.emplace_back(now, xmin);
  }
  // The newest mark older than the retention: every transaction below it ended before then.
  std::optional<uint64_t> below;
  while (!prune_marks_.empty() && now - prune_marks_.front().first >= options_.changes_retention) {
    below = prune_marks_.front().second;
    prune_marks_.pop_front();
  }
  if (!below) return 0;
  MKT_ASSIGN_OR_RETURN(int64_t deleted, store_.PruneChanges(*below));
  if (deleted > 0) spdlog::info("pruned {} change rows of transactions below {}", deleted, *below);
  return deleted;
}

absl::StatusOr<TagSchema> SegmentService::RefreshTag(const std::string& name) {
  MKT_ASSIGN_OR_RETURN(pb::Tag tag, store_.GetTag(name));
  index_.DefineTag(SchemaOf(tag));
  return SchemaOf(tag);
}

absl::StatusOr<TagSchema> SegmentService::TagFor(const std::string& name) {
  if (std::optional<TagSchema> s = index_.Schema(name)) return *s;
  // Created by another replica since start-up.
  absl::StatusOr<pb::Tag> tag = store_.GetTag(name);
  if (!tag.ok()) return tag.status();
  index_.DefineTag(SchemaOf(*tag));
  return SchemaOf(*tag);
}

// ---- Tags --------------------------------------------------------------------------------------

absl::StatusOr<pb::Tag> SegmentService::CreateTag(const tenancy::Actor& actor,
                                                  const pb::CreateTagRequest& req) {
  MKT_RETURN_IF_ERROR(RequireWriter(actor));
  pb::Tag tag = req.tag();
  if (tag.org_id().empty()) tag.set_org_id(actor.org_id);
  MKT_RETURN_IF_ERROR(CheckOrg(tag.org_id(), "tag.org_id"));
  if (!tenancy::Covers(actor.org_id, tag.org_id())) {
    return Denied("an operator creates tags only for orgs they act for");
  }
  MKT_RETURN_IF_ERROR(ValidateTagName(tag.name(), "tag.name"));
  if (tag.type() < pb::TAG_TYPE_BOOL || tag.type() > pb::TAG_TYPE_DATE) {
    return InvalidArgument("tag.type", "a tag has a type");
  }
  if (PrintableUtf8Length(tag.description()) < 0 || tag.description().size() > 1000) {
    return InvalidArgument("tag.description", "up to 1000 bytes of printable text");
  }
  if (PrintableUtf8Length(tag.source()) < 0 || tag.source().size() > 64) {
    return InvalidArgument("tag.source", "up to 64 bytes of printable text");
  }
  if (tag.type() == pb::TAG_TYPE_ENUM) {
    if (tag.allowed_values().empty()) {
      return InvalidArgument("tag.allowed_values", "an enum tag lists its values");
    }
    std::set<std::string> seen;
    for (const auto& v : tag.allowed_values()) {
      const int n = PrintableUtf8Length(v);
      if (n < 1 || n > 64 || v.find('|') != std::string::npos || !seen.insert(v).second) {
        return InvalidArgument("tag.allowed_values",
                               "values are distinct, 1..64 printable characters, without '|'");
      }
    }
  } else if (!tag.allowed_values().empty() || tag.multi_valued()) {
    return InvalidArgument("tag.allowed_values", "only enum tags have allowed values");
  }
  MKT_ASSIGN_OR_RETURN(pb::Tag stored, store_.InsertTag(tag));
  index_.DefineTag(SchemaOf(stored));
  return stored;
}

absl::StatusOr<pb::Tag> SegmentService::GetTag(const tenancy::Actor& actor,
                                               const pb::GetTagRequest& req) {
  absl::StatusOr<pb::Tag> tag = store_.GetTag(req.name());
  if (!tag.ok() || !Readable(actor.org_id, tag->org_id())) {
    return NotFound(absl::StrCat("no tag named ", req.name()));
  }
  return tag;
}

absl::StatusOr<pb::ListTagsResponse> SegmentService::ListTags(const tenancy::Actor& actor,
                                                              const pb::ListTagsRequest& req) {
  MKT_ASSIGN_OR_RETURN(std::vector<pb::Tag> tags, store_.ListTags());  // the dictionary is small
  const int size = PageSize(req.page().page_size(), kDefaultPage, kMaxPage);
  pb::ListTagsResponse out;
  for (const auto& tag : tags) {
    if (tag.name() <= req.page().page_token() || !Readable(actor.org_id, tag.org_id())) continue;
    if (out.tags_size() == size) {
      out.mutable_page()->set_next_page_token(out.tags(size - 1).name());
      break;
    }
    *out.add_tags() = tag;
  }
  return out;
}

absl::StatusOr<pb::Tag> SegmentService::UpdateTag(const tenancy::Actor& actor,
                                                  const pb::UpdateTagRequest& req) {
  MKT_RETURN_IF_ERROR(RequireWriter(actor));
  MKT_ASSIGN_OR_RETURN(
      pb::Tag stored, store_.UpdateTag(req.name(), [&](pb::Tag& tag) -> absl::Status {
        if (!Readable(actor.org_id, tag.org_id())) {
          return NotFound(absl::StrCat("no tag named ", req.name()));
        }
        if (!tenancy::Covers(actor.org_id, tag.org_id())) {
          return Denied("only the owning org changes a tag");
        }
        if (req.expected_version() != 0 && req.expected_version() != tag.version()) {
          return Error(absl::StatusCode::kAborted, CONFLICT, "the tag changed meanwhile",
                       "expected_version");
        }
        if (PrintableUtf8Length(req.description()) < 0 || PrintableUtf8Length(req.source()) < 0) {
          return InvalidArgument("description", "printable text");
        }
        if (!req.description().empty()) tag.set_description(req.description());
        if (!req.source().empty()) tag.set_source(req.source());
        if (!req.add_allowed_values().empty() && tag.type() != pb::TAG_TYPE_ENUM) {
          return InvalidArgument("add_allowed_values", "only enum tags have allowed values");
        }
        for (const auto& v : req.add_allowed_values()) {
          const int n = PrintableUtf8Length(v);
          if (n < 1 || n > 64 || v.find('|') != std::string::npos) {
            return InvalidArgument("add_allowed_values", "1..64 printable characters without '|'");
          }
          if (std::find(tag.allowed_values().begin(), tag.allowed_values().end(), v) ==
              tag.allowed_values().end()) {
            tag.add_allowed_values(v);
          }
        }
        return absl::OkStatus();
      }));
  index_.DefineTag(SchemaOf(stored));
  return stored;
}

// ---- CSV import --------------------------------------------------------------------------------

absl::StatusOr<pb::ImportTagValuesResponse> SegmentService::ImportTagValues(
    const tenancy::Actor& actor, const pb::ImportTagValuesRequest& req) {
  MKT_RETURN_IF_ERROR(RequireWriter(actor));
  const std::string org = req.org_id().empty() ? actor.org_id : req.org_id();
  MKT_RETURN_IF_ERROR(CheckOrg(org, "org_id"));
  if (!tenancy::Covers(actor.org_id, org)) {
    return Denied("an operator imports only for orgs they act for");
  }
  std::vector<CsvRecord> records = ParseCsv(req.csv());
  if (records.empty()) return InvalidArgument("csv", "the file is empty");
  if (static_cast<int64_t>(records.size()) - 1 > options_.max_import_rows) {
    return InvalidArgument("csv", absl::StrCat("at most ", options_.max_import_rows,
                                               " rows per import; split the file"));
  }
  // The header decides the columns; a bad header fails the whole file, since no row could be read.
  const CsvRecord& header = records[0];
  if (!header.error.empty()) return InvalidArgument("csv", absl::StrCat("line 1: ", header.error));
  if (header.fields.empty() || header.fields[0] != "customer_id") {
    return InvalidArgument("csv", "line 1: the first column is customer_id");
  }
  std::vector<TagSchema> columns;
  std::set<std::string> seen;
  for (size_t c = 1; c < header.fields.size(); ++c) {
    const std::string& name = header.fields[c];
    absl::StatusOr<TagSchema> schema = TagFor(name);
    if (!schema.ok() || !Readable(actor.org_id, schema->org_id)) {
      return InvalidArgument("csv", absl::StrCat("line 1: no tag named \"", name, "\""));
    }
    if (!tenancy::Covers(actor.org_id, schema->org_id)) {
      return Error(absl::StatusCode::kPermissionDenied, PERMISSION_DENIED,
                   absl::StrCat("line 1: tag ", name, " belongs to ", schema->org_id,
                                "; only its owner writes it"),
                   "csv");
    }
    if (!seen.insert(name).second) {
      return InvalidArgument("csv", absl::StrCat("line 1: column ", name, " appears twice"));
    }
    columns.push_back(*std::move(schema));
  }

  pb::ImportTagValuesResponse out;
  std::vector<ImportRow> rows;
  std::vector<int64_t> lines;  // of rows[i]
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& rec = records[r];
    out.set_rows_read(out.rows_read() + 1);
    auto reject = [&](const std::string& message) {
      pb::RowError* e = out.add_errors();
      e->set_line(rec.line);
      e->set_message(message);
      out.set_rows_rejected(out.rows_rejected() + 1);
    };
    if (!rec.error.empty()) {
      reject(rec.error);
      continue;
    }
    if (rec.fields.size() != header.fields.size()) {
      reject(absl::StrCat("expected ", header.fields.size(), " fields, found ", rec.fields.size()));
      continue;
    }
    if (std::string problem = CustomerIdProblem(rec.fields[0]); !problem.empty()) {
      reject(absl::StrCat("customer_id: ", problem));
      continue;
    }
    ImportRow row{.customer_id = rec.fields[0]};
    std::vector<std::string> problems;
    for (size_t c = 0; c < columns.size(); ++c) {
      const std::string& cell = rec.fields[c + 1];
      if (cell.empty()) continue;
      if (cell == "-") {
        row.cells.emplace_back(columns[c].name, std::nullopt);
        continue;
      }
      absl::StatusOr<Value> v = ParseCell(columns[c], cell);
      if (!v.ok()) {
        problems.push_back(absl::StrCat(columns[c].name, ": ", v.status().message()));
        continue;
      }
      row.cells.emplace_back(columns[c].name, EncodeValue(columns[c], *v));
    }
    if (!problems.empty()) {  // the row writes none of its values
      std::string message;
      for (const auto& p : problems) absl::StrAppend(&message, message.empty() ? "" : "; ", p);
      reject(message);
      continue;
    }
    out.set_values_written(out.values_written() + static_cast<int64_t>(row.cells.size()));
    rows.push_back(std::move(row));
    lines.push_back(rec.line);
    if (out.rows_read() % 10000 == 0) {
      spdlog::info("import for {}: {} rows read, {} good, {} rejected", org, out.rows_read(),
                   rows.size(), out.rows_rejected());
    }
  }
  // All good rows in one transaction: a failure leaves nothing of this import behind.
  int64_t foreign = 0;
  if (!rows.empty()) {
    MKT_ASSIGN_OR_RETURN(ImportResult result, store_.ImportRows(org, rows));
    ApplyCommitted(result.states);
    // Customers of orgs the importing org does not cover were left alone, in the import's own
    // transaction; the message does not say whose they are.
    for (const auto& [i, home] : result.foreign) {
      pb::RowError* e = out.add_errors();
      e->set_line(lines[i]);
      e->set_message(absl::StrCat("customer ", rows[i].customer_id, " is served by ",
                                  tenancy::MemberBankOf(home) == tenancy::MemberBankOf(org)
                                      ? "another office of the bank"
                                      : "another bank"));
      out.set_rows_rejected(out.rows_rejected() + 1);
      out.set_values_written(out.values_written() - static_cast<int64_t>(rows[i].cells.size()));
      ++foreign;
    }
    std::stable_sort(
        out.mutable_errors()->begin(), out.mutable_errors()->end(),
        [](const pb::RowError& a, const pb::RowError& b) { return a.line() < b.line(); });
  }
  out.set_rows_imported(static_cast<int64_t>(rows.size()) - foreign);
  spdlog::info("import for {} done: {} rows read, {} imported, {} rejected, {} values written", org,
               out.rows_read(), out.rows_imported(), out.rows_rejected(), out.values_written());
  return out;
}

// ---- Rules and definitions ---------------------------------------------------------------------

absl::Status SegmentService::ValidateRule(const pb::Condition& rule, const std::string& owner_org,
                                          int depth, int* leaves, const std::string& field) {
  if (depth > kMaxRuleDepth) return InvalidArgument(field, "the rule nests too deeply");
  auto tag_of = [&](const std::string& name) -> absl::StatusOr<TagSchema> {
    absl::StatusOr<TagSchema> schema = TagFor(name);
    if (!schema.ok() || !Readable(owner_org, schema->org_id)) {
      return InvalidArgument(field, absl::StrCat("no tag named \"", name, "\""));
    }
    return schema;
  };
  auto leaf = [&]() -> absl::Status {
    if (++*leaves > kMaxRuleLeaves)
      return InvalidArgument(field, "the rule has too many conditions");
    return absl::OkStatus();
  };
  auto value = [&](const TagSchema& s, const pb::TagValue& v) -> absl::StatusOr<Value> {
    absl::StatusOr<Value> parsed = FromProto(s, v, field);
    if (!parsed.ok()) return parsed.status();
    if (s.multi_valued && parsed->labels.size() != 1) {
      return InvalidArgument(field, "compare a multi-valued tag with one value at a time");
    }
    return parsed;
  };
  switch (rule.kind_case()) {
    case pb::Condition::kAll:
    case pb::Condition::kAny: {
      const auto& children = rule.has_all() ? rule.all() : rule.any();
      if (children.conditions().empty())
        return InvalidArgument(field, "an and/or needs conditions");
      for (int i = 0; i < children.conditions_size(); ++i) {
        MKT_RETURN_IF_ERROR(ValidateRule(
            children.conditions(i), owner_org, depth + 1, leaves,
            absl::StrCat(field, rule.has_all() ? ".all" : ".any", ".conditions[", i, "]")));
      }
      return absl::OkStatus();
    }
    case pb::Condition::kNot:
      return ValidateRule(rule.not_(), owner_org, depth + 1, leaves, field + ".not");
    case pb::Condition::kCompare: {
      MKT_RETURN_IF_ERROR(leaf());
      MKT_ASSIGN_OR_RETURN(TagSchema s, tag_of(rule.compare().tag()));
      const pb::Operator op = rule.compare().op();
      if (op < pb::EQ || op > pb::GE) return InvalidArgument(field, "an operator is required");
      if (!s.numeric() && op != pb::EQ && op != pb::NE) {
        return InvalidArgument(field, absl::StrCat("tag ", s.name, " takes only EQ and NE"));
      }
      return value(s, rule.compare().value()).status();
    }
    case pb::Condition::kRange: {
      MKT_RETURN_IF_ERROR(leaf());
      MKT_ASSIGN_OR_RETURN(TagSchema s, tag_of(rule.range().tag()));
      if (!s.numeric()) return InvalidArgument(field, "ranges apply to int, fen and date tags");
      MKT_ASSIGN_OR_RETURN(Value lo, value(s, rule.range().low()));
      MKT_ASSIGN_OR_RETURN(Value hi, value(s, rule.range().high()));
      if (lo.number > hi.number) return InvalidArgument(field, "the range's low is above its high");
      return absl::OkStatus();
    }
    case pb::Condition::kIn: {
      MKT_RETURN_IF_ERROR(leaf());
      MKT_ASSIGN_OR_RETURN(TagSchema s, tag_of(rule.in().tag()));
      if (rule.in().values().empty() || rule.in().values_size() > 1000) {
        return InvalidArgument(field, "an in-list has 1..1000 values");
      }
      for (const auto& v : rule.in().values()) MKT_RETURN_IF_ERROR(value(s, v).status());
      return absl::OkStatus();
    }
    case pb::Condition::kRelativeDate: {
      MKT_RETURN_IF_ERROR(leaf());
      MKT_ASSIGN_OR_RETURN(TagSchema s, tag_of(rule.relative_date().tag()));
      if (s.type != pb::TAG_TYPE_DATE)
        return InvalidArgument(field, "relative dates need a date tag");
      if (rule.relative_date().kind() == pb::RelativeDate::KIND_UNSPECIFIED ||
          rule.relative_date().days() < 0 || rule.relative_date().days() > 36600) {
        return InvalidArgument(field, "a relative date has a kind and 0..36600 days");
      }
      return absl::OkStatus();
    }
    case pb::Condition::kExists: {
      MKT_RETURN_IF_ERROR(leaf());
      return tag_of(rule.exists().tag()).status();
    }
    default:
      return InvalidArgument(field, "empty condition");
  }
}

absl::Status SegmentService::ReachesSegment(const pb::SegmentRef& ref, const std::string& target,
                                            int depth) {
  if (ref.segment_id() == target) {
    return InvalidArgument("definition.composed", "a segment cannot contain itself");
  }
  // Deeper is refused by CheckNesting, which names the operand and the depth.
  if (depth > kMaxComposeDepth) return absl::OkStatus();
  MKT_ASSIGN_OR_RETURN(SegmentPtr s, Resolve(ref));
  if (s->kind != pb::SEGMENT_KIND_COMPOSED) return absl::OkStatus();
  for (const auto& op : s->definition.composed().operands()) {
    MKT_RETURN_IF_ERROR(ReachesSegment(op, target, depth + 1));
  }
  return absl::OkStatus();
}

absl::Status SegmentService::ValidateDefinition(const pb::SegmentDefinition& definition,
                                                const std::string& owner_org,
                                                const std::string& self_id, bool create_customers,
                                                pb::SegmentKind* kind,
                                                std::shared_ptr<const Roaring>* list_members) {
  switch (definition.kind_case()) {
    case pb::SegmentDefinition::kRule: {
      *kind = pb::SEGMENT_KIND_RULE;
      int leaves = 0;
      return ValidateRule(definition.rule(), owner_org, 0, &leaves, "definition.rule");
    }
    case pb::SegmentDefinition::kList: {
      *kind = pb::SEGMENT_KIND_LIST;
      const auto& ids = definition.list().customer_ids();
      if (ids.empty() || ids.size() > kMaxListSize) {
        return InvalidArgument("definition.list", "a list has 1..1,000,000 customer ids");
      }
      for (int i = 0; i < ids.size(); ++i) {
        if (std::string problem = CustomerIdProblem(ids.Get(i)); !problem.empty()) {
          return InvalidArgument(absl::StrCat("definition.list.customer_ids[", i, "]"),
                                 absl::StrCat("entry ", i + 1, " of the list: ", problem));
        }
      }
      std::vector<std::string> unique(ids.begin(), ids.end());
      std::sort(unique.begin(), unique.end());
      unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
      auto members = std::make_shared<Roaring>();
      // A customer of an org the owner does not cover (another bank's) is not a member: a list
      // must not bring a customer into a scope it is not in.
      int64_t foreign = 0;
      if (create_customers) {
        MKT_ASSIGN_OR_RETURN(std::vector<PgSegmentStore::EnsuredCustomer> stored,
                             store_.EnsureCustomers(unique, owner_org));
        std::vector<uint32_t> unseen;
        for (size_t i = 0; i < stored.size(); ++i) {
          if (!index_.Find(unique[i])) unseen.push_back(stored[i].dense_id);
          // The home org the database holds (created here, by a business event, by a profile or
          // by another replica), not the list owner's.
          if (!tenancy::Covers(owner_org, stored[i].org_id)) {
            ++foreign;
            continue;
          }
          members->add(stored[i].dense_id);
        }
        // Customers this index does not know yet (created now, by a business event or on another
        // replica) are answered for at once: their committed states, applied in revision order
        // with every other writer's. Should that fail, catching up brings them.
        std::sort(unseen.begin(), unseen.end());
        if (absl::Status s = ApplyStatesOf(unseen); !s.ok()) {
          spdlog::warn("list for {}: {} new customers not applied yet: {}", owner_org,
                       unseen.size(), s);
        }
      } else {
        for (const auto& id : unique) {
          std::optional<uint32_t> d = index_.Find(id);
          if (!d) continue;
          if (!index_.InScope(owner_org, *d)) {
            ++foreign;
            continue;
          }
          members->add(*d);
        }
      }
      if (foreign > 0) {
        // The answer (a Segment) has no field for them: logged, without the ids.
        spdlog::warn(
            "list for {}: {} of {} customers belong to orgs {} does not cover and are "
            "not members",
            owner_org, foreign, unique.size(), owner_org);
      }
      members->runOptimize();
      *list_members = std::move(members);
      return absl::OkStatus();
    }
    case pb::SegmentDefinition::kComposed: {
      *kind = pb::SEGMENT_KIND_COMPOSED;
      const auto& c = definition.composed();
      if (c.op() < pb::Composition::UNION || c.op() > pb::Composition::EXCLUSION) {
        return InvalidArgument("definition.composed.op", "union, intersection or exclusion");
      }
      if (c.operands_size() < (c.op() == pb::Composition::UNION ? 1 : 2) ||
          c.operands_size() > 50) {
        return InvalidArgument("definition.composed.operands", "2..50 segments (union: 1..50)");
      }
      for (int i = 0; i < c.operands_size(); ++i) {
        const std::string field = absl::StrCat("definition.composed.operands[", i, "]");
        MKT_RETURN_IF_ERROR(ResolveFor(owner_org, c.operands(i), field).status());
        if (!self_id.empty()) MKT_RETURN_IF_ERROR(ReachesSegment(c.operands(i), self_id, 0));
      }
      return absl::OkStatus();
    }
    default:
      return InvalidArgument("definition", "a segment is a rule, a list or a composition");
  }
}

// ---- Segments ----------------------------------------------------------------------------------

pb::Segment SegmentService::ToProto(const SegmentVersion& s) const {
  pb::Segment out;
  out.set_id(s.id);
  out.set_org_id(s.org_id);
  out.set_name(s.name);
  out.set_description(s.description);
  out.set_kind(s.kind);
  out.set_version(s.version);
  out.set_latest_version(s.latest_version);
  *out.mutable_definition() = s.definition;
  out.set_list_size(s.list_size);
  out.set_created_by(s.created_by);
  *out.mutable_created_at() =
      google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(s.created_at));
  out.set_archived(s.archived);
  return out;
}

void SegmentService::ForgetLatest(const std::string& segment_id) {
  absl::MutexLock lock(&cache_mu_);
  latest_.erase(segment_id);
}

absl::StatusOr<pb::Segment> SegmentService::CreateSegment(const tenancy::Actor& actor,
                                                          const pb::CreateSegmentRequest& req) {
  MKT_RETURN_IF_ERROR(RequireWriter(actor));
  SegmentVersion s;
  s.org_id = req.org_id().empty() ? actor.org_id : req.org_id();
  MKT_RETURN_IF_ERROR(CheckOrg(s.org_id, "org_id"));
  if (!tenancy::Covers(actor.org_id, s.org_id)) {
    return Denied("an operator creates segments only for orgs they act for");
  }
  const int name_length = PrintableUtf8Length(req.name());
  if (name_length < 1 || name_length > 100) {
    return InvalidArgument("name", "1..100 printable characters");
  }
  if (PrintableUtf8Length(req.description()) < 0) {
    return InvalidArgument("description", "printable text");
  }
  std::shared_ptr<const Roaring> list;
  MKT_RETURN_IF_ERROR(ValidateDefinition(req.definition(), s.org_id, "", true, &s.kind, &list));
  s.id = "seg-" + RandomHex(8);
  s.name = req.name();
  s.description = req.description();
  s.definition = req.definition();
  MKT_RETURN_IF_ERROR(PinOperands(&s.definition));
  if (list) {
    s.definition.mutable_list()->clear_customer_ids();
    s.list_members = list;
    s.list_size = static_cast<int64_t>(list->cardinality());
  }
  s.created_by = actor.operator_id;
  MKT_ASSIGN_OR_RETURN(SegmentVersion stored, store_.CreateSegment(s, NestingCheck(actor, s)));
  return ToProto(stored);
}

absl::StatusOr<pb::Segment> SegmentService::UpdateSegment(const tenancy::Actor& actor,
                                                          const pb::UpdateSegmentRequest& req) {
  MKT_RETURN_IF_ERROR(RequireWriter(actor));
  pb::SegmentRef ref;
  ref.set_segment_id(req.segment_id());
  MKT_ASSIGN_OR_RETURN(SegmentPtr current, ResolveFor(actor.org_id, ref, "segment_id"));
  if (!tenancy::Covers(actor.org_id, current->org_id)) {
    return Denied("only the owning org changes a segment");
  }
  SegmentVersion s = *current;
  if (!req.name().empty()) {
    const int n = PrintableUtf8Length(req.name());
    if (n < 1 || n > 100) return InvalidArgument("name", "1..100 printable characters");
    s.name = req.name();
  }
  if (!req.description().empty()) {
    if (PrintableUtf8Length(req.description()) < 0) {
      return InvalidArgument("description", "printable text");
    }
    s.description = req.description();
  }
  CompositionCheck check;
  if (req.has_definition()) {
    std::shared_ptr<const Roaring> list;
    MKT_RETURN_IF_ERROR(ValidateDefinition(req.definition(), s.org_id, s.id, true, &s.kind, &list));
    s.definition = req.definition();
    MKT_RETURN_IF_ERROR(PinOperands(&s.definition));
    s.list_members = nullptr;
    s.list_size = 0;
    if (list) {
      s.definition.mutable_list()->clear_customer_ids();
      s.list_members = list;
      s.list_size = static_cast<int64_t>(list->cardinality());
    }
    check = NestingCheck(actor, s);
  }
  s.created_by = actor.operator_id;
  absl::StatusOr<SegmentVersion> stored =
      store_.AddSegmentVersion(s, req.expected_version(), check);
  ForgetLatest(req.segment_id());
  if (!stored.ok()) return stored.status();
  return ToProto(*stored);
}

absl::StatusOr<pb::Segment> SegmentService::GetSegment(const tenancy::Actor& actor,
                                                       const pb::GetSegmentRequest& req) {
  // Read straight from the store: an operator expects to see the latest write.
  absl::StatusOr<SegmentVersion> s =
      store_.GetSegment(req.segment().segment_id(), req.segment().version());
  if (!s.ok() || !Readable(actor.org_id, s->org_id)) {
    return NotFound(absl::StrCat("no segment ", req.segment().segment_id()));
  }
  return ToProto(*s);
}

absl::StatusOr<pb::ListSegmentsResponse> SegmentService::ListSegments(
    const tenancy::Actor& actor, const pb::ListSegmentsRequest& req) {
  const int size = PageSize(req.page().page_size(), kDefaultPage, kMaxPage);
  MKT_ASSIGN_OR_RETURN(std::vector<SegmentVersion> list,
                       store_.ListSegments(actor.org_id, req.page().page_token(), size + 1));
  pb::ListSegmentsResponse out;
  for (int i = 0; i < static_cast<int>(list.size()) && i < size; ++i) {
    *out.add_segments() = ToProto(list[i]);
  }
  if (static_cast<int>(list.size()) > size) {
    out.mutable_page()->set_next_page_token(list[size - 1].id);
  }
  return out;
}

absl::StatusOr<pb::Segment> SegmentService::ArchiveSegment(const tenancy::Actor& actor,
                                                           const pb::ArchiveSegmentRequest& req) {
  MKT_RETURN_IF_ERROR(RequireWriter(actor));
  absl::StatusOr<SegmentVersion> s = store_.GetSegment(req.segment_id(), 0);
  if (!s.ok() || !Readable(actor.org_id, s->org_id)) {
    return NotFound(absl::StrCat("no segment ", req.segment_id()));
  }
  if (!tenancy::Covers(actor.org_id, s->org_id)) {
    return Denied("only the owning org archives a segment");
  }
  MKT_ASSIGN_OR_RETURN(SegmentVersion archived, store_.ArchiveSegment(req.segment_id()));
  ForgetLatest(req.segment_id());
  return ToProto(archived);
}

absl::StatusOr<pb::PreviewResponse> SegmentService::Preview(const tenancy::Actor& actor,
                                                            const pb::PreviewRequest& req) {
  const std::string org = req.org_id().empty() ? actor.org_id : req.org_id();
  MKT_RETURN_IF_ERROR(CheckOrg(org, "org_id"));
  if (!tenancy::Covers(actor.org_id, org)) return Denied("preview only for orgs you act for");
  SegmentVersion s;
  s.org_id = org;
  std::shared_ptr<const Roaring> list;
  MKT_RETURN_IF_ERROR(ValidateDefinition(req.definition(), org, "", false, &s.kind, &list));
  if (req.definition().has_composed()) {
    MKT_ASSIGN_OR_RETURN(StoredCompositions stored, store_.LoadCompositions());
    MKT_RETURN_IF_ERROR(CheckNesting(stored, "", req.definition().composed(), actor.org_id));
  }
  s.definition = req.definition();
  s.list_members = list;
  MKT_ASSIGN_OR_RETURN(Roaring members, Members(s, DayNumber(clock_.Now()), 0, s.id));
  members &= index_.Scope(org);
  pb::PreviewResponse out;
  out.set_count(static_cast<int64_t>(members.cardinality()));
  for (auto& id : index_.CustomerIds(SampleOf(members, std::min(req.sample_size(), 100), 1))) {
    out.add_sample_customer_ids(std::move(id));
  }
  return out;
}

// ---- Resolution and evaluation -----------------------------------------------------------------

absl::Status SegmentService::PinOperands(pb::SegmentDefinition* definition) {
  if (!definition->has_composed()) return absl::OkStatus();
  auto* operands = definition->mutable_composed()->mutable_operands();
  for (int i = 0; i < operands->size(); ++i) {
    pb::SegmentRef& ref = operands->at(i);
    if (ref.version() != 0) continue;
    // From the database, not the cache of latest versions (up to a second stale).
    absl::StatusOr<SegmentVersion> latest = store_.GetSegment(ref.segment_id(), 0);
    if (absl::IsNotFound(latest.status())) {
      return Error(absl::StatusCode::kNotFound, marketing::common::v1::NOT_FOUND,
                   absl::StrCat("no segment ", ref.segment_id()),
                   absl::StrCat("definition.composed.operands[", i, "]"));
    }
    if (!latest.ok()) return latest.status();
    ref.set_version(latest->version);
  }
  return absl::OkStatus();
}

absl::StatusOr<SegmentService::SegmentPtr> SegmentService::Resolve(const pb::SegmentRef& ref) {
  const absl::Time now = clock_.Now();
  {
    absl::ReaderMutexLock lock(&cache_mu_);
    if (ref.version() > 0) {
      auto it = pinned_.find(ref.segment_id());
      if (it != pinned_.end()) {
        auto v = it->second.find(ref.version());
        if (v != it->second.end()) return v->second;
      }
    } else {
      auto it = latest_.find(ref.segment_id());
      if (it != latest_.end() && now - it->second.second < options_.latest_version_ttl) {
        return it->second.first;
      }
    }
  }
  MKT_ASSIGN_OR_RETURN(SegmentVersion loaded, store_.GetSegment(ref.segment_id(), ref.version()));
  auto s = std::make_shared<const SegmentVersion>(std::move(loaded));
  absl::MutexLock lock(&cache_mu_);
  pinned_[s->id][s->version] = s;  // versions never change once written
  if (ref.version() == 0) latest_[s->id] = {s, now};
  return s;
}

bool SegmentService::Cached(const google::protobuf::RepeatedPtrField<pb::SegmentRef>& refs) {
  const absl::Time now = clock_.Now();
  absl::ReaderMutexLock lock(&cache_mu_);
  for (const pb::SegmentRef& ref : refs) {
    if (ref.version() > 0) {
      auto it = pinned_.find(ref.segment_id());
      if (it == pinned_.end() || !it->second.contains(ref.version())) return false;
    } else {
      auto it = latest_.find(ref.segment_id());
      if (it == latest_.end() || now - it->second.second >= options_.latest_version_ttl) {
        return false;
      }
    }
  }
  return true;
}

absl::StatusOr<SegmentService::SegmentPtr> SegmentService::ResolveFor(const std::string& org,
                                                                      const pb::SegmentRef& ref,
                                                                      const std::string& field) {
  if (ref.segment_id().empty() || ref.version() < 0) {
    return InvalidArgument(field, "a segment reference has an id and a version >= 0");
  }
  absl::StatusOr<SegmentPtr> s = Resolve(ref);
  if (absl::IsNotFound(s.status()) || (s.ok() && !Readable(org, (*s)->org_id))) {
    return Error(absl::StatusCode::kNotFound, marketing::common::v1::NOT_FOUND,
                 absl::StrCat("no segment ", ref.segment_id(),
                              ref.version() ? absl::StrCat(" version ", ref.version()) : ""),
                 field);
  }
  return s;
}

absl::StatusOr<Roaring> SegmentService::Members(const SegmentVersion& segment, int32_t today,
                                                int depth, std::string_view root) {
  if (depth > kMaxComposeDepth) return TooDeep(root);
  switch (segment.kind) {
    case pb::SEGMENT_KIND_RULE: {
      Roaring members = index_.Evaluate(segment.definition.rule(), today);
      // A federation segment sees everyone: no scope to intersect with.
      if (segment.org_id != tenancy::kFederation) members &= index_.Scope(segment.org_id);
      return members;
    }
    case pb::SEGMENT_KIND_LIST:
      return segment.list_members ? *segment.list_members : Roaring();
    case pb::SEGMENT_KIND_COMPOSED: {
      const auto& c = segment.definition.composed();
      Roaring result;
      for (int i = 0; i < c.operands_size(); ++i) {
        MKT_ASSIGN_OR_RETURN(SegmentPtr operand, Resolve(c.operands(i)));
        MKT_ASSIGN_OR_RETURN(Roaring m, Members(*operand, today, depth + 1, root));
        if (i == 0) {
          result = std::move(m);
        } else if (c.op() == pb::Composition::UNION) {
          result |= m;
        } else if (c.op() == pb::Composition::INTERSECTION) {
          result &= m;
        } else {
          result -= m;
        }
      }
      return result;
    }
    default:
      return Internal("segment of unknown kind");
  }
}

absl::StatusOr<bool> SegmentService::Contains(const SegmentVersion& segment, uint32_t dense_id,
                                              int32_t today, int depth, std::string_view root) {
  if (depth > kMaxComposeDepth) return TooDeep(root);
  switch (segment.kind) {
    case pb::SEGMENT_KIND_RULE:
      return index_.InScope(segment.org_id, dense_id) &&
             index_.Matches(segment.definition.rule(), dense_id, today);
    case pb::SEGMENT_KIND_LIST:
      return segment.list_members != nullptr && segment.list_members->contains(dense_id);
    case pb::SEGMENT_KIND_COMPOSED: {
      const auto& c = segment.definition.composed();
      for (int i = 0; i < c.operands_size(); ++i) {
        MKT_ASSIGN_OR_RETURN(SegmentPtr operand, Resolve(c.operands(i)));
        MKT_ASSIGN_OR_RETURN(bool in, Contains(*operand, dense_id, today, depth + 1, root));
        switch (c.op()) {
          case pb::Composition::UNION:
            if (in) return true;
            break;
          case pb::Composition::INTERSECTION:
            if (!in) return false;
            break;
          default:  // exclusion: in the first, in none of the others
            if (i == 0 && !in) return false;
            if (i > 0 && in) return false;
        }
      }
      return c.op() != pb::Composition::UNION;
    }
    default:
      return Internal("segment of unknown kind");
  }
}

absl::StatusOr<Roaring> SegmentService::MembersFor(const std::string& org,
                                                   const pb::SegmentRef& ref,
                                                   const std::string& field, SegmentPtr* resolved) {
  MKT_RETURN_IF_ERROR(CheckOrg(org, "org_id"));
  MKT_ASSIGN_OR_RETURN(SegmentPtr s, ResolveFor(org, ref, field));
  MKT_ASSIGN_OR_RETURN(Roaring members, Members(*s, DayNumber(clock_.Now()), 0, s->id));
  if (org != tenancy::kFederation) members &= index_.Scope(org);
  if (resolved != nullptr) *resolved = s;
  return members;
}

// ---- Membership --------------------------------------------------------------------------------

absl::Status SegmentService::ResolveAll(
    const std::string& org, const google::protobuf::RepeatedPtrField<pb::SegmentRef>& refs,
    std::vector<SegmentPtr>* out) {
  if (refs.empty() || refs.size() > 100) {
    return InvalidArgument("segments", "1..100 segments per call");
  }
  out->reserve(refs.size());
  for (int i = 0; i < refs.size(); ++i) {
    const pb::SegmentRef& ref = refs.Get(i);
    if (!ref.segment_id().empty() && ref.version() >= 0) {
      // The common case, without building the field name of an error that is not there.
      absl::StatusOr<SegmentPtr> s = Resolve(ref);
      if (s.ok() && Readable(org, (*s)->org_id)) {
        out->push_back(*std::move(s));
        continue;
      }
    }
    MKT_ASSIGN_OR_RETURN(SegmentPtr s, ResolveFor(org, ref, absl::StrCat("segments[", i, "]")));
    out->push_back(std::move(s));
  }
  return absl::OkStatus();
}

absl::Status SegmentService::MemberOf(const std::string& org, const std::string& customer_id,
                                      const std::vector<SegmentPtr>& segments, int32_t today,
                                      google::protobuf::RepeatedField<bool>* member) {
  std::optional<uint32_t> dense = index_.Find(customer_id);
  const bool visible = dense && index_.InScope(org, *dense);
  member->Reserve(static_cast<int>(segments.size()));
  for (const SegmentPtr& s : segments) {
    bool in = false;
    if (visible) {
      MKT_ASSIGN_OR_RETURN(in, Contains(*s, *dense, today, 0, s->id));
    }
    member->Add(in);
  }
  return absl::OkStatus();
}

absl::StatusOr<pb::IsMemberResponse> SegmentService::IsMember(const pb::IsMemberRequest& req) {
  MKT_RETURN_IF_ERROR(CheckOrg(req.org_id(), "org_id"));
  std::vector<SegmentPtr> segments;
  MKT_RETURN_IF_ERROR(ResolveAll(req.org_id(), req.segments(), &segments));
  pb::IsMemberResponse out;
  MKT_RETURN_IF_ERROR(MemberOf(req.org_id(), req.customer_id(), segments, DayNumber(clock_.Now()),
                               out.mutable_member()));
  return out;
}

absl::StatusOr<pb::BatchIsMemberResponse> SegmentService::BatchIsMember(
    const pb::BatchIsMemberRequest& req) {
  pb::BatchIsMemberResponse out;
  MKT_RETURN_IF_ERROR(BatchIsMemberInto(req, &out));
  return out;
}

absl::Status SegmentService::BatchIsMemberInto(const pb::BatchIsMemberRequest& req,
                                               pb::BatchIsMemberResponse* out) {
  MKT_RETURN_IF_ERROR(CheckOrg(req.org_id(), "org_id"));
  if (req.customer_ids().empty() || req.customer_ids_size() > 1000) {
    return InvalidArgument("customer_ids", "1..1000 customers per call");
  }
  std::vector<SegmentPtr> segments;
  MKT_RETURN_IF_ERROR(ResolveAll(req.org_id(), req.segments(), &segments));
  const int32_t today = DayNumber(clock_.Now());
  out->mutable_rows()->Reserve(req.customer_ids_size());
  for (const std::string& customer_id : req.customer_ids()) {
    pb::BatchIsMemberResponse::Row* row = out->add_rows();
    row->set_customer_id(customer_id);
    MKT_RETURN_IF_ERROR(
        MemberOf(req.org_id(), customer_id, segments, today, row->mutable_member()));
  }
  return absl::OkStatus();
}

absl::Status SegmentService::BatchGetTagValuesInto(const pb::BatchGetTagValuesRequest& req,
                                                   pb::BatchGetTagValuesResponse* out) const {
  MKT_RETURN_IF_ERROR(CheckOrg(req.org_id(), "org_id"));
  if (req.customer_ids().empty() || req.customer_ids_size() > 1000) {
    return InvalidArgument("customer_ids", "1..1000 customers per call");
  }
  if (req.tags().empty() || req.tags_size() > 64) {
    return InvalidArgument("tags", "1..64 tags per call");
  }
  for (int i = 0; i < req.customer_ids_size(); ++i) {
    MKT_RETURN_IF_ERROR(
        CheckCustomerId(req.customer_ids(i), absl::StrCat("customer_ids[", i, "]")));
  }
  // The tags this org may read; the others are named back and have no values.
  std::vector<TagSchema> readable;
  for (int i = 0; i < req.tags_size(); ++i) {
    MKT_RETURN_IF_ERROR(ValidateTagName(req.tags(i), absl::StrCat("tags[", i, "]")));
    std::optional<TagSchema> schema = index_.Schema(req.tags(i));
    if (schema && Readable(req.org_id(), schema->org_id)) {
      readable.push_back(*std::move(schema));
    } else {
      out->add_unknown_tags(req.tags(i));
    }
  }
  out->mutable_rows()->Reserve(req.customer_ids_size());
  for (const std::string& customer_id : req.customer_ids()) {
    pb::BatchGetTagValuesResponse::Row* row = out->add_rows();
    row->set_customer_id(customer_id);
    std::optional<uint32_t> dense = index_.Find(customer_id);
    if (!dense || !index_.InScope(req.org_id(), *dense)) continue;
    for (const TagSchema& schema : readable) {
      if (std::optional<Value> value = index_.ValueOf(*dense, schema.name)) {
        *row->add_values() = segments::ToProto(schema, *value);
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<pb::CountResponse> SegmentService::Count(const pb::CountRequest& req) {
  MKT_ASSIGN_OR_RETURN(Roaring members, MembersFor(req.org_id(), req.segment(), "segment"));
  pb::CountResponse out;
  out.set_count(static_cast<int64_t>(members.cardinality()));
  return out;
}

absl::StatusOr<pb::SampleResponse> SegmentService::Sample(const pb::SampleRequest& req) {
  if (req.size() < 0 || req.size() > 1000) return InvalidArgument("size", "0..1000");
  MKT_ASSIGN_OR_RETURN(Roaring members, MembersFor(req.org_id(), req.segment(), "segment"));
  pb::SampleResponse out;
  out.set_count(static_cast<int64_t>(members.cardinality()));
  for (auto& id : index_.CustomerIds(SampleOf(members, req.size(), req.seed()))) {
    out.add_customer_ids(std::move(id));
  }
  return out;
}

absl::StatusOr<pb::OverlapResponse> SegmentService::Overlap(const pb::OverlapRequest& req) {
  MKT_ASSIGN_OR_RETURN(Roaring a, MembersFor(req.org_id(), req.a(), "a"));
  MKT_ASSIGN_OR_RETURN(Roaring b, MembersFor(req.org_id(), req.b(), "b"));
  pb::OverlapResponse out;
  out.set_a_count(static_cast<int64_t>(a.cardinality()));
  out.set_b_count(static_cast<int64_t>(b.cardinality()));
  out.set_both(static_cast<int64_t>(a.and_cardinality(b)));
  out.set_a_only(out.a_count() - out.both());
  out.set_b_only(out.b_count() - out.both());
  return out;
}

absl::StatusOr<pb::Snapshot> SegmentService::Materialize(const pb::MaterializeRequest& req) {
  if (PrintableUtf8Length(req.purpose()) < 0 || req.purpose().size() > 200) {
    return InvalidArgument("purpose", "up to 200 bytes of printable text");
  }
  SegmentPtr segment;
  MKT_ASSIGN_OR_RETURN(Roaring members,
                       MembersFor(req.org_id(), req.segment(), "segment", &segment));
  members.runOptimize();
  pb::Snapshot snapshot;
  snapshot.set_id("snap-" + RandomHex(10));
  snapshot.set_org_id(req.org_id());
  snapshot.mutable_segment()->set_segment_id(segment->id);
  snapshot.mutable_segment()->set_version(segment->version);
  snapshot.set_count(static_cast<int64_t>(members.cardinality()));
  snapshot.set_purpose(req.purpose());
  *snapshot.mutable_created_at() =
      google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_.Now()));
  MKT_RETURN_IF_ERROR(store_.InsertSnapshot(snapshot, Serialize(members)));
  return snapshot;
}

absl::StatusOr<pb::ReadSnapshotResponse> SegmentService::ReadSnapshot(
    const pb::ReadSnapshotRequest& req) {
  MKT_RETURN_IF_ERROR(CheckOrg(req.org_id(), "org_id"));
  const int size = PageSize(req.page().page_size(), 1000, 10000);
  uint64_t offset = 0;
  if (!req.page().page_token().empty() && !absl::SimpleAtoi(req.page().page_token(), &offset)) {
    return InvalidArgument("page.page_token", "not a token of this snapshot");
  }
  std::shared_ptr<const Roaring> members;
  {
    absl::MutexLock lock(&cache_mu_);
    auto it = snapshots_.find(req.snapshot_id());
    if (it != snapshots_.end()) members = it->second;
  }
  // The owner check needs the stored row even when the members are cached.
  absl::StatusOr<std::pair<pb::Snapshot, std::string>> stored =
      store_.GetSnapshot(req.snapshot_id());
  if (!stored.ok() || !tenancy::Covers(req.org_id(), stored->first.org_id())) {
    return NotFound(absl::StrCat("no snapshot ", req.snapshot_id()));
  }
  if (members == nullptr) {
    members = std::make_shared<const Roaring>(
        Roaring::readSafe(stored->second.data(), stored->second.size()));
    absl::MutexLock lock(&cache_mu_);
    if (snapshots_.size() >= 16) snapshots_.erase(snapshots_.begin());
    snapshots_[req.snapshot_id()] = members;
  }
  const uint64_t count = members->cardinality();
  pb::ReadSnapshotResponse out;
  out.set_count(static_cast<int64_t>(count));
  if (offset < count) {
    const size_t n = std::min<uint64_t>(size, count - offset);
    std::vector<uint32_t> page(n);
    members->rangeUint32Array(page.data(), offset, n);
    for (auto& id : index_.CustomerIds(page)) out.add_customer_ids(std::move(id));
    if (offset + n < count) out.mutable_page()->set_next_page_token(std::to_string(offset + n));
  }
  return out;
}

// ---- Consumers ---------------------------------------------------------------------------------

absl::Status SegmentService::HandleProfileMessage(const kafka::IncomingMessage& message) {
  MKT_ASSIGN_OR_RETURN(marketing::common::v1::Envelope envelope, kafka::ParseEnvelope(message));
  MKT_RETURN_IF_ERROR(CheckEventId(envelope.event_id()));
  pb::CustomerProfileChanged profile;
  if (!envelope.payload().UnpackTo(&profile)) {
    return InvalidArgument("payload", "not a marketing.segments.v1.CustomerProfileChanged");
  }
  MKT_RETURN_IF_ERROR(CheckCustomerId(profile.customer_id(), "customer_id"));
  MKT_RETURN_IF_ERROR(CheckOrg(profile.org_id(), "org_id"));
  ProfileChange change{.event_id = envelope.event_id(),
                       .customer_id = profile.customer_id(),
                       .org_id = profile.org_id(),
                       .version = profile.version()};
  auto writable = [&](const std::string& name,
                      const std::string& field) -> absl::StatusOr<TagSchema> {
    absl::StatusOr<TagSchema> schema = TagFor(name);
    if (absl::IsNotFound(schema.status())) {
      return InvalidArgument(field, absl::StrCat("no tag named ", name));
    }
    if (!schema.ok()) return schema.status();
    // A bank's tag describes that bank's customers only.
    if (!tenancy::Covers(schema->org_id, profile.org_id())) {
      // FAILED_PRECONDITION so the consumer dead-letters it rather than retrying forever.
      return Error(absl::StatusCode::kFailedPrecondition, PERMISSION_DENIED,
                   absl::StrCat("tag ", name, " of ", schema->org_id, " cannot be set for ",
                                profile.org_id()),
                   field);
    }
    return schema;
  };
  std::set<std::string> touched;
  for (int i = 0; i < profile.set_values_size(); ++i) {
    const std::string field = absl::StrCat("set_values[", i, "]");
    const pb::TagValue& v = profile.set_values(i);
    MKT_ASSIGN_OR_RETURN(TagSchema schema, writable(v.tag(), field));
    absl::StatusOr<Value> parsed = FromProto(schema, v, field);
    if (!parsed.ok() && schema.type == pb::TAG_TYPE_ENUM) {
      // Another replica may have added the label a moment ago (CatchUp has not run yet): a
      // message refused here is dead-lettered, so the stored tag decides.
      MKT_ASSIGN_OR_RETURN(schema, RefreshTag(v.tag()));
      parsed = FromProto(schema, v, field);
    }
    MKT_ASSIGN_OR_RETURN(Value value, std::move(parsed));
    if (!touched.insert(v.tag()).second) return InvalidArgument(field, "tag set twice");
    change.set.emplace_back(v.tag(), EncodeValue(schema, value));
  }
  for (int i = 0; i < profile.removed_tags_size(); ++i) {
    const std::string field = absl::StrCat("removed_tags[", i, "]");
    MKT_RETURN_IF_ERROR(writable(profile.removed_tags(i), field).status());
    if (!touched.insert(profile.removed_tags(i)).second) {
      return InvalidArgument(field, "tag both set and removed");
    }
    change.removed.push_back(profile.removed_tags(i));
  }
  MKT_ASSIGN_OR_RETURN(CustomerState state, store_.ApplyProfile(change, kProfileConsumer));
  // On failure the message is retried: deduplicated, it reads the committed state again.
  return ApplyState(state);
}

absl::Status SegmentService::HandleBusinessEvent(const kafka::IncomingMessage& message) {
  MKT_ASSIGN_OR_RETURN(marketing::common::v1::Envelope envelope, kafka::ParseEnvelope(message));
  marketing::events::v1::BusinessEvent event;
  if (!envelope.payload().UnpackTo(&event)) {
    return InvalidArgument("payload", "not a marketing.events.v1.BusinessEvent");
  }
  if (event.amount_fen() == 0) return absl::OkStatus();  // not a transaction
  // What cannot be counted is refused like a message that cannot be parsed: a permanent error,
  // which the consumer logs, counts (by code, in its metrics), dead-letters and steps over.
  if (event.amount_fen() < 0 || event.amount_fen() > kMaxEventAmountFen) {
    return InvalidArgument("amount_fen", absl::StrCat("amount_fen ", event.amount_fen(),
                                                      " is outside 0..", kMaxEventAmountFen));
  }
  MKT_RETURN_IF_ERROR(CheckEventId(envelope.event_id()));
  MKT_RETURN_IF_ERROR(CheckCustomerId(event.customer_id(), "customer_id"));
  MKT_RETURN_IF_ERROR(CheckOrg(event.org_id(), "org_id"));
  if (event.attributes().contains(kOriginalEventAttribute)) {
    // A reversal (a refund or a cancellation of the event it names): not spending. Its amount is
    // given back from the customer's sum; the count and the last day stay (decision 008).
    return store_
        .RecordReversal(kRfmConsumer, envelope.event_id(), event.customer_id(), event.amount_fen())
        .status();
  }
  const absl::Time at = absl::FromUnixSeconds(event.occurred_at().seconds());
  return store_
      .RecordTransaction(kRfmConsumer, envelope.event_id(), event.customer_id(), event.org_id(),
                         event.amount_fen(), DayNumber(at))
      .status();
}

absl::StatusOr<int64_t> SegmentService::ScoreRfm() {
  MKT_ASSIGN_OR_RETURN(std::vector<RfmAggregate> aggregates, store_.LoadRfmAggregates());
  const size_t n = aggregates.size();
  if (n == 0) return 0;
  // Quintile scores 1..5 by rank; equal values share a score.
  auto scores = [&](auto key) {
    std::vector<int64_t> keys(n);
    for (size_t i = 0; i < n; ++i) keys[i] = key(aggregates[i]);
    std::vector<int64_t> sorted = keys;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int> out(n);
    for (size_t i = 0; i < n; ++i) {
      const size_t below = std::lower_bound(sorted.begin(), sorted.end(), keys[i]) - sorted.begin();
      out[i] = 1 + static_cast<int>(below * 5 / n);
    }
    return out;
  };
  const std::vector<int> r = scores([](const RfmAggregate& a) { return int64_t{a.last_txn_day}; });
  const std::vector<int> f = scores([](const RfmAggregate& a) { return a.txn_count; });
  const std::vector<int> m = scores([](const RfmAggregate& a) { return a.amount_fen; });
  auto mean = [n](const std::vector<int>& v) {
    return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(n);
  };
  const double mr = mean(r), mf = mean(f), mm = mean(m);
  std::vector<std::tuple<uint32_t, std::string, std::string>> values;
  auto flush = [&]() -> absl::Status {
    if (values.empty()) return absl::OkStatus();
    MKT_ASSIGN_OR_RETURN(std::vector<CustomerState> states, store_.WriteValues(values));
    ApplyCommitted(states);
    values.clear();
    return absl::OkStatus();
  };
  for (size_t i = 0; i < n; ++i) {
    const uint32_t id = aggregates[i].dense_id;
    values.emplace_back(id, "rfm_r_score", std::to_string(r[i]));
    values.emplace_back(id, "rfm_f_score", std::to_string(f[i]));
    values.emplace_back(id, "rfm_m_score", std::to_string(m[i]));
    values.emplace_back(id, "rfm_group", RfmGroup(r[i], f[i], m[i], mr, mf, mm));
    if (values.size() >= 20000) MKT_RETURN_IF_ERROR(flush());
  }
  MKT_RETURN_IF_ERROR(flush());
  spdlog::info("RFM scored {} customers (mean scores R {:.2f} F {:.2f} M {:.2f})", n, mr, mf, mm);
  return static_cast<int64_t>(n);
}

absl::StatusOr<pb::RecomputeRfmResponse> SegmentService::RecomputeRfm(const tenancy::Actor& actor) {
  if (actor.org_id != tenancy::kFederation || !actor.Has(tenancy::Role::kAdmin)) {
    return Denied("RFM scoring is run by a federation admin");
  }
  MKT_ASSIGN_OR_RETURN(int64_t scored, ScoreRfm());
  pb::RecomputeRfmResponse out;
  out.set_customers_scored(scored);
  return out;
}

}  // namespace mkt::segments
