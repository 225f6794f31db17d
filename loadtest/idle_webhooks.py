#!/usr/bin/env python3
"""Webhook latency with and without idle connections held open, in one run.

Against a running `voxrelay serve` (a business must own --to): posts --webhooks signed voice
webhooks one after another and times each answer, first with no other connection open (the
baseline), then with --idle TCP connections opened beforehand that never send a byte. Prints
p50/p95/max per phase, and how many idle sockets the proxy closed to make room.

Standard library only. The signature is X-Twilio-Signature: base64(HMAC-SHA1(auth token,
URL + each form key and value, keys sorted)), shared/protocol/twilio.md section 3.1.

    python3 loadtest/idle_webhooks.py --proxy 127.0.0.1:8080 --to +15005550006 \
        --auth-token "$TWILIO_AUTH_TOKEN" --idle 300 --webhooks 200
"""

import argparse
import base64
import hashlib
import hmac
import random
import http.client
import socket
import statistics
import time
import urllib.parse


def signed_webhook(host, auth_token, call_sid, to):
    url = f"http://{host}/twilio/voice"
    params = {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": "+14155550100",
        "To": to,
    }
    data = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return urllib.parse.urlencode(params), base64.b64encode(digest).decode()


def one(host, auth_token, call_sid, to):
    body, signature = signed_webhook(host, auth_token, call_sid, to)
    h, p = host.rsplit(":", 1)
    started = time.perf_counter()
    conn = http.client.HTTPConnection(h, int(p), timeout=10)
    conn.request(
        "POST",
        "/twilio/voice",
        body,
        {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature},
    )
    response = conn.getresponse()
    text = response.read().decode()
    took = (time.perf_counter() - started) * 1000
    conn.close()
    if response.status != 200 or "<Stream" not in text:
        raise SystemExit(f"webhook {call_sid}: HTTP {response.status}: {text[:200]}")
    return took


def phase(name, host, auth_token, to, n, first):
    times = [one(host, auth_token, f"CA{first + i:032x}", to) for i in range(n)]
    times.sort()
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    print(
        f"{name:<28} webhooks {n:>4}  p50 {statistics.median(times):6.2f} ms"
        f"  p95 {p95:6.2f} ms  max {times[-1]:6.2f} ms"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proxy", required=True, help="host:port of voxrelay serve")
    ap.add_argument("--to", required=True, help="a number a business owns (E.164)")
    ap.add_argument("--auth-token", required=True, help="TWILIO_AUTH_TOKEN of the proxy")
    ap.add_argument("--idle", type=int, default=300, help="idle connections to hold open")
    ap.add_argument("--webhooks", type=int, default=200, help="webhooks per phase")
    args = ap.parse_args()
    h, p = args.proxy.rsplit(":", 1)
    # Fresh CallSids each run, so a rerun against the same database takes new calls.
    base = random.randrange(1 << 100)
    phase("baseline (no idle sockets)", args.proxy, args.auth_token, args.to, args.webhooks, base)
    idle = [socket.create_connection((h, int(p))) for _ in range(args.idle)]
    time.sleep(0.2)
    phase(f"{args.idle} idle sockets open", args.proxy, args.auth_token, args.to, args.webhooks, base + args.webhooks)
    closed = 0
    for s in idle:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    print(f"idle sockets the proxy closed to make room: {closed} of {args.idle}")


if __name__ == "__main__":
    main()
