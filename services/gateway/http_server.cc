#include "services/gateway/http_server.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <thread>
#include <vector>

#include <sys/socket.h>
#include <sys/uio.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "spdlog/spdlog.h"

namespace mkt::gateway {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
namespace pb = ::marketing::common::v1;

// After a request that could not be read whole, the unread rest of it is discarded for at most
// this long (and this many bytes) before the connection closes. Closing at once would make the
// kernel reset the connection, and the client would lose the error response it has not read yet.
constexpr auto kDrainTimeout = std::chrono::seconds(2);
constexpr size_t kDrainMaxBytes = 64 << 20;

std::string_view View(beast::string_view s) { return std::string_view(s.data(), s.size()); }

absl::StatusOr<tcp::endpoint> ParseAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return InvalidArgument("http_address", "expected host:port, got \"" + address + "\"");
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  beast::error_code ec;
  net::ip::address ip = net::ip::make_address(host, ec);
  if (ec) return InvalidArgument("http_address", "not an IP address: \"" + host + "\"");
  return tcp::endpoint(ip, static_cast<unsigned short>(port));
}

// What reading a request failed with, as the status the client is answered with; nullopt when
// the connection is just gone (closed, reset, idle timeout) and nobody is there to answer.
std::optional<absl::Status> ReadErrorStatus(const beast::error_code& ec,
                                            const HttpServerOptions& options) {
  if (ec == http::error::body_limit) {
    return Error(
        absl::StatusCode::kResourceExhausted, pb::BODY_TOO_LARGE,
        absl::StrCat("the request body exceeds the limit of ", options.max_body_bytes, " bytes"));
  }
  if (ec == http::error::header_limit) {
    return InvalidArgument("headers", absl::StrCat("the request header exceeds the limit of ",
                                                   options.max_header_bytes, " bytes"));
  }
  if (ec == http::error::end_of_stream || ec == http::error::partial_message) return std::nullopt;
  if (&ec.category() == &http::make_error_code(http::error::bad_method).category()) {
    return InvalidArgument("request", absl::StrCat("malformed HTTP request: ", ec.message()));
  }
  return std::nullopt;
}

}  // namespace

class Session;

struct HttpServer::State : std::enable_shared_from_this<HttpServer::State> {
  State(const HttpServerOptions& o, HttpHandler& h)
      : options(o),
        handler(h),
        contexts(MakeContexts(o.io_threads)),
        acceptor(net::make_strand(*contexts.front())) {}

  void Accept();
  void Forget(Session* session);
  // The context of the next connection: connections go to the I/O threads in turn.
  net::io_context& NextContext() { return *contexts[next_context++ % contexts.size()]; }

  // One io_context per I/O thread (concurrency hint 1): a connection lives on one thread, which
  // waits for its socket and runs its handlers itself. With N threads on one io_context, each
  // ready socket made the thread that saw it wake another to wait in epoll meanwhile, a thread
  // switch per event that cost more than the request itself at moderate load.
  static std::vector<std::unique_ptr<net::io_context>> MakeContexts(int n) {
    std::vector<std::unique_ptr<net::io_context>> out;
    for (int i = 0; i < std::max(1, n); ++i) out.push_back(std::make_unique<net::io_context>(1));
    return out;
  }

  const HttpServerOptions options;
  HttpHandler& handler;
  std::vector<std::unique_ptr<net::io_context>> contexts;
  // Keep the I/O threads running while no socket operation is pending (every connection of a
  // thread waiting for its handler, acceptor closed during shutdown).
  std::vector<net::executor_work_guard<net::io_context::executor_type>> work;
  // The acceptor and its backoff timer share one strand, so Shutdown can close it safely.
  tcp::acceptor acceptor;
  net::steady_timer accept_backoff{acceptor.get_executor()};
  // Used by Accept only: Start's first call, then the acceptor's handler, one at a time.
  size_t next_context = 0;
  std::vector<std::thread> threads;
  int port = 0;
  // Requests handed to the handler whose response is not written yet.
  std::atomic<int> in_flight{0};
  bool shut_down = false;

  // Open sessions, owned here so that a response arriving after shutdown never touches a
  // session (or the io_context) that is gone: callbacks hold only weak references.
  absl::Mutex mu;
  bool accepting_responses ABSL_GUARDED_BY(mu) = true;
  absl::flat_hash_map<Session*, std::shared_ptr<Session>> sessions ABSL_GUARDED_BY(mu);
};

// One connection: reads a request, hands it to the handler, writes the response, repeats.
// Reads, and the handlers they complete, run on the connection's I/O thread (its io_context has
// no other). The response is written by the thread that delivers it (Deliver), which then starts
// the next read; only one of them touches the connection at a time, since nothing is read while
// a request is being answered.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServer::State& state)
      : stream_(std::move(socket)), state_(state) {}

  void Start() {
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&Session::ReadHeader, shared_from_this()));
  }

  // Called from HttpServer::Shutdown after the I/O threads stopped.
  void Close() {
    beast::error_code ignored;
    stream_.socket().close(ignored);
  }

 private:
  void ReadHeader() {
    parser_.emplace();
    // The body limit is checked once the header is complete, so that a 413 still knows the
    // request (its X-Request-Id, method and target); see OnHeader.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    parser_->header_limit(static_cast<uint32_t>(state_.options.max_header_bytes));
    stream_.expires_after(absl::ToChronoMilliseconds(state_.options.idle_timeout));
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&Session::OnHeader, shared_from_this()));
  }

  void OnHeader(beast::error_code ec, size_t) {
    if (ec) return OnRead(ec, 0);
    if (parser_->content_length() && *parser_->content_length() > state_.options.max_body_bytes) {
      return OnRead(http::error::body_limit, 0);
    }
    // Chunked bodies have no length up front; the parser stops them at the limit.
    parser_->body_limit(state_.options.max_body_bytes);
    // A client that asked to be told before sending a large body is told now (a body too large
    // was answered 413 above, without a 100 Continue).
    const auto& header = parser_->get();
    if (auto it = header.find(http::field::expect);
        it != header.end() && beast::iequals(it->value(), "100-continue")) {
      continue_ = std::make_unique<http::response<http::empty_body>>(http::status::continue_,
                                                                     header.version());
      http::async_write(stream_, *continue_,
                        beast::bind_front_handler(&Session::OnContinueSent, shared_from_this()));
      return;
    }
    ReadBody();
  }

  void OnContinueSent(beast::error_code ec, size_t) {
    continue_.reset();
    if (ec) return Finish();
    ReadBody();
  }

  void ReadBody() {
    stream_.expires_after(absl::ToChronoMilliseconds(state_.options.idle_timeout));
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::OnRead, shared_from_this()));
  }

  void OnRead(beast::error_code ec, size_t) {
    HttpRequest request;
    if (ec) {
      std::optional<absl::Status> status = ReadErrorStatus(ec, state_.options);
      if (!status) return Finish();
      request.read_error = *std::move(status);
    }
    const auto& message = parser_->get();
    if (parser_->is_header_done()) {
      request.method = std::string(View(message.method_string()));
      request.target = std::string(View(message.target()));
      for (const auto& field : message) {
        request.headers.Add(View(field.name_string()), View(field.value()));
      }
    }
    if (request.read_error.ok()) request.body = std::move(parser_->get().body());
    const std::string* request_id = request.headers.Find("X-Request-Id");
    request.request_id =
        request_id != nullptr && IsValidRequestId(*request_id) ? *request_id : NewRequestId();
    request_id_ = request.request_id;
    version_ = parser_->is_header_done() ? message.version() : 11;
    close_after_response_ = !request.read_error.ok() || !message.keep_alive();
    unreadable_ = !request.read_error.ok();

    state_.in_flight.fetch_add(1);
    Dispatch(std::move(request));
  }

  // Hands the request to the handler; the response comes back through a callback that may run
  // on any thread, at most once, and only while the server still accepts responses.
  void Dispatch(HttpRequest request) {
    auto responded = std::make_shared<std::atomic<bool>>(false);
    std::weak_ptr<HttpServer::State> weak_state = state_.weak_from_this();
    std::weak_ptr<Session> weak = weak_from_this();
    HttpHandler::Respond respond = [weak_state, weak, responded](HttpResponse response) {
      if (responded->exchange(true)) return;
      std::shared_ptr<HttpServer::State> state = weak_state.lock();
      if (state == nullptr) return;
      // Shared: responses do not wait for each other, only for Shutdown, which must not close
      // a socket a response is being written to.
      absl::ReaderMutexLock lock(&state->mu);
      std::shared_ptr<Session> self = weak.lock();
      if (!state->accepting_responses || self == nullptr) {
        state->in_flight.fetch_sub(1);
        return;
      }
      self->Deliver(std::move(response));
    };
    try {
      state_.handler.Handle(std::move(request), respond);
    } catch (const std::exception& e) {
      spdlog::error("http handler threw: {}", e.what());
      respond(ErrorResponse(Internal("handler threw"), request_id_));
    } catch (...) {
      spdlog::error("http handler threw a non-exception");
      respond(ErrorResponse(Internal("handler threw"), request_id_));
    }
  }

  // Sends the response, on the thread that has it (the connection is idle meanwhile: nothing is
  // read until the response is out). The head is written by ResponseHead rather than Beast's
  // serializer: one string and the body, in one gathered write.
  //
  // When the connection stays open and the socket takes the whole response at once (a small
  // response into an empty send buffer: nearly always), it is written right here and the next
  // request is waited for, without waking the connection's I/O thread: at moderate load that
  // was a thread switch per response (decision 025). Otherwise what is left is written on the
  // I/O thread.
  void Deliver(HttpResponse response) {
    response_head_ =
        ResponseHead(response, request_id_, version_ == 10 ? 10 : 11, !close_after_response_);
    response_body_ = std::move(response.body);
    if (!close_after_response_ && !unreadable_ && SendNow()) {
      state_.in_flight.fetch_sub(1);
      ClearResponse();
      // Starts the read from this thread; its handlers run on the connection's I/O thread.
      ReadHeader();
      return;
    }
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->WriteRest(); });
  }

  // Writes what it can of the response without blocking, and drops what went out from
  // response_head_/response_body_; true when all of it did. On an error nothing is dropped, and
  // the write on the I/O thread meets the error again.
  bool SendNow() {
    iovec parts[2] = {{response_head_.data(), response_head_.size()},
                      {response_body_.data(), response_body_.size()}};
    msghdr message{};
    message.msg_iov = parts;
    message.msg_iovlen = response_body_.empty() ? 1 : 2;
    ssize_t sent;
    do {
      sent = ::sendmsg(stream_.socket().native_handle(), &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (sent < 0 && errno == EINTR);
    if (sent <= 0) return false;
    const size_t from_head = std::min(static_cast<size_t>(sent), response_head_.size());
    response_head_.erase(0, from_head);
    response_body_.erase(0, static_cast<size_t>(sent) - from_head);
    return response_head_.empty() && response_body_.empty();
  }

  // On the I/O thread: writes what Deliver did not.
  void WriteRest() {
    stream_.expires_after(absl::ToChronoMilliseconds(state_.options.idle_timeout));
    const std::array<net::const_buffer, 2> buffers{net::buffer(response_head_),
                                                   net::buffer(response_body_)};
    net::async_write(stream_, buffers,
                     beast::bind_front_handler(&Session::OnWrite, shared_from_this()));
  }

  void ClearResponse() {
    response_head_.clear();
    response_body_.clear();
    response_body_.shrink_to_fit();
  }

  void OnWrite(beast::error_code ec, size_t) {
    state_.in_flight.fetch_sub(1);
    ClearResponse();
    if (ec) return Finish();
    if (unreadable_) return Drain();
    if (close_after_response_) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      return Finish();
    }
    ReadHeader();
  }

  void Drain() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(kDrainTimeout);
    drained_ = 0;
    DrainSome();
  }

  void DrainSome() {
    stream_.async_read_some(net::buffer(drain_buffer_),
                            beast::bind_front_handler(&Session::OnDrained, shared_from_this()));
  }

  void OnDrained(beast::error_code ec, size_t bytes) {
    drained_ += bytes;
    if (ec || drained_ > kDrainMaxBytes) return Finish();
    DrainSome();
  }

  void Finish() {
    beast::error_code ignored;
    stream_.socket().close(ignored);
    state_.Forget(this);
  }

  beast::tcp_stream stream_;
  HttpServer::State& state_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::unique_ptr<http::response<http::empty_body>> continue_;
  // The response being written.
  std::string response_head_;
  std::string response_body_;
  std::string request_id_;
  unsigned version_ = 11;
  bool close_after_response_ = false;
  bool unreadable_ = false;
  size_t drained_ = 0;
  char drain_buffer_[16 << 10];
};

void HttpServer::State::Accept() {
  acceptor.async_accept(NextContext(), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (ec) {
      // Typically out of file descriptors: wait a little instead of spinning.
      spdlog::warn("http accept failed: {}", ec.message());
      accept_backoff.expires_after(std::chrono::milliseconds(100));
      accept_backoff.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec) Accept();
      });
      return;
    }
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto session = std::make_shared<Session>(std::move(socket), *this);
    {
      absl::MutexLock lock(&mu);
      if (!accepting_responses) return;
      sessions.emplace(session.get(), session);
    }
    session->Start();
    Accept();
  });
}

void HttpServer::State::Forget(Session* session) {
  // The session stays alive until its current handler returns (it holds shared_from_this()).
  absl::MutexLock lock(&mu);
  sessions.erase(session);
}

HttpServer::HttpServer(std::shared_ptr<State> state) : state_(std::move(state)) {}

HttpServer::~HttpServer() { Shutdown(absl::Seconds(1)); }

int HttpServer::port() const { return state_->port; }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                              HttpHandler& handler) {
  if (options.io_threads < 1) return InvalidArgument("io_threads", "at least 1 I/O thread");
  MKT_ASSIGN_OR_RETURN(tcp::endpoint endpoint, ParseAddress(options.address));
  auto state = std::make_shared<State>(options, handler);
  beast::error_code ec;
  state->acceptor.open(endpoint.protocol(), ec);
  if (!ec) state->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) state->acceptor.bind(endpoint, ec);
  if (!ec) state->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return Unavailable(
        absl::StrCat("cannot listen for HTTP on ", options.address, ": ", ec.message()));
  }
  state->port = state->acceptor.local_endpoint().port();
  for (auto& context : state->contexts) state->work.emplace_back(context->get_executor());
  state->Accept();
  for (auto& context : state->contexts) {
    state->threads.emplace_back([ioc = context.get()] {
      // Handlers never throw, but one exception must not take the process down silently.
      while (true) {
        try {
          ioc->run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("http I/O thread caught: {}", e.what());
        }
      }
    });
  }
  spdlog::info("serving HTTP on {} ({} I/O threads, body limit {} bytes)", options.address,
               options.io_threads, options.max_body_bytes);
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(state)));
}

void HttpServer::Shutdown(absl::Duration grace) {
  State& s = *state_;
  if (s.shut_down) return;
  s.shut_down = true;
  net::post(s.acceptor.get_executor(), [&s] {
    beast::error_code ignored;
    s.acceptor.close(ignored);
    s.accept_backoff.cancel();
  });
  const absl::Time deadline = absl::Now() + grace;
  while (s.in_flight.load() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  if (s.in_flight.load() > 0) {
    spdlog::warn("http shutdown: {} requests still running after the grace period; dropped",
                 s.in_flight.load());
  }
  absl::flat_hash_map<Session*, std::shared_ptr<Session>> sessions;
  {
    absl::MutexLock lock(&s.mu);
    s.accepting_responses = false;
    sessions.swap(s.sessions);
  }
  for (auto& guard : s.work) guard.reset();
  for (auto& context : s.contexts) context->stop();
  for (std::thread& t : s.threads) t.join();
  s.threads.clear();
  for (auto& [raw, session] : sessions) session->Close();
  // Sessions still referenced by handlers queued in the io_context go with it.
}

}  // namespace mkt::gateway
