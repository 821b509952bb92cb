// amqp:// URLs read the way kombu reads them (no network).
#include <gtest/gtest.h>

#include "core/broker/amqp_broker.hpp"
#include "core/broker/broker_factory.hpp"

namespace celeriac::broker {
namespace {

AmqpUrl Parse(const std::string& url) {
  Result<AmqpUrl> r = ParseAmqpUrl(url);
  EXPECT_TRUE(r.ok()) << url << ": " << (r.ok() ? "" : r.error().ToString());
  return r.ok() ? *r : AmqpUrl{};
}

TEST(AmqpUrl, CeleryDoubleSlashMeansTheRootVhost) {
  AmqpUrl u = Parse("amqp://guest:secret@127.0.0.1:16672//");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, 16672);
  EXPECT_EQ(u.user, "guest");
  EXPECT_EQ(u.password, "secret");
  EXPECT_EQ(u.vhost, "/");
  EXPECT_FALSE(u.tls);
}

TEST(AmqpUrl, SingleSlashAndNoPathAlsoMeanTheRootVhost) {
  EXPECT_EQ(Parse("amqp://h:1234/").vhost, "/");
  EXPECT_EQ(Parse("amqp://h:1234").vhost, "/");
  EXPECT_EQ(Parse("amqp://h:1234/%2F").vhost, "/");
  EXPECT_EQ(Parse("amqp://h:1234").port, 1234);
}

TEST(AmqpUrl, NamedVhostAndDefaults) {
  AmqpUrl u = Parse("amqp://broker/prod");
  EXPECT_EQ(u.host, "broker");
  EXPECT_EQ(u.port, 5672);
  EXPECT_EQ(u.user, "guest");
  EXPECT_EQ(u.password, "guest");
  EXPECT_EQ(u.vhost, "prod");
  EXPECT_EQ(Parse("amqp://broker/a%2Fb").vhost, "a/b");
}

TEST(AmqpUrl, AnEmptyHostIsLocalhostAsKombuReadsIt) {
  // Celery's own examples say broker='amqp://'.
  AmqpUrl bare = Parse("amqp://");
  EXPECT_EQ(bare.host, "localhost");
  EXPECT_EQ(bare.port, 5672);
  EXPECT_EQ(bare.user, "guest");
  EXPECT_EQ(bare.password, "guest");
  EXPECT_EQ(bare.vhost, "/");
  EXPECT_EQ(Parse("amqp:///prod").host, "localhost");
  EXPECT_EQ(Parse("amqp:///prod").vhost, "prod");
  AmqpUrl port_only = Parse("amqp://u:p@:5673//?heartbeat=5");
  EXPECT_EQ(port_only.host, "localhost");
  EXPECT_EQ(port_only.port, 5673);
  EXPECT_EQ(port_only.user, "u");
  EXPECT_EQ(port_only.password, "p");
  EXPECT_EQ(port_only.heartbeat.count(), 5);
  EXPECT_EQ(Parse("amqp://?heartbeat=7").heartbeat.count(), 7);
}

TEST(AmqpUrl, HostsCredentialsAndVhostsAsWritten) {
  AmqpUrl v6 = Parse("amqps://[::1]/");
  EXPECT_EQ(v6.host, "::1");  // what the socket connects to, without brackets
  EXPECT_EQ(v6.port, 5671);
  EXPECT_EQ(Parse("amqp://u@h").password, "guest");
  EXPECT_EQ(Parse("amqp://u:@h").password, "");
  EXPECT_EQ(Parse("amqp://u:my pass@h/my vhost").password, "my pass");
  EXPECT_EQ(Parse("amqp://u:my pass@h/my vhost").vhost, "my vhost");
  EXPECT_EQ(Parse("amqp://h/a/../b").vhost, "a/../b");  // a name, not a path
  EXPECT_FALSE(ParseAmqpUrl("amqp://h:0/").ok());
  EXPECT_FALSE(ParseAmqpUrl("amqp://u%zz@h/").ok());
  EXPECT_FALSE(ParseAmqpUrl("amqp://a@b@h/").ok());
}

TEST(AmqpUrl, PercentEncodedCredentials) {
  AmqpUrl u = Parse("amqp://us%40er:p%2Fw%3Ad@h:1//");
  EXPECT_EQ(u.user, "us@er");
  EXPECT_EQ(u.password, "p/w:d");
}

TEST(AmqpUrl, HeartbeatParameter) {
  EXPECT_EQ(Parse("amqp://h//?heartbeat=10").heartbeat.count(), 10);
  EXPECT_EQ(Parse("amqp://h//").heartbeat.count(), -1);
  EXPECT_FALSE(ParseAmqpUrl("amqp://h//?heartbeat=x").ok());
  EXPECT_FALSE(ParseAmqpUrl("amqp://h//?ssl=1").ok());
}

TEST(AmqpUrl, RejectsOtherSchemesAndTls) {
  Result<AmqpUrl> redis = ParseAmqpUrl("redis://h:6379/0");
  ASSERT_FALSE(redis.ok());
  EXPECT_NE(redis.error().message().find("'redis'"), std::string::npos);
  EXPECT_TRUE(ParseAmqpUrl("amqps://h//")->tls);
  AmqpBrokerOptions options;
  options.url = "amqps://h//";
  EXPECT_FALSE(AmqpBroker::Create(options).ok());
  options.url = "amqp://h:notaport//";
  EXPECT_FALSE(AmqpBroker::Create(options).ok());
}

TEST(AmqpUrl, ErrorsNeverQuoteThePassword) {
  // Each is refused; none of the messages may hold "s3cret" in any form.
  for (const char* url :
       {"guest:s3cret@h:5672//", "amqp:/guest:s3cret@h//", "amqp//guest:s3cret@h",
        "amqp://guest:s3cret@h:notaport//", "amqp://guest:s3cret@h//%zz",
        "amqp://guest:s3cret@h//?heartbeat=x", "amqp://guest:s3cret@h//?password=s3cret",
        "redis://guest:s3cret@h/0", "guest:s3cret@amqp://h//"}) {
    AmqpBrokerOptions options;
    options.url = url;
    Result<std::unique_ptr<AmqpBroker>> broker = AmqpBroker::Create(options);
    ASSERT_FALSE(broker.ok()) << url;
    EXPECT_EQ(broker.error().message().find("s3cret"), std::string::npos)
        << url << " -> " << broker.error().message();
    Result<std::unique_ptr<Broker>> made = MakeBroker(url);
    ASSERT_FALSE(made.ok()) << url;
    EXPECT_EQ(made.error().message().find("s3cret"), std::string::npos)
        << url << " -> " << made.error().message();
  }
}

TEST(AmqpBroker, CreateDoesNotConnectAndCloseTwiceIsFine) {
  AmqpBrokerOptions options;
  options.url = "amqp://guest:guest@127.0.0.1:1//";
  options.connection_name = "unit";
  Result<std::unique_ptr<AmqpBroker>> broker = AmqpBroker::Create(options);
  ASSERT_TRUE(broker.ok());
  EXPECT_EQ((*broker)->connection_generation(), 0u);
  EXPECT_EQ((*broker)->consumer_connection_name(), "unit consumer");
  (*broker)->Close();
  (*broker)->Close();
  EXPECT_FALSE((*broker)->Publish(OutgoingMessage{}).ok());
  EXPECT_FALSE((*broker)->Ack(1, 1).ok());
}

TEST(ReplyQueueSpec, IsCeleryRpcReplyQueue) {
  QueueSpec spec = ReplyQueueSpec("6c1d0f1e-oid", std::chrono::hours(24));
  EXPECT_EQ(spec.name, "6c1d0f1e-oid");
  EXPECT_FALSE(spec.durable);
  EXPECT_TRUE(spec.auto_delete);
  EXPECT_FALSE(spec.exclusive);
  EXPECT_FALSE(spec.bind);
  EXPECT_EQ(spec.arguments.dump(), R"({"x-expires":86400000})");
}

}  // namespace
}  // namespace celeriac::broker
