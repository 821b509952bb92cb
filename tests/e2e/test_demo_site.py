"""The bundled demo site serves what demo/seed.sql's crawl configs expect (issue 6, point 6).

Starts build/bin/demo-site on a free loopback port and crawls it the way each demo config says,
with a small reference interpreter of the config features the demo uses, on parsel (lxml, the
same libxml2 HTML parser the extractor uses). The items must equal `demo-site --print-expected`,
the broken pages must fail the way the site's header promises, and robots.txt must keep the
crawl out of /private/. This checks the site and the seed against each other, not the extractor.

Needs only the built demo-site (CELERIAC_BIN_DIR, default build/bin).
"""
import decimal
import json
import os
import re
import subprocess
import unittest
import urllib.error
import urllib.parse
import urllib.request
import urllib.robotparser

import parsel

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("CELERIAC_BIN_DIR") or os.path.join(REPO, "build", "bin")
DEMO_SITE = os.path.join(BIN, "demo-site")
SEED_ORIGIN = "http://127.0.0.1:18081"


def seed_configs():
    """{id: (status, config)} from demo/seed.sql's crawl_configs rows."""
    with open(os.path.join(REPO, "demo", "seed.sql")) as f:
        sql = f.read()
    rows = re.findall(r"\((\d+), (\d+), (\d+), '(\w+)', '(\{.*?\})'\)", sql, re.S)
    return {int(r[0]): (r[3], json.loads(r[4])) for r in rows}


class Crawl:
    """Runs one config against the site: follows links, pagination and robots.txt like the
    extractor must, and records items, item errors and failed requests."""

    def __init__(self, config, origin):
        self.config = config
        self.origin = origin
        self.items = {}
        self.item_errors = []  # (url, field)
        self.failed = []  # (url, status)
        self.fetched = []
        self.robots = None
        if config.get("politeness", {}).get("robots_txt", True):
            self.robots = urllib.robotparser.RobotFileParser(origin + "/robots.txt")
            self.robots.read()

    def rebase(self, url):
        return url.replace(SEED_ORIGIN, self.origin, 1)

    def fetch(self, url):
        retries = self.config.get("retry", {}).get("max_retries", 3)
        for attempt in range(retries + 1):
            self.fetched.append(url)
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                status = e.code
                if status < 500 and status not in (408, 429):
                    break
        self.failed.append((url, status))
        return status, None

    def run(self):
        seen = set()
        queue = [(self.rebase(u), self.config["start_page"], 0) for u in self.config["start_urls"]]
        while queue:
            url, page_type, depth = queue.pop(0)
            if url in seen:
                continue
            seen.add(url)
            if self.robots and not self.robots.can_fetch("*", url):
                continue
            status, body = self.fetch(url)
            if body is None:
                continue
            page = self.config["pages"][page_type]
            sel = parsel.Selector(text=body)
            new_items = self.extract(page.get("item"), sel, url)
            for rule in page.get("links", []):
                for href in sel.css(rule["css"]).xpath("@" + rule.get("attr", "href")).getall():
                    target = urllib.parse.urljoin(url, href)
                    if urllib.parse.urlsplit(target).netloc == urllib.parse.urlsplit(url).netloc:
                        queue.append((target, rule["route_to"], depth + 1))
            pagination = page.get("pagination")
            if pagination and "next" in pagination:
                nxt = sel.css(pagination["next"]["css"]).xpath(
                    "@" + pagination["next"].get("attr", "href")).get()
                if nxt:
                    queue.insert(0, (urllib.parse.urljoin(url, nxt), page_type, depth))
            elif pagination and "param" in pagination:
                parts = urllib.parse.urlsplit(url)
                query = dict(urllib.parse.parse_qsl(parts.query))
                value = int(query.get(pagination["param"], pagination.get("start", 1)))
                step = pagination.get("step", 1)
                stop = pagination.get("stop_when_no_new_items", True) and new_items == 0
                if not stop and value + step <= pagination.get("max", 10**9):
                    query[pagination["param"]] = str(value + step)
                    queue.insert(0, (urllib.parse.urlunsplit(
                        parts._replace(query=urllib.parse.urlencode(query))), page_type, depth))
        return self

    def extract(self, item, sel, url):
        if not item:
            return 0
        containers = sel.css(item["container"]["css"]) if "container" in item else [sel]
        new = 0
        for node in containers:
            values, missing = {}, None
            for name, field in item["fields"].items():
                value = self.field(field, node, url)
                if value is None and field.get("required"):
                    missing = name
                values[name] = value
            if missing:
                self.item_errors.append((url, missing))
                continue
            key = tuple(json.dumps(values[k]) for k in item["key"])
            new += key not in self.items
            self.items[key] = values
        return new

    def field(self, field, node, url):
        if "url" in field:
            assert field["url"] == "full"
            return url
        found = []
        for el in node.css(field["css"]):
            if "attr" in field:
                v = el.attrib.get(field["attr"])
            else:
                assert field.get("text", "normalized") == "normalized"
                v = " ".join(el.xpath("string()").get().split())
            if v is not None:
                found.append(v)
        for step in field.get("pipeline", []):
            (op, arg), = step.items()
            if op == "trim":
                found = [v.strip() for v in found]
            elif op == "lower":
                found = [v.lower() for v in found]
            elif op == "urljoin":
                found = [urllib.parse.urljoin(url, v) for v in found]
            elif op == "map":
                found = [arg.get(v, v) for v in found]
            elif op == "cast" and arg == "decimal":
                found = [str(decimal.Decimal(v)) for v in found]
            else:
                raise AssertionError("the reference crawl does not know %r" % step)
        if field.get("multiple"):
            return found or None
        return found[0] if found else None


class DemoSite(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(DEMO_SITE):
            raise RuntimeError("%s is missing: cmake --build build --target demo-site" % DEMO_SITE)
        cls.proc = subprocess.Popen([DEMO_SITE, "--port", "0", "--quiet"],
                                    stdout=subprocess.PIPE, text=True)
        line = cls.proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            cls.proc.kill()
            raise RuntimeError("demo-site did not start: %r" % line)
        cls.port = int(match.group(1))
        cls.origin = "http://127.0.0.1:%d" % cls.port
        cls.configs = seed_configs()

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        code = cls.proc.wait(timeout=10)
        if code != 0:
            raise RuntimeError("demo-site exited with %d on SIGTERM" % code)

    def expected(self, config_id):
        out = subprocess.run([DEMO_SITE, "--print-expected", str(config_id), "--port",
                              str(self.port)], check=True, capture_output=True, text=True).stdout
        return [json.loads(line) for line in out.splitlines()]

    def hits(self):
        with urllib.request.urlopen(self.origin + "/_demo/hits") as r:
            return json.load(r)

    def test_seed_has_the_configs_the_site_serves(self):
        self.assertEqual({i: s for i, (s, _) in self.configs.items()},
                         {1: "inactive", 2: "active", 3: "draft", 4: "active", 5: "inactive"})

    def test_config_2_products_with_broken_pages_and_robots(self):
        crawl = Crawl(self.configs[2][1], self.origin).run()
        items = sorted(crawl.items.values(), key=lambda i: i["sku"])
        expected = self.expected(2)
        self.assertEqual(len(items), 46)
        self.assertEqual(items, expected)
        broken = next(i for i in items if i["sku"] == "DEMO-015")
        self.assertEqual(broken["name"], "Smoky Ladle")  # the malformed page parsed
        self.assertEqual(broken["tags"], ["bestseller", "garden", "gift"])
        self.assertEqual(crawl.item_errors,
                         [(self.origin + "/products/hardy-apron", "sku")])
        self.assertEqual(sorted(crawl.failed), [
            (self.origin + "/products/discontinued-wild-pepper-mill", 404),
            (self.origin + "/products/rustic-soup-pot", 500)])
        self.assertEqual(crawl.fetched.count(self.origin + "/products/rustic-soup-pot"), 3,
                         "the 500 is retried max_retries (2) times")
        hits = self.hits()
        self.assertGreaterEqual(hits.get("/robots.txt", 0), 1)
        self.assertFalse([p for p in hits if p.startswith("/private/")],
                         "robots.txt disallows /private/")
        self.assertEqual(sum(1 for u in crawl.fetched if "?page=" in u), 5)

    def test_the_private_page_would_be_an_item_without_robots(self):
        with urllib.request.urlopen(self.origin + "/private/smoky-mandoline") as r:
            self.assertIn('itemprop="sku"', r.read().decode())
        with urllib.request.urlopen(self.origin + "/robots.txt") as r:
            self.assertIn("Disallow: /private/", r.read().decode())

    def test_flaky_page_fails_once_then_serves(self):
        url = self.origin + "/products/sturdy-salad-bowl"
        if self.hits().get("/products/sturdy-salad-bowl", 0) == 0:
            with self.assertRaises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(url)
            self.assertEqual(caught.exception.code, 503)
            self.assertEqual(caught.exception.headers["Retry-After"], "1")
        with urllib.request.urlopen(url) as r:
            self.assertEqual(r.status, 200)

    def test_config_1_listing_items(self):
        crawl = Crawl(self.configs[1][1], self.origin).run()
        self.assertEqual(len(crawl.items), 50)
        self.assertFalse(crawl.failed)
        urls = sorted(i["url"] for i in crawl.items.values())
        self.assertIn(self.origin + "/private/smoky-mandoline", urls)
        self.assertTrue(all(u.startswith(self.origin + "/") for u in urls))

    def test_config_4_clearance_stops_when_a_page_repeats(self):
        crawl = Crawl(self.configs[4][1], self.origin).run()
        items = sorted(crawl.items.values(), key=lambda i: i["sku"])
        self.assertEqual(items, self.expected(4))
        self.assertEqual(len(items), 24)
        self.assertEqual([u.rsplit("=", 1)[1] for u in crawl.fetched], ["1", "2", "3", "4"],
                         "page 4 repeats page 3: no new items, so pagination stops there")

    def test_retired_catalogue_is_gone_and_bad_pages_are_404(self):
        for path, status in (("/retired/", 410), ("/products?page=6", 404),
                             ("/products?page=x", 404), ("/nowhere", 404)):
            with self.assertRaises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(self.origin + path)
            self.assertEqual(caught.exception.code, status, path)

    def test_content_is_deterministic(self):
        bodies = []
        for _ in range(2):
            with urllib.request.urlopen(self.origin + "/products/golden-soup-pot") as r:
                bodies.append(r.read())
        self.assertEqual(bodies[0], bodies[1])


class Catalogue(unittest.TestCase):
    """--catalogue sections (tests/chaos crawls them): generated pages, one URL each, whose full
    crawl yields what --print-catalogue prints; fetches counted per path and per User-Agent."""

    SPEC = "small=7:3"

    @classmethod
    def setUpClass(cls):
        cls.proc = subprocess.Popen([DEMO_SITE, "--port", "0", "--quiet", "--catalogue", cls.SPEC,
                                     "--catalogue", "other=2"], stdout=subprocess.PIPE, text=True)
        line = cls.proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            cls.proc.kill()
            raise RuntimeError("demo-site did not start: %r" % line)
        cls.port = int(match.group(1))
        cls.origin = "http://127.0.0.1:%d" % cls.port

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        if cls.proc.wait(timeout=10) != 0:
            raise RuntimeError("demo-site exited with an error on SIGTERM")

    def get_json(self, path):
        with urllib.request.urlopen(self.origin + path) as r:
            return json.load(r)

    def test_a_full_crawl_yields_the_printed_items_each_page_fetched_once(self):
        # The shape of the configs tests/chaos writes for its sections.
        config = {
            "start_urls": [self.origin + "/c/small/page-1"], "start_page": "listing",
            "pages": {
                "listing": {"links": [{"css": "article.product h2 a", "route_to": "product"}],
                            "pagination": {"next": {"css": "a[rel=next]", "attr": "href"}}},
                "product": {"item": {"key": ["sku"], "fields": {
                    "sku": {"css": "[itemprop=sku]", "required": True,
                            "pipeline": [{"trim": True}]},
                    "name": {"css": "h1", "text": "normalized", "required": True},
                    "price": {"css": "[itemprop=price]", "attr": "content",
                              "pipeline": [{"cast": "decimal"}]},
                    "in_stock": {"css": ".availability", "pipeline": [
                        {"lower": True}, {"map": {"in stock": True, "sold out": False}}]},
                    "tags": {"css": "ul.tags li", "multiple": True, "pipeline": [{"trim": True}]},
                    "url": {"url": "full"}}}}}}
        crawl = Crawl(config, self.origin).run()
        out = subprocess.run([DEMO_SITE, "--print-catalogue", "small", "--catalogue", self.SPEC,
                              "--port", str(self.port)], check=True, capture_output=True,
                             text=True).stdout
        expected = [json.loads(line) for line in out.splitlines()]
        self.assertEqual([i["sku"] for i in expected], ["SMALL-%05d" % i for i in range(1, 8)])
        self.assertEqual(sorted(crawl.items.values(), key=lambda i: i["sku"]), expected)
        self.assertFalse(crawl.failed)
        pages = ["/c/small/page-%d" % k for k in (1, 2, 3)]
        items = ["/c/small/item-%05d" % i for i in range(1, 8)]
        self.assertEqual(sorted(urllib.parse.urlsplit(u).path for u in crawl.fetched),
                         sorted(pages + items))
        hits = self.get_json("/_demo/hits")
        self.assertEqual({p: hits.get(p) for p in pages + items}, {p: 1 for p in pages + items})

    def test_only_canonical_urls_in_range_exist(self):
        for path in ("/c/small/page-4", "/c/small/page-0", "/c/small/item-00008",
                     "/c/small/item-7", "/c/small/item-000007", "/c/none/page-1"):
            with self.assertRaises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(self.origin + path)
            self.assertEqual(caught.exception.code, 404, path)
        with urllib.request.urlopen(self.origin + "/c/other/item-00002") as r:
            self.assertIn("OTHER-00002", r.read().decode())

    def test_fetches_are_counted_per_user_agent(self):
        before = self.get_json("/_demo/agents").get("catalogue-test/1", 0)
        for _ in range(2):
            req = urllib.request.Request(self.origin + "/c/other/page-1",
                                         headers={"User-Agent": "catalogue-test/1"})
            urllib.request.urlopen(req).close()
        self.assertEqual(self.get_json("/_demo/agents")["catalogue-test/1"], before + 2)

    def test_a_bad_catalogue_spec_is_refused(self):
        for spec in ("small", "Big=3", "x=0", "x=3:0", "x=abc"):
            out = subprocess.run([DEMO_SITE, "--port", "0", "--catalogue", spec],
                                 capture_output=True, text=True, timeout=10)
            self.assertEqual(out.returncode, 2, spec)
            self.assertIn("--catalogue", out.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
