// RobotsRules without a network: RFC 9309's examples, Google's documented matching and
// precedence examples, group selection, crawl-delay, sitemaps, malformed input, size limits and
// the fetch-status mapping.

#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <string>

#include "extractor/engine/robots.hpp"

namespace celeriac::extractor {
namespace {

using std::chrono::milliseconds;

constexpr const char* kUa = "CeleriacBot/1.0 (+https://celeriac.example/bot)";

bool Allowed(std::string_view robots, std::string_view url, std::string_view ua = kUa) {
  return RobotsRules::Parse(robots, ua).Allowed(url);
}

// One `user-agent: *` group holding `rules`.
std::string Star(std::string_view rules) { return "user-agent: *\n" + std::string(rules); }

// ---- RFC 9309 section 5 ----

constexpr const char* kRfcExample =
    "User-Agent: *\n"
    "Disallow: *.gif$\n"
    "Disallow: /example/\n"
    "Allow: /publications/\n"
    "\n"
    "User-Agent: foobot\n"
    "Disallow:/\n"
    "Allow:/example/page.html\n"
    "Allow:/example/allowed.gif\n"
    "\n"
    "User-Agent: barbot\n"
    "User-Agent: bazbot\n"
    "Disallow: /example/page.html\n"
    "\n"
    "User-Agent: quxbot\n"
    "\n"
    "EOF\n";

TEST(Robots, RfcExampleSpecificGroup) {
  const auto foobot = RobotsRules::Parse(kRfcExample, "foobot");
  EXPECT_TRUE(foobot.Allowed("/example/page.html"));
  EXPECT_TRUE(foobot.Allowed("/example/allowed.gif"));
  EXPECT_FALSE(foobot.Allowed("/example/other.html"));
  EXPECT_FALSE(foobot.Allowed("/"));
  EXPECT_FALSE(foobot.Allowed("/publications/"));  // the * group does not apply to foobot
  EXPECT_EQ(foobot.rule_count(), 3u);
}

TEST(Robots, RfcExampleSharedGroupAndEmptyGroup) {
  for (const char* bot : {"barbot", "BazBot/2.1"}) {
    const auto rules = RobotsRules::Parse(kRfcExample, bot);
    EXPECT_FALSE(rules.Allowed("/example/page.html")) << bot;
    EXPECT_FALSE(rules.Allowed("/example/page.html5")) << bot;  // a prefix match
    EXPECT_TRUE(rules.Allowed("/example/page.htm")) << bot;
    EXPECT_TRUE(rules.Allowed("/example/other.gif")) << bot;
  }
  // quxbot's group has no rules: everything allowed, the * group ignored.
  const auto qux = RobotsRules::Parse(kRfcExample, "quxbot");
  EXPECT_TRUE(qux.Allowed("/example/"));
  EXPECT_TRUE(qux.Allowed("/a.gif"));
  EXPECT_EQ(qux.rule_count(), 0u);
}

TEST(Robots, RfcExampleGlobalGroup) {
  EXPECT_FALSE(Allowed(kRfcExample, "/a.gif"));
  EXPECT_FALSE(Allowed(kRfcExample, "/x/y/a.gif"));
  EXPECT_TRUE(Allowed(kRfcExample, "/a.gif?x=1"));  // $ anchors at the end of path + query
  EXPECT_FALSE(Allowed(kRfcExample, "/example/"));
  EXPECT_FALSE(Allowed(kRfcExample, "/example/x.html"));
  EXPECT_TRUE(Allowed(kRfcExample, "/example"));
  EXPECT_TRUE(Allowed(kRfcExample, "/publications/"));
  EXPECT_TRUE(Allowed(kRfcExample, "/"));
}

TEST(Robots, RfcLongestMatch) {
  const char* robots =
      "User-Agent: foobot\n"
      "Allow: /example/page/\n"
      "Disallow: /example/page/disallowed.gif\n";
  EXPECT_TRUE(Allowed(robots, "/example/page/", "foobot"));
  EXPECT_TRUE(Allowed(robots, "/example/page/other.gif", "foobot"));
  EXPECT_FALSE(Allowed(robots, "/example/page/disallowed.gif", "foobot"));
}

TEST(Robots, RfcPercentEncoding) {
  // RFC 9309 2.2.2's table (the rows that Google's parser also honours).
  EXPECT_FALSE(Allowed(Star("Disallow: /foo/bar?baz=quz\n"), "/foo/bar?baz=quz"));
  EXPECT_FALSE(Allowed(Star("Disallow: /foo/bar/\xE3\x83\x84\n"), "/foo/bar/%E3%83%84"));
  EXPECT_FALSE(Allowed(Star("Disallow: /foo/bar/%E3%83%84\n"), "/foo/bar/%E3%83%84"));
  EXPECT_FALSE(Allowed(Star("Disallow: /foo/bar/%E3%83%84\n"), "/foo/bar/%e3%83%84"));
  EXPECT_FALSE(Allowed(Star("Disallow: /foo/bar/%e3%83%84\n"), "/foo/bar/\xE3\x83\x84"));
  EXPECT_FALSE(Allowed(Star("Disallow: /foo/bar/%62%61%7A\n"), "/foo/bar/baz"));
  // Unreserved escapes decode on both sides; reserved ones stay escaped and distinct.
  EXPECT_FALSE(Allowed(Star("Disallow: /~joe\n"), "/%7Ejoe/index.html"));
  EXPECT_FALSE(Allowed(Star("Disallow: /%7ejoe\n"), "/~joe/"));
  EXPECT_FALSE(Allowed(Star("Disallow: /%7Ejoe\n"), "/%7ejoe"));
  EXPECT_FALSE(Allowed(Star("Disallow: /a%2fb\n"), "/a%2Fb"));
  EXPECT_TRUE(Allowed(Star("Disallow: /a%2Fb\n"), "/a/b"));
  EXPECT_FALSE(Allowed(Star("Disallow: /a b\n"), "/a%20b"));
}

TEST(Robots, RobotsTxtAlwaysAllowed) {
  EXPECT_TRUE(Allowed(Star("Disallow: /\n"), "/robots.txt"));
  EXPECT_TRUE(Allowed(Star("Disallow: /robots.txt\n"), "https://h.example/robots.txt"));
  EXPECT_TRUE(RobotsRules::DisallowAll().Allowed("/robots.txt"));
  EXPECT_TRUE(RobotsRules::Unreachable().Allowed("http://h/robots.txt"));
  EXPECT_FALSE(Allowed(Star("Disallow: /\n"), "/robots.txt.bak"));
}

// ---- Google's documented path matching examples ----

struct MatchCase {
  const char* pattern;
  std::vector<const char*> match;
  std::vector<const char*> no_match;
};

TEST(Robots, GoogleMatchingExamples) {
  const std::vector<MatchCase> cases = {
      {"/", {"/", "/fish", "/a/b?c"}, {}},
      {"/$", {"/"}, {"/fish", "/?x"}},
      {"/fish",
       {"/fish", "/fish.html", "/fish/salmon.html", "/fishheads", "/fishheads/yummy.html",
        "/fish.php?id=anything"},
       {"/Fish.asp", "/catfish", "/?id=fish", "/desert/fish"}},
      {"/fish*",
       {"/fish", "/fish.html", "/fish/salmon.html", "/fishheads", "/fish.php?id=anything"},
       {"/Fish.asp", "/catfish", "/?id=fish", "/desert/fish"}},
      {"/fish/",
       {"/fish/", "/fish/?id=anything", "/fish/salmon.htm"},
       {"/fish", "/fish.html", "/animals/fish/", "/Fish/Salmon.asp"}},
      {"/*.php",
       {"/index.php", "/filename.php", "/folder/filename.php", "/folder/filename.php?parameters",
        "/folder/any.php.file.html", "/filename.php/"},
       {"/", "/windows.PHP"}},
      {"/*.php$",
       {"/filename.php", "/folder/filename.php"},
       {"/filename.php?parameters", "/filename.php/", "/filename.php5", "/windows.PHP"}},
      {"/fish*.php",
       {"/fish.php", "/fishheads/catfish.php?parameters"},
       {"/Fish.PHP"}},
  };
  for (const auto& c : cases) {
    const std::string robots = Star(std::string("Disallow: ") + c.pattern + "\n");
    for (const char* path : c.match) EXPECT_FALSE(Allowed(robots, path)) << c.pattern << " " << path;
    for (const char* path : c.no_match)
      EXPECT_TRUE(Allowed(robots, path)) << c.pattern << " " << path;
  }
}

TEST(Robots, GooglePrecedenceExamples) {
  EXPECT_TRUE(Allowed(Star("allow: /p\ndisallow: /\n"), "https://example.com/page"));
  EXPECT_TRUE(Allowed(Star("allow: /folder\ndisallow: /folder\n"),
                      "https://example.com/folder/page"));
  EXPECT_FALSE(Allowed(Star("allow: /page\ndisallow: /*.htm\n"),
                       "https://example.com/page.htm"));
  EXPECT_TRUE(Allowed(Star("allow: /page\ndisallow: /*.ph\n"), "https://example.com/page.php"));
  EXPECT_TRUE(Allowed(Star("allow: /$\ndisallow: /\n"), "https://example.com/"));
  EXPECT_FALSE(Allowed(Star("allow: /$\ndisallow: /\n"), "https://example.com/page.htm"));
  // Order in the file never matters.
  EXPECT_TRUE(Allowed(Star("disallow: /\nallow: /$\n"), "https://example.com/"));
  EXPECT_TRUE(Allowed(Star("disallow: /folder\nallow: /folder\n"), "/folder/page"));
}

TEST(Robots, WildcardsAndAnchor) {
  EXPECT_FALSE(Allowed(Star("disallow: /*?\n"), "/search?q=1"));
  EXPECT_TRUE(Allowed(Star("disallow: /*?\n"), "/search"));
  EXPECT_FALSE(Allowed(Star("disallow: /*/private/*\n"), "/a/b/private/c"));
  EXPECT_TRUE(Allowed(Star("disallow: /*/private/*\n"), "/private/c"));
  EXPECT_FALSE(Allowed(Star("disallow: *\n"), "/anything"));
  EXPECT_FALSE(Allowed(Star("disallow: /**a**b**$\n"), "/xaxxb"));
  EXPECT_TRUE(Allowed(Star("disallow: /**a**b**$\n"), "/xbxxa"));
  EXPECT_FALSE(Allowed(Star("disallow: /a$b\n"), "/a$bc"));  // $ inside is a literal
  EXPECT_TRUE(Allowed(Star("disallow: /a$b\n"), "/ab"));
  EXPECT_FALSE(Allowed(Star("disallow: /x$\n"), "/x"));
  EXPECT_TRUE(Allowed(Star("disallow: /x$\n"), "/x/"));
  EXPECT_FALSE(Allowed(Star("disallow: /*.pdf$\n"), "/a.pdf.pdf"));
  EXPECT_TRUE(Allowed(Star("disallow: /*.pdf$\n"), "/a.pdf.pdfx"));
  // A pattern that starts with neither / nor * can never match a path (as at Google).
  EXPECT_TRUE(Allowed(Star("disallow: private/\n"), "/private/x"));
}

TEST(Robots, ManyWildcardsStayFast) {
  // Exponential backtracking would never finish this; the two-pointer match is quadratic.
  std::string pattern = "/";
  for (int i = 0; i < 200; ++i) pattern += "*a";
  pattern += "b$";
  const std::string path = "/" + std::string(5000, 'a');
  const auto rules = RobotsRules::Parse(Star("disallow: " + pattern + "\n"), kUa);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(rules.Allowed(path));
  EXPECT_FALSE(rules.Allowed(path + "b"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(Robots, EmptyPatterns) {
  EXPECT_TRUE(Allowed(Star("disallow:\n"), "/x"));
  EXPECT_TRUE(Allowed(Star("disallow: \n"), "/"));
  EXPECT_FALSE(Allowed(Star("allow:\ndisallow: /\n"), "/x"));
  EXPECT_EQ(RobotsRules::Parse(Star("disallow:\nallow:\n"), kUa).rule_count(), 0u);
}

TEST(Robots, GoogleIndexHtmlQuirk) {
  const std::string robots = Star("allow: /index.html\ndisallow: /\n");
  EXPECT_TRUE(Allowed(robots, "/"));
  EXPECT_TRUE(Allowed(robots, "/index.html"));
  EXPECT_FALSE(Allowed(robots, "/other"));
  EXPECT_TRUE(Allowed(Star("allow: /d/index.htm\ndisallow: /d\n"), "/d/"));
  EXPECT_FALSE(Allowed(Star("allow: /d/index.htm\ndisallow: /d\n"), "/d/x"));
}

// ---- URLs ----

TEST(Robots, UrlForms) {
  const std::string robots = Star("disallow: /private\nallow: /private/ok$\ndisallow: /*?s=\n");
  EXPECT_FALSE(Allowed(robots, "https://example.com/private/x"));
  EXPECT_FALSE(Allowed(robots, "HTTP://example.com:8080/private"));
  EXPECT_FALSE(Allowed(robots, "//example.com/private"));
  EXPECT_TRUE(Allowed(robots, "https://example.com/private/ok#frag"));
  EXPECT_FALSE(Allowed(robots, "https://example.com/private/ok?x"));
  EXPECT_TRUE(Allowed(robots, "https://example.com"));
  EXPECT_TRUE(Allowed(robots, "https://example.com/"));
  EXPECT_FALSE(Allowed(robots, "https://example.com?s=1"));  // "/?s=1"
  EXPECT_TRUE(Allowed(robots, "https://example.com/#/private"));
  EXPECT_TRUE(Allowed(robots, "https://user:pw@example.com/public"));
  EXPECT_FALSE(Allowed(robots, "private/x"));  // a relative path is taken from the root
  EXPECT_FALSE(Allowed(robots, "/private?x#y"));
  EXPECT_TRUE(Allowed(robots, ""));
}

// ---- groups ----

TEST(Robots, ProductToken) {
  EXPECT_EQ(RobotsProductToken("CeleriacBot/1.0 (+https://x)"), "CeleriacBot");
  EXPECT_EQ(RobotsProductToken("  Googlebot-News"), "Googlebot-News");
  EXPECT_EQ(RobotsProductToken("my_bot 2"), "my_bot");
  EXPECT_EQ(RobotsProductToken("123bot"), "");
  EXPECT_EQ(RobotsProductToken(""), "");
}

TEST(Robots, SpecificGroupBeatsStar) {
  const char* robots =
      "user-agent: *\n"
      "disallow: /\n"
      "\n"
      "user-agent: celeriacbot\n"
      "disallow: /private\n";
  EXPECT_TRUE(Allowed(robots, "/public"));
  EXPECT_FALSE(Allowed(robots, "/private"));
  EXPECT_FALSE(Allowed(robots, "/public", "OtherBot/2.0"));
  EXPECT_FALSE(Allowed(robots, "/public", ""));
}

TEST(Robots, AgentMatchingIsCaseInsensitiveAndUsesTheProductToken) {
  const char* robots = "User-agent: CELERIACBOT/2.0\nDisallow: /x\n";
  EXPECT_FALSE(Allowed(robots, "/x", "celeriacbot"));
  EXPECT_FALSE(Allowed(robots, "/x", "CeleriacBot/1.0 (+https://celeriac.example)"));
  EXPECT_TRUE(Allowed(robots, "/x", "CeleriacBotX"));
  EXPECT_TRUE(Allowed(robots, "/x", "Celeriac"));  // not a substring match
}

TEST(Robots, MostSpecificTokenWins) {
  const char* robots =
      "user-agent: googlebot-news\n"
      "disallow: /news-only\n"
      "user-agent: *\n"
      "disallow: /star-only\n"
      "\n"
      "user-agent: googlebot\n"
      "disallow: /googlebot-only\n";
  // Google's documented example: each crawler obeys exactly one group.
  const auto news = RobotsRules::Parse(robots, "Googlebot-News");
  EXPECT_FALSE(news.Allowed("/news-only"));
  EXPECT_TRUE(news.Allowed("/googlebot-only"));
  EXPECT_TRUE(news.Allowed("/star-only"));

  const auto web = RobotsRules::Parse(robots, "Googlebot/2.1");
  EXPECT_FALSE(web.Allowed("/googlebot-only"));
  EXPECT_TRUE(web.Allowed("/news-only"));
  EXPECT_TRUE(web.Allowed("/star-only"));

  // No exact group: the family prefix "googlebot" beats *.
  const auto image = RobotsRules::Parse(robots, "Googlebot-Image/1.0");
  EXPECT_FALSE(image.Allowed("/googlebot-only"));
  EXPECT_TRUE(image.Allowed("/star-only"));

  const auto other = RobotsRules::Parse(robots, "Storebot-Google");
  EXPECT_FALSE(other.Allowed("/star-only"));
  EXPECT_TRUE(other.Allowed("/news-only"));
  EXPECT_TRUE(other.Allowed("/googlebot-only"));

  // A prefix must end at a '-': "googlebotx" is not of the googlebot family.
  EXPECT_TRUE(RobotsRules::Parse(robots, "GooglebotX").Allowed("/googlebot-only"));
}

TEST(Robots, GroupsForTheSameAgentMerge) {
  const char* robots =
      "user-agent: celeriacbot\n"
      "disallow: /a\n"
      "\n"
      "user-agent: *\n"
      "disallow: /b\n"
      "\n"
      "user-agent: CeleriacBot\n"
      "disallow: /c\n"
      "crawl-delay: 2\n";
  const auto rules = RobotsRules::Parse(robots, kUa);
  EXPECT_FALSE(rules.Allowed("/a"));
  EXPECT_TRUE(rules.Allowed("/b"));
  EXPECT_FALSE(rules.Allowed("/c"));
  EXPECT_EQ(rules.rule_count(), 2u);
  EXPECT_EQ(rules.crawl_delay(), milliseconds(2000));
}

TEST(Robots, RulesBeforeAnyAgentAndUnknownLinesInsideGroups) {
  const char* robots =
      "disallow: /orphan\n"
      "user-agent: a\n"
      "sitemap: https://h/s.xml\n"
      "foo: bar\n"
      "user-agent: celeriacbot\n"
      "disallow: /shared\n"
      "user-agent: b\n"
      "disallow: /b-only\n";
  EXPECT_TRUE(Allowed(robots, "/orphan"));
  EXPECT_FALSE(Allowed(robots, "/shared"));
  EXPECT_FALSE(Allowed(robots, "/shared", "a"));
  EXPECT_TRUE(Allowed(robots, "/b-only"));
  EXPECT_FALSE(Allowed(robots, "/b-only", "b"));
}

TEST(Robots, NoMatchingGroupAllowsAll) {
  const char* robots = "user-agent: otherbot\ndisallow: /\n";
  const auto rules = RobotsRules::Parse(robots, kUa);
  EXPECT_TRUE(rules.Allowed("/"));
  EXPECT_TRUE(rules.Allowed("/anything"));
  EXPECT_EQ(rules.kind(), RobotsRules::Kind::kParsed);
  EXPECT_TRUE(Allowed("", "/x"));
}

TEST(Robots, StarWithTrailingTextIsStillGlobal) {
  EXPECT_FALSE(Allowed("user-agent: * # everyone\ndisallow: /x\n", "/x"));
  EXPECT_FALSE(Allowed("user-agent: * everyone\ndisallow: /x\n", "/x"));
  EXPECT_TRUE(Allowed("user-agent: *bot\ndisallow: /x\n", "/x"));
}

// ---- crawl-delay and sitemaps ----

TEST(Robots, CrawlDelay) {
  auto delay = [](std::string_view value) {
    return RobotsRules::Parse(Star("crawl-delay: " + std::string(value) + "\n"), kUa)
        .crawl_delay();
  };
  EXPECT_EQ(delay("10"), milliseconds(10'000));
  EXPECT_EQ(delay("0.5"), milliseconds(500));
  EXPECT_EQ(delay("1.25"), milliseconds(1'250));
  EXPECT_EQ(delay("0"), milliseconds(0));
  EXPECT_EQ(delay("1e9"), milliseconds(86'400'000));  // capped at one day
  EXPECT_EQ(delay("-1"), std::nullopt);
  EXPECT_EQ(delay("abc"), std::nullopt);
  EXPECT_EQ(delay("5s"), std::nullopt);
  EXPECT_EQ(delay("nan"), std::nullopt);
  EXPECT_EQ(delay("inf"), std::nullopt);
  EXPECT_EQ(delay(""), std::nullopt);
  EXPECT_EQ(RobotsRules::Parse(Star("disallow: /\n"), kUa).crawl_delay(), std::nullopt);
  // Other groups' delays do not apply; the largest of the selected ones does.
  const char* robots =
      "user-agent: otherbot\ncrawl-delay: 30\ndisallow: /o\n"
      "user-agent: *\ncrawl-delay: 3\ncrawl-delay: 4\n";
  EXPECT_EQ(RobotsRules::Parse(robots, kUa).crawl_delay(), milliseconds(4'000));
  EXPECT_EQ(RobotsRules::Parse(robots, "otherbot").crawl_delay(), milliseconds(30'000));
  // Like unknown lines, crawl-delay does not end a user-agent list (only allow/disallow do),
  // so here both agents share the one group and its delay.
  const char* shared = "user-agent: otherbot\ncrawl-delay: 7\nuser-agent: *\ndisallow: /z\n";
  EXPECT_EQ(RobotsRules::Parse(shared, kUa).crawl_delay(), milliseconds(7'000));
  EXPECT_EQ(RobotsRules::Parse("crawl-delay: 3\n", kUa).crawl_delay(), std::nullopt);
  EXPECT_EQ(RobotsRules::AllowAll().crawl_delay(), std::nullopt);
}

TEST(Robots, Sitemaps) {
  const char* robots =
      "Sitemap: https://example.com/a.xml\n"
      "user-agent: otherbot\n"
      "sitemap: https://example.com/b.xml # in another group, still global\n"
      "disallow: /\n"
      "SITEMAP:https://example.com/a.xml\n"
      "site-map: https://example.com/c.xml\n"
      "sitemap:\n";
  const auto rules = RobotsRules::Parse(robots, kUa);
  EXPECT_EQ(rules.sitemaps(),
            (std::vector<std::string>{"https://example.com/a.xml", "https://example.com/b.xml",
                                      "https://example.com/c.xml"}));
}

// ---- robustness ----

TEST(Robots, LineEndingsBomCommentsAndWhitespace) {
  for (const char* robots : {
           "\xEF\xBB\xBFuser-agent: *\ndisallow: /x\n",
           "\xEF\xBBuser-agent: *\ndisallow: /x\n",  // a truncated BOM
           "user-agent: *\r\ndisallow: /x\r\n",
           "user-agent: *\rdisallow: /x\r",
           "user-agent: *\n\n\r\n\rdisallow: /x",
           "  User-Agent :\t*  \n\t Disallow  :   /x   \n",
           "# comment\nuser-agent: * # why\ndisallow: /x# no space\n",
           "user-agent *\ndisallow /x\n",  // missing colons
           "USER-AGENT: *\nDISALLOW: /x\n",
           "useragent: *\ndissallow: /x\n",
           "user agent: *\ndisalow: /x\n",
       }) {
    const auto rules = RobotsRules::Parse(robots, kUa);
    EXPECT_FALSE(rules.Allowed("/x")) << robots;
    EXPECT_TRUE(rules.Allowed("/y")) << robots;
    EXPECT_EQ(rules.rule_count(), 1u) << robots;
  }
  // Without a colon the value must be a single token.
  EXPECT_TRUE(Allowed("user-agent: *\ndisallow /x /y\n", "/x"));
  // A BOM elsewhere is not skipped.
  EXPECT_TRUE(Allowed("user-agent: *\n\xEF\xBB\xBF" "disallow: /x\n", "/x"));
}

TEST(Robots, UnknownDirectivesIgnored) {
  const char* robots =
      "user-agent: *\n"
      "noindex: /x\n"
      "host: example.com\n"
      "clean-param: ref /x\n"
      "request-rate: 1/5\n"
      "disallow: /y\n";
  EXPECT_TRUE(Allowed(robots, "/x"));
  EXPECT_FALSE(Allowed(robots, "/y"));
}

TEST(Robots, LongLinesAreTruncated) {
  const std::string long_path = "/" + std::string(RobotsRules::kMaxLineBytes * 2, 'a');
  // The line is cut at kMaxLineBytes, so its rule is a (still long) prefix of long_path.
  const std::string robots = Star("disallow: " + long_path + "\n" + "disallow: /next\n");
  const auto rules = RobotsRules::Parse(robots, kUa);
  EXPECT_FALSE(rules.Allowed(long_path));
  EXPECT_TRUE(rules.Allowed("/" + std::string(RobotsRules::kMaxLineBytes / 2, 'a')));
  EXPECT_FALSE(rules.Allowed("/next"));  // the line after is parsed normally
}

TEST(Robots, BodyBeyondLimitIsIgnored) {
  std::string robots = "user-agent: *\ndisallow: /early\n";
  while (robots.size() < RobotsRules::kMaxBodyBytes - 100) robots += "# padding padding padding\n";
  robots += "disallow: /within\n";
  robots.resize(RobotsRules::kMaxBodyBytes + 10, '#');
  robots += "\ndisallow: /late\n";
  const auto rules = RobotsRules::Parse(robots, kUa);
  EXPECT_FALSE(rules.Allowed("/early"));
  EXPECT_FALSE(rules.Allowed("/within"));
  EXPECT_TRUE(rules.Allowed("/late"));
}

TEST(Robots, BinaryGarbageNeverCrashes) {
  std::mt19937 rng(9309);
  std::uniform_int_distribution<int> byte(0, 255);
  const std::string alphabet = "user-agent:*allow:disallow:/$%#\r\n \t\xEF\xBB\xBF";
  for (int round = 0; round < 300; ++round) {
    std::string body(static_cast<size_t>(byte(rng)) * 8, '\0');
    for (char& c : body)
      c = round % 2 ? static_cast<char>(byte(rng)) : alphabet[byte(rng) % alphabet.size()];
    const auto rules = RobotsRules::Parse(body, round % 3 ? kUa : "");
    std::string url = "/";
    for (int i = 0; i < 20; ++i) url += static_cast<char>(byte(rng));
    (void)rules.Allowed(url);
    (void)rules.Allowed(body.substr(0, 64));
    EXPECT_TRUE(rules.Allowed("/robots.txt"));
  }
  // Truncated escapes and NULs are plain octets.
  const std::string nul_robots("user-agent: *\ndisallow: /a\0b%\n", 30);
  EXPECT_FALSE(RobotsRules::Parse(nul_robots, kUa).Allowed(std::string("/a\0b%", 5)));
  // A '%' that starts no escape is the literal '%', i.e. %25.
  EXPECT_FALSE(Allowed(Star("disallow: /%zz\n"), "/%25zz"));
  EXPECT_FALSE(Allowed(Star("disallow: /100%25\n"), "/100%"));
  EXPECT_TRUE(Allowed(Star("disallow: /%zz\n"), "/zz"));
}

// ---- fetch outcomes ----

TEST(Robots, FromStatus) {
  const std::string body = Star("disallow: /x\n");
  using Kind = RobotsRules::Kind;
  for (int status : {200, 203, 206, 299}) {
    const auto rules = RobotsRules::FromStatus(status, body, kUa);
    EXPECT_EQ(rules.kind(), Kind::kParsed) << status;
    EXPECT_FALSE(rules.Allowed("/x")) << status;
    EXPECT_TRUE(rules.Allowed("/y")) << status;
  }
  // "unavailable": allow all, whatever the body says.
  for (int status : {301, 310, 400, 401, 403, 404, 410, 451, 499}) {
    const auto rules = RobotsRules::FromStatus(status, body, kUa);
    EXPECT_EQ(rules.kind(), Kind::kAllowAll) << status;
    EXPECT_TRUE(rules.Allowed("/x")) << status;
  }
  // "unreachable": complete disallow (429 counts as a server error, as at Google).
  for (int status : {429, 500, 502, 503, 504, 599, 0, -1, 100, 600}) {
    const auto rules = RobotsRules::FromStatus(status, body, kUa);
    EXPECT_EQ(rules.kind(), Kind::kDisallowAll) << status;
    EXPECT_FALSE(rules.Allowed("/y")) << status;
    EXPECT_FALSE(rules.Allowed("https://h.example/")) << status;
    EXPECT_TRUE(rules.Allowed("/robots.txt")) << status;
  }
  EXPECT_EQ(RobotsRules::Unreachable().kind(), Kind::kDisallowAll);
  EXPECT_TRUE(RobotsRules::AllowAll().Allowed("/anything"));
  EXPECT_TRUE(RobotsRules::AllowAll().sitemaps().empty());
}

}  // namespace
}  // namespace celeriac::extractor
