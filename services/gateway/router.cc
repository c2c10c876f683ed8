#include "services/gateway/router.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "libs/core/status.h"

namespace mkt::gateway {
namespace {

namespace pb = ::marketing::common::v1;

// Splits "/a/b" into {"a", "b"}; "/" gives {}; "/a/" gives {"a", ""}.
std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> parts;
  if (path.size() <= 1) return parts;
  path.remove_prefix(1);
  while (true) {
    const size_t slash = path.find('/');
    parts.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

bool IsParamName(std::string_view name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  return std::all_of(name.begin(), name.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '_'; });
}

absl::StatusOr<std::vector<Route::Segment>> ParseTemplate(std::string_view path_template) {
  if (path_template.empty() || path_template[0] != '/') {
    return InvalidArgument("path_template", "a path template starts with '/'");
  }
  std::vector<Route::Segment> segments;
  for (std::string_view part : SplitPath(path_template)) {
    if (part.empty()) return InvalidArgument("path_template", "empty segment in path template");
    Route::Segment segment;
    if (part[0] == '{') {
      const size_t close = part.find('}');
      if (close == std::string_view::npos || !IsParamName(part.substr(1, close - 1))) {
        return InvalidArgument("path_template", "a parameter is written {name}");
      }
      segment.param = std::string(part.substr(1, close - 1));
      segment.literal = std::string(part.substr(close + 1));
    } else {
      segment.literal = std::string(part);
    }
    if (segment.literal.find_first_of("{}") != std::string::npos) {
      return InvalidArgument("path_template", "a segment holds at most one parameter, first");
    }
    segments.push_back(std::move(segment));
  }
  return segments;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

absl::StatusOr<std::string> PercentDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    const int hi = i + 2 < text.size() ? HexValue(text[i + 1]) : -1;
    const int lo = i + 2 < text.size() ? HexValue(text[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      return InvalidArgument("path", "the path has a broken percent-encoding");
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

// Returns how specifically `route` matches `parts` (one rank per segment: 2 literal, 1
// parameter with a suffix, 0 bare parameter), or nullopt when it does not match.
std::optional<std::vector<int>> MatchRank(const Route& route,
                                          const std::vector<std::string_view>& parts) {
  if (route.segments.size() != parts.size()) return std::nullopt;
  std::vector<int> rank;
  rank.reserve(parts.size());
  for (size_t i = 0; i < parts.size(); ++i) {
    const Route::Segment& segment = route.segments[i];
    std::string_view part = parts[i];
    if (segment.param.empty()) {
      if (part != segment.literal) return std::nullopt;
      rank.push_back(2);
      continue;
    }
    // The value must be non-empty and the segment must end with the suffix.
    if (part.size() <= segment.literal.size() ||
        part.substr(part.size() - segment.literal.size()) != segment.literal) {
      return std::nullopt;
    }
    rank.push_back(segment.literal.empty() ? 0 : 1);
  }
  return rank;
}

}  // namespace

absl::Status Router::Add(std::string method, std::string path_template, RouteOptions options,
                         RouteHandler handler, AsyncRouteHandler async_handler) {
  MKT_ASSIGN_OR_RETURN(auto segments, ParseTemplate(path_template));
  for (const auto& route : routes_) {
    if (route->method == method && route->path_template == path_template) {
      return Error(absl::StatusCode::kAlreadyExists, pb::ALREADY_EXISTS,
                   absl::StrCat("route ", method, " ", path_template, " added twice"));
    }
  }
  auto route = std::make_unique<Route>();
  route->name = absl::StrCat(method, " ", path_template);
  route->method = std::move(method);
  route->path_template = std::move(path_template);
  route->options = options;
  route->handler = std::move(handler);
  route->async_handler = std::move(async_handler);
  route->segments = std::move(segments);
  routes_.push_back(std::move(route));
  return absl::OkStatus();
}

absl::StatusOr<RouteMatch> Router::Match(std::string_view method, std::string_view path,
                                         std::string* allowed) const {
  const std::vector<std::string_view> parts = SplitPath(path);
  const Route* best = nullptr;
  std::vector<int> best_rank;
  std::set<std::string> other_methods;
  for (const auto& route : routes_) {
    std::optional<std::vector<int>> rank = MatchRank(*route, parts);
    if (!rank) continue;
    if (route->method != method) {
      other_methods.insert(route->method);
      continue;
    }
    if (best == nullptr || *rank > best_rank) {
      best = route.get();
      best_rank = std::move(*rank);
    }
  }
  if (best == nullptr) {
    if (path.empty() || path[0] != '/') {
      return InvalidArgument("path", "the request target must be an absolute path");
    }
    if (other_methods.empty()) {
      return NotFound(absl::StrCat("no resource at ", AsAbsl(path)));
    }
    const std::string methods = absl::StrJoin(other_methods, ", ");
    if (allowed != nullptr) *allowed = methods;
    return Error(absl::StatusCode::kUnimplemented, pb::METHOD_NOT_ALLOWED,
                 absl::StrCat(AsAbsl(method), " is not allowed here; allowed: ", methods));
  }
  RouteMatch match;
  match.route = best;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Route::Segment& segment = best->segments[i];
    if (segment.param.empty()) continue;
    std::string_view raw = parts[i].substr(0, parts[i].size() - segment.literal.size());
    MKT_ASSIGN_OR_RETURN(std::string value, PercentDecode(raw));
    match.params.emplace(segment.param, std::move(value));
  }
  return match;
}

}  // namespace mkt::gateway
