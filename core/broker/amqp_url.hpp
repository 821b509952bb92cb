#pragma once
// AmqpUrl: an amqp:// or amqps:// URL decoded the way kombu reads it, so that a Celery app's
// broker_url means the same to Celeriac.
//
//  * vhost: the path minus its leading '/', percent-decoded; empty means "/". So Celery's "//",
//    "/%2F", "/" and no path at all all name vhost "/".
//  * user, password, host and port: read by core/url (curl's parser) and percent-decoded; an
//    empty host is localhost, a missing user or password "guest", the port 5672 by default
//    (amqps: 5671).
//  * query: heartbeat=<seconds> (0..65535) is honoured; every other parameter kombu knows is a
//    transport option we do not implement, so it is refused rather than silently ignored.
//
// Errors never quote the URL: it may hold a password.

#include <chrono>
#include <string>

#include "core/base/result.hpp"

namespace celeriac::broker {

// The parts of an amqp:// URL, decoded.
struct AmqpUrl {
  std::string host;
  int port = 5672;
  std::string user;
  std::string password;
  std::string vhost;
  bool tls = false;                   // amqps://
  std::chrono::seconds heartbeat{-1};  // from ?heartbeat=, -1 when absent
};

// Parses amqp:// and amqps:// URLs the way kombu reads them (InvalidArgument otherwise).
Result<AmqpUrl> ParseAmqpUrl(const std::string& url);

}  // namespace celeriac::broker
