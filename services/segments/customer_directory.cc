#include "services/segments/customer_directory.h"

#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"

namespace mkt::segments {

CustomerDirectory::CustomerDirectory() : index_(0, Hash{this}, Eq{this}) {}

size_t CustomerDirectory::Hash::operator()(uint32_t dense_id) const {
  return (*this)(dir->CustomerId(dense_id));
}

size_t CustomerDirectory::Hash::operator()(std::string_view id) const {
  return absl::Hash<absl::string_view>()(absl::string_view(id.data(), id.size()));
}

void CustomerDirectory::Put(uint32_t dense_id, std::string_view customer_id) {
  if (dense_id < spans_.size() && spans_[dense_id] != kNone) return;  // ids never change
  if (customer_id.size() > 0xFFFF) customer_id = customer_id.substr(0, 0xFFFF);
  if (dense_id >= spans_.size()) spans_.resize(static_cast<size_t>(dense_id) + 1, kNone);
  spans_[dense_id] = (static_cast<uint64_t>(arena_.size()) << 16) | customer_id.size();
  arena_.append(customer_id);
  index_.insert(dense_id);
}

std::optional<uint32_t> CustomerDirectory::Find(std::string_view customer_id) const {
  auto it = index_.find(customer_id);
  if (it == index_.end()) return std::nullopt;
  return *it;
}

std::string_view CustomerDirectory::CustomerId(uint32_t dense_id) const {
  if (dense_id >= spans_.size() || spans_[dense_id] == kNone) return {};
  const uint64_t span = spans_[dense_id];
  return std::string_view(arena_).substr(span >> 16, span & 0xFFFF);
}

void CustomerDirectory::Reserve(size_t customers, size_t id_length) {
  arena_.reserve(customers * id_length);
  spans_.reserve(customers);
  index_.reserve(customers);
}

size_t CustomerDirectory::MemoryBytes() const {
  return arena_.capacity() + spans_.capacity() * sizeof(uint64_t) +
         index_.capacity() * (sizeof(uint32_t) + 1);
}

}  // namespace mkt::segments
