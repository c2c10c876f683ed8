// Test-only helpers (header-only, linked into test binaries, never into the gateway): a small
// blocking HTTP/1.1 client over one keep-alive connection, and the signature headers a channel
// sends. Used by the gateway's unit tests and by tests/e2e.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "libs/auth/channel_signature.h"
#include "nlohmann/json.hpp"

namespace mkt::gateway::testing {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct TestResponse {
  int status = 0;
  // Lowercase names.
  std::map<std::string, std::string> headers;
  std::string body;

  std::string Header(const std::string& lowercase_name) const {
    auto it = headers.find(lowercase_name);
    return it == headers.end() ? "" : it->second;
  }
  // The body as JSON, or a JSON null when it is not JSON.
  nlohmann::json Json() const {
    return nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  }
  // The "code" of a JSON error body, or "".
  std::string ErrorCode() const {
    nlohmann::json j = Json();
    if (!j.is_object() || !j.contains("error") || !j["error"].contains("code")) return "";
    return j["error"]["code"].get<std::string>();
  }
};

// One keep-alive connection to 127.0.0.1:<port>, reopened when the server closed it. Every call
// throws std::runtime_error on I/O failure or after 10 s without an answer, which fails the test
// that made it.
class TestHttpClient {
 public:
  explicit TestHttpClient(int port) : port_(port) {}

  TestResponse Send(const std::string& method, const std::string& target,
                    const Headers& headers = {}, const std::string& body = "") {
    namespace http = boost::beast::http;
    if (!socket_ || !open_) Connect();
    http::request<http::string_body> request(http::string_to_verb(method), target, 11);
    request.set(http::field::host, "127.0.0.1");
    for (const auto& [name, value] : headers) request.set(name, value);
    if (!body.empty() || method == "POST" || method == "PUT") {
      request.body() = body;
      request.prepare_payload();
    }
    boost::beast::error_code ec;
    socket_->expires_after(std::chrono::seconds(10));
    http::async_write(*socket_, request, [&ec](boost::beast::error_code e, size_t) { ec = e; });
    Run();
    // The server may answer and stop reading before the whole body is sent (413); its answer is
    // still there to read.
    if (ec && ec != boost::asio::error::broken_pipe && ec != boost::asio::error::connection_reset) {
      Fail("write", ec);
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    socket_->expires_after(std::chrono::seconds(10));
    http::async_read(*socket_, buffer_, parser,
                     [&ec](boost::beast::error_code e, size_t) { ec = e; });
    Run();
    if (ec) Fail("read", ec);
    const auto& message = parser.get();
    TestResponse response;
    response.status = static_cast<int>(message.result_int());
    for (const auto& field : message) {
      std::string name(field.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      response.headers[name] = std::string(field.value());
    }
    response.body = message.body();
    if (!message.keep_alive()) Close();
    return response;
  }

  // How many connections this client opened so far.
  int connects() const { return connects_; }

  void Close() {
    if (socket_) {
      boost::beast::error_code ignored;
      socket_->socket().close(ignored);
    }
    open_ = false;
    buffer_.clear();
  }

 private:
  void Connect() {
    socket_.emplace(io_);
    boost::beast::error_code ec;
    socket_->expires_after(std::chrono::seconds(10));
    socket_->async_connect(
        {boost::asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port_)},
        [&ec](boost::beast::error_code e) { ec = e; });
    Run();
    if (ec) Fail("connect", ec);
    open_ = true;
    ++connects_;
    buffer_.clear();
  }

  // Runs the pending operation to completion (or its timeout).
  void Run() {
    io_.restart();
    io_.run();
  }

  [[noreturn]] void Fail(const char* what, const boost::beast::error_code& ec) {
    Close();
    throw std::runtime_error(std::string("http ") + what + " to port " + std::to_string(port_) +
                             ": " + ec.message());
  }

  int port_;
  boost::asio::io_context io_;
  std::optional<boost::beast::tcp_stream> socket_;
  boost::beast::flat_buffer buffer_;
  bool open_ = false;
  int connects_ = 0;
};

// The four authentication headers for a request signed with `secret`.
inline Headers SignedHeaders(const std::string& secret, const std::string& channel_id,
                             const std::string& method, const std::string& target,
                             const std::string& body, int64_t timestamp, const std::string& nonce) {
  const std::string ts = std::to_string(timestamp);
  const std::string signature =
      auth::SignRequest(secret, auth::SignedRequest{method, target, ts, nonce, body});
  return {{"X-Channel-Id", channel_id},
          {"X-Timestamp", ts},
          {"X-Nonce", nonce},
          {"X-Signature", signature}};
}

}  // namespace mkt::gateway::testing
