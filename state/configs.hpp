#pragma once
// Crawl configs (crawl_configs; the BFF's table, Celeriac writes drafts to it).
//
// Threading: thread-safe (the Pool is).

#include <cstdint>

#include <nlohmann/json.hpp>

#include "core/base/result.hpp"
#include "core/pg/pool.hpp"

namespace celeriac::state {

// Stores `config` as a draft version of data source `data_source_id`'s config (creating the
// data source if it does not exist): a draft never becomes the active config. Its id is from
// 1,000,000 up, so one-off crawls never take the ids that seed files (such as demo/seed.sql)
// give their rows.
Result<int64_t> AddDraftConfig(pg::Pool& pool, int64_t data_source_id,
                               const nlohmann::json& config);

}  // namespace celeriac::state
