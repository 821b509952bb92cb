#!/usr/bin/python3
"""Writes the seed corpora under tests/fuzz/corpus/<target>/ from the repository's real inputs.

Run from anywhere: /usr/bin/python3 tests/fuzz/make_corpus.py. It rewrites corpus/<target>/
whole (files named after where they came from), so run it again when the golden messages, the
schema examples, the demo configs or the test pages change. The hand-written seeds (robots.txt
files, cron lines, feeds) are in this file, next to the rules that turn the sources into inputs.
"""

import glob
import json
import os
import re
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    path = os.path.join(CORPUS, target, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


# --- AMQP field tables, written as py-amqp writes them -------------------------------------

def short_str(s):
    b = s.encode("utf-8")
    return bytes([len(b)]) + b


def field(kind, value):
    k = kind.encode()
    if kind == "S" or kind == "x":
        b = value if isinstance(value, bytes) else value.encode("utf-8")
        return k + struct.pack(">I", len(b)) + b
    if kind == "s":
        return k + short_str(value)
    if kind == "t":
        return k + bytes([1 if value else 0])
    packs = {"b": ">b", "B": ">B", "U": ">h", "u": ">H", "I": ">i", "i": ">I",
             "L": ">q", "l": ">Q", "f": ">f", "d": ">d", "T": ">Q"}
    if kind in packs:
        return k + struct.pack(packs[kind], value)
    if kind == "D":
        scale, unscaled = value
        return k + struct.pack(">Bi", scale, unscaled)
    if kind == "V":
        return k
    if kind == "A":
        inner = b"".join(field(t, v) for t, v in value)
        return k + struct.pack(">I", len(inner)) + inner
    if kind == "F":
        return k + table(value)
    raise ValueError(kind)


def table(entries):
    inner = b"".join(short_str(key) + field(t, v) for key, t, v in entries)
    return struct.pack(">I", len(inner)) + inner


def every_kind_table():
    return table([
        ("str", "S", "héllo"), ("bytes", "x", b"\x00\xff"), ("short", "s", "abc"),
        ("yes", "t", True), ("i8", "b", -5), ("u8", "B", 250), ("i16", "U", -300),
        ("u16", "u", 65000), ("i32", "I", -70000), ("u32", "i", 4000000000),
        ("i64", "L", -(2**40)), ("u64", "l", 2**63 + 5), ("f32", "f", 1.5), ("f64", "d", -2.25),
        ("dec", "D", (2, -12345)), ("ts", "T", 1700000000), ("none", "V", None),
        ("arr", "A", [("I", 1), ("S", "two"), ("A", [("V", None)])]),
        ("tbl", "F", [("nested", "F", [("deep", "t", False)]), ("dup", "I", 1), ("dup", "I", 2)]),
    ])


# --- seeds per target -------------------------------------------------------------------------

def golden_messages():
    manifest = json.load(open(os.path.join(ROOT, "tests/data/celery_golden/manifest.json")))
    for name in manifest["messages"]:
        msg = json.load(open(os.path.join(ROOT, "tests/data/celery_golden", name)))
        yield name[:-5], msg


def celery_codec():
    # Flags byte: 8 = reply_to set; 4 = headers as JSON text, NUL, then the body.
    for name, msg in golden_messages():
        headers = bytes.fromhex(msg["headers_table_hex"])
        body = bytes.fromhex(msg["body_hex"])
        write("celery_codec", f"golden_{name}", b"\x08" + headers + body)
        write("celery_codec", f"golden_{name}_json_headers",
              b"\x0c" + json.dumps(msg["headers"]).encode() + b"\x00" + body)
    # The task bodies of schemas/examples under the golden execute_crawl_task headers.
    crawl = json.load(open(os.path.join(ROOT, "tests/data/celery_golden/send_task_execute_crawl_task.json")))
    for path in sorted(glob.glob(os.path.join(ROOT, "schemas/examples/*.body/*/*.json"))):
        rel = os.path.relpath(path, os.path.join(ROOT, "schemas/examples"))
        example = json.load(open(path))
        body = json.dumps(example.get("body", example) if isinstance(example, dict) else example)
        write("celery_codec", "schema_" + re.sub(r"[^A-Za-z0-9]+", "_", rel[:-5]),
              b"\x08" + bytes.fromhex(crawl["headers_table_hex"]) + body.encode())
    # kombu >= 5.3 type markers, a v1 body with an eta, a custom header of every kind.
    headers = table([("lang", "S", "py"), ("task", "S", "celeriac.echo"), ("id", "S", "f00"),
                     ("eta", "S", "2024-03-31T02:30:00.123456+02:00"), ("retries", "I", 2),
                     ("timelimit", "A", [("I", 30), ("d", 2.5)]), ("x_custom", "F", [("k", "l", 2**63)])])
    write("celery_codec", "markers", b"\x08" + headers +
          b'[[{"__type__": "datetime", "__value__": "2024-01-01T00:00:00"}, '
          b'{"__type__": "decimal", "__value__": "1.10"}], {"b": "\\u00e9\\ud83d\\ude00"}, {}]')
    write("celery_codec", "v1_body", b"\x09" + table([]) +
          b'{"task": "celeriac.echo", "id": "v1", "args": [1], "kwargs": {}, "retries": 0, '
          b'"eta": "2024-01-01T00:00:00Z", "expires": null, "taskset": "g1"}')
    write("celery_codec", "every_header_kind", b"\x08" + every_kind_table() + b"[[], {}, null]")


def amqp_table():
    for name, msg in golden_messages():
        write("amqp_table", f"golden_{name}", bytes.fromhex(msg["headers_table_hex"]))
    write("amqp_table", "golden_custom_headers_json",
          json.dumps(json.load(open(os.path.join(ROOT, "tests/data/celery_golden/custom_headers.json")))["headers"]))
    write("amqp_table", "every_kind", every_kind_table())
    write("amqp_table", "empty", table([]))
    write("amqp_table", "json_every_kind",
          '{"s": "x", "big": 18446744073709551615, "neg": -9223372036854775808, "f": 0.1, '
          '"n": null, "b": true, "a": [1, [2, {"c": []}]], "o": {"k": {"k": "\\u00e9"}}}')


def cron():
    lines = [
        "*/15 * * * *\nEurope/Berlin", "0 2 * * *\nEurope/Berlin", "30 2 * * 0\nAmerica/New_York",
        "0 1 * * *\nAmerica/Sao_Paulo", "0 0 29 2 *\nUTC", "0 0 29 2 1\nAustralia/Lord_Howe",
        "5 4 * * sun\nAsia/Kolkata", "0 22 * * 1-5\nPacific/Chatham", "0 0,12 1 */2 *\nUTC",
        "@daily\nAmerica/Los_Angeles", "@hourly\nAsia/Kathmandu", "@yearly\nPacific/Apia",
        "@weekly\nEtc/GMT+12", "0 9-17/2 * JAN-MAR,dec MON-FRI\nEurope/London",
        "59 23 31 12 *\nPacific/Kiritimati", "0 3 * * 7\nEurope/Dublin", "1-59/7 * * * *\nUTC",
        "0 0 31 * *\nAfrica/Casablanca", "0 0 30 2 *\nUTC", "* * * * *\nNot/AZone",
    ]
    for i, line in enumerate(lines):
        write("cron", f"seed_{i:02d}", line)


def crawl_config():
    for path in sorted(glob.glob(os.path.join(ROOT, "schemas/examples/crawl_config/*/*.json"))):
        if os.path.basename(path) == "_expected.json":
            continue
        kind = os.path.basename(os.path.dirname(path))
        write("crawl_config", f"schema_{kind}_{os.path.basename(path)[:-5]}", open(path, "rb").read())
    seed = open(os.path.join(ROOT, "demo/seed.sql")).read()
    for m in re.finditer(r"\((\d+), \d+, \d+, '\w+', '(\{.*?\})'\)", seed, re.S):
        write("crawl_config", f"demo_config_{m.group(1)}", json.dumps(json.loads(m.group(2)), indent=1))
    write("crawl_config", "extract_target_config",
          open(os.path.join(HERE, "data/extract_config.json"), "rb").read())


RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Shop news</title><link>https://shop.example.com/</link>
<item><title>New: A Light in the Attic</title><link>https://shop.example.com/catalogue/a-light_1000/index.html</link>
<guid>tag:shop,2024:1000</guid><pubDate>Mon, 06 May 2024 10:00:00 +0200</pubDate></item>
<item><title>Restocked &amp; cheaper</title><link>/catalogue/tipping_999/index.html</link><guid>tag:shop,2024:999</guid>
<pubDate>Tue, 07 May 2024 08:30:00 GMT</pubDate></item></channel></rss>
"""

ATOM = """<?xml version="1.0" encoding="ISO-8859-1"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Caf\xe9</title>
<link rel="next" href="/feed.xml?page=2"/>
<entry><id>urn:uuid:1225c695</id><title>Cr\xe8me</title><link href="/catalogue/creme_1/index.html"/></entry>
</feed>
"""

API = {
    "data": [
        {"id": "7", "attributes": {"name": " Lamp  shade ", "price": {"amount": "0012.50"}, "active": "yes",
                                   "updated_at": "2024-05-01T10:00:00+0200",
                                   "categories": [{"slug": "home"}, {"slug": "home"}, {"x": 1}],
                                   "tags": ["a", "b", "c"], "variants": [{"sku": "L-1", "size": "M"}, {"size": "L"}],
                                   "body": "<p>Bright &amp; warm</p>"},
         "links": {"self": "https://api.shop.example.com/v2/products/7"}},
        {"id": 8, "attributes": {"name": "Chair", "price": {"amount": 19.9}, "active": 0}},
    ],
    "meta": {"page": 2},
}

DETAIL_JSON = {"product": {"name": "Lamp", "tags": ["x", {"tags": ["y"]}]},
               "links": [{"href": "/catalogue/lamp_7/index.html"}, {"href": "https://other.example/x"}]}


def extract():
    # Selector byte: page type (0 listing, 1 detail, 2 api, 3 feed) | content type << 2 | url << 6.
    def sel(page, ctype, url=0):
        return bytes([page | (ctype << 2) | (url << 6)])

    pages = os.path.join(ROOT, "tests/data/pages")
    read = lambda name: open(os.path.join(pages, name), "rb").read()
    write("extract", "listing_html", sel(0, 0) + read("listing.html"))
    write("extract", "product_html_as_detail", sel(1, 0, 1) + read("product.html"))
    write("extract", "broken_html_as_listing", sel(0, 1) + read("broken.html"))
    write("extract", "broken_html_as_detail", sel(1, 7) + read("broken.html"))
    write("extract", "latin1_html_as_detail", sel(1, 2) + read("latin1.html"))
    write("extract", "api_json", sel(2, 8, 2) + json.dumps(API).encode())
    write("extract", "detail_json_auto", sel(1, 9, 1) + json.dumps(DETAIL_JSON).encode())
    write("extract", "feed_rss", sel(3, 11, 3) + RSS.encode())
    write("extract", "feed_atom_latin1", sel(3, 12, 3) + ATOM.encode("latin-1"))
    write("extract", "detail_xhtml", sel(1, 14) + read("product.html"))


ROBOTS = {
    # doc.rust-lang.org/robots.txt, as rustup ships it.
    "rust_doc": (
        "User-agent: *\nDisallow: /1.\nDisallow: /0.\nDisallow: /book/first-edition/\n"
        "Disallow: /book/second-edition/\nDisallow: /stable/book/first-edition/\n"
        "Disallow: /stable/book/second-edition/\nDisallow: /beta/book/first-edition/\n"
        "Disallow: /beta/book/second-edition/\nDisallow: /nightly/book/first-edition/\n"
        "Disallow: /nightly/book/second-edition/\n\nSitemap: https://doc.rust-lang.org/sitemap.txt\n"),
    # RFC 9309 section 5.
    "rfc9309_example": (
        "User-Agent: *\nDisallow: *.gif$\nDisallow: /example/\nAllow: /publications/\n\n"
        "User-Agent: foobot\nDisallow:/\nAllow:/example/page.html\nAllow:/example/allowed.gif\n\n"
        "User-Agent: barbot\nUser-Agent: bazbot\nDisallow: /example/page.html\n\n"
        "User-Agent: quxbot\n\nEOF\n"),
    # WordPress's default.
    "wordpress": ("User-agent: *\nDisallow: /wp-admin/\nAllow: /wp-admin/admin-ajax.php\n\n"
                  "Sitemap: https://blog.example.com/wp-sitemap.xml\n"),
    # A shop: faceted search off limits, a slower crawler, a blocked one, wildcards and anchors.
    "shop": ("# robots.txt for shop.example.com\r\nUser-agent: *\r\nDisallow: /cart\r\n"
             "Disallow: /checkout/\r\nDisallow: /*?sort=\r\nDisallow: /*&filter=*\r\n"
             "Allow: /catalogue/*.html$\r\nDisallow: /*.pdf$\r\nCrawl-delay: 1.5\r\n\r\n"
             "User-agent: CeleriacBot\r\nUser-agent: celeriacbot-news\r\nAllow: /\r\n"
             "Disallow: /private/\r\nCrawl-delay: 0.25\r\n\r\nUser-agent: BadBot\r\nDisallow: /\r\n\r\n"
             "Sitemap: https://shop.example.com/sitemap_index.xml\r\n"
             "Sitemap: https://shop.example.com/sitemap_index.xml\r\n"),
    # Google's documented precedence examples, escapes, a BOM and typos.
    "google_examples": ("\ufeffuser-agent: googlebot-news\nuser-agent: *\nallow: /p\ndisallow: /\n"
                        "allow: /folder\ndisallow: /folder\nallow: /page\ndisallow: /*.htm\n"
                        "allow: /$\ndisallow: /\nallow: /dir/index.html\ndissallow: /%7ejoe/\n"
                        "disallow /caf%C3%A9\nuseragent: other\ncrawl delay: 10\n"
                        "disallow: /ツ\nsitemap: /relative.xml\n"),
    # Wikipedia-style: many agents blocked, long list, comments everywhere.
    "many_groups": ("# Please read the crawler policy first.\nUser-agent: MJ12bot\nDisallow: /\n\n"
                    "User-agent: HTTrack\nDisallow: /\n\nUser-agent: wget\nDisallow: /\n\n"
                    "User-agent: *\nAllow: /w/api.php?action=mobileview&\nAllow: /w/load.php?\n"
                    "Disallow: /w/\nDisallow: /api/\nDisallow: /trap/\nDisallow: /wiki/Special:\n"
                    "Disallow: /wiki/Spezial:\nDisallow: /wiki/%D0%A1%D0%BB%D1%83%D0%B6%D0%B5%D0%B1%D0%BD%D0%B0%D1%8F:\n"
                    "Disallow: /wiki/Special%3A\n# end\n"),
    "crawl_delays": ("User-agent: *\nCrawl-delay: -1\nCrawl-delay: abc\nCrawl-delay: 1e9\n"
                     "Crawl-delay: 3\nDisallow:\n"),
}


def robots():
    for name, text in ROBOTS.items():
        write("robots", name, text)


URLS = {
    "relative_links": "https://books.example.com/catalogue/category/books/travel_2/index.html\n"
                      "../../../a-light_1000/index.html\npage-2.html?x=1#top\n/static/img.jpg\n"
                      "//cdn.example.com/a b.png\n?page=3\n#frag\n  \t/trim\n\\windows\\path\n"
                      "HTTP://Example.COM:80/a/./b/../c\nhttps://user:pw@h.example:443/p?q=%zz\n"
                      "javascript:alert(1)\nmailto:x@example.com\nhttp://[::1]:8080/v6\n"
                      "https://例え.jp/\nhttp://h:99999/\n",
    "redirects": "http://a.example/b/c?d=e\nhttps://a.example/login?next=%2Fb\n/other\n"
                 "../up\nhttp://a.example:8080\nHTTPS://B.EXAMPLE/X#y\n",
    "api_pagination": "https://api.shop.example.com/v2/products?page=1&per_page=100\n"
                      "https://api.shop.example.com/v2/products?page=2&page=3&per_page=100\n"
                      "https://api.shop.example.com/v2/products?pa%67e=4&a+b=c%20d\n",
    "amqp": "amqp://guest:guest@127.0.0.1:16672//\namqps://u:p%40ss@rabbit.example:5671/vh%2Fost?heartbeat=30\n"
            "amqp://\namqp://h/?heartbeat=x&frame_max=1\namqp://[::1]:5672/%2F\nredis://localhost\n"
            "amqp:///vh\namqp://u:p w@:5673/a/../b\n",
    # Spellings one fingerprint should cover (url::Canonicalize) and hosts curl rewrites.
    "canonical": "HTTP://B\u00dcCHER.example:80/a/./%7euser/%2e%2E/b?z=2&a=%41&a=1#f\n"
                 "http://b%C3%BCcher.example/~user/b?a=1&a=A&z=2\nhttp://2130706433/x?\n"
                 "http://[2001:DB8:0::7]:80/\nhttp://%41.example/%zz%2f%C3%A9\n",
}


def url():
    for name, text in URLS.items():
        write("url", name, text)


def main():
    for target, make in [("celery_codec", celery_codec), ("amqp_table", amqp_table), ("cron", cron),
                         ("crawl_config", crawl_config), ("extract", extract), ("robots", robots),
                         ("url", url)]:
        shutil.rmtree(os.path.join(CORPUS, target), ignore_errors=True)
        make()
        print(target, len(os.listdir(os.path.join(CORPUS, target))), "seeds")


if __name__ == "__main__":
    main()
