"""Real clients against a running `calpaca serve` (run by tests/e2e/serve_clients.sh).

Needs the venv made by tests/serve/setup-clients.sh (openai, langchain-openai, playwright) and
Debian's chromium. Usage:

    python test_clients.py --base http://127.0.0.1:PORT --keyed http://127.0.0.1:PORT2 --key KEY --out DIR

`--base` is a server without an API key, `--keyed` one started with `--api-key KEY`; both serve
tests/fixtures/models/calpaca-demo.gguf. Prints one line per test and ends with "clients: N passed, M failed";
exits 1 if any failed. The browser test saves DIR/chat.png.
"""
import argparse
import json
import math
import os
import sys
import time
import traceback
import urllib.request

import openai
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from playwright.sync_api import sync_playwright

ARGS = None
TESTS = []

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["北京", "上海", "广州"]},
        "sunny": {"type": "boolean"},
        "rank": {"type": "integer"},
    },
    "required": ["city", "sunny", "rank"],
    "additionalProperties": False,
}


def test(fn):
    TESTS.append(fn)
    return fn


def client(base=None, key="sk-anything"):
    return openai.OpenAI(base_url=(base or ARGS.base) + "/v1", api_key=key, max_retries=0, timeout=60)


def metrics(base=None):
    with urllib.request.urlopen((base or ARGS.base) + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_idle(base=None, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if metrics(base).get("calpaca_slots_busy", 1) == 0:
            return True
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------ openai


@test
def openai_models():
    models = client().models.list()
    ids = [m.id for m in models.data]
    assert ids == ["calpaca-demo"], ids


@test
def openai_chat():
    r = client().chat.completions.create(
        model="calpaca-demo", messages=[{"role": "system", "content": "你是一个助手。"}, {"role": "user", "content": "你好"}],
        max_tokens=12, temperature=0)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    c = r.choices[0]
    assert isinstance(c.message.content, str) and c.message.content, c
    assert c.message.role == "assistant"
    assert c.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@test
def openai_chat_stream():
    cl = client()
    kw = dict(model="calpaca-demo", messages=[{"role": "user", "content": "介绍一下北京"}], max_tokens=20, temperature=0)
    whole = cl.chat.completions.create(**kw).choices[0].message.content
    text, usage, finish, roles = "", None, None, 0
    for chunk in cl.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            roles += ch.delta.role == "assistant"
            text += ch.delta.content or ""
            finish = ch.finish_reason or finish
    assert roles == 1, roles
    assert text == whole, (text, whole)
    assert "\ufffd" not in text
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 20


@test
def openai_completions():
    r = client().completions.create(model="calpaca-demo", prompt=["北京是", "上海是"], max_tokens=4, temperature=0,
                                    echo=True, logprobs=1)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text.startswith("北京是") and r.choices[1].text.startswith("上海是")
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert all(x is None or x <= 0 for x in lp.token_logprobs)
    assert r.usage.completion_tokens == 8


@test
def openai_embeddings():
    cl = client()
    r = cl.embeddings.create(model="calpaca-demo", input=["你好，世界", "hello"])  # SDK default: base64
    assert len(r.data) == 2
    for d in r.data:
        assert len(d.embedding) == 64
        norm = math.sqrt(sum(x * x for x in d.embedding))
        assert abs(norm - 1) < 1e-4, norm
    f = cl.embeddings.create(model="calpaca-demo", input="hello", encoding_format="float")
    assert max(abs(a - b) for a, b in zip(f.data[0].embedding, r.data[1].embedding)) < 1e-6
    assert r.usage.prompt_tokens > 0


@test
def openai_json_schema():
    r = client().chat.completions.create(
        model="calpaca-demo", messages=[{"role": "user", "content": "今天哪里天气好？"}], max_tokens=60,
        temperature=0.7, seed=1,
        response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}})
    v = json.loads(r.choices[0].message.content)
    assert v["city"] in ("北京", "上海", "广州") and isinstance(v["sunny"], bool) and isinstance(v["rank"], int), v


@test
def openai_invalid_request():
    before = metrics().get('calpaca_requests_total{endpoint="/v1/chat/completions",status="400"}', 0)
    try:
        client().chat.completions.create(model="calpaca-demo", messages=[{"role": "user", "content": "x"}],
                                         temperature=5)
        raise AssertionError("no error")
    except openai.BadRequestError as e:
        assert e.status_code == 400
        body = e.body if isinstance(e.body, dict) else {}
        assert body.get("param") == "temperature", e.body
        assert "temperature" in str(e)
    after = metrics().get('calpaca_requests_total{endpoint="/v1/chat/completions",status="400"}', 0)
    assert after == before + 1, (before, after)  # answered once, not retried


@test
def openai_wrong_api_key():
    try:
        client(ARGS.keyed, key="wrong").chat.completions.create(
            model="calpaca-demo", messages=[{"role": "user", "content": "x"}], max_tokens=2)
        raise AssertionError("no error")
    except openai.AuthenticationError as e:
        assert e.status_code == 401
    r = client(ARGS.keyed, key=ARGS.key).chat.completions.create(
        model="calpaca-demo", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    assert r.usage.completion_tokens <= 2


# ------------------------------------------------------------------ langchain


def chat_model(**kw):
    # stream_usage: ask for stream_options.include_usage (LangChain only does by itself for api.openai.com)
    return ChatOpenAI(model="calpaca-demo", base_url=ARGS.base + "/v1", api_key="sk-anything", max_retries=0,
                      stream_usage=True, **kw)


@test
def langchain_chat_invoke_and_stream():
    llm = chat_model(temperature=0, max_tokens=16)
    msg = llm.invoke("你好，请介绍一下你自己。")
    assert isinstance(msg.content, str) and msg.content
    assert msg.usage_metadata and msg.usage_metadata["output_tokens"] <= 16
    chunks = list(llm.stream("你好，请介绍一下你自己。"))
    text = "".join(c.content for c in chunks)
    assert text == msg.content, (text, msg.content)
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert total.usage_metadata and total.usage_metadata["output_tokens"] == msg.usage_metadata["output_tokens"]


@test
def langchain_structured_output():
    llm = chat_model(temperature=0.5, max_tokens=60, seed=3)
    out = llm.with_structured_output({"title": "Weather", "description": "weather report", **SCHEMA},
                                     method="json_schema").invoke("哪里天气好？")
    assert out["city"] in ("北京", "上海", "广州") and isinstance(out["sunny"], bool), out


@test
def langchain_embeddings():
    emb = OpenAIEmbeddings(model="calpaca-demo", base_url=ARGS.base + "/v1", api_key="sk-anything",
                           check_embedding_ctx_length=False, max_retries=0)
    docs = emb.embed_documents(["北京是中国的首都", "上海是一座城市", "hello"])
    q = emb.embed_query("北京是中国的首都")
    assert len(docs) == 3 and all(len(d) == 64 for d in docs)
    assert max(abs(a - b) for a, b in zip(q, docs[0])) < 1e-5


# ------------------------------------------------------------------ browser


def set_slider(page, name, value):
    page.evaluate(f"(() => {{ const e = document.getElementById('{name}'); e.value = {value};"
                  " e.dispatchEvent(new Event('input')); })()")


@test
def browser_chat_page():
    shot = os.path.join(ARGS.out, "chat.png")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(ARGS.base + "/", timeout=15000)
            page.wait_for_function("document.getElementById('model').textContent.includes('calpaca-demo')", timeout=10000)
            assert page.input_value("#system") == "You are a helpful assistant. 你是一个乐于助人的助手。"
            # a long answer, stopped half-way with the Stop button
            cancelled = 'calpaca_sequences_finished_total{reason="cancelled"}'
            cancelled0 = metrics().get(cancelled, 0)
            # (the request asks for 4000 tokens: the server caps it to the context, ~2000 tokens).
            # The demo model may end its answer early with EOS, and decode is fast enough that a
            # short answer can finish before the click; so this request (only this one) also asks
            # the server to ignore EOS, which keeps the stream running until Stop.
            def long_answer(route):
                body = json.loads(route.request.post_data or "{}")
                body["ignore_eos"] = True
                route.continue_(post_data=json.dumps(body))
            page.route("**/v1/chat/completions", long_answer)
            set_slider(page, "max_tokens", 4000)
            page.fill("#input", "你好，请写一首关于长江的诗。")
            page.press("#input", "Enter")
            page.wait_for_function(
                "(() => { const m = document.querySelector('.msg.assistant.streaming .content');"
                " return m && m.textContent.length > 0; })()", timeout=20000, polling=20)
            partial = page.text_content(".msg.assistant .content")
            assert partial, "no streamed text while streaming"
            page.click("#stop")
            page.unroute("**/v1/chat/completions", long_answer)
            page.wait_for_function("!document.querySelector('.msg.streaming')", timeout=10000, polling=50)
            assert "stopped" in page.text_content("#status")
            assert wait_idle(), "the stopped request still holds a slot"
            assert metrics().get(cancelled, 0) == cancelled0 + 1, "Stop did not cancel the generation"
            # a short complete answer; user text renders Chinese and a code block renders as code
            set_slider(page, "max_tokens", 24)
            page.fill("#input", "用 Python 写 hello world：```print('你好')```")
            page.press("#input", "Enter")
            page.wait_for_function("document.getElementById('status').textContent.includes('tokens/s')", timeout=20000,
                                   polling=50)
            msgs = page.query_selector_all(".msg")
            assert len(msgs) == 4, len(msgs)
            assert page.query_selector_all(".msg.assistant")[1].text_content()
            assert "你好" in page.text_content(".msg.user")
            assert page.text_content("#max_tokens_v") == "24"
            # Markdown: a fenced code block becomes <pre><code>, Chinese intact, HTML escaped
            html = page.evaluate("renderMarkdown('说明：\\n\\n```python\\nprint(\\'你好\\') # <b>\\n```\\n**粗体** `x`')")
            assert '<pre><code class="language-python">print(&#39;你好&#39;) # &lt;b&gt;</code></pre>' in html, html
            assert "<strong>粗体</strong>" in html and "<code>x</code>" in html, html
            copy = page.query_selector_all(".msg.assistant .copy")[1]
            copy.click()
            page.wait_for_function("[...document.querySelectorAll('.copy')].some(b => b.textContent.includes('Copied'))",
                                   timeout=5000, polling=50)
            page.screenshot(path=shot, full_page=True)
            # history survives a reload; Clear empties it
            page.reload()
            page.wait_for_function("document.querySelectorAll('.msg').length === 4", timeout=10000)
            page.click("#clear")
            assert len(page.query_selector_all(".msg")) == 0
            assert not errors, errors
        finally:
            browser.close()
    assert os.path.getsize(shot) > 10000


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--keyed", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("-k", default="", help="run only tests whose name contains this")
    ARGS = ap.parse_args()
    passed = failed = 0
    for fn in TESTS:
        if ARGS.k and ARGS.k not in fn.__name__:
            continue
        t0 = time.time()
        try:
            fn()
            passed += 1
            print(f"ok   {fn.__name__} ({time.time() - t0:.1f}s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {fn.__name__}", flush=True)
            traceback.print_exc()
    print(f"clients: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
