#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/base/secrets.hpp"

namespace celeriac {
namespace {

TEST(MaskSecrets, UrlUserinfoKeepsUserAndHost) {
  EXPECT_EQ(MaskSecrets("postgresql://u:secret@h/db"), "postgresql://u:***@h/db");
  EXPECT_EQ(MaskSecrets("amqp://guest:guest@127.0.0.1:5672//"),
            "amqp://guest:***@127.0.0.1:5672//");
  EXPECT_EQ(MaskSecrets("postgresql://u:secret@[::1]:5432,h2:5433/db?sslmode=require"),
            "postgresql://u:***@[::1]:5432,h2:5433/db?sslmode=require");
}

TEST(MaskSecrets, UrlsWithoutPasswordAreUnchanged) {
  for (const char* url : {"postgresql://user@host/db", "memory://", "http://host/path@x:y",
                          "http://host:80/p@x", "postgresql://h:5432/db?user=a@b",
                          "http://[::1]:80/x", "postgresql:///db?host=/tmp", "://", "a://@",
                          "x://:@", "amqp://", "postgresql://h/db?application_name=a=b"}) {
    EXPECT_EQ(MaskSecrets(url), url);
  }
}

TEST(MaskSecrets, PercentEncodedAndUnencodedPasswordCharacters) {
  // Encoded: the encoded form is what the text holds, and it is what goes.
  EXPECT_EQ(MaskSecrets("postgresql://u:p%40ss%2Fw%3Ad@h/db"), "postgresql://u:***@h/db");
  // Unencoded '@', '/', '?', '#' (invalid, but people write them): nothing of them is left.
  EXPECT_EQ(MaskSecrets("postgresql://u:p@ss@h/db"), "postgresql://u:***@h/db");
  EXPECT_EQ(MaskSecrets("amqp://u:pa/ss@h//"), "amqp://u:***@h//");
  EXPECT_EQ(MaskSecrets("amqp://u:pa?ss@h//"), "amqp://u:***@h//");
  EXPECT_EQ(MaskSecrets("amqp://u:pa#ss@h//"), "amqp://u:***@h//");
  EXPECT_EQ(MaskSecrets("amqp://u:ab+c/d==@h/vhost"), "amqp://u:***@h/vhost");
  // An '@' in a query value is not the userinfo's.
  EXPECT_EQ(MaskSecrets("postgresql://u:pw@h/db?application_name=x@y"),
            "postgresql://u:***@h/db?application_name=x@y");
  // A numeric password is not mistaken for a port.
  EXPECT_EQ(MaskSecrets("postgresql://u:1234@h/db"), "postgresql://u:***@h/db");
}

TEST(MaskSecrets, UserinfoWithoutScheme) {
  EXPECT_EQ(MaskSecrets("guest:secret@127.0.0.1:5672"), "guest:***@127.0.0.1:5672");
  EXPECT_EQ(MaskSecrets("broker \"u:p@ss@h//\" refused"), "broker \"u:***@h//\" refused");
  // Worker names, user@host:port, times and plain colons are not userinfo.
  for (const char* text : {"celeriac@host: task ok", "celery@h:1234", "at 12:30 ok",
                           "Error: x@", "a:@b", "x: y@z"}) {
    EXPECT_EQ(MaskSecrets(text), text);
  }
}

TEST(MaskSecrets, KeyValueDsn) {
  EXPECT_EQ(MaskSecrets("host=h password=secret dbname=x"), "host=h password=*** dbname=x");
  EXPECT_EQ(MaskSecrets("host=h password = secret dbname=x"),
            "host=h password = *** dbname=x");
  EXPECT_EQ(MaskSecrets("host=h password='se cret' dbname=x"), "host=h password=*** dbname=x");
  EXPECT_EQ(MaskSecrets(R"(password='it\'s se\\cret' user=u)"), "password=*** user=u");
  EXPECT_EQ(MaskSecrets(R"(password=se\ cret user=u)"), "password=*** user=u");
  EXPECT_EQ(MaskSecrets("PASSWORD=secret"), "PASSWORD=***");
  EXPECT_EQ(MaskSecrets("host=h sslpassword=k3y"), "host=h sslpassword=***");
  // An unterminated quote hides the rest rather than leaking it.
  EXPECT_EQ(MaskSecrets("host=h password='se cret dbname=x"), "host=h password=***");
  // libpq skips blanks after '=': "dbname=x" is the password here.
  EXPECT_EQ(MaskSecrets("password= dbname=x"), "password= ***");
  // Empty values and keys that merely contain the word are left alone.
  EXPECT_EQ(MaskSecrets("postgresql://h/db?password=&x=1"), "postgresql://h/db?password=&x=1");
  EXPECT_EQ(MaskSecrets("password_file=/run/pw passwords=3"),
            "password_file=/run/pw passwords=3");
}

TEST(MaskSecrets, QueryParameters) {
  EXPECT_EQ(MaskSecrets("postgresql://h/db?password=secret"), "postgresql://h/db?password=***");
  EXPECT_EQ(MaskSecrets("postgresql://h/db?sslpassword=secret&sslmode=require"),
            "postgresql://h/db?sslpassword=***&sslmode=require");
  EXPECT_EQ(MaskSecrets("postgresql://u:a@h/db?user=u&password=b"),
            "postgresql://u:***@h/db?user=u&password=***");
  EXPECT_EQ(MaskSecrets("http://h/x?access_token=t0k&client_secret=s3&api_key=k"),
            "http://h/x?access_token=***&client_secret=***&api_key=***");
}

TEST(MaskSecrets, InsideLongerText) {
  EXPECT_EQ(MaskSecrets("database postgresql://u:secret@h/db: connection refused"),
            "database postgresql://u:***@h/db: connection refused");
  EXPECT_EQ(MaskSecrets("two: amqp://a:b1@x// and host=h password=p2"),
            "two: amqp://a:***@x// and host=h password=***");
  EXPECT_EQ(MaskSecrets("\"postgresql://u:secret@h/db\""), "\"postgresql://u:***@h/db\"");
  EXPECT_EQ(MaskSecrets("no secrets here = fine"), "no secrets here = fine");
  EXPECT_EQ(MaskSecrets(""), "");
}

TEST(MaskSecrets, MalformedInputNeverThrows) {
  for (const std::string& s : std::vector<std::string>{"%", "%%%", "postgresql://%zz:%@@", "password='", "password=\\",
                        "password='\\", "://:::@@@///", std::string("a\0b://c:d@e", 11),
                        std::string(10'000, '@'), std::string(10'000, ':')}) {
    EXPECT_NO_THROW((void)MaskSecrets(s));
    EXPECT_NO_THROW((void)MaskSecrets(s, s));
  }
}

TEST(MaskSecrets, KnownConnectionStringPasswordsAreHiddenWherever_TheyAppear) {
  // libpq quotes a bad percent-encoded token on its own, outside any URL.
  const std::string url = "postgresql://u:p%zzsecret@h/db";
  EXPECT_EQ(MaskSecrets("invalid percent-encoded token: \"p%zzsecret\"", url),
            "invalid percent-encoded token: \"***\"");
  // Decoded and unquoted forms too.
  EXPECT_EQ(MaskSecrets("login p@ssword failed", "amqp://u:p%40ssword@h//"),
            "login *** failed");
  EXPECT_EQ(MaskSecrets("got se cret", "host=h password='se cret'"), "got ***");
  // Short passwords are left to the patterns (replacing "ab" everywhere would garble text).
  EXPECT_EQ(MaskSecrets("about ab", "postgresql://u:ab@h/db"), "about ab");
  EXPECT_EQ(MaskSecrets("postgresql://u:ab@h/db", "postgresql://u:ab@h/db"),
            "postgresql://u:***@h/db");
}

}  // namespace
}  // namespace celeriac
