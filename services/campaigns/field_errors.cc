#include "services/campaigns/field_errors.h"

#include "libs/core/status.h"

namespace mkt::campaigns {

bool FieldErrors::Mentions(std::string_view field) const {
  for (const Entry& e : errors_) {
    std::string_view f = e.field;
    if (f == field) return true;
    if (f.size() > field.size() && f.substr(0, field.size()) == field &&
        (f[field.size()] == '.' || f[field.size()] == '[')) {
      return true;
    }
  }
  return false;
}

absl::Status FieldErrors::ToStatus() const {
  if (errors_.empty()) return absl::OkStatus();
  std::string message = errors_.size() == 1 ? std::string("invalid field: ")
                                            : std::to_string(errors_.size()) + " invalid fields: ";
  for (size_t i = 0; i < errors_.size(); ++i) {
    if (i > 0) message += "; ";
    message += errors_[i].field + ": " + errors_[i].message;
  }
  return InvalidArgument(errors_.front().field, message);
}

void FieldErrors::AddTo(
    google::protobuf::RepeatedPtrField<::marketing::campaigns::v1::FieldError>* out) const {
  for (const Entry& e : errors_) {
    auto* fe = out->Add();
    fe->set_field(e.field);
    fe->set_message(e.message);
  }
}

}  // namespace mkt::campaigns
