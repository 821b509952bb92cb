#pragma once
// The orchestrator's settings: the sections of the shared settings file (core/config) that its
// commands read, each declared, with its keys, defaults and meanings, by the component that
// owns it:
//
//   [database]   core/pg/database_settings.hpp
//   [broker]     core/broker/broker_settings.hpp
//   [log]        core/log/log_settings.hpp
//   [api]        orchestrator/api/api_settings.hpp
//   [discovery]  discovery-client/discovery_settings.hpp
//   [worker]     core/worker/worker_settings.hpp
//   [extractor]  queue only (orchestrator/tasks/task_settings.hpp)
//   [tasks]      orchestrator/tasks/task_settings.hpp
//   [beat]       orchestrator/beat/beat_settings.hpp
//   [retention]  orchestrator/tasks/retention_settings.hpp
//
// The orchestrator checks every key of these sections except [extractor]'s other keys, which
// are the extractor's to check (extractor/pipeline/settings.hpp); any other section is
// refused. A section added to the extractor is named here too (Ignore), or the shared file
// stops loading here (tests/unit/config_test.cpp: OneFileServesBothBinaries).

#include "core/broker/broker_settings.hpp"
#include "core/config/sections.hpp"
#include "core/log/log_settings.hpp"
#include "core/pg/database_settings.hpp"
#include "core/worker/worker_settings.hpp"
#include "discovery-client/discovery_settings.hpp"
#include "orchestrator/api/api_settings.hpp"
#include "orchestrator/beat/beat_settings.hpp"
#include "orchestrator/tasks/retention_settings.hpp"
#include "orchestrator/tasks/task_settings.hpp"

namespace celeriac::orchestrator {

struct Settings {
  pg::DatabaseSettings database;
  broker::BrokerSettings broker;
  log::LogSettings log;
  api::ApiSettings api;
  discovery::DiscoverySettings discovery;
  worker::WorkerSettings worker;
  ExtractionQueueSettings extractor;
  TaskSettings tasks;
  beat::BeatSettings beat;
  RetentionSettings retention;

  void Declare(config::Sections& sections) {
    sections.Add(database.Keys())
        .Add(broker.Keys())
        .Add(log.Keys())
        .Add(api.Keys())
        .Add(discovery.Keys())
        .Add(worker.Keys())
        .Add(extractor.Keys())
        .Add(tasks.Keys())
        .Add(beat.Keys())
        .Add(retention.Keys());
  }
};

}  // namespace celeriac::orchestrator
