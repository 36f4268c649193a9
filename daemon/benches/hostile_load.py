#!/usr/bin/env python3
"""The two memory attacks of SECURITY.md at full size, against the release daemon with its
default settings (standard library only; 127.0.0.1 only).

  python3 daemon/benches/hostile_load.py [--daemon target/release/deepstackd]
                                         [--photos target/testdata]

A: 40 clients upload a 45 MB body at once (under MAX_UPLOAD_BYTES). B: 300 clients declare a
40 MB recognize, send 1 MB, then stall. During each: an ordinary recognize of a real photo
every 0.5 s (answered correctly within 2 s?) and one registration (in the gallery after?).
Prints the daemon's peak resident memory (VmHWM, reset before each attack) and how every
attacking request ended.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

MB = 1 << 20


def multipart(fields, files):
    boundary = uuid.uuid4().hex
    out = b""
    for name, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                f"{value}\r\n").encode()
    for name, data in files.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                f"filename=\"{name}.jpg\"\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", out


def head(path, content_type, length):
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n").encode()


def read_answer(sock):
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        if not data:
            return None, f"no answer ({e.__class__.__name__})"
    if b"\r\n\r\n" not in data:
        return None, "no answer"
    status = int(data.split(b" ", 2)[1])
    body = data.split(b"\r\n\r\n", 1)[1]
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body[:80]


def post(port, path, fields, files, timeout=30):
    ct, body = multipart(fields, files)
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(head(path, ct, len(body)) + body)
    return read_answer(s)


def vm(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def outcome(status, answer):
    if status is None:
        return answer
    if isinstance(answer, dict):
        reason = answer.get("reason", "")
        setting = next((w.strip("()") for w in reason.split() if w.startswith("(")), "")
        return f"{status} {answer.get('error')}" + (f" [{setting}]" if setting else "")
    return f"{status} (not JSON)"


def during(port, photos, stop, log):
    """Ordinary requests while an attack runs."""
    photo = open(os.path.join(photos, "obama_1280x720.jpg"), "rb").read()
    registered = False
    while not stop.is_set():
        t = time.time()
        status, answer = post(port, "/v1/vision/face/recognize", {}, {"image": photo})
        took = time.time() - t
        ok = status == 200 and answer["predictions"][0]["userid"] == "before"
        log.append(("recognize", ok, took))
        if not registered:
            reg = open(os.path.join(photos, "obama2.jpg"), "rb").read()
            status, answer = post(port, "/v1/vision/face/register", {"userid": "during"},
                                  {"image": reg})
            log.append(("register", status == 200 and answer.get("success") is True, 0.0))
            registered = True
        time.sleep(0.5)


def attack(name, port, pid, photos, clients, run_one):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    before = vm(pid, "VmRSS:")
    stop, log, results = threading.Event(), [], [None] * clients
    helper = threading.Thread(target=during, args=(port, photos, stop, log))
    helper.start()
    t0 = time.time()

    def one(i):
        results[i] = run_one()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_done = time.time() - t0
    stop.set()
    helper.join()
    peak = vm(pid, "VmHWM:")
    counts = {}
    for status, answer, took in results:
        key = outcome(status, answer)
        counts.setdefault(key, []).append(took)
    print(f"\n{name}: {clients} clients; resident before {before:.0f} MiB, "
          f"peak {peak:.0f} MiB; all ended within {all_done:.1f} s")
    for key, times in sorted(counts.items()):
        print(f"  {len(times):4d} x {key}  (ended after {min(times):.1f}-{max(times):.1f} s)")
    recs = [x for x in log if x[0] == "recognize"]
    print(f"  ordinary recognize during it: {sum(1 for x in recs if x[1])}/{len(recs)} correct, "
          f"slowest {max((x[2] for x in recs), default=0):.2f} s")
    regs = [x for x in log if x[0] == "register"]
    print(f"  registration during it: {'ok' if regs and regs[0][1] else 'FAILED'}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--daemon", default="target/release/deepstackd")
    ap.add_argument("--photos", default="target/testdata")
    ap.add_argument("--port", type=int, default=18477)
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="hostile-load-")
    env = {k: v for k, v in os.environ.items()}
    env["RUST_LOG"] = "warn"
    daemon = subprocess.Popen([args.daemon, "--bind", "127.0.0.1", "--port", str(args.port),
                               "--data-dir", data, "--vision-face"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        obama = open(os.path.join(args.photos, "obama.jpg"), "rb").read()
        status, answer = post(args.port, "/v1/vision/face/register", {"userid": "before"},
                              {"image": obama})
        assert status == 200, answer

        noise = os.urandom(45 * MB)
        ct, body = multipart({}, {"image": noise})

        def big_upload():
            t = time.time()
            s = socket.create_connection(("127.0.0.1", args.port), timeout=120)
            try:
                s.sendall(head("/v1/vision/face/recognize", ct, len(body)) + body)
            except OSError:
                pass
            status, answer = read_answer(s)
            return status, answer, time.time() - t

        attack("A: 45 MB uploads at once", args.port, daemon.pid, args.photos, 40, big_upload)

        def stalled():
            t = time.time()
            s = socket.create_connection(("127.0.0.1", args.port), timeout=120)
            s.sendall(head("/v1/vision/face/recognize", ct, 40 * MB) + body[:1 * MB])
            status, answer = read_answer(s)
            return status, answer, time.time() - t

        attack("B: 40 MB recognize, 1 MB sent, then stalled", args.port, daemon.pid,
               args.photos, 300, stalled)

        status, answer = post(args.port, "/v1/vision/face/list", {}, {})
        print(f"\ngallery afterwards: {answer.get('faces')}")
    finally:
        daemon.terminate()
        daemon.wait()


if __name__ == "__main__":
    sys.exit(main())
