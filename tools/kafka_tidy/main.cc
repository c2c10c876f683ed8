// mkt-kafka-tidy HOST:PORT: deletes the topics earlier test runs left on a local broker (names
// with a random part that are not the platform's "mkt.<name>.v<N>"), and prints how many. `./dev
// test` runs it before the tests: a broker holding thousands of such topics (2.8 GB, 4,662 topics
// after some weeks) spends its first minute after a restart loading them, and the first tests then
// time out creating theirs. The platform's own topics (mkt.*) and Kafka's (__*) never match. Exits
// 0 when done (nothing to delete included), 1 when the broker refused, 2 on bad usage.
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "libs/kafka/kafka.h"

namespace {

// The platform's topics: "mkt.<name>.v<N>" (ARCHITECTURE.md), and Kafka's own "__…".
bool IsPlatformTopic(std::string_view name) {
  if (name.substr(0, 2) == "__") return true;
  if (name.substr(0, 4) != "mkt.") return false;
  const size_t dot = name.rfind('.');
  if (dot <= 4 || dot + 2 > name.size() || name[dot + 1] != 'v') return false;
  for (char c : name.substr(dot + 2)) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return name.substr(4, dot - 4).find('.') == std::string_view::npos;
}

// Any other topic with a random part (a run of 6 or more lowercase hex digits): libs/testing's
// NewTopic ("<prefix>.<12 hex digits>"), what tests derive from it ("<topic>.dead") and the
// benchmarks' and check-api's topics.
bool IsTestTopic(std::string_view name) {
  if (IsPlatformTopic(name)) return false;
  int run = 0;
  for (char c : name) {
    const bool hex = absl::ascii_isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f');
    run = hex ? run + 1 : 0;
    if (run >= 6) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " HOST:PORT   (the local Kafka broker)\n";
    return 2;
  }
  const mkt::kafka::ClientOptions options{.bootstrap_servers = argv[1],
                                          .client_id = "mkt-kafka-tidy"};
  auto topics = mkt::kafka::ListTopics(options);
  if (!topics.ok()) {
    std::cerr << "kafka-tidy: " << topics.status() << "\n";
    return 1;
  }
  std::vector<std::string> left;
  for (const std::string& t : *topics) {
    if (IsTestTopic(t)) left.push_back(t);
  }
  if (absl::Status s = mkt::kafka::DeleteTopics(options, left); !s.ok()) {
    std::cerr << "kafka-tidy: " << s << "\n";
    return 1;
  }
  std::cout << "kafka-tidy: deleted " << left.size() << " topics left by earlier test runs ("
            << topics->size() - left.size() << " kept)\n";
  return 0;
}
