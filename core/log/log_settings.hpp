#pragma once
// [log]: how every process logs (log.hpp).
//
// key          default   meaning
// log.level    info      trace|debug|info|warn|error|critical|off
// log.format   text      text | json (one JSON object a line)

#include <string>

#include "core/config/section.hpp"

namespace celeriac::log {

struct LogSettings {
  std::string level = "info";
  std::string format = "text";

  config::Section Keys() {
    return config::Section("log")
        .Text("level", level, {"trace", "debug", "info", "warn", "error", "critical", "off"})
        .Text("format", format, {"text", "json"});
  }
};

}  // namespace celeriac::log
