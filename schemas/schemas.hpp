#pragma once
// The JSON Schemas of this folder, compiled in, by name: "crawl_config",
// "tasks/orchestrator.tasks.execute_crawl_task.body", ... (the path without ".schema.json").

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/base/embedded.hpp"
#include "core/base/result.hpp"
#include "core/schema/validator.hpp"

namespace celeriac {

std::span<const EmbeddedFile> EmbeddedSchemas();

namespace schemas {

// Names of every embedded schema.
std::vector<std::string> Names();

// The compiled validator for `name`, built once and cached; NotFound for an unknown name.
Result<std::shared_ptr<const schema::SchemaValidator>> Get(const std::string& name);

}  // namespace schemas
}  // namespace celeriac
