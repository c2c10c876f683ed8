// Validation that reports every problem at once, each against the field it is about, so an
// operator filling in a step sees all that is wrong rather than one error per round trip.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "marketing/campaigns/v1/campaigns.pb.h"

namespace mkt::campaigns {

class FieldErrors {
 public:
  void Add(std::string field, std::string message) {
    errors_.push_back({std::move(field), std::move(message)});
  }
  bool empty() const { return errors_.empty(); }
  size_t size() const { return errors_.size(); }

  struct Entry {
    std::string field;
    std::string message;
  };
  const std::vector<Entry>& entries() const { return errors_; }

  // True when some error is about `field` or a field below it ("audience" matches
  // "audience.include[0].segment_id").
  bool Mentions(std::string_view field) const;

  void Append(const FieldErrors& other) {
    errors_.insert(errors_.end(), other.errors_.begin(), other.errors_.end());
  }

  // OK when empty; otherwise INVALID_ARGUMENT whose field is the first error's and whose message
  // lists every error as "field: message; field: message".
  absl::Status ToStatus() const;

  void AddTo(google::protobuf::RepeatedPtrField<::marketing::campaigns::v1::FieldError>* out) const;

 private:
  std::vector<Entry> errors_;
};

}  // namespace mkt::campaigns
