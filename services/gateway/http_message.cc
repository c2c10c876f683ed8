#include "services/gateway/http_message.h"

#include <algorithm>
#include <boost/beast/http/status.hpp>
#include <cmath>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "libs/core/status.h"
#include "nlohmann/json.hpp"

namespace mkt::gateway {
namespace {

std::string Lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool NameEquals(std::string_view lowercase, std::string_view any_case) {
  return lowercase.size() == any_case.size() &&
         std::equal(lowercase.begin(), lowercase.end(), any_case.begin(), [](char a, char b) {
           return a == std::tolower(static_cast<unsigned char>(b));
         });
}

// What a caller can do about a failure on our side; the internal message stays in our logs.
std::string PublicMessageFor(int http_status) {
  switch (http_status) {
    case 503:
      return "a service this request needs is unavailable; retry later";
    case 504:
      return "a service this request needs did not answer in time; retry later";
    case 501:
      return "not implemented";
    default:
      return "internal error; quote the request id when reporting it";
  }
}

}  // namespace

void HttpHeaders::Add(std::string_view name, std::string_view value) {
  entries_.emplace_back(Lowercase(name), std::string(value));
}

const std::string* HttpHeaders::Find(std::string_view name) const {
  for (const auto& [key, value] : entries_) {
    if (NameEquals(key, name)) return &value;
  }
  return nullptr;
}

int HttpHeaders::Count(std::string_view name) const {
  return static_cast<int>(std::count_if(entries_.begin(), entries_.end(), [&](const auto& entry) {
    return NameEquals(entry.first, name);
  }));
}

std::string_view HttpRequest::path() const {
  std::string_view t(target);
  return t.substr(0, t.find('?'));
}

std::string ResponseHead(const HttpResponse& response, std::string_view request_id,
                         unsigned version, bool keep_alive) {
  auto sendable = [](absl::string_view text) {
    return text.find_first_of(absl::string_view("\r\n\0", 3)) == absl::string_view::npos;
  };
  // Name → value in the order first set; a later header of the same name replaces the value.
  std::vector<std::pair<absl::string_view, absl::string_view>> fields;
  auto set = [&](absl::string_view name, absl::string_view value) {
    if (name.empty() || !sendable(name) || !sendable(value)) return;
    for (auto& field : fields) {
      if (absl::EqualsIgnoreCase(field.first, name)) {
        field.second = value;
        return;
      }
    }
    fields.emplace_back(name, value);
  };
  set("Content-Type", response.content_type);
  set("X-Request-Id", AsAbsl(request_id));
  for (const auto& [name, value] : response.headers) {
    // The server's own framing headers are its to set.
    if (absl::EqualsIgnoreCase(name, "Content-Length") ||
        absl::EqualsIgnoreCase(name, "Connection") ||
        absl::EqualsIgnoreCase(name, "Transfer-Encoding")) {
      continue;
    }
    set(name, value);
  }
  const auto status = static_cast<boost::beast::http::status>(response.status);
  const auto reason = boost::beast::http::obsolete_reason(status);
  std::string head = absl::StrCat(version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ", response.status, " ",
                                  absl::string_view(reason.data(), reason.size()), "\r\n");
  for (const auto& [name, value] : fields) absl::StrAppend(&head, name, ": ", value, "\r\n");
  absl::StrAppend(&head, "Content-Length: ", response.body.size(), "\r\n");
  if (version == 10 && keep_alive) absl::StrAppend(&head, "Connection: keep-alive\r\n");
  if (version != 10 && !keep_alive) absl::StrAppend(&head, "Connection: close\r\n");
  head.append("\r\n");
  return head;
}

HttpResponse JsonResponse(std::string body, int status) {
  HttpResponse response;
  response.status = status;
  response.body = std::move(body);
  return response;
}

namespace {
constexpr std::string_view kRetryAfterPayload = "type.mkt/retry-after";
}  // namespace

absl::Status WithRetryAfter(absl::Status status, absl::Duration after) {
  const int64_t seconds =
      std::max<int64_t>(1, static_cast<int64_t>(std::ceil(absl::ToDoubleSeconds(after))));
  status.SetPayload(AsAbsl(kRetryAfterPayload), absl::Cord(absl::StrCat(seconds)));
  return status;
}

std::string RetryAfterOf(const absl::Status& status) {
  const auto after = status.GetPayload(AsAbsl(kRetryAfterPayload));
  return after ? std::string(*after) : "1";
}

HttpResponse ErrorResponse(const absl::Status& status, std::string_view request_id) {
  HttpResponse response;
  response.status = HttpStatusFor(status);
  const ErrorReason reason = ReasonOf(status);
  // A business rejection is a 409 whatever status code the backend chose for it.
  switch (reason) {
    case ::marketing::common::v1::NOT_ELIGIBLE:
    case ::marketing::common::v1::LIMIT_REACHED:
    case ::marketing::common::v1::STOCK_EXHAUSTED:
    case ::marketing::common::v1::BUDGET_EXHAUSTED:
    case ::marketing::common::v1::CAMPAIGN_NOT_ACTIVE:
    case ::marketing::common::v1::INSUFFICIENT_BALANCE:
    case ::marketing::common::v1::COUPON_NOT_USABLE:
    case ::marketing::common::v1::IDEMPOTENCY_KEY_REUSED:
    case ::marketing::common::v1::TOKEN_EXPIRED:
    case ::marketing::common::v1::TOKEN_ALREADY_USED:
      response.status = 409;
      break;
    default:
      break;
  }
  response.error_code = ReasonName(reason);
  if (response.status == 429 || response.status == 503) {
    response.headers.emplace_back("Retry-After", RetryAfterOf(status));
  }
  const std::string message =
      response.status >= 500 ? PublicMessageFor(response.status) : std::string(status.message());
  nlohmann::json body = {{"error",
                          {{"code", response.error_code},
                           {"message", message},
                           {"request_id", std::string(request_id)}}}};
  // Messages may quote what the caller sent; invalid UTF-8 must not make dump() throw.
  response.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return response;
}

}  // namespace mkt::gateway
