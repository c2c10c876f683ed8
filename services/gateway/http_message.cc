#include "services/gateway/http_message.h"

#include <algorithm>

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

HttpResponse JsonResponse(std::string body, int status) {
  HttpResponse response;
  response.status = status;
  response.body = std::move(body);
  return response;
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
