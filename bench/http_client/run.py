#!/usr/bin/env python3
"""http::Client vs wrk against one nginx on loopback, side by side in one run.

Starts nginx (nginx-light) as a child process with a private prefix and config on a free
loopback port (cleartext HTTP/1.1, and TLS with HTTP/2 on a second port using a throwaway
self-signed certificate), serves a ~15 KB page, then for each concurrency runs wrk (one thread)
and bench_http_client (one loop thread) against the same URL and prints requests/s.

  /usr/bin/python3 bench/http_client/run.py [--build build] [--seconds 10] [--concurrency 16,64,256]
"""
import argparse, os, re, shutil, signal, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def page(size=15 * 1024):
    # Looks like a listing page: repeated items with links, so it compresses like HTML does.
    out, i = ["<!doctype html><html><head><title>bench</title></head><body><ul>\n"], 0
    while sum(map(len, out)) < size:
        out.append(f'<li class="item"><a href="/item/{i}">Item {i}</a> <span class="price">{i % 97}.99</span></li>\n')
        i += 1
    out.append("</ul></body></html>\n")
    return "".join(out)[:size]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--concurrency", default="16,64,256")
    ap.add_argument("--gzip", action="store_true", help="nginx gzips the page (both clients ask for it)")
    args = ap.parse_args()
    bench = os.path.join(args.build, "bin", "bench_http_client")
    if not os.path.exists(bench):
        sys.exit(f"{bench} missing: cmake --build {args.build} --target bench_http_client")

    tmp = tempfile.mkdtemp(prefix="celeriac-http-bench-")
    http_port, https_port = free_port(), free_port()
    with open(os.path.join(tmp, "page.html"), "w") as f:
        f.write(page())
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-keyout", f"{tmp}/key.pem", "-out", f"{tmp}/cert.pem"],
                   check=True, capture_output=True)
    gzip = "gzip on; gzip_types text/html; gzip_min_length 256;" if args.gzip else "gzip off;"
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(f"""
daemon off; master_process off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000; keepalive_timeout 60s; {gzip}
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{ listen 127.0.0.1:{http_port}; root {tmp}; }}
  server {{ listen 127.0.0.1:{https_port} ssl http2; root {tmp};
           ssl_certificate {tmp}/cert.pem; ssl_certificate_key {tmp}/key.pem; }}
}}
""")
    nginx = subprocess.Popen(["nginx", "-p", tmp, "-e", f"{tmp}/error.log", "-c", f"{tmp}/nginx.conf"])
    try:
        if not wait_port(http_port) or not wait_port(https_port):
            sys.exit("nginx did not start: " + open(f"{tmp}/error.log").read())
        url = f"http://127.0.0.1:{http_port}/page.html"
        h2url = f"https://localhost:{https_port}/page.html"
        print(f"nginx 1 worker, page {os.path.getsize(os.path.join(tmp, 'page.html'))} bytes,"
              f" {'gzip' if args.gzip else 'identity'}; {os.cpu_count()} cores shared with the machine's other work")
        print(f"{'client':<34}{'conc':>6}{'req/s':>10}{'ratio':>8}")
        for c in [int(x) for x in args.concurrency.split(",")]:
            wrk_cmd = ["wrk", "-t1", f"-c{c}", f"-d{args.seconds}s", url]
            if args.gzip:
                wrk_cmd[1:1] = ["-H", "Accept-Encoding: gzip"]
            wrk = subprocess.run(wrk_cmd, capture_output=True, text=True)
            m = re.search(r"Requests/sec:\s+([\d.]+)", wrk.stdout)
            if not m:
                print(wrk.stdout, wrk.stderr)
            wrk_rps = float(m.group(1)) if m else float("nan")
            # About as many requests as wrk made in the same time, so both runs last similarly.
            n = max(10000, int(wrk_rps * args.seconds * 0.8)) if m else 20000
            ours = subprocess.run([bench, "--url", url, "-n", str(n), "-c", str(c), "--warmup", str(2 * c)],
                                  capture_output=True, text=True)
            m2 = re.search(r"requests/s (\d+)", ours.stdout)
            our_rps = float(m2.group(1)) if m2 else float("nan")
            print(f"{'wrk -t1 (HTTP/1.1)':<34}{c:>6}{wrk_rps:>10.0f}{1.0:>8.2f}")
            print(f"{'http::Client 1 thread (HTTP/1.1)':<34}{c:>6}{our_rps:>10.0f}{our_rps / wrk_rps:>8.2f}")
            if ours.returncode != 0:
                print(ours.stdout, ours.stderr)
        for c in [int(x) for x in args.concurrency.split(",")][-1:]:
            n = 20000
            ours = subprocess.run([bench, "--url", h2url, "-n", str(n), "-c", str(c), "--warmup", str(2 * c),
                                   "--ca-file", f"{tmp}/cert.pem"], capture_output=True, text=True)
            m2 = re.search(r"requests/s (\d+)", ours.stdout)
            print(f"{'http::Client 1 thread (h2 + TLS)':<34}{c:>6}{float(m2.group(1)) if m2 else float('nan'):>10.0f}{'':>8}")
            if ours.returncode != 0:
                print(ours.stdout, ours.stderr)
    finally:
        nginx.send_signal(signal.SIGTERM)
        try:
            nginx.wait(5)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
