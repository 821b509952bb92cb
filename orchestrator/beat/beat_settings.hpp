#pragma once
// [beat]: the beat (beat.hpp), read by the orchestrator.
//
// key                     default          meaning
// beat.catch_up_grace_s   0 (= no limit)   a run missed while no beat ran fires late unless
//                                          older than this
// beat.batch_size         1000             due tasks fired per transaction
// beat.max_sleep_s        60               longest sleep without a notification

#include <cstdint>

#include "core/config/section.hpp"

namespace celeriac::orchestrator::beat {

struct BeatSettings {
  int64_t catch_up_grace_s = 0;
  int64_t batch_size = 1000;
  int64_t max_sleep_s = 60;

  config::Section Keys() {
    return config::Section("beat")
        .Int("catch_up_grace_s", catch_up_grace_s, 0, 366 * 86'400)
        .Int("batch_size", batch_size, 1, 100'000)
        .Int("max_sleep_s", max_sleep_s, 1, 3600);
  }
};

}  // namespace celeriac::orchestrator::beat
