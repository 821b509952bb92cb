// `orchestrator send-task NAME`: publishes a Celery task exactly as Python's app.send_task does
// (like `celery call`), and prints its id. With --wait, waits for its result on an rpc:// reply
// queue and prints it.

#include <unistd.h>

#include <condition_variable>
#include <iostream>
#include <mutex>

#include "core/app/startup.hpp"
#include "core/base/ids.hpp"
#include "core/base/secrets.hpp"
#include "core/broker/broker_factory.hpp"
#include "core/celery/codec.hpp"
#include "orchestrator/commands/commands.hpp"
#include "orchestrator/commands/settings.hpp"

namespace celeriac::orchestrator {
namespace {

using json = nlohmann::ordered_json;

struct SendFlags {
  std::string name;
  std::string args = "[]";
  std::string kwargs = "{}";
  std::string queue = "celery";
  std::string id;
  std::vector<std::string> headers;  // key=json-value
  double countdown = 0;
  double expires = 0;
  int priority = 0;
  bool wait = false;
  double timeout = 30;
};

int Send(const CommonOptions& common, const SendFlags& f) {
  auto settings = app::Start<Settings>(common.config_path);
  if (!settings) {
    std::cerr << "orchestrator send-task: " << settings.error().message() << "\n";
    return 2;
  }
  const auto args = json::parse(f.args, nullptr, false);
  const auto kwargs = json::parse(f.kwargs, nullptr, false);
  if (args.is_discarded() || !args.is_array()) {
    std::cerr << "orchestrator send-task: --args must be a JSON array\n";
    return 2;
  }
  if (kwargs.is_discarded() || !kwargs.is_object()) {
    std::cerr << "orchestrator send-task: --kwargs must be a JSON object\n";
    return 2;
  }
  auto m = celery::NewTask(f.name, args, kwargs);
  if (!f.id.empty()) m.id = m.root_id = m.correlation_id = f.id;
  m.origin = celery::ProducerOrigin();
  m.priority = static_cast<uint8_t>(f.priority);
  const auto now = std::chrono::system_clock::now();
  if (f.countdown > 0)
    m.eta_time = now + std::chrono::milliseconds(static_cast<int64_t>(f.countdown * 1000));
  if (f.expires > 0)
    m.expires_time = now + std::chrono::milliseconds(static_cast<int64_t>(f.expires * 1000));
  for (const auto& h : f.headers) {
    const auto eq = h.find('=');
    if (eq == std::string::npos) {
      std::cerr << "orchestrator send-task: --header takes key=value\n";
      return 2;
    }
    auto value = json::parse(h.substr(eq + 1), nullptr, false);
    m.custom_headers[h.substr(0, eq)] = value.is_discarded() ? json(h.substr(eq + 1)) : value;
  }

  auto broker = broker::MakeBroker(settings->broker.url);
  if (!broker) {
    std::cerr << "orchestrator send-task: broker.url: "
              << MaskSecrets(broker.error().message(), settings->broker.url) << "\n";
    return 2;
  }
  if (auto st = (*broker)->Connect(); !st) {
    std::cerr << "orchestrator send-task: broker " << MaskSecrets(settings->broker.url) << ": "
              << MaskSecrets(st.error().message(), settings->broker.url) << "\n";
    return 1;
  }
  broker::QueueSpec spec;
  spec.name = spec.exchange = spec.routing_key = f.queue;
  if (auto st = (*broker)->Declare(spec); !st) {
    std::cerr << "orchestrator send-task: broker " << MaskSecrets(settings->broker.url) << ": "
              << MaskSecrets(st.error().message(), settings->broker.url) << "\n";
    return 1;
  }

  std::mutex mutex;
  std::condition_variable cv;
  std::optional<json> final_reply;
  if (f.wait) {
    m.reply_to = NewUuid4();
    if (auto st = (*broker)->Declare(broker::ReplyQueueSpec(m.reply_to, std::chrono::hours(24)));
        !st) {
      std::cerr << "orchestrator send-task: broker " << MaskSecrets(settings->broker.url) << ": "
              << MaskSecrets(st.error().message(), settings->broker.url) << "\n";
      return 1;
    }
    broker::ConsumerId consumer = 0;
    auto id = (*broker)->Consume({m.reply_to, 0, ""}, [&](broker::Delivery&& d) {
      (void)(*broker)->Ack(consumer, d.delivery_tag);
      auto body = json::parse(d.body, nullptr, false);
      if (body.is_discarded() || body.value("task_id", "") != m.id) return;
      const std::string status = body.value("status", "");
      std::cerr << "state " << status << "\n";
      if (status == "SUCCESS" || status == "FAILURE" || status == "REVOKED") {
        std::lock_guard lock(mutex);
        final_reply = body;
        cv.notify_all();
      }
    });
    if (!id) {
      std::cerr << "orchestrator send-task: " << id.error().message() << "\n";
      return 1;
    }
    consumer = *id;
  }
  if (auto st = (*broker)->Publish(celery::EncodeTask(m, f.queue)); !st) {
    std::cerr << "orchestrator send-task: broker " << MaskSecrets(settings->broker.url) << ": "
              << MaskSecrets(st.error().message(), settings->broker.url) << "\n";
    return 1;
  }
  std::cout << m.id << "\n" << std::flush;
  if (!f.wait) return 0;
  std::unique_lock lock(mutex);
  if (!cv.wait_for(lock, std::chrono::milliseconds(static_cast<int64_t>(f.timeout * 1000)),
                   [&] { return final_reply.has_value(); })) {
    std::cerr << "orchestrator send-task: no result within " << f.timeout << " s\n";
    return 3;
  }
  std::cout << final_reply->dump() << "\n";
  return (*final_reply)["status"] == "SUCCESS" ? 0 : 1;
}

}  // namespace

void RegisterSendTask(CLI::App& app, const CommonOptions& common, int& exit_code) {
  auto* cmd = app.add_subcommand("send-task", "Publish a Celery task as Python's send_task does");
  auto f = std::make_shared<SendFlags>();
  cmd->add_option("name", f->name, "Task name, e.g. orchestrator.tasks.execute_crawl_task")
      ->required();
  cmd->add_option("--args", f->args, "Positional arguments, a JSON array");
  cmd->add_option("--kwargs", f->kwargs, "Keyword arguments, a JSON object");
  cmd->add_option("-Q,--queue", f->queue, "Queue (routing key on the default exchange)");
  cmd->add_option("--id", f->id, "Task id (default: a new uuid4)");
  cmd->add_option("--header", f->headers, "Custom header key=value (value parsed as JSON if it is)");
  cmd->add_option("--countdown", f->countdown, "Seconds until the task may run (eta)");
  cmd->add_option("--expires", f->expires, "Seconds until the task expires");
  cmd->add_option("--priority", f->priority, "AMQP priority 0-255")->check(CLI::Range(0, 255));
  cmd->add_flag("--wait", f->wait, "Wait for the result (rpc://) and print it");
  cmd->add_option("--timeout", f->timeout, "Seconds to wait with --wait");
  cmd->callback([&common, &exit_code, f] { exit_code = Send(common, *f); });
}

}  // namespace celeriac::orchestrator
