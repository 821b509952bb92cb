#pragma once
// Section: the keys of one `[section]` of the settings file, each bound to a field of the
// settings struct of the component that owns the section. The component declares them next to
// its struct, with the table of its keys, defaults and meanings:
//
//   struct DatabaseSettings {
//     std::string url = "postgresql://...";
//     int64_t pool_size = 4;
//     config::Section Keys() {
//       return config::Section("database").Text("url", url).Int("pool_size", pool_size, 1, 1000);
//     }
//   };
//
// A Section holds pointers to the fields: it is used at once (config::Sections, sections.hpp)
// and never outlives the struct it was made from.

#include <cstdint>
#include <limits>
#include <string>
#include <variant>
#include <vector>

namespace celeriac::config {

class Section {
 public:
  // One key: the field it fills and the values it accepts.
  struct Key {
    std::string name;  // within the section
    std::variant<std::string*, int64_t*> field;
    int64_t min = std::numeric_limits<int64_t>::min();
    int64_t max = std::numeric_limits<int64_t>::max();
    std::vector<std::string> choices;  // for strings: allowed values, empty = any
    bool secret = false;               // masked whole by Describe()
  };

  explicit Section(std::string name) : name_(std::move(name)) {}

  // A string; when `choices` is not empty, it must be one of them.
  Section& Text(std::string key, std::string& field, std::vector<std::string> choices = {});
  // A string shown as "***" (when set) by `config show`: a token, not a URL (URLs are shown
  // with their password masked).
  Section& Secret(std::string key, std::string& field);
  // A whole number in [min, max].
  Section& Int(std::string key, int64_t& field, int64_t min, int64_t max);

  // The section belongs to another binary, which declares and checks all its keys; this binary
  // reads only the keys declared here and leaves the others unread (the orchestrator reads
  // extractor.queue, where it sends the extractor's work).
  Section& ReadInPart();

  const std::string& name() const { return name_; }
  const std::vector<Key>& keys() const { return keys_; }
  bool read_in_part() const { return read_in_part_; }

 private:
  std::string name_;
  std::vector<Key> keys_;
  bool read_in_part_ = false;
};

}  // namespace celeriac::config
