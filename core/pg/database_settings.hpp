#pragma once
// [database]: the Postgres every process uses, as a Pool (pool.hpp).
//
// key                         default      meaning
// database.url                postgresql://celeriac:celeriac@127.0.0.1:16432/celeriac
//                                          libpq URL (or key=value string)
// database.pool_size          4            connections kept open
// database.connect_timeout_s  5            per connection attempt
// database.max_attempts       5            tries of a transaction whose error is retryable

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/config/section.hpp"
#include "core/pg/pool.hpp"

namespace celeriac::pg {

struct DatabaseSettings {
  std::string url = "postgresql://celeriac:celeriac@127.0.0.1:16432/celeriac";
  int64_t pool_size = 4;
  int64_t connect_timeout_s = 5;
  int64_t max_attempts = 5;

  config::Section Keys() {
    return config::Section("database")
        .Text("url", url)
        .Int("pool_size", pool_size, 1, 1000)
        .Int("connect_timeout_s", connect_timeout_s, 1, 3600)
        .Int("max_attempts", max_attempts, 1, 100);
  }

  // As pool options; `min_size` raises pool_size for a process that needs that many
  // connections at once (0 = as configured).
  PoolOptions PoolOptionsFor(size_t min_size = 0) const {
    PoolOptions o;
    o.url = url;
    o.size = std::max(static_cast<size_t>(pool_size), min_size);
    o.connect_timeout_s = static_cast<int>(connect_timeout_s);
    o.max_attempts = static_cast<int>(max_attempts);
    return o;
  }
};

}  // namespace celeriac::pg
