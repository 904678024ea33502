"""Throughput benchmark of `calpaca serve` (Python standard library only; not part of the tests).

    python3 bench_throughput.py --base http://127.0.0.1:PORT [--clients 1,4,8] [--requests 3]
                                [--max-tokens 64] [--endpoint completions|chat] [--label NAME]

For each concurrency level C, C client threads each send `requests` streaming requests one after
another (fixed length: ignore_eos, max_tokens), so C streams are always in flight. The default
endpoint is /v1/completions with a 2-4 token prompt, so the figure is generation throughput; with
--endpoint chat each request also carries the chat template's ~35-token system prompt. Reports
the aggregate generated tokens/s (all completion tokens / wall time of the level) and the p50/p99
time to first token (request sent → first content chunk received), and the speed-up of each level
over one client. Prints a Markdown table (docs/benchmarks.md) and a JSON line per level.
"""
import argparse
import http.client
import json
import threading
import time
import urllib.parse


ENDPOINT = "completions"


def stream_one(base, prompt, max_tokens):
    u = urllib.parse.urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=3600)
    body = {"max_tokens": max_tokens, "stream": True, "ignore_eos": True, "temperature": 0.8,
            "stream_options": {"include_usage": True}}
    if ENDPOINT == "chat":
        path, body["messages"] = "/v1/chat/completions", [{"role": "user", "content": prompt}]
    else:
        path, body["prompt"] = "/v1/completions", prompt
    t0 = time.perf_counter()
    c.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, r.status
    ttft, tokens, buf = None, 0, b""
    while True:
        chunk = r.read1(65536)
        if not chunk:
            break
        events = (buf + chunk).split(b"\n\n")
        buf = events.pop()  # an incomplete event waits for the next read
        for ev in events:
            data = ev[6:]
            if data == b"[DONE]":
                continue
            # Only the events up to the first text and the one with the usage counts are parsed:
            # the clients share the server's cores, so their per-token work is kept small.
            if ttft is not None and b'"usage":{' not in data:
                continue
            j = json.loads(data)
            if j.get("usage"):
                tokens = j["usage"]["completion_tokens"]
            for ch in j.get("choices", []):
                text = ch["delta"].get("content") if "delta" in ch else ch.get("text")
                if text and ttft is None:
                    ttft = time.perf_counter() - t0
    c.close()
    return ttft if ttft is not None else time.perf_counter() - t0, tokens


def percentile(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def level(base, clients, requests, max_tokens):
    ttfts, tokens, lock = [], [0], threading.Lock()
    prompts = ["北京", "Once upon", "学习编程", "天气"]

    def worker(w):
        for i in range(requests):
            t, n = stream_one(base, prompts[(w + i) % len(prompts)], max_tokens)
            with lock:
                ttfts.append(t)
                tokens[0] += n

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": clients * requests, "tokens": tokens[0], "wall_s": round(wall, 2),
            "tokens_per_s": round(tokens[0] / wall, 2), "ttft_p50_s": round(percentile(ttfts, 50), 3),
            "ttft_p99_s": round(percentile(ttfts, 99), 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--clients", default="1,4,8")
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--label", default="")
    ap.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    args = ap.parse_args()
    global ENDPOINT
    ENDPOINT = args.endpoint
    stream_one(args.base, "warm up", 4)
    rows = []
    for c in [int(x) for x in args.clients.split(",")]:
        r = level(args.base, c, args.requests, args.max_tokens)
        r["label"] = args.label
        print(json.dumps(r), flush=True)
        rows.append(r)
    base = rows[0]["tokens_per_s"]
    print(f"\n| model | clients | requests | tokens | aggregate tokens/s | vs 1 client | TTFT p50 (s) | TTFT p99 (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {args.label} | {r['clients']} | {r['requests']} | {r['tokens']} | {r['tokens_per_s']} | "
              f"{r['tokens_per_s'] / base:.2f}x | {r['ttft_p50_s']} | {r['ttft_p99_s']} |")


if __name__ == "__main__":
    main()
