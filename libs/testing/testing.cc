#include "libs/testing/testing.h"
#include <fstream>
#include <sstream>
#include "grpc/health/v1/health.grpc.pb.h"
#include "libs/rpc/client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <pqxx/pqxx>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "libs/kafka/kafka.h"

extern char** environ;

namespace mkt::testing {
namespace {

constexpr char kHowToRun[] = "run the tests with ./dev test, which starts PostgreSQL and Kafka";

// Fails the running test and stops it: a fixture that cannot reach its server must not let the
// test pass or skip.
[[noreturn]] void FailTest(const std::string& message) {
  ADD_FAILURE() << message;
  throw std::runtime_error(message);
}

std::string RequiredEnv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') FailTest(absl::StrCat(name, " is not set: ", kHowToRun));
  return value;
}

std::string RandomHex(int bytes) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  std::string hex;
  for (int i = 0; i < bytes; ++i) {
    absl::StrAppend(&hex, absl::Hex(rng() & 0xff, absl::kZeroPad2));
  }
  return hex;
}

std::string QuoteDsnValue(const std::string& value) {
  return absl::StrCat("'", absl::StrReplaceAll(value, {{"\\", "\\\\"}, {"'", "\\'"}}), "'");
}

// The admin DSN (keyword=value or URI form) rewritten as keyword=value with another dbname.
std::string DsnWithDatabase(const std::string& admin_dsn, const std::string& dbname) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(admin_dsn.c_str(), &error);
  if (options == nullptr) {
    PQfreemem(error);
    FailTest("MKT_TEST_PG_DSN is not a valid libpq connection string");
  }
  std::string dsn;
  for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr || std::strcmp(o->keyword, "dbname") == 0) continue;
    absl::StrAppend(&dsn, o->keyword, "=", QuoteDsnValue(o->val), " ");
  }
  PQconninfoFree(options);
  absl::StrAppend(&dsn, "dbname=", QuoteDsnValue(dbname));
  return dsn;
}

void ExecOnAdmin(const std::string& admin_dsn, const std::string& sql) {
  pqxx::connection conn(admin_dsn);
  pqxx::nontransaction tx(conn);
  tx.exec(sql);
}

}  // namespace

TestDatabase::TestDatabase()
    : admin_dsn_(RequiredEnv("MKT_TEST_PG_DSN")), name_("t_" + RandomHex(8)) {
  dsn_ = DsnWithDatabase(admin_dsn_, name_);
  for (int attempt = 1;; ++attempt) {
    try {
      ExecOnAdmin(admin_dsn_, "CREATE DATABASE " + name_);
      return;
    } catch (const pqxx::sql_error& e) {
      // Concurrent CREATE DATABASE calls can collide on the template ("being accessed by other
      // users"); another try a moment later succeeds.
      if (e.sqlstate() == "55006" && attempt < 5) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100 * attempt));
        continue;
      }
      FailTest(absl::StrCat("cannot create test database ", name_, ": ", e.what()));
    } catch (const std::exception& e) {
      FailTest(absl::StrCat("cannot reach PostgreSQL through MKT_TEST_PG_DSN: ", e.what(), " (",
                            kHowToRun, ")"));
    }
  }
}

TestDatabase::~TestDatabase() {
  try {
    ExecOnAdmin(admin_dsn_, "DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  } catch (const std::exception& e) {
    std::cerr << "warning: could not drop test database " << name_ << ": " << e.what() << "\n";
  }
}

std::string KafkaBootstrap() { return RequiredEnv("MKT_TEST_KAFKA_BOOTSTRAP"); }

std::string NewTopic(std::string_view prefix, int partitions) {
  std::string topic = absl::StrCat(std::string(prefix), ".", RandomHex(6));
  kafka::ClientOptions options;
  options.bootstrap_servers = KafkaBootstrap();
  options.client_id = "mkt-test";
  absl::Status status = kafka::EnsureTopic(options, topic, partitions);
  if (!status.ok()) {
    FailTest(absl::StrCat("cannot create Kafka topic ", topic, " at ", options.bootstrap_servers,
                          ": ", status.ToString()));
  }
  return topic;
}

namespace {

// True when 127.0.0.1:`port` can be bound now.
bool Bindable(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) FailTest(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

int FreePort() {
  // Below the kernel's ephemeral range (32768-60999 here), so no outgoing connection of any
  // process (to PostgreSQL, Kafka, a gRPC peer) can take the port between this call and the
  // server's bind; and above the project's fixed ports (8080, 9431-9471). A lock file per port,
  // held until this process exits, keeps concurrent test processes from handing out the same one.
  constexpr int kFirst = 10000;
  constexpr int kCount = 10000;
  static std::mutex mu;
  static std::vector<int>* held = new std::vector<int>();  // lock files, open until exit
  std::lock_guard<std::mutex> lock(mu);
  const std::string dir = "/tmp/mkt-test-ports";
  ::mkdir(dir.c_str(), 0777);
  ::chmod(dir.c_str(), 0777);
  static std::mt19937 random(std::random_device{}());
  for (int attempt = 0; attempt < 2000; ++attempt) {
    const int port = kFirst + static_cast<int>(random() % kCount);
    const std::string path = absl::StrCat(dir, "/", port);
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) continue;
    // Taken by another test process (or by this one: flock locks are per open file).
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);
      continue;
    }
    if (!Bindable(port)) {
      ::close(fd);
      continue;
    }
    held->push_back(fd);
    return port;
  }
  FailTest("cannot find a free port in 10000-19999");
  return 0;
}

ChildProcess::ChildProcess(std::vector<std::string> argv, std::map<std::string, std::string> env,
                           std::string log_path) {
  if (argv.empty() || argv[0].empty() || argv[0][0] != '/') {
    FailTest("ChildProcess needs argv[0] to be an absolute path");
  }
  // Everything the child needs is prepared before fork(): between fork() and exec() a
  // multithreaded process may only make async-signal-safe calls.
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    const size_t eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    merged.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  for (auto& [key, value] : env) merged[key] = value;
  std::vector<std::string> env_strings;
  env_strings.reserve(merged.size());
  for (const auto& [key, value] : merged) env_strings.push_back(key + "=" + value);

  std::vector<char*> c_argv;
  for (std::string& a : argv) c_argv.push_back(a.data());
  c_argv.push_back(nullptr);
  std::vector<char*> c_env;
  for (std::string& e : env_strings) c_env.push_back(e.data());
  c_env.push_back(nullptr);

  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) FailTest(absl::StrCat("cannot open ", log_path, ": ", std::strerror(errno)));
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    ::close(log_fd);
    FailTest(absl::StrCat("cannot open /dev/null: ", std::strerror(errno)));
  }

  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::execve(c_argv[0], c_argv.data(), c_env.data());
    static constexpr char kExecFailed[] = "ChildProcess: execve failed\n";
    [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, kExecFailed, sizeof(kExecFailed) - 1);
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(log_fd);
  ::close(null_fd);
  if (pid < 0) FailTest(absl::StrCat("fork: ", std::strerror(fork_errno)));
  // Also set from the parent so the group exists before Kill() can be called.
  ::setpgid(pid, pid);
  pid_ = pid;
}

ChildProcess::~ChildProcess() {
  if (pid_ <= 0) return;
  ::kill(-pid_, SIGKILL);
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

int ChildProcess::Kill(int signal, absl::Duration timeout) {
  if (pid_ <= 0) return -1;
  // The whole group, so helpers the program started go too.
  if (::kill(-pid_, signal) != 0) ::kill(pid_, signal);
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      pid_ = -1;
      return status;
    }
    if (done < 0 && errno != EINTR) return -1;
    if (absl::Now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

bool ChildProcess::running() {
  if (pid_ <= 0) return false;
  // WNOWAIT leaves an exited child unreaped, so a later Kill() still gets its wait status.
  siginfo_t info{};
  if (::waitid(P_PID, pid_, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return false;
  return info.si_pid == 0;
}

std::string BinDir() {
  if (const char* dir = std::getenv("MKT_BIN_DIR"); dir != nullptr && *dir != '\0') return dir;
  return MKT_BIN_DIR;
}

bool WaitForHttp(int port, std::string_view path, absl::Duration timeout) {
  const std::string request = absl::StrCat(
      "GET ", std::string(path), " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
      timeval io_timeout{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &io_timeout, sizeof(io_timeout));
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &io_timeout, sizeof(io_timeout));
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(static_cast<uint16_t>(port));
      bool ok = false;
      if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
          ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
              static_cast<ssize_t>(request.size())) {
        std::string response;
        char buf[512];
        while (response.find("\r\n") == std::string::npos) {
          const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
          if (n <= 0) break;
          response.append(buf, static_cast<size_t>(n));
        }
        const std::string status_line = response.substr(0, response.find("\r\n"));
        // "HTTP/1.1 200 OK"
        ok = absl::StartsWith(status_line, "HTTP/1.") && status_line.size() >= 12 &&
             status_line.compare(8, 4, " 200") == 0;
      }
      ::close(fd);
      if (ok) return true;
    }
    if (absl::Now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

bool WaitForPort(int port, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    const bool open = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    ::close(fd);
    if (open) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

bool WaitForGrpcHealth(const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout) {
  auto health = grpc::health::v1::Health::NewStub(channel);
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    grpc::ClientContext context;
    rpc::PrepareClientContext(context, absl::Seconds(1), "test-health");
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    if (health->Check(&context, request, &response).ok() &&
        response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return true;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

std::string Tail(const std::string& path, int lines) {
  std::ifstream in(path);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(line);
  std::ostringstream out;
  for (size_t i = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0; i < all.size();
       ++i) {
    out << all[i] << "\n";
  }
  return out.str();
}

}  // namespace mkt::testing
