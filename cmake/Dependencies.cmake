# The one place where Celeriac finds its third-party libraries. All come from Debian packages
# (see the package list in ./dev); each is exposed as an imported target `dep::<name>` so the
# rest of the build never mentions pkg-config module names or include paths.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

function(celeriac_pkg name module)
  pkg_check_modules(${name} REQUIRED IMPORTED_TARGET GLOBAL ${module})
  add_library(dep::${name} ALIAS PkgConfig::${name})
endfunction()

celeriac_pkg(uv libuv)
celeriac_pkg(pqxx libpqxx)
celeriac_pkg(pq libpq)  # core/pg/probe.cpp: non-blocking connect with a deadline
celeriac_pkg(rabbitmq librabbitmq)
celeriac_pkg(rdkafka rdkafka)
celeriac_pkg(curl libcurl)
celeriac_pkg(xml2 libxml-2.0)
celeriac_pkg(pcre2 libpcre2-8)
celeriac_pkg(psl libpsl)
celeriac_pkg(idn2 libidn2)  # core/url: internationalised host names
celeriac_pkg(jemalloc jemalloc)
celeriac_pkg(crypto libcrypto)
celeriac_pkg(uuid uuid)
celeriac_pkg(spdlog spdlog)
celeriac_pkg(fmt fmt)
celeriac_pkg(toml tomlplusplus)
celeriac_pkg(httplib cpp-httplib)
celeriac_pkg(prometheus prometheus-cpp-core)
celeriac_pkg(json nlohmann_json)
celeriac_pkg(cli11 CLI11)
celeriac_pkg(gtest gtest)
celeriac_pkg(gmock gmock)

# Header-only libraries without a pkg-config file: check the header is there so a missing
# package fails at configure time with its name, not deep inside a compile.
function(celeriac_header_lib name header package)
  find_path(${name}_INCLUDE_DIR ${header})
  if(NOT ${name}_INCLUDE_DIR)
    message(FATAL_ERROR "${header} not found: install the Debian package ${package} (./dev deps)")
  endif()
  add_library(dep_${name} INTERFACE)
  target_include_directories(dep_${name} SYSTEM INTERFACE ${${name}_INCLUDE_DIR})
  target_compile_definitions(dep_${name} INTERFACE ${ARGN})
  add_library(dep::${name} ALIAS dep_${name})
endfunction()

# valijson aborts on a bad schema unless told to throw.
celeriac_header_lib(valijson valijson/validator.hpp libvalijson-dev VALIJSON_USE_EXCEPTIONS=1)

# Howard Hinnant's date/tz (IANA time zones for beat's schedules). Debian builds libdate-tz with
# USE_OS_TZDB=1: it reads the OS tz database (/usr/share/zoneinfo, package tzdata), the same
# one Debian's Postgres uses, so a zone Postgres accepts is one beat knows.
find_package(date CONFIG REQUIRED)
add_library(dep::date ALIAS date::date-tz)
