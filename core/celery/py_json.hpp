#pragma once
// JSON and repr text exactly as Python writes them, so C++-made messages match a Python
// client's byte for byte: json.dumps defaults (", " and ": " separators, non-ASCII escaped as
// \uXXXX) and repr() of the decoded value (Celery's argsrepr / kwargsrepr).

#include <string>

#include <nlohmann/json.hpp>

namespace celeriac::celery {

std::string PyJsonDump(const nlohmann::ordered_json& value);

}  // namespace celeriac::celery
