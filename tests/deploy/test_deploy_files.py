"""docker-compose.yml and the Dockerfile, checked without a container runtime (issue 17).

Docker cannot run on the build machines, so what can be checked here is checked:

- Debian's `docker-compose config` accepts the file, with and without the demo profile;
- it runs the whole system: Postgres and RabbitMQ with data volumes (RabbitMQ with a fixed host
  name, which names its node and data), migrate, the orchestrator worker, beat, the api, the
  extractor (scalable: no fixed name or host port) and, in the demo profile, the demo site and
  its rows; every long-running service has a health check, and the Celeriac ones use the
  script the image installs;
- the binaries accept the settings each service gives them through the environment, and every
  CELERIAC_* variable there names a key the binary reads (a misspelt one would be ignored);
- every shared library the built binaries link (ldd) belongs to a Debian package the
  Dockerfile's runtime stage installs, named or pulled in by the packages named.

Needs the built binaries (CELERIAC_BIN_DIR, default build/bin) and docker-compose
(./dev deps); no service.
"""
import os
import re
import shutil
import subprocess
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("CELERIAC_BIN_DIR") or os.path.join(REPO, "build", "bin")
COMPOSE_FILE = os.path.join(REPO, "docker-compose.yml")
DOCKERFILE = os.path.join(REPO, "Dockerfile")

CELERIAC_IMAGE = "celeriac:latest"
HEALTHCHECK = "celeriac-healthcheck"
# service: (binary, arguments), as the image's entrypoint (orchestrator) and the file run it.
CELERIAC_SERVICES = {
    "migrate": ("orchestrator", ["migrate"]),
    "worker": ("orchestrator", ["worker"]),
    "beat": ("orchestrator", ["beat"]),
    "api": ("orchestrator", ["api"]),
    "extractor": ("extractor", ["worker"]),
}
DEMO_SERVICES = {"demo-site", "demo-seed"}


def run_compose(*args):
    """docker-compose ARGS on the repository's file, in an environment of its own: no variable
    of the caller's shell (or CI's) reaches the file, so its defaults are what is checked."""
    exe = shutil.which("docker-compose")
    if exe is None:
        raise AssertionError("docker-compose is not installed (./dev deps installs it)")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run([exe, "--project-directory", REPO, "-f", COMPOSE_FILE, *args],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


def compose_config(*profiles):
    """The file as docker-compose reads it, variables substituted, anchors merged."""
    args = []
    for profile in profiles:
        args += ["--profile", profile]
    out = run_compose(*args, "config")
    if out.returncode != 0:
        raise AssertionError("docker-compose %sconfig failed (exit %d):\n%s%s" % (
            "".join("--profile %s " % p for p in profiles), out.returncode, out.stdout,
            out.stderr))
    return yaml.safe_load(out.stdout)


class ComposeFile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Debian's docker-compose (1.29) lists every service, whatever profiles are asked for.
        cls.config = compose_config("demo")

    def test_docker_compose_accepts_it(self):
        for profiles in ((), ("demo",)):
            args = [a for p in profiles for a in ("--profile", p)]
            out = run_compose(*args, "config", "--quiet")
            self.assertEqual(out.returncode, 0, "docker-compose %s config --quiet:\n%s" % (
                " ".join(args), out.stderr))

    def test_the_whole_system(self):
        services = self.config["services"]
        self.assertEqual(set(services), {"postgres", "rabbitmq", *CELERIAC_SERVICES, *DEMO_SERVICES})
        for name, service in services.items():
            self.assertEqual(service.get("profiles", []), ["demo"] if name in DEMO_SERVICES else [],
                             "%s: the demo runs only with --profile demo, the rest always" % name)
        for name, (binary, args) in CELERIAC_SERVICES.items():
            service = services[name]
            self.assertEqual(service.get("image"), CELERIAC_IMAGE, name)
            self.assertIn("build", service, "%s: `docker-compose up` must be able to build it" % name)
            entrypoint = service.get("entrypoint") or ["orchestrator"]
            self.assertEqual(entrypoint + service.get("command", []), [binary] + args, name)
        site = services["demo-site"]
        self.assertEqual(site.get("entrypoint"), ["demo-site"])
        self.assertIn("0.0.0.0", site.get("command", []), "the demo site must listen beyond loopback")
        seed = services["demo-seed"]
        self.assertIn("http://demo-site:18081", " ".join(seed["command"]),
                      "the demo rows must point at the demo-site service")

    def test_data_volumes_and_a_fixed_rabbitmq_host_name(self):
        services, volumes = self.config["services"], self.config.get("volumes", {})

        def named_volume_at(service, target):
            for v in services[service].get("volumes", []):
                if isinstance(v, str):  # SOURCE:TARGET[:MODE]
                    parts = v.split(":")
                    v = {"source": parts[0], "target": parts[1] if len(parts) > 1 else ""}
                if v.get("target") == target and v.get("source") in volumes:
                    return
            self.fail("%s has no named volume at %s" % (service, target))

        named_volume_at("postgres", "/var/lib/postgresql/data")
        named_volume_at("rabbitmq", "/var/lib/rabbitmq")
        self.assertTrue(services["rabbitmq"].get("hostname"),
                        "RabbitMQ needs a fixed host name: its node, and its data, are named by it")

    def test_every_service_has_a_health_check(self):
        services = self.config["services"]
        # Jobs (others wait for them to complete) are judged by their exit status instead.
        jobs = {dep for s in services.values() for dep, c in (s.get("depends_on") or {}).items()
                if c.get("condition") == "service_completed_successfully"}
        self.assertEqual(jobs, {"migrate"})
        jobs.add("demo-seed")  # nothing waits for it; it exits once the rows are in
        for name, service in services.items():
            if name in jobs:
                self.assertNotEqual(service.get("restart"), "unless-stopped", name)
                continue
            check = service.get("healthcheck")
            self.assertTrue(check and check.get("test") and not check.get("disable"),
                            "%s has no health check" % name)
            if service.get("image") == CELERIAC_IMAGE:
                self.assertEqual(check["test"][:2], ["CMD", HEALTHCHECK], name)
            for dep, cond in (service.get("depends_on") or {}).items():
                if dep not in jobs:
                    self.assertEqual(cond.get("condition"), "service_healthy", (name, dep))
        with open(DOCKERFILE) as f:
            self.assertRegex(f.read(), r"COPY deploy/healthcheck /usr/local/bin/%s\b" % HEALTHCHECK)

    def test_extractors_scale(self):
        extractor = self.config["services"]["extractor"]
        self.assertNotIn("container_name", extractor, "a fixed name allows one container")
        self.assertFalse(extractor.get("ports"), "a published host port allows one container")

    def test_binaries_accept_each_services_settings(self):
        for name, (binary, _) in CELERIAC_SERVICES.items():
            env = {k: str(v) for k, v in self.config["services"][name].get("environment", {}).items()}
            self.assertTrue(env, "%s is configured by no environment variable" % name)
            out = subprocess.run([os.path.join(BIN, binary), "config", "show"],
                                 env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                                 text=True, timeout=30)
            self.assertEqual(out.returncode, 0, "%s: %s config show refused its settings:\n%s" % (
                name, binary, out.stderr))
            shown = {}
            for line in out.stdout.splitlines():
                key, _, value = line.partition(" = ")
                section, _, field = key.partition(".")
                value = value[1:-1] if value.startswith('"') else value
                shown[("CELERIAC_%s_%s" % (section, field)).upper()] = value
            for var, value in env.items():
                if not var.startswith("CELERIAC_"):
                    continue
                if var not in shown:
                    self.fail("%s: %s names no key %s reads" % (name, var, binary))
                if "***" not in shown[var]:  # secrets are shown masked
                    self.assertEqual(shown[var], value, "%s: %s" % (name, var))


def dockerfile_runtime_stage():
    """(packages apt-get installs, binaries copied from the build stage) of the last stage."""
    with open(DOCKERFILE) as f:
        text = re.sub(r"\\\n", " ", f.read())
    lines = [l for l in text.splitlines() if not l.lstrip().startswith("#")]
    start = max(i for i, l in enumerate(lines) if re.match(r"\s*FROM\s", l, re.I))
    packages, binaries = set(), set()
    for line in lines[start + 1:]:
        words = line.split()
        if not words:
            continue
        if words[0].upper() == "RUN":
            for command in re.split(r"&&|;|\|\|", line[len(words[0]):]):
                args = command.split()
                if args[:2] == ["apt-get", "install"] or args[:1] == ["apt-get"] and "install" in args:
                    after = args[args.index("install") + 1:]
                    packages.update(a for a in after if not a.startswith("-"))
        elif words[0].upper() == "COPY" and any(w.startswith("--from=") for w in words):
            sources = [w for w in words[1:-1] if not w.startswith("--")]
            binaries.update(os.path.basename(s) for s in sources if "/build/bin/" in s)
    return packages, binaries


def installed_packages():
    """{package: (depends, provides)} of every installed Debian package, as dpkg knows them."""
    out = subprocess.run(["dpkg-query", "-W", "-f",
                          "${Package}\t${db:Status-Abbrev}\t${Depends}, ${Pre-Depends}\t${Provides}\n"],
                         check=True, capture_output=True, text=True).stdout
    packages = {}
    for line in out.splitlines():
        name, status, depends, provides = line.split("\t")
        if status.startswith("ii"):
            packages[name] = (depends, provides)
    return packages


def package_name(token):
    """'libc6:any (>= 2.34)' -> 'libc6'."""
    return re.split(r"[\s:(]", token.strip(), maxsplit=1)[0]


def closure(named, installed):
    """The packages apt installs for `named`: them and their Depends/Pre-Depends, recursively,
    each alternative resolved to the one installed here (a Debian 12 machine, as the image)."""
    providers = {}
    for name, (_, provides) in installed.items():
        for virtual in filter(None, map(package_name, provides.split(","))):
            providers.setdefault(virtual, set()).add(name)
    seen, todo = set(), list(named)
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        if pkg not in installed:
            continue
        for group in installed[pkg][0].split(","):
            choices = [package_name(alt) for alt in group.split("|") if alt.strip()]
            for choice in choices:
                real = [choice] if choice in installed else sorted(providers.get(choice, ()))
                if real:
                    todo.extend(real)
                    break
    return seen


def linked_libraries(binary):
    """{library path: soname} that ldd resolves for the binary; unresolved ones fail."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    libs = {}
    for line in out.splitlines():
        line = line.strip()
        if "not found" in line:
            raise AssertionError("%s: %s" % (binary, line))
        m = re.match(r"(\S+) => (/\S+)", line) or re.match(r"((/\S+))", line)
        if m:
            libs[m.group(2)] = m.group(1)
    return libs


def packages_of(paths):
    """{path: the Debian package that ships it (dpkg -S), or None}. dpkg may know a library
    by its /usr-merged path or by the file its symlink names: each is asked, in one call."""
    candidates = {}
    for path in paths:
        forms = [path, os.path.realpath(path)]
        forms += ["/usr" + p for p in list(forms) if not p.startswith("/usr/")]
        candidates[path] = forms
    asked = sorted({form for forms in candidates.values() for form in forms})
    out = subprocess.run(["dpkg", "-S", *asked], capture_output=True, text=True).stdout
    owner = {}
    for line in out.splitlines():
        if line.startswith("diversion "):
            continue
        package, _, file = line.partition(": ")
        owner.setdefault(file, package_name(package.split(",")[0]))
    return {path: next((owner[f] for f in forms if f in owner), None)
            for path, forms in candidates.items()}


class RuntimeImage(unittest.TestCase):
    def test_runtime_stage_installs_every_linked_library(self):
        named, binaries = dockerfile_runtime_stage()
        self.assertTrue(named, "no apt-get install in the Dockerfile's last stage")
        self.assertEqual(binaries, {"orchestrator", "extractor", "demo-site"})
        installed = installed_packages()
        unknown = sorted(p for p in named if p not in installed)
        self.assertFalse(unknown, "the runtime stage names packages not installed on this "
                                  "machine, whose dependencies cannot be checked: %s" % unknown)
        available = closure(named, installed)
        linked = {}
        for binary in sorted(binaries):
            path = os.path.join(BIN, binary)
            self.assertTrue(os.access(path, os.X_OK), "%s was not built" % path)
            linked[binary] = linked_libraries(path)
        owners = packages_of({lib for libs in linked.values() for lib in libs})
        missing = {}
        for binary, libs in linked.items():
            for lib, soname in libs.items():
                package = owners[lib]
                if package is None:
                    missing.setdefault("(no Debian package ships %s)" % lib, set()).add(binary)
                elif package not in available:
                    missing.setdefault("%s (%s)" % (package, soname), set()).add(binary)
        if missing:
            self.fail("the Dockerfile's runtime stage does not install:\n" + "\n".join(
                "  %s, linked by %s" % (what, ", ".join(sorted(by)))
                for what, by in sorted(missing.items())))


if __name__ == "__main__":
    unittest.main()
