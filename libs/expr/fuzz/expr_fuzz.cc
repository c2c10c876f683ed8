// libFuzzer target for the expression language: any input must parse or fail with a status,
// and whatever parses must check, compile and evaluate (and explain) without crashing.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "libs/expr/expr.h"

namespace {

using mkt::expr::Activation;
using mkt::expr::Environment;
using mkt::expr::FieldInfo;
using mkt::expr::Type;
using mkt::expr::Value;

// Every field name exists; its type follows its first letter, so the checker sees all types.
class AnyEnvironment : public Environment {
 public:
  std::optional<FieldInfo> Field(std::string_view name) const override {
    if (name.empty() || name[0] == 'u') return std::nullopt;
    switch (name[0] % 4) {
      case 0:
        return FieldInfo{Type::kNumber, 0};
      case 1:
        return FieldInfo{Type::kString, 1};
      case 2:
        return FieldInfo{Type::kBool, 2};
      default:
        return FieldInfo{Type::kDynamic, 3};
    }
  }
};

class FixedActivation : public Activation {
 public:
  Value Slot(int slot) const override {
    switch (slot) {
      case 0:
        return Value::Int(42);
      case 1:
        return Value::String("LOAN_A");
      case 2:
        return Value::Bool(true);
      default:
        return Value::Missing();
    }
  }
  Value Tag(std::string_view name) const override {
    return name.size() % 2 == 0 ? Value::Int(static_cast<int64_t>(name.size()))
                                : Value::String(name);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  AnyEnvironment env;
  auto program = mkt::expr::CompileExpression(text, env);
  if (!program.ok()) return 0;
  FixedActivation activation;
  const bool matched = (*program)->Matches(activation);
  const auto explanation = (*program)->Explain(activation);
  if (matched != explanation.result) __builtin_trap();
  return 0;
}
