#!/usr/bin/env python3
"""make_eval_fixtures.py — expected C-Eval / CMMLU prompts and token ids for calpaca's eval tests.

What it computes (deterministic, no randomness):
  tests/fixtures/eval/expected/prompts.jsonl, one JSON object per line:
    {"kind": "prompt", "benchmark": "ceval"|"cmmlu", "subject", "row", "style": "plain"|"alpaca"|"alpaca2",
     "shots": 0|5, "cot": bool, "tokenizer", "prompt": <exact text>, "ids": <token ids with BOS>}
    {"kind": "choice_tokens", "tokenizer", "spaced": [ids of encode("A".."D")[0]],
     "bare": [ids of encode("：A".."：D")[-1]]}
    {"kind": "extract", "response", "options": [A, B, C, D], "letter": "A".."D" or null, "rule"}
      the runners' answer-extraction cascade (re module) on hand-written responses; null = the
      cascade found nothing (the runners then pick random.choice("ABCD")).
  for the first two rows of every fixture test file (tests/fixtures/eval/{ceval/val,cmmlu/test}).

How: the CSV files are read with pandas.read_csv exactly as the original runners
(Chinese-LLaMA-Alpaca{,-2} scripts/ceval, scripts/cmmlu) read them, so pandas' own column typing
applies; the prompt strings follow the formats those runners build (restated here from
seed-features.md §7 and the runners' behaviour: the question, "\\nA. {A}"… options, the answer mark,
the few-shot header `以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。`, the v1 Alpaca
and v2 Llama-2-chat wrappings); token ids come from transformers' slow LlamaTokenizer(legacy=True),
called as the runners call it: tokenizer(prompt)["input_ids"] (BOS added, "<s>"/"</s>" parsed).
Style "alpaca" (v1) uses the chinese-alpaca-v1 tokenizer, the others chinese-llama-2.

Run:
    apt-get install python3-pandas     # Debian's pandas 1.5.3, seen by the reference venv
    /opt/calpaca-ref/bin/python tools/reference/make_eval_fixtures.py
Environment: tools/reference/setup-venv.sh (transformers 4.35.2, sentencepiece 0.1.97).
"""

import json
import os
import re

import pandas as pd
from transformers import LlamaTokenizer

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(REPO, "tests", "fixtures", "eval")
TOKDIR = os.path.join(REPO, "tests", "fixtures", "tokenizers")
OUT = os.path.join(FIX, "expected", "prompts.jsonl")

CHOICES = ["A", "B", "C", "D"]
CEVAL_SYS = "You are a helpful assistant. 你是一个乐于助人的助手。"
CMMLU_SYS = "你是一个乐于助人的助手。"
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes "
          "the request.\n\n### Instruction:\n{instruction}\n\n### Response: ")
LLAMA2 = "[INST] <<SYS>>\n{system_prompt}\n<</SYS>>\n\n{instruction} [/INST]"


def options(line, qcol):
    text = line[qcol]
    for c in CHOICES:
        text += f"\n{c}. {line[c]}"
    return text


def example(line, qcol, acol, include_answer, cot, style):
    text = options(line, qcol)
    if include_answer:
        if cot:
            return text + "\n答案：让我们一步一步思考，\n" + line["explanation"] + f"\n所以答案是{line[acol]}。\n\n"
        return text + "\n答案：" + line[acol] + "\n\n"
    if style == "plain":
        return text + ("\n答案：让我们一步一步思考，\n1." if cot else "\n答案：")
    if style == "alpaca":
        return text + ("\n答案是什么？让我们一步一步思考，\n1." if cot else "\n答案是什么？ ")
    return text + ("\n答案是什么？让我们一步一步思考，\n1." if cot else "\n答案：")


def history(subject, dev, qcol, acol, shots, cot, style, system):
    if shots == 0:
        return ""
    head = f"以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"
    if style == "alpaca2":
        h = LLAMA2.format_map({"instruction": head, "system_prompt": system}) + f"好的，我会结合{subject}相关知识回答"
        for i in range(shots):
            line = dev.iloc[i, :]
            h += "[INST] " + options(line, qcol) + "\n答案：[/INST]" + line[acol] + "\n"
        return h
    h = head
    for i in range(shots):
        h += example(dev.iloc[i, :], qcol, acol, True, cot, style)
    return h


def prompt(hist, line, qcol, acol, cot, style, system):
    q = example(line, qcol, acol, False, cot, style)
    if style == "plain":
        return hist + q
    if style == "alpaca":
        return ALPACA.format_map({"instruction": hist + q})
    return hist + LLAMA2.format_map({"instruction": q, "system_prompt": system})


EXTRACT_PATTERNS = [r"([ABCD])是正确的", r"选项([ABCD])正确", r"答案为([ABCD])", r"答案是([ABCD])",
                    r"答案([ABCD])", r"选择([ABCD])", r"答案：([ABCD])", r"选择答案([ABCD])"]


def extract(options_, gen):
    m = re.findall(r"所以答案是(.+?)。", gen, re.M)
    if len(m) > 0 and m[-1] in CHOICES:
        return m[-1], "so-answer-is"
    for pat in EXTRACT_PATTERNS:
        m = re.search(pat, gen, re.M)
        if m:
            return m.group(1), "pattern"
    m = re.findall(r"[ABCD]", gen, re.M)
    if len(m) >= 1:
        return m[0], "first-letter"
    by_text = {}
    pattern = ""
    for c, t in zip(CHOICES, options_):
        by_text[str(t)] = c
        pattern += re.escape(str(t)) + "|"
    m = re.findall(pattern[:-1], gen, re.M)
    if len(m) >= 1:
        return by_text[m[0]], "option-text"
    return None, "random"


OPTS = ["等待冲突", "等待令牌", "监听介质", "接受一个帧"]
EXTRACT_CASES = [
    (OPTS, "所以答案是C。"),
    (OPTS, "所以答案是AB。所以答案是D。"),
    (OPTS, "所以答案是B。所以答案是等待令牌。"),
    (OPTS, "所以答案是A\n。答案是B"),
    (OPTS, "所以答案是。。"),
    (OPTS, "所以答案是E。"),
    (OPTS, "选择B，答案为C"),
    (OPTS, "D是正确的，选项A正确"),
    (OPTS, "答案：B 答案C"),
    (OPTS, "答案是D"),
    (OPTS, "选择答案A"),
    (OPTS, "x B y A"),
    (OPTS, "应该是等待令牌吧"),
    (OPTS, "监听介质或等待令牌"),
    (OPTS, "不知道"),
    (OPTS, ""),
    (["等待", "等待令牌", "x", "y"], "等待令牌"),
    (["甲", "乙", "甲", "丁"], "是甲"),
    (["甲", "乙", "", "丁"], "无关的回答"),
    (["1+1", "2", "3", "4"], "1+1=2"),
    (OPTS, "所以答案是\nA。"),
    (OPTS, "答案是A。所以答案是C"),
]


def main():
    toks = {
        "chinese-llama-2": LlamaTokenizer(vocab_file=os.path.join(TOKDIR, "chinese-llama-2", "tokenizer.model"),
                                          legacy=True, pad_token="<pad>"),
        "chinese-alpaca-v1": LlamaTokenizer(vocab_file=os.path.join(TOKDIR, "chinese-alpaca-v1", "tokenizer.model"),
                                            legacy=True, pad_token="[PAD]"),
    }
    records = []
    for name, tok in toks.items():
        records.append({"kind": "choice_tokens", "tokenizer": name,
                        "spaced": [tok.encode(c, add_special_tokens=False)[0] for c in CHOICES],
                        "bare": [tok.encode("：" + c)[-1] for c in CHOICES]})
    for opts, gen in EXTRACT_CASES:
        letter, rule = extract(opts, gen)
        records.append({"kind": "extract", "response": gen, "options": opts, "letter": letter, "rule": rule})
    plan = [
        ("ceval", ["computer_network", "logic"], "val/{s}_val.csv", "dev/{s}_dev.csv", "question", "answer", CEVAL_SYS,
         ["plain", "alpaca", "alpaca2"], [False, True]),
        ("cmmlu", ["agronomy", "ancient_chinese"], "test/{s}.csv", "dev/{s}.csv", "Question", "Answer", CMMLU_SYS,
         ["plain", "alpaca2"], [False]),
    ]
    for bench, subjects, test_pat, dev_pat, qcol, acol, system, styles, cots in plan:
        for s in subjects:
            test = pd.read_csv(os.path.join(FIX, bench, test_pat.format(s=s)))
            dev = pd.read_csv(os.path.join(FIX, bench, dev_pat.format(s=s)))
            for style in styles:
                tname = "chinese-alpaca-v1" if style == "alpaca" else "chinese-llama-2"
                for shots in (0, 5):
                    for cot in cots:
                        hist = history(s, dev, qcol, acol, shots, cot, style, system)
                        for row in range(2):
                            p = prompt(hist, test.iloc[row, :], qcol, acol, cot, style, system)
                            records.append({"kind": "prompt", "benchmark": bench, "subject": s, "row": row,
                                            "style": style, "shots": shots, "cot": cot, "tokenizer": tname,
                                            "prompt": p, "ids": toks[tname](p)["input_ids"]})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(records)} records to {OUT}")


if __name__ == "__main__":
    main()
