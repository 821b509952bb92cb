#include "core/config/section.hpp"

namespace celeriac::config {

Section& Section::Text(std::string key, std::string& field, std::vector<std::string> choices) {
  Key k;
  k.name = std::move(key);
  k.field = &field;
  k.choices = std::move(choices);
  keys_.push_back(std::move(k));
  return *this;
}

Section& Section::Secret(std::string key, std::string& field) {
  Text(std::move(key), field);
  keys_.back().secret = true;
  return *this;
}

Section& Section::Int(std::string key, int64_t& field, int64_t min, int64_t max) {
  Key k;
  k.name = std::move(key);
  k.field = &field;
  k.min = min;
  k.max = max;
  keys_.push_back(std::move(k));
  return *this;
}

Section& Section::ReadInPart() {
  read_in_part_ = true;
  return *this;
}

}  // namespace celeriac::config
