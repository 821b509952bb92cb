// extractor/parse building blocks: registrable domains, regexes, text helpers and the casts.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "extractor/parse/markup.hpp"
#include "extractor/parse/processors.hpp"
#include "extractor/parse/regex.hpp"
#include "extractor/parse/text.hpp"
#include "extractor/parse/registrable_domain.hpp"

namespace celeriac::extractor::parse {
namespace {

using nlohmann::json;

TEST(ParseUrl, RegistrableDomainUsesThePublicSuffixList) {
  EXPECT_EQ(RegistrableDomain("www.example.co.uk"), "example.co.uk");
  EXPECT_EQ(RegistrableDomain("a.b.example.com"), "example.com");
  EXPECT_EQ(RegistrableDomain("shop.github.io"), "shop.github.io");  // github.io is a suffix
  EXPECT_EQ(RegistrableDomain("127.0.0.1"), "127.0.0.1");
  EXPECT_NE(RegistrableDomain("x.co.uk"), RegistrableDomain("y.co.uk"));
}

TEST(ParseRegex, EcmaStyleSearchGroupsAndLimits) {
  auto r = Regex::Compile("price: ([0-9]+)\\.(\\d\\d)");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->capture_count(), 2);
  size_t offset = 0;
  EXPECT_EQ((*r)->Find("x price: 12.50 y", 1, &offset).value_or("-"), "12");
  offset = 0;
  EXPECT_EQ((*r)->Find("x price: 12.50 y", 0, &offset).value_or("-"), "price: 12.50");
  EXPECT_TRUE((*Regex::Compile("^\\u00e9$"))->Matches("\xC3\xA9"));
  EXPECT_FALSE((*Regex::Compile("a$"))->Matches("a\n"));  // ECMAScript: $ only at the end
  EXPECT_TRUE((*Regex::Compile("(?<=\\$)\\d+"))->Matches("$12"));
  EXPECT_FALSE(Regex::Compile("(unclosed").ok());
  // Invalid UTF-8 subjects are safe.
  EXPECT_TRUE((*Regex::Compile("b+"))->Matches("\xFF\xFE" "abb\xC3"));
  // Catastrophic backtracking ends as "no match", in bounded time.
  auto evil = Regex::Compile("(a+)+$");
  ASSERT_TRUE(evil.ok());
  EXPECT_FALSE((*evil)->Matches(std::string(5000, 'a') + "!"));
  // Global iteration with empty matches always progresses.
  auto empty = Regex::Compile("x*");
  size_t pos = 0;
  int n = 0;
  while ((*empty)->Find("ab\xC3\xA9", 0, &pos) && n < 100) ++n;
  EXPECT_LE(n, 5);
}

TEST(ParseRegex, ReplaceTranslatesEcmaReplacements) {
  EXPECT_EQ(TranslateEcmaReplacement("$1-$&-$$-$<n>-$"), "${1}-${0}-$$-${n}-$$");
  auto r = Regex::Compile("(\\d+),(\\d+)");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->ReplaceAll("1,50 and 2,75", TranslateEcmaReplacement("$1.$2")).value_or("-"),
            "1.50 and 2.75");
}

TEST(ParseText, WhitespaceEntitiesTagsAndUtf8) {
  EXPECT_EQ(Trim(" \t\xC2\xA0 x y \n"), "x y");
  EXPECT_EQ(NormalizeSpace("  a \n\t b\xC2\xA0\xC2\xA0" "c  "), "a b c");
  EXPECT_EQ(StripTags("<p class=\"a>b\">Fish &amp; <b>chips</b><!-- x --> &#233;&#x20AC;&bogus;</p>"),
            "Fish & chips \xC3\xA9\xE2\x82\xAC&bogus;");
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9"));
  EXPECT_FALSE(IsValidUtf8("caf\xE9"));
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));  // surrogate
  EXPECT_EQ(SanitizeUtf8("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(ToUtf8("caf\xE9 \x80", "ISO-8859-1"), "caf\xC3\xA9 \xE2\x82\xAC");
  EXPECT_EQ(ToUtf8("\x82\xA0", "shift_jis"), "\xE3\x81\x82");
  EXPECT_EQ(ToUtf8("a\xFF", "no-such-charset"), "a\xEF\xBF\xBD");
}

TEST(ParseMarkup, ChoosesTheHtmlEncoding) {
  EXPECT_EQ(ChooseHtmlEncoding("text/html; charset=\"ISO-8859-1\"", "x"), "windows-1252");
  EXPECT_EQ(ChooseHtmlEncoding("text/html; charset=utf-8", "\xFF"), "UTF-8");
  EXPECT_EQ(ChooseHtmlEncoding("text/html", "<meta charset='Shift_JIS'>"), "shift_jis");
  EXPECT_EQ(ChooseHtmlEncoding("text/html; charset=bogus", "caf\xC3\xA9"), "UTF-8");
  EXPECT_EQ(ChooseHtmlEncoding("", "caf\xE9"), "windows-1252");
  EXPECT_EQ(ChooseHtmlEncoding("text/html; charset=windows-1252", "\xEF\xBB\xBFx"), "UTF-8");
  EXPECT_EQ(FormatFromContentType("application/vnd.api+json; charset=utf-8"), BodyFormat::kJson);
  EXPECT_EQ(FormatFromContentType("application/rss+xml"), BodyFormat::kXml);
  EXPECT_EQ(FormatFromContentType("application/xhtml+xml"), BodyFormat::kHtml);
  EXPECT_EQ(FormatFromContentType(""), BodyFormat::kHtml);
}

TEST(ParseCasts, IntDecimalBoolDate) {
  EXPECT_EQ(CastInt(json(" 42 ")), json(42));
  EXPECT_EQ(CastInt(json("-7")), json(-7));
  EXPECT_EQ(CastInt(json("+7")), json(7));
  EXPECT_EQ(CastInt(json(3.0)), json(3));
  EXPECT_FALSE(CastInt(json("4.5")).has_value());
  EXPECT_FALSE(CastInt(json("12abc")).has_value());
  EXPECT_FALSE(CastInt(json("99999999999999999999")).has_value());

  EXPECT_EQ(CastDecimal(json("0012.50")), json("12.50"));
  EXPECT_EQ(CastDecimal(json("-0.0")), json("0.0"));
  EXPECT_EQ(CastDecimal(json(".5")), json("0.5"));
  EXPECT_EQ(CastDecimal(json("12345678901234567890.123456789")),
            json("12345678901234567890.123456789"));  // no precision lost
  EXPECT_EQ(CastDecimal(json(19.99)), json("19.99"));
  EXPECT_EQ(CastDecimal(json(7)), json("7"));
  EXPECT_FALSE(CastDecimal(json("1,5")).has_value());
  EXPECT_FALSE(CastDecimal(json("")).has_value());

  EXPECT_EQ(CastBool(json("Yes")), json(true));
  EXPECT_EQ(CastBool(json("off")), json(false));
  EXPECT_EQ(CastBool(json(0)), json(false));
  EXPECT_FALSE(CastBool(json("maybe")).has_value());

  EXPECT_EQ(CastDate(json("2024-03-05T10:20:30+0200"), "%Y-%m-%dT%H:%M:%S%z"),
            json("2024-03-05T08:20:30Z"));
  EXPECT_EQ(CastDate(json("05/03/2024 10:20"), "%d/%m/%Y %H:%M"), json("2024-03-05T10:20:00"));
  EXPECT_EQ(CastDate(json("5 Mar 2024"), "%d %b %Y"), json("2024-03-05"));
  EXPECT_FALSE(CastDate(json("31/02/2024"), "%d/%m/%Y").has_value());
  EXPECT_FALSE(CastDate(json("yesterday"), "%Y-%m-%d").has_value());
  // Seconds that are no number (found by tests/fuzz extract; undefined behaviour in date.h once).
  EXPECT_FALSE(CastDate(json("Tue, 07 May 2024 08:30:xx +0200"), "%a, %d %b %Y %H:%M:%S %z"));
  EXPECT_FALSE(CastDate(json("07/05/2024 08:30:xx"), "%d/%m/%Y %H:%M:%S"));
  EXPECT_EQ(CastDate(json("Tue, 07 May 2024 08:30:59 +0200"), "%a, %d %b %Y %H:%M:%S %z"),
            json("2024-05-07T06:30:59Z"));
}

TEST(ParsePipeline, ListAndValueProcessors) {
  auto compile = [](const char* text) {
    std::vector<Processor> out;
    for (const auto& p : json::parse(text)) out.push_back(*CompileProcessor(p));
    return out;
  };
  std::vector<json> values = {" A, b ", "c,A", 5};
  RunPipeline(compile(R"([{"split": ","}, {"trim": true}, {"lower": true}, {"unique": true}])"),
              "", &values);
  EXPECT_EQ(json(values), json::parse(R"(["a", "b", "c", "5"])"));
  RunPipeline(compile(R"([{"map": {"a": 1, "5": null}}, {"join": "|"}])"), "", &values);
  EXPECT_EQ(json(values), json::parse(R"(["1|b|c"])"));

  values = {"Ready in 25 min", "no number"};
  RunPipeline(compile(R"J([{"regex": "in ([0-9]+) min"}, {"cast": "int"}])J"), "", &values);
  EXPECT_EQ(json(values), json::parse("[25]"));

  values = {"img/a.jpg", "//cdn.example.com/b.jpg", "data:image/png;base64,xx"};
  RunPipeline(compile(R"([{"urljoin": true}])"), "https://shop.example.com/p/1/index.html",
              &values);
  EXPECT_EQ(json(values), json::parse(R"(["https://shop.example.com/p/1/img/a.jpg",
                                          "https://cdn.example.com/b.jpg"])"));

  values = {"a", "b"};
  RunPipeline(compile(R"([{"first": true}])"), "", &values);
  EXPECT_EQ(json(values), json::parse(R"(["a"])"));

  values = {"1,50 EUR"};
  RunPipeline(compile(R"J([{"replace": {"pattern": "([0-9]+),([0-9]+)", "with": "$1.$2"}},
                          {"regex": {"pattern": "([0-9.]+) (EUR)", "group": 2}}])J"),
              "", &values);
  EXPECT_EQ(json(values), json::parse(R"(["EUR"])"));

  EXPECT_FALSE(CompileProcessor(json::parse(R"J({"regex": {"pattern": "(a)", "group": 2}})J")).ok());
  EXPECT_FALSE(CompileProcessor(json::parse(R"({"replace": {"pattern": "a", "with": "$3"}})")).ok());
  // A group number past int is refused like any missing group, not thrown out of the compiler.
  const auto huge = CompileProcessor(
      json::parse(R"J({"replace": {"pattern": "(a)", "with": "$<99999999999>"}})J"));
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.error().message().find("refers to a group"), std::string::npos);
  EXPECT_FALSE(CompileProcessor(json::parse(R"J({"regex": "("})J")).ok());
}

}  // namespace
}  // namespace celeriac::extractor::parse
