"""Load test for `calpaca serve` (Python standard library only; run by tests/e2e/serve_load.sh).

    python3 load_test.py --base http://127.0.0.1:PORT [--requests 200] [--concurrency 16]
                         [--disconnects 20] [--malformed 20] [--seed 1]

Sends `requests` requests from `concurrency` client threads: `disconnects` streaming chats that
the client abandons after the second event, `malformed` invalid bodies, and valid requests of
every kind (chat, streaming chat, completions, streaming completions, embeddings, /completion).
Checks: every valid request succeeds (no 5xx, well-formed bodies, streams end with [DONE]);
malformed ones get a 4xx OpenAI error object; afterwards every slot is free, nothing is queued,
exactly `disconnects` sequences were cancelled (per /metrics), and the resident memory is within
10 % of its value before the load (measured after a warm-up round). Every loop is bounded in
count and time. Prints a JSON summary and "load: N passed, M failed"; exits 1 on any failure.
"""
import argparse
import http.client
import json
import random
import socket
import sys
import threading
import time
import urllib.parse

ARGS = None


def conn():
    u = urllib.parse.urlparse(ARGS.base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=60)


def post(path, body, raw=False):
    c = conn()
    try:
        data = body if raw else json.dumps(body).encode()
        c.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def metrics():
    c = conn()
    try:
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    finally:
        c.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def sse_events(resp):
    """Yields the data payloads of an SSE response."""
    buf = b""
    while True:
        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(1)
        if not chunk:
            return
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            for line in ev.split(b"\n"):
                if line.startswith(b"data: "):
                    yield line[6:].decode()


def chat_body(rng, stream, max_tokens):
    q = rng.choice(["你好", "介绍一下北京", "写一首诗", "What is 1+1?", "讲个笑话", "总结一下这段话：今天天气很好。"])
    return {"model": "x", "messages": [{"role": "user", "content": q}], "max_tokens": max_tokens,
            "temperature": rng.choice([0, 0.2, 0.8]), "stream": stream, "stream_options": {"include_usage": True}}


def run_valid(kind, rng):
    if kind == "chat":
        st, body = post("/v1/chat/completions", chat_body(rng, False, rng.randint(4, 48)))
        j = json.loads(body)
        assert st == 200, (st, body[:200])
        assert isinstance(j["choices"][0]["message"]["content"], str) and j["usage"]["total_tokens"] > 0
    elif kind in ("chat_stream", "completion_stream"):
        if kind == "chat_stream":
            path, b = "/v1/chat/completions", chat_body(rng, True, rng.randint(4, 48))
        else:
            path, b = "/v1/completions", {"prompt": "北京", "max_tokens": rng.randint(4, 48), "stream": True}
        c = conn()
        try:
            c.request("POST", path, body=json.dumps(b).encode(), headers={"Content-Type": "application/json"})
            r = c.getresponse()
            assert r.status == 200, r.status
            events = list(sse_events(r))
        finally:
            c.close()
        assert events and events[-1] == "[DONE]", events[-3:]
        for e in events[:-1]:
            j = json.loads(e)
            assert "error" not in j, j
    elif kind == "completion":
        st, body = post("/v1/completions", {"prompt": ["北京是", "上海"], "max_tokens": rng.randint(1, 24)})
        assert st == 200, (st, body[:200])
        assert len(json.loads(body)["choices"]) == 2
    elif kind == "embedding":
        st, body = post("/v1/embeddings", {"input": ["你好", "hello world"], "encoding_format": "float"})
        assert st == 200, (st, body[:200])
        assert len(json.loads(body)["data"]) == 2
    elif kind == "native":
        st, body = post("/completion", {"prompt": "你好", "n_predict": rng.randint(1, 24)})
        assert st == 200, (st, body[:200])
        assert json.loads(body)["stop"] is True
    else:
        raise AssertionError(kind)


MALFORMED = [
    b"{not json", b"[1,2,3]", b"", b"null", b'"text"', b'{"messages": 5}', b'{"messages": []}',
    b'{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}',
    b'{"messages":[{"role":"user","content":"x"}],"max_tokens":-5}',
    b'{"messages":[{"role":"user","content":"x"}],"n":1000}',
    b'{"messages":[{"role":"wizard","content":"x"}]}',
    b'{"messages":[{"role":"user","content":"x"}],"logit_bias":{"-1":5}}',
    b'{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"string","pattern":"a"}}}}',
    b'{"prompt": {"a": 1}}', b'{"prompt": [1, 99999999]}', b"\xff\xfe\x00garbage",
    b'{"messages":[{"role":"user","content":"x"}],"stop":[1,2]}', b'{"input": []}',
    b'{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}', b'{"messages":[{"role":"user"}],"top_p":7}',
]


def run_malformed(i):
    body = MALFORMED[i % len(MALFORMED)]
    path = "/v1/embeddings" if b'"input"' in body else "/v1/completions" if b'"prompt"' in body else "/v1/chat/completions"
    st, resp = post(path, body, raw=True)
    assert 400 <= st < 500, (st, body, resp[:200])
    j = json.loads(resp)
    assert isinstance(j["error"]["message"], str) and j["error"]["type"] == "invalid_request_error", j


def run_disconnect(rng):
    b = chat_body(rng, True, 1500)
    b["ignore_eos"] = True
    u = urllib.parse.urlparse(ARGS.base)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    try:
        data = json.dumps(b).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        got = b""
        deadline = time.time() + 30
        while got.count(b"data: ") < 2 and time.time() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        assert b" 200 " in got.split(b"\r\n", 1)[0] and got.count(b"data: ") >= 2, got[:200]
    finally:
        s.close()  # abandon the stream mid-way


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--disconnects", type=int, default=20)
    ap.add_argument("--malformed", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rss-tolerance", type=float, default=0.10)
    ARGS = ap.parse_args()
    rng = random.Random(ARGS.seed)

    # warm-up: every slot, the HTTP threads and the allocator see a full round of work first
    warm = [threading.Thread(target=run_valid, args=(k, random.Random(i)))
            for i, k in enumerate(["chat", "chat_stream", "completion", "embedding"] * 4)]
    for t in warm:
        t.start()
    for t in warm:
        t.join(120)
    time.sleep(0.5)
    m0 = metrics()
    rss0 = m0["process_resident_memory_bytes"]
    cancelled0 = m0.get('calpaca_sequences_finished_total{reason="cancelled"}', 0)

    kinds = ["chat", "chat_stream", "completion", "completion_stream", "embedding", "native"]
    n_valid = ARGS.requests - ARGS.disconnects - ARGS.malformed
    tasks = ([("disconnect", i) for i in range(ARGS.disconnects)] + [("malformed", i) for i in range(ARGS.malformed)] +
             [(kinds[i % len(kinds)], i) for i in range(n_valid)])
    rng.shuffle(tasks)
    lock = threading.Lock()
    results = {"ok": 0, "failed": 0, "by_kind": {}, "failures": []}
    latencies = []

    def worker(wid):
        wrng = random.Random(ARGS.seed * 1000 + wid)
        while True:
            with lock:
                if not tasks:
                    return
                kind, i = tasks.pop()
            t0 = time.time()
            try:
                if kind == "disconnect":
                    run_disconnect(wrng)
                elif kind == "malformed":
                    run_malformed(i)
                else:
                    run_valid(kind, wrng)
                ok = True
            except Exception as e:  # noqa: BLE001 - every failure is recorded
                ok = False
                err = f"{kind}: {type(e).__name__}: {e}"
            with lock:
                latencies.append(time.time() - t0)
                k = results["by_kind"].setdefault(kind, [0, 0])
                k[0 if ok else 1] += 1
                if ok:
                    results["ok"] += 1
                else:
                    results["failed"] += 1
                    results["failures"].append(err[:300])

    t_start = time.time()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(ARGS.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    wall = time.time() - t_start
    hung = sum(t.is_alive() for t in threads)

    # afterwards: all slots free, nothing queued, exactly the abandoned streams cancelled
    deadline = time.time() + 20
    m1 = metrics()
    while time.time() < deadline and (m1["calpaca_slots_busy"] or m1["calpaca_queue_length"]):
        time.sleep(0.1)
        m1 = metrics()
    time.sleep(0.5)
    m1 = metrics()
    rss1 = m1["process_resident_memory_bytes"]
    cancelled = m1.get('calpaca_sequences_finished_total{reason="cancelled"}', 0) - cancelled0
    server_errors = sum(v for k, v in m1.items() if k.startswith("calpaca_requests_total") and 'status="5' in k)
    checks = {
        "all valid and malformed requests answered as expected": results["failed"] == 0 and hung == 0,
        "no 5xx answers": server_errors == 0,
        "slots free afterwards": m1["calpaca_slots_busy"] == 0 and m1["calpaca_queue_length"] == 0,
        "abandoned streams cancelled": cancelled == ARGS.disconnects,
        "rss within tolerance": abs(rss1 - rss0) <= ARGS.rss_tolerance * rss0,
    }
    summary = {
        "requests": ARGS.requests, "concurrency": ARGS.concurrency, "wall_s": round(wall, 2),
        "by_kind": results["by_kind"], "failures": results["failures"][:10], "server_5xx": server_errors,
        "cancelled": cancelled, "slots_busy_after": m1["calpaca_slots_busy"], "queue_after": m1["calpaca_queue_length"],
        "rss_before_mib": round(rss0 / 2**20, 1), "rss_after_mib": round(rss1 / 2**20, 1),
        "rss_change_pct": round(100 * (rss1 - rss0) / rss0, 2),
        "p50_latency_s": round(sorted(latencies)[len(latencies) // 2], 3) if latencies else None,
        "generated_tokens": m1["calpaca_generated_tokens_total"],
    }
    print(json.dumps(summary, ensure_ascii=False))
    failed = 0
    for name, ok in checks.items():
        print(("ok   " if ok else "FAIL ") + name)
        failed += not ok
    print(f"load: {len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
