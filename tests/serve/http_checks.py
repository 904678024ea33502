"""HTTP-level checks of `calpaca serve` (Python standard library only; run by tests/e2e/serve.sh).

    python3 http_checks.py --plain PORT --guarded PORT --key KEY --cors-origin ORIGIN

`--plain` is a server with default settings; `--guarded` one started with --api-key KEY,
--cors ORIGIN and --max-body 4K. Prints one line per check and "http: N passed, M failed".
"""
import argparse
import http.client
import json
import socket
import sys
import time

ARGS = None
PASSED = 0
FAILED = 0


def check(name, ok, detail=""):
    global PASSED, FAILED
    if ok:
        PASSED += 1
        print(f"ok   {name}")
    else:
        FAILED += 1
        print(f"FAIL {name}: {detail}")


def req(port, method, path, body=None, headers=None, raw=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def jbody(b):
    try:
        return json.loads(b)
    except ValueError:
        return None


def is_error(b, param=None, etype=None):
    j = jbody(b)
    if not isinstance(j, dict) or not isinstance(j.get("error"), dict):
        return False
    e = j["error"]
    if set(e) != {"message", "type", "param", "code"} or not isinstance(e["message"], str):
        return False
    return (param is None or e["param"] == param) and (etype is None or e["type"] == etype)


def metrics(port, headers=None):
    st, _, b = req(port, "GET", "/metrics", headers=headers)
    out = {}
    for line in b.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--plain", type=int, required=True)
    ap.add_argument("--guarded", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--cors-origin", required=True)
    ARGS = ap.parse_args()
    P, G = ARGS.plain, ARGS.guarded
    auth = {"Authorization": f"Bearer {ARGS.key}"}
    chat = {"messages": [{"role": "user", "content": "你好"}], "max_tokens": 8, "temperature": 0}

    st, h, b = req(P, "GET", "/health")
    check("health", st == 200 and jbody(b)["status"] == "ok", b)
    st, h, b = req(P, "GET", "/")
    check("web page at /", st == 200 and h.get("content-type", "").startswith("text/html") and b"calpaca chat" in b, st)
    for asset, ctype in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        st, h, b = req(P, "GET", asset)
        check(f"asset {asset}", st == 200 and h.get("content-type", "").startswith(ctype) and len(b) > 500, st)
    st, h, b = req(P, "GET", "/v1/models")
    check("models", st == 200 and jbody(b)["data"][0]["id"] == "calpaca-demo", b)
    st, h, b = req(P, "POST", "/v1/chat/completions", chat)
    j = jbody(b)
    check("chat", st == 200 and j["usage"]["completion_tokens"] <= 8 and j["object"] == "chat.completion", b[:300])
    check("no CORS headers by default", "access-control-allow-origin" not in h, h)
    st, h, b = req(P, "POST", "/v1/chat/completions", raw=b"{oops")
    check("bad JSON is a 400 error object", st == 400 and is_error(b, etype="invalid_request_error") and
          h.get("x-should-retry") == "false", (st, b))
    st, h, b = req(P, "POST", "/v1/chat/completions", dict(chat, temperature=-1, unknown_field=[1, 2]))
    check("invalid field named in param", st == 400 and is_error(b, param="temperature"), b)
    st, h, b = req(P, "POST", "/v1/chat/completions", dict(chat, unknown_field={"a": 1}, metadata={"x": "y"}))
    check("unknown fields ignored", st == 200, b[:200])
    st, h, b = req(P, "GET", "/no/such/route")
    check("404 is an error object", st == 404 and is_error(b, etype="not_found_error"), (st, b))
    st, h, b = req(P, "OPTIONS", "/v1/chat/completions")
    check("no CORS preflight without --cors", st == 405 and "access-control-allow-origin" not in h, (st, h))
    st, h, b = req(P, "POST", "/v1/chat/completions", dict(chat, max_tokens=5,
                                                           messages=[{"role": "user", "content": "北京" * 3000}]))
    check("prompt longer than the context is a 400", st == 400 and is_error(b, param="messages") and
          jbody(b)["error"]["code"] == "context_length_exceeded", (st, b[:300]))

    # SSE framing over the wire
    st, h, b = req(P, "POST", "/v1/chat/completions", dict(chat, stream=True), headers={"Accept-Encoding": "gzip"})
    frames = [f for f in b.decode().split("\n\n") if f]
    check("stream is text/event-stream, uncompressed, ends with [DONE]",
          st == 200 and h.get("content-type") == "text/event-stream" and "content-encoding" not in h and
          frames[-1] == "data: [DONE]" and all(f.startswith("data: ") for f in frames), (h, frames[-2:]))

    # llama.cpp endpoints
    st, h, b = req(P, "POST", "/tokenize", {"content": "你好", "with_pieces": True})
    toks = jbody(b)["tokens"] if st == 200 else []
    check("tokenize", st == 200 and len(toks) >= 1 and "piece" in toks[0], b)
    st, h, b = req(P, "POST", "/detokenize", {"tokens": [t["id"] for t in toks]})
    check("detokenize", st == 200 and jbody(b)["content"] == "你好", b)
    st, h, b = req(P, "POST", "/completion", {"prompt": "你好", "n_predict": 4})
    check("native /completion", st == 200 and jbody(b)["tokens_predicted"] <= 4 and "timings" in jbody(b), b[:300])

    # a client that disconnects mid-stream frees its slot
    s = socket.create_connection(("127.0.0.1", P), timeout=30)
    data = json.dumps(dict(chat, max_tokens=1800, stream=True, ignore_eos=True)).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
              str(len(data)).encode() + b"\r\n\r\n" + data)
    got = b""
    deadline = time.time() + 20
    while got.count(b"data: ") < 3 and time.time() < deadline:
        got += s.recv(4096)
    busy_during = metrics(P)["calpaca_slots_busy"]
    s.close()
    m = metrics(P)
    deadline = time.time() + 10
    while m["calpaca_slots_busy"] and time.time() < deadline:
        time.sleep(0.05)
        m = metrics(P)
    check("disconnect cancels the stream and frees the slot",
          busy_during == 1 and m["calpaca_slots_busy"] == 0 and
          m.get('calpaca_sequences_finished_total{reason="cancelled"}', 0) == 1, (busy_during, m))
    # ... and so does a client that gives up on a non-streaming request
    s = socket.create_connection(("127.0.0.1", P), timeout=30)
    data = json.dumps(dict(chat, max_tokens=1800, ignore_eos=True)).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
              str(len(data)).encode() + b"\r\n\r\n" + data)
    deadline = time.time() + 10
    while metrics(P)["calpaca_slots_busy"] == 0 and time.time() < deadline:
        time.sleep(0.01)
    busy_during = metrics(P)["calpaca_slots_busy"]
    s.close()
    m = metrics(P)
    deadline = time.time() + 10
    while m["calpaca_slots_busy"] and time.time() < deadline:
        time.sleep(0.05)
        m = metrics(P)
    check("disconnect cancels a non-streaming request",
          busy_during == 1 and m["calpaca_slots_busy"] == 0 and
          m.get('calpaca_sequences_finished_total{reason="cancelled"}', 0) == 2, (busy_during, m))
    check("metrics", all(k in m for k in ("calpaca_prompt_tokens_total", "calpaca_generated_tokens_total",
                                          "calpaca_queue_length", "calpaca_time_to_first_token_seconds_count",
                                          "calpaca_generated_tokens_per_second", "process_resident_memory_bytes")),
          sorted(m)[:5])

    # API key, CORS and the body limit (guarded server)
    st, h, b = req(G, "POST", "/v1/chat/completions", chat)
    check("missing key is 401", st == 401 and is_error(b, etype="authentication_error"), (st, b))
    st, h, b = req(G, "POST", "/v1/chat/completions", chat, headers={"Authorization": "Bearer nope"})
    check("wrong key is 401", st == 401 and is_error(b, etype="authentication_error"), (st, b))
    st, h, b = req(G, "GET", "/metrics")
    check("metrics need the key", st == 401, st)
    st, h, b = req(G, "POST", "/v1/chat/completions", chat, headers=auth)
    check("right key is 200", st == 200, (st, b[:200]))
    for path in ("/health", "/v1/models", "/"):
        st, h, b = req(G, "GET", path)
        check(f"{path} needs no key", st == 200, st)
    check("CORS origin header", h.get("access-control-allow-origin") == ARGS.cors_origin, h)
    st, h, b = req(G, "OPTIONS", "/v1/chat/completions", headers={
        "Origin": ARGS.cors_origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"})
    check("CORS preflight", st == 204 and h.get("access-control-allow-origin") == ARGS.cors_origin and
          "x-stainless-os" in h.get("access-control-allow-headers", "") and "POST" in h.get("access-control-allow-methods", ""),
          (st, h))
    big = dict(chat, messages=[{"role": "user", "content": "x" * 8000}])
    st, h, b = req(G, "POST", "/v1/chat/completions", big, headers=auth)
    check("body over --max-body is 413", st == 413 and is_error(b), (st, b[:200]))

    print(f"http: {PASSED} passed, {FAILED} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
