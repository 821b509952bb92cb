// The Celery task codec without a broker: encode/decode round trips, protocol v1 input, and
// every kind of malformed message ending in the error class the Python worker would raise.

#include <gtest/gtest.h>

#include "core/celery/codec.hpp"
#include "core/celery/py_json.hpp"
#include "core/celery/result.hpp"

namespace celeriac::celery {
namespace {

using json = nlohmann::ordered_json;
using namespace std::chrono;

broker::Properties JsonProps(broker::Headers headers) {
  broker::Properties p;
  p.content_type = "application/json";
  p.content_encoding = "utf-8";
  p.headers = std::move(headers);
  return p;
}

const Clock::WallTime kNow = sys_days(year(2026) / 11 / 22) + hours(15) + minutes(31) + seconds(56);

TEST(Codec, EncodesLikeCelery52) {
  TaskMessage m = NewTask("orchestrator.tasks.execute_crawl_task", json::array({42}), json::object());
  m.id = m.root_id = m.correlation_id = "2f9f7d0e-6a8e-4c55-9a8e-0c1d2f3a4b5c";
  m.reply_to = "89566924-5889-3789-84fc-5c6831f3a645";
  m.origin = "gen12474@vm";
  const auto out = EncodeTask(m, "celery", kNow);
  EXPECT_EQ(out.exchange, "");
  EXPECT_EQ(out.routing_key, "celery");
  EXPECT_EQ(out.body,
            R"([[42], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}])");
  const auto& p = out.properties;
  EXPECT_EQ(p.content_type, "application/json");
  EXPECT_EQ(p.content_encoding, "utf-8");
  EXPECT_EQ(p.delivery_mode, 2);
  EXPECT_EQ(p.correlation_id, m.id);
  EXPECT_EQ(p.reply_to, m.reply_to);
  EXPECT_FALSE(p.expiration.has_value());
  std::vector<std::string> keys;
  for (const auto& [k, v] : p.headers.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"lang", "task", "id", "shadow", "eta", "expires",
                                            "group", "group_index", "retries", "timelimit",
                                            "root_id", "parent_id", "argsrepr", "kwargsrepr",
                                            "origin", "ignore_result"}));
  EXPECT_EQ(p.headers["argsrepr"], "[42]");
  EXPECT_EQ(p.headers["kwargsrepr"], "{}");
  EXPECT_EQ(p.headers["timelimit"], json::array({nullptr, nullptr}));
  EXPECT_TRUE(p.headers["retries"].is_number_integer());
}

TEST(Codec, RoundTripKeepsEverything) {
  TaskMessage m = NewTask("extractor.tasks.extract", json::array({5}),
                          json{{"run_id", 9}, {"crawl_task_id", 42}, {"data_source_id", 3}});
  m.retries = 2;
  m.eta_time = kNow + seconds(10);
  m.expires_time = kNow + seconds(60);
  m.time_limit = 30;
  m.soft_time_limit = 20;
  m.parent_id = "p-1";
  m.group = "g-1";
  m.group_index = 3;
  m.shadow = "nice";
  m.ignore_result = true;
  m.priority = 5;
  m.custom_headers = {{"periodic_task_name", "nightly"}, {"x_celeriac_dead_letter_id", 17}};
  m.callbacks = json::array({json{{"task", "a"}, {"args", json::array()}}});
  const auto out = EncodeTask(m, "extraction_queue", kNow);
  EXPECT_EQ(out.properties.expiration, "60000");
  EXPECT_EQ(out.properties.headers["eta"], "2026-11-22T15:32:06.000000+00:00");

  auto decoded = DecodeTask(out.properties, out.body);
  ASSERT_TRUE(decoded.ok()) << decoded.failure().message;
  const auto& d = decoded.message();
  EXPECT_EQ(d.task, m.task);
  EXPECT_EQ(d.id, m.id);
  EXPECT_EQ(d.root_id, m.id);
  EXPECT_EQ(d.args, m.args);
  EXPECT_EQ(d.kwargs.dump(), m.kwargs.dump()) << "kwargs order is kept";
  EXPECT_EQ(d.retries, 2);
  EXPECT_EQ(d.eta_time, m.eta_time);
  EXPECT_EQ(d.expires_time, m.expires_time);
  EXPECT_EQ(d.time_limit, 30);
  EXPECT_EQ(d.soft_time_limit, 20);
  EXPECT_EQ(d.parent_id, "p-1");
  EXPECT_EQ(d.group, "g-1");
  EXPECT_EQ(d.group_index, 3);
  EXPECT_EQ(d.shadow, "nice");
  EXPECT_TRUE(d.ignore_result);
  EXPECT_EQ(d.priority, 5);
  EXPECT_EQ(d.custom_headers.dump(), m.custom_headers.dump());
  EXPECT_EQ(d.callbacks, m.callbacks);
  EXPECT_EQ(d.protocol, 2);
  EXPECT_EQ(d.kwargsrepr, "{'run_id': 9, 'crawl_task_id': 42, 'data_source_id': 3}");
  // Re-encoding a decoded message (a retry, a replay) gives the same bytes.
  const auto again = EncodeTask(d, "extraction_queue", kNow);
  EXPECT_EQ(again.body, out.body);
  EXPECT_EQ(again.properties.headers.dump(), out.properties.headers.dump());
}

TEST(Codec, MinimalMessageNeedsOnlyTaskAndId) {
  auto r = DecodeTask(JsonProps({{"task", "celeriac.ping"}, {"id", "abc"}}), "[[], {}, {}]");
  ASSERT_TRUE(r.ok()) << r.failure().message;
  EXPECT_EQ(r.message().root_id, "abc");
  EXPECT_EQ(r.message().retries, 0);
  EXPECT_FALSE(r.message().time_limit.has_value());
}

TEST(Codec, DecodesProtocolV1) {
  auto r = DecodeTask(JsonProps(json::object()),
                      R"({"task": "celeriac.echo", "id": "v1-id", "args": [1, "a"],
                          "kwargs": {"k": true}, "retries": 1,
                          "eta": "2026-11-22T15:32:06Z", "timelimit": [10, 5], "utc": true})");
  ASSERT_TRUE(r.ok()) << r.failure().message;
  const auto& m = r.message();
  EXPECT_EQ(m.protocol, 1);
  EXPECT_EQ(m.task, "celeriac.echo");
  EXPECT_EQ(m.args, json::array({1, "a"}));
  EXPECT_EQ(m.kwargs, json({{"k", true}}));
  EXPECT_EQ(m.retries, 1);
  EXPECT_EQ(m.eta_time, kNow + seconds(10));
  EXPECT_EQ(m.time_limit, 10);
  EXPECT_EQ(m.soft_time_limit, 5);
  EXPECT_EQ(m.argsrepr, "[1, 'a']");
}

TEST(Codec, UnwrapsKombuTypeMarkers) {
  auto r = DecodeTask(
      JsonProps({{"task", "t"}, {"id", "i"}}),
      R"([[{"__type__": "datetime", "__value__": "2026-11-22T15:31:56"}], {"d": {"__type__": "decimal", "__value__": "1.50"}}, {}])");
  ASSERT_TRUE(r.ok()) << r.failure().message;
  EXPECT_EQ(r.message().args[0], "2026-11-22T15:31:56");
  EXPECT_EQ(r.message().kwargs["d"], "1.50");
}

struct BadCase {
  const char* what;
  broker::Properties props;
  std::string body;
  const char* exc_type;
};

TEST(Codec, MalformedMessagesFailWithCeleryErrorClasses) {
  auto props = [](broker::Headers h) { return JsonProps(std::move(h)); };
  const broker::Headers ok_headers = {{"task", "celeriac.echo"}, {"id", "x-1"}};
  broker::Properties pickle = props(ok_headers);
  pickle.content_type = "application/x-python-serialize";
  broker::Properties gzip = props({{"task", "t"}, {"id", "x"}, {"compression", "application/x-gzip"}});
  const std::vector<BadCase> cases = {
      {"not JSON", props(ok_headers), "[[1], {}, {}", "DecodeError"},
      {"invalid UTF-8", props(ok_headers), "[[\"\xff\"], {}, {}]", "DecodeError"},
      {"unknown kombu marker", props(ok_headers), R"([[{"__type__": "pickle", "__value__": "x"}], {}, {}])", "DecodeError"},
      {"pickle content type", pickle, "[[], {}, {}]", "ContentDisallowed"},
      {"compressed body", gzip, "[[], {}, {}]", "ContentDisallowed"},
      {"no task header, v2 body", props(json::object()), "[[], {}, {}]", "InvalidTaskError"},
      {"two-element body", props(ok_headers), "[[], {}]", "InvalidTaskError"},
      {"args not a list", props(ok_headers), "[{}, {}, {}]", "InvalidTaskError"},
      {"kwargs not a mapping", props(ok_headers), "[[], [], {}]", "InvalidTaskError"},
      {"embed not an object", props(ok_headers), "[[], {}, 5]", "InvalidTaskError"},
      {"id missing", props({{"task", "t"}}), "[[], {}, {}]", "InvalidTaskError"},
      {"task not a string", props({{"task", 5}, {"id", "i"}}), "[[], {}, {}]", "InvalidTaskError"},
      {"retries negative", props({{"task", "t"}, {"id", "i"}, {"retries", -1}}), "[[], {}, {}]", "InvalidTaskError"},
      {"bad eta", props({{"task", "t"}, {"id", "i"}, {"eta", "tomorrow"}}), "[[], {}, {}]", "InvalidTaskError"},
      {"bad expires", props({{"task", "t"}, {"id", "i"}, {"expires", 17}}), "[[], {}, {}]", "InvalidTaskError"},
      {"timelimit with one value", props({{"task", "t"}, {"id", "i"}, {"timelimit", json::array({1})}}), "[[], {}, {}]", "InvalidTaskError"},
      {"v1 kwargs not a mapping", props(json::object()), R"({"task": "t", "id": "i", "args": [], "kwargs": [1]})", "InvalidTaskError"},
      {"empty body", props(ok_headers), "", "DecodeError"},
  };
  for (const auto& c : cases) {
    auto r = DecodeTask(c.props, c.body);
    ASSERT_FALSE(r.ok()) << c.what << " was accepted";
    EXPECT_EQ(r.failure().exc_type, c.exc_type) << c.what << ": " << r.failure().message;
    EXPECT_FALSE(r.failure().message.empty()) << c.what;
  }
  // A failure still names the task when the headers did.
  auto r = DecodeTask(props(ok_headers), "not json");
  EXPECT_EQ(r.failure().task, "celeriac.echo");
  EXPECT_EQ(r.failure().id, "x-1");
}

TEST(PyJson, WritesWhatPythonJsonDumpsWrites) {
  EXPECT_EQ(PyJsonDump(json::parse(R"({"b": [1, 2.5, null, true], "a": "x"})")),
            R"({"b": [1, 2.5, null, true], "a": "x"})");
  EXPECT_EQ(PyJsonDump(json("prix-\xc3\xa9t\xc3\xa9 \"q\"\n")), R"("prix-\u00e9t\u00e9 \"q\"\n")");
  EXPECT_EQ(PyJsonDump(json("\xf0\x9f\x98\x80")), R"("\ud83d\ude00")");
  EXPECT_EQ(PyJsonDump(json::object()), "{}");
  EXPECT_EQ(PyJsonDump(json::array()), "[]");
}

TEST(PyRepr, ShowsArgumentsAsPythonDoes) {
  EXPECT_EQ(PyRepr(json::array({42})), "[42]");
  EXPECT_EQ(PyRepr(json::array({7, "pricing"})), "[7, 'pricing']");
  EXPECT_EQ(PyRepr(json{{"depth", 2}, {"ok", true}, {"n", nullptr}}),
            "{'depth': 2, 'ok': True, 'n': None}");
  EXPECT_EQ(PyRepr(json("it's")), "\"it's\"");
  EXPECT_EQ(PyRepr(json("a'b\"c")), "'a\\'b\"c'");
  EXPECT_EQ(PyRepr(json("\xc3\xa9t\xc3\xa9\n")), "'\xc3\xa9t\xc3\xa9\\n'");
  EXPECT_EQ(PyRepr(json(1.5)), "1.5");
  const auto long_repr = PyRepr(json(std::string(5000, 'x')), 1024);
  EXPECT_EQ(long_repr.size(), 1027u);
  EXPECT_EQ(long_repr.substr(1024), "...");
}

TEST(Iso8601, ParsesWhatCeleryAndDateutilAccept) {
  EXPECT_EQ(ParseIso8601("2026-11-22T15:31:56+00:00"), kNow);
  EXPECT_EQ(ParseIso8601("2026-11-22T15:31:56Z"), kNow);
  EXPECT_EQ(ParseIso8601("2026-11-22 15:31:56"), kNow) << "naive is UTC";
  EXPECT_EQ(ParseIso8601("2026-11-22T16:31:56+01:00"), kNow);
  EXPECT_EQ(ParseIso8601("2026-11-22T10:31:56-0500"), kNow);
  EXPECT_EQ(ParseIso8601("2026-11-22T15:31:56.871728+00:00"), kNow + microseconds(871728));
  EXPECT_EQ(ParseIso8601("2026-11-22T15:31"), kNow - seconds(56));
  EXPECT_EQ(ParseIso8601("2026-11-22"), sys_days(year(2026) / 11 / 22));
  for (const char* bad : {"", "tomorrow", "2026-13-01T00:00:00", "2026-02-30", "2026-11-22T25:00",
                          "2026-11-22T15:31:56+0", "2026-11-22T15:31:56 junk", "2026-11-22T15:31:56."})
    EXPECT_FALSE(ParseIso8601(bad).has_value()) << bad;
}

TEST(Results, RpcBodiesMatchCeleryBackends) {
  TaskMessage t = NewTask("x", json::array(), json::object());
  t.id = t.correlation_id = "t-1";
  t.reply_to = "client-oid";
  auto ok = MakeResultMessage(t, State::kSuccess, json{{"pages", 3}}, std::nullopt);
  EXPECT_EQ(ok.exchange, "");
  EXPECT_EQ(ok.routing_key, "client-oid");
  EXPECT_EQ(ok.properties.correlation_id, "t-1");
  EXPECT_EQ(ok.properties.delivery_mode, 1);
  EXPECT_EQ(ok.body,
            R"({"task_id": "t-1", "status": "SUCCESS", "result": {"pages": 3}, "traceback": null, "children": []})");
  auto exc = ExceptionInfo::Make("NotRegistered", "celery.exceptions", "'nope'");
  auto failed = MakeResultMessage(t, State::kFailure, exc.ToJson(), std::string("Traceback"));
  EXPECT_EQ(failed.body,
            R"({"task_id": "t-1", "status": "FAILURE", "result": {"exc_type": "NotRegistered", "exc_message": ["'nope'"], "exc_module": "celery.exceptions"}, "traceback": "Traceback", "children": []})");
  EXPECT_TRUE(IsReady(State::kFailure));
  EXPECT_FALSE(IsReady(State::kRetry));
  EXPECT_EQ(ToString(State::kRetry), "RETRY");
}

}  // namespace
}  // namespace celeriac::celery
