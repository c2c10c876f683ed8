// The gateway's HTTP/1.1 server (Boost.Beast): N I/O threads with an io_context each, keep-alive,
// TCP_NODELAY, limits on header and body size, an idle timeout, and request ids. It knows
// nothing about routes or authentication: every request read goes to an HttpHandler, which
// answers through a callback, possibly from another thread.
//
// Requests the server cannot read whole (body over max_body_bytes, oversized header, malformed
// HTTP) still reach the handler, with HttpRequest::read_error set, so they are answered in the
// JSON error shape and counted like any other; the connection is then closed, because the rest
// of the unread body cannot be told apart from a next request.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/gateway/http_message.h"

namespace mkt::gateway {

class HttpHandler {
 public:
  using Respond = std::function<void(HttpResponse)>;
  virtual ~HttpHandler() = default;
  // Handles `request` and calls `respond` exactly once, from any thread. Must not throw.
  virtual void Handle(HttpRequest request, Respond respond) = 0;
};

struct HttpServerOptions {
  // host:port to listen on; port 0 picks a free port (see HttpServer::port()).
  std::string address = "127.0.0.1:8080";
  int io_threads = 2;
  size_t max_body_bytes = 1 << 20;
  size_t max_header_bytes = 16 << 10;
  // A connection that sends nothing (or too slowly) for this long is closed.
  absl::Duration idle_timeout = absl::Seconds(30);
};

class HttpServer {
 public:
  // Binds, listens and starts the I/O threads. `handler` must outlive the server.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                           HttpHandler& handler);
  // Shuts down (with a short grace) if Shutdown was not called.
  ~HttpServer();

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The port actually bound.
  int port() const;

  // Stops accepting, lets requests being handled finish for up to `grace`, then closes every
  // connection and joins the I/O threads. Responses that arrive later are dropped.
  void Shutdown(absl::Duration grace);

  struct State;

 private:
  explicit HttpServer(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

}  // namespace mkt::gateway
