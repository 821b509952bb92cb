// The settings mechanism alone (core/config/sections.hpp), on sections declared here as a
// component declares its own.

#include <map>
#include <stdexcept>

#include <gtest/gtest.h>

#include "core/config/sections.hpp"

namespace celeriac::config {
namespace {

EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// A component's section.
struct PumpSettings {
  std::string name = "main";
  std::string mode = "auto";
  std::string password;
  int64_t rate = 10;

  Section Keys() {
    return Section("pump")
        .Text("name", name)
        .Text("mode", mode, {"auto", "manual"})
        .Secret("password", password)
        .Int("rate", rate, 1, 100);
  }
};

// The one key this binary reads of another binary's section.
struct ValveQueueSettings {
  std::string queue = "valves";

  Section Keys() { return Section("valve").Text("queue", queue).ReadInPart(); }
};

// A binary's settings: it reads [pump] and [valve] queue; [boiler] is another binary's.
struct TestSettings {
  PumpSettings pump;
  ValveQueueSettings valve;

  void Declare(Sections& sections) {
    sections.Add(pump.Keys()).Add(valve.Keys()).Ignore("boiler");
  }
};

std::string ErrorOf(const Result<TestSettings>& r) { return r.ok() ? "" : r.error().message(); }

TEST(ConfigSections, DefaultsWithoutFileOrEnvironment) {
  auto s = Load<TestSettings>(std::nullopt, Env({}));
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->pump.name, "main");
  EXPECT_EQ(s->pump.rate, 10);
  EXPECT_EQ(s->valve.queue, "valves");
}

TEST(ConfigSections, EnvironmentOverridesFileOverridesDefault) {
  auto s = Parse<TestSettings>("[pump]\nname = \"file\"\nrate = 20\n", "f",
                               Env({{"CELERIAC_PUMP_RATE", "30"},
                                    {"CELERIAC_VALVE_QUEUE", "env-valves"},
                                    {"CELERIAC_BOILER_HEAT", "not read"}}));
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->pump.name, "file");
  EXPECT_EQ(s->pump.mode, "auto");
  EXPECT_EQ(s->pump.rate, 30);
  EXPECT_EQ(s->valve.queue, "env-valves");
}

TEST(ConfigSections, UnknownKeyOfASectionReadIsRefused) {
  EXPECT_EQ(ErrorOf(Parse<TestSettings>("[pump]\nrat = 3\n", "celeriac.toml", Env({}))),
            "config celeriac.toml: unknown key pump.rat");
}

TEST(ConfigSections, UnknownSectionIsRefused) {
  EXPECT_EQ(ErrorOf(Parse<TestSettings>("[pmup]\nrate = 3\n", "celeriac.toml", Env({}))),
            "config celeriac.toml: unknown section [pmup]");
  EXPECT_EQ(ErrorOf(Parse<TestSettings>("rate = 3\n", "celeriac.toml", Env({}))),
            "config celeriac.toml: unknown section [rate]");
  // A known name that is not a table.
  EXPECT_EQ(ErrorOf(Parse<TestSettings>("boiler = 3\n", "celeriac.toml", Env({}))),
            "config celeriac.toml: unknown section [boiler]");
}

TEST(ConfigSections, AnotherBinarysSectionIsAcceptedUnread) {
  auto s = Parse<TestSettings>("[boiler]\nheat = \"very\"\nrate = 0\n[pump]\nrate = 5\n", "f",
                               Env({}));
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->pump.rate, 5);
}

TEST(ConfigSections, SectionReadInPartChecksItsKeysOnly) {
  auto s = Parse<TestSettings>("[valve]\nqueue = \"v2\"\npressure = \"high\"\n", "f", Env({}));
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->valve.queue, "v2");
  EXPECT_EQ(ErrorOf(Parse<TestSettings>("[valve]\nqueue = 2\n", "celeriac.toml", Env({}))),
            "config key valve.queue (from celeriac.toml): expected a string");
}

TEST(ConfigSections, OutOfRangeNamesTheKeyAndWhereTheValueCameFrom) {
  EXPECT_EQ(ErrorOf(Parse<TestSettings>("[pump]\nrate = 0\n", "celeriac.toml", Env({}))),
            "config key pump.rate (from celeriac.toml): 0 is out of range [1, 100]");
  EXPECT_EQ(ErrorOf(Parse<TestSettings>("", "f", Env({{"CELERIAC_PUMP_RATE", "101"}}))),
            "config key pump.rate (from environment variable CELERIAC_PUMP_RATE): 101 is out of "
            "range [1, 100]");
}

TEST(ConfigSections, WrongTypeOrChoiceNamesTheKey) {
  EXPECT_EQ(ErrorOf(Parse<TestSettings>("[pump]\nrate = \"5\"\n", "celeriac.toml", Env({}))),
            "config key pump.rate (from celeriac.toml): expected an integer");
  EXPECT_EQ(ErrorOf(Parse<TestSettings>("", "f", Env({{"CELERIAC_PUMP_RATE", "5x"}}))),
            "config key pump.rate (from environment variable CELERIAC_PUMP_RATE): '5x' is not "
            "an integer");
  EXPECT_EQ(ErrorOf(Parse<TestSettings>("[pump]\nmode = \"off\"\n", "celeriac.toml", Env({}))),
            "config key pump.mode (from celeriac.toml): 'off' is not one of: auto, manual");
}

TEST(ConfigSections, FileErrorsSayWhere) {
  EXPECT_EQ(ErrorOf(Load<TestSettings>(std::string("/nonexistent/celeriac.toml"), Env({}))),
            "config file /nonexistent/celeriac.toml cannot be read");
  EXPECT_EQ(ErrorOf(Parse<TestSettings>("[pump]\nrate = \n", "celeriac.toml", Env({})))
                .rfind("config celeriac.toml:2:", 0),
            0u);
}

TEST(ConfigSections, DescribeShowsTheSectionsReadInOrderWithSecretsMasked) {
  auto s = Parse<TestSettings>("", "f", Env({}));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(Describe(*s), (std::vector<std::string>{
                              "pump.name = \"main\"", "pump.mode = \"auto\"",
                              "pump.password = \"\"", "pump.rate = 10",
                              "valve.queue = \"valves\""}));
  s->pump.password = "hunter2";
  s->pump.name = "amqp://u:hunter3@mq/";
  const auto lines = Describe(*s);
  EXPECT_EQ(lines[0], "pump.name = \"amqp://u:***@mq/\"");
  EXPECT_EQ(lines[2], "pump.password = \"***\"");
}

TEST(ConfigSections, NamingASectionTwiceIsAProgrammingError) {
  Sections sections;
  std::string field;
  sections.Add(Section("pump").Text("name", field)).Ignore("boiler");
  EXPECT_THROW(sections.Add(Section("pump")), std::logic_error);
  EXPECT_THROW(sections.Ignore("pump"), std::logic_error);
  EXPECT_THROW(sections.Ignore("boiler"), std::logic_error);
}

}  // namespace
}  // namespace celeriac::config
