#include "libs/config/config.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "libs/core/status.h"
#include "nlohmann/json.hpp"

namespace mkt::config {
namespace internal {
namespace {

std::string EnvPrefix(const std::string& service) {
  std::string prefix = "MKT_";
  for (char c : service) prefix.push_back(c == '-' ? '_' : static_cast<char>(std::toupper(c)));
  prefix.push_back('_');
  return prefix;
}

std::string EnvName(const std::string& prefix, const std::string& key) {
  std::string name = prefix;
  for (char c : key) name.push_back(static_cast<char>(std::toupper(c)));
  return name;
}

const FieldSpec* FindField(const std::vector<FieldSpec>& fields, const std::string& key) {
  for (const auto& f : fields) {
    if (f.key == key) return &f;
  }
  return nullptr;
}

std::string Join(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out += sep;
    out += p;
  }
  return out;
}

}  // namespace

absl::Status ParseInt(const std::string& text, int64_t* out) {
  if (text.empty()) return absl::InvalidArgumentError("expected an integer, got an empty value");
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end == text.c_str() || *end != '\0') {
    return absl::InvalidArgumentError("expected an integer, got \"" + text + "\"");
  }
  *out = v;
  return absl::OkStatus();
}

absl::Status ParseBool(const std::string& text, bool* out) {
  if (text == "true" || text == "1") {
    *out = true;
  } else if (text == "false" || text == "0") {
    *out = false;
  } else {
    return absl::InvalidArgumentError("expected true or false, got \"" + text + "\"");
  }
  return absl::OkStatus();
}

absl::Status ParseDouble(const std::string& text, double* out) {
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || errno != 0 || end == text.c_str() || *end != '\0') {
    return absl::InvalidArgumentError("expected a number, got \"" + text + "\"");
  }
  *out = v;
  return absl::OkStatus();
}

absl::Status LoadInto(const std::string& service, const std::vector<FieldSpec>& fields,
                      const std::string& file_path, char** environ, void* target) {
  std::vector<std::string> problems;
  auto apply = [&](const std::string& key, const std::string& text, const std::string& source) {
    const FieldSpec* field = FindField(fields, key);
    if (field == nullptr) {
      problems.push_back("unknown key \"" + key + "\" in " + source);
      return;
    }
    absl::Status s = field->set_from_text(target, text);
    if (!s.ok()) {
      problems.push_back("bad value for \"" + key + "\" in " + source + ": " +
                         std::string(s.message()));
    }
  };

  if (!file_path.empty()) {
    std::ifstream in(file_path);
    if (!in) {
      return InvalidArgument("config", "cannot read config file " + file_path);
    }
    nlohmann::json doc;
    try {
      in >> doc;
    } catch (const nlohmann::json::exception& e) {
      return InvalidArgument("config",
                             "config file " + file_path + " is not valid JSON: " + e.what());
    }
    if (!doc.is_object()) {
      return InvalidArgument(
          "config", "config file " + file_path + " must hold a JSON object of key: value pairs");
    }
    for (const auto& [key, value] : doc.items()) {
      std::string source = "config file " + file_path;
      if (value.is_string()) {
        apply(key, value.get<std::string>(), source);
      } else if (value.is_boolean()) {
        apply(key, value.get<bool>() ? "true" : "false", source);
      } else if (value.is_number()) {
        apply(key, value.dump(), source);
      } else {
        problems.push_back("bad value for \"" + key + "\" in " + source +
                           ": expected a string, number or boolean");
      }
    }
  }

  const std::string prefix = EnvPrefix(service);
  for (char** env = environ; env != nullptr && *env != nullptr; ++env) {
    std::string entry(*env);
    if (entry.rfind(prefix, 0) != 0) continue;
    size_t eq = entry.find('=');
    if (eq == std::string::npos) continue;
    std::string name = entry.substr(0, eq);
    std::string key = name.substr(prefix.size());
    for (char& c : key) c = static_cast<char>(std::tolower(c));
    apply(key, entry.substr(eq + 1), "environment variable " + name);
  }

  if (!problems.empty()) {
    return InvalidArgument("config", "configuration of " + service +
                                         " is invalid: " + Join(problems, "; ") +
                                         " (run with --describe-config to list the keys)");
  }
  return absl::OkStatus();
}

std::string Describe(const std::string& service, const std::vector<FieldSpec>& fields,
                     const void* target) {
  const std::string prefix = EnvPrefix(service);
  std::ostringstream out;
  out << "Configuration keys of " << service
      << " (JSON file via --config, overridden by environment variables):\n";
  for (const auto& f : fields) {
    out << "  " << f.key << " (" << f.type_name << ", env " << EnvName(prefix, f.key) << ") = "
        << (f.secret                  ? "<secret>"
            : f.type_name == "string" ? "\"" + f.get_text(target) + "\""
                                      : f.get_text(target))
        << "\n      " << f.doc << "\n";
  }
  return out.str();
}

}  // namespace internal

absl::StatusOr<CommandLine> ParseCommandLine(int argc, char** argv) {
  CommandLine cl;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--config" && i + 1 < argc) {
      cl.config_path = argv[++i];
    } else if (arg.rfind("--config=", 0) == 0) {
      cl.config_path = arg.substr(9);
    } else if (arg == "--describe-config") {
      cl.describe = true;
    } else {
      return InvalidArgument("argv", "unknown argument \"" + arg + "\"; usage: " + argv[0] +
                                         " [--config FILE.json] [--describe-config]");
    }
  }
  return cl;
}

}  // namespace mkt::config
