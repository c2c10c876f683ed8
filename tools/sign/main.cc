// mkt-sign: prints a curl command for a correctly signed channel request, so an engineer can
// call the gateway by hand.
//
//   mkt-sign --credentials .local/credentials.json --channel mobile_banking [--org bank-a]
//            [--url http://127.0.0.1:8080] [--data BODY] METHOD TARGET
//   mkt-sign --channel-id ch_... --secret HEX [...] METHOD TARGET
#include <ctime>
#include <fstream>
#include <iostream>
#include <string>

#include "libs/auth/channel_signature.h"
#include "libs/core/ids.h"
#include "nlohmann/json.hpp"

namespace {

int Usage(const char* argv0) {
  std::cerr << "usage: " << argv0
            << " (--credentials FILE --channel CODE [--org ORG] | --channel-id ID --secret HEX)\n"
               "       [--url BASE_URL] [--data BODY] METHOD TARGET\n"
               "example: "
            << argv0
            << " --credentials .local/credentials.json --channel mobile_banking GET /v1/channel\n";
  return 2;
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

int main(int argc, char** argv) {
  std::string credentials, code, org = "fed", channel_id, secret, url, body, method, target;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--credentials")
      credentials = next();
    else if (a == "--channel")
      code = next();
    else if (a == "--org")
      org = next();
    else if (a == "--channel-id")
      channel_id = next();
    else if (a == "--secret")
      secret = next();
    else if (a == "--url")
      url = next();
    else if (a == "--data")
      body = next();
    else if (method.empty())
      method = a;
    else if (target.empty())
      target = a;
    else
      return Usage(argv[0]);
  }
  if (method.empty() || target.empty() || target[0] != '/') return Usage(argv[0]);
  if (!credentials.empty()) {
    std::ifstream in(credentials);
    if (!in) {
      std::cerr << "cannot read " << credentials << " (run ./dev up first)\n";
      return 1;
    }
    nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
    if (doc.is_discarded()) {
      std::cerr << credentials << " is not valid JSON\n";
      return 1;
    }
    if (url.empty()) url = doc.value("gateway_url", "");
    for (const auto& ch : doc.value("channels", nlohmann::json::array())) {
      if (ch.value("code", "") == code && ch.value("org_id", "") == org) {
        channel_id = ch.value("channel_id", "");
        secret = ch.value("secret", "");
      }
    }
    if (channel_id.empty()) {
      std::cerr << "no channel with code \"" << code << "\" of org \"" << org << "\" in "
                << credentials << "\n";
      return 1;
    }
  }
  if (channel_id.empty() || secret.empty()) return Usage(argv[0]);
  if (url.empty()) url = "http://127.0.0.1:8080";
  std::string timestamp = std::to_string(std::time(nullptr));
  std::string nonce = mkt::RandomHex(12);
  std::string signature = mkt::auth::SignRequest(secret, {method, target, timestamp, nonce, body});
  std::cout << "curl -sS -X " << method << " " << ShellQuote(url + target)
            << " -H 'X-Channel-Id: " << channel_id << "' -H 'X-Timestamp: " << timestamp
            << "' -H 'X-Nonce: " << nonce << "' -H 'X-Signature: " << signature << "'";
  if (!body.empty()) {
    std::cout << " -H 'Content-Type: application/json' -H 'Idempotency-Key: " << mkt::RandomHex(8)
              << "' --data-binary " << ShellQuote(body);
  }
  std::cout << "\n";
  return 0;
}
