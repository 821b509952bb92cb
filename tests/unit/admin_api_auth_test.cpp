// The admin API's bearer-token checks.

#include <gtest/gtest.h>

#include "orchestrator/api/auth.hpp"

namespace celeriac::orchestrator::api {
namespace {

TEST(AdminApiAuth, ReadsTheBearerToken) {
  EXPECT_EQ(BearerToken("Bearer abc"), "abc");
  EXPECT_EQ(BearerToken("bearer abc"), "abc");
  EXPECT_EQ(BearerToken("BEARER   abc  "), "abc");
  EXPECT_FALSE(BearerToken(""));
  EXPECT_FALSE(BearerToken("Bearer"));
  EXPECT_FALSE(BearerToken("Bearer "));
  EXPECT_FALSE(BearerToken("Bearerabc"));
  EXPECT_FALSE(BearerToken("Basic abc"));
  EXPECT_FALSE(BearerToken("abc"));
}

TEST(AdminApiAuth, MatchesOnlyTheWholeToken) {
  EXPECT_TRUE(TokenMatches("s3cret", "s3cret"));
  EXPECT_FALSE(TokenMatches("s3cre", "s3cret"));
  EXPECT_FALSE(TokenMatches("s3crett", "s3cret"));
  EXPECT_FALSE(TokenMatches("s3cres", "s3cret"));
  EXPECT_FALSE(TokenMatches("S3cret", "s3cret"));
  EXPECT_FALSE(TokenMatches("s3crets3cret", "s3cret")) << "a repetition is not the token";
  EXPECT_FALSE(TokenMatches("", "s3cret"));
  EXPECT_FALSE(TokenMatches("", "")) << "an empty token refuses everyone";
  EXPECT_FALSE(TokenMatches("anything", ""));
}

}  // namespace
}  // namespace celeriac::orchestrator::api
