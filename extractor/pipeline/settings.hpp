#pragma once
// The extractor's settings: the sections of the shared settings file (core/config) it reads,
// each declared, with its keys, defaults and meanings, by the component that owns it:
//
//   [database]   core/pg/database_settings.hpp
//   [broker]     core/broker/broker_settings.hpp
//   [log]        core/log/log_settings.hpp
//   [worker]     core/worker/worker_settings.hpp (max_held_eta; the rest is for the
//                orchestrator's worker, checked here too)
//   [extractor]  extractor/pipeline/extractor_settings.hpp
//
// It checks every key of these. The orchestrator's sections, [api] [discovery] [tasks] [beat]
// [retention], are accepted unread (the orchestrator checks them); any other section is
// refused. A section added to the orchestrator is named here too, or the shared file stops
// loading here (tests/unit/config_test.cpp: OneFileServesBothBinaries).

#include "core/broker/broker_settings.hpp"
#include "core/config/sections.hpp"
#include "core/log/log_settings.hpp"
#include "core/pg/database_settings.hpp"
#include "core/worker/worker_settings.hpp"
#include "extractor/pipeline/extractor_settings.hpp"

namespace celeriac::extractor {

struct Settings {
  pg::DatabaseSettings database;
  broker::BrokerSettings broker;
  log::LogSettings log;
  worker::WorkerSettings worker;
  ExtractorSettings extractor;

  void Declare(config::Sections& sections) {
    sections.Add(database.Keys())
        .Add(broker.Keys())
        .Add(log.Keys())
        .Add(worker.Keys())
        .Add(extractor.Keys())
        .Ignore("api")
        .Ignore("discovery")
        .Ignore("tasks")
        .Ignore("beat")
        .Ignore("retention");
  }
};

}  // namespace celeriac::extractor
