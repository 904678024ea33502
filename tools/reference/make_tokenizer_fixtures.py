#!/usr/bin/env python3
"""make_tokenizer_fixtures.py — tokenizer ground truth for calpaca's C++ tokenizer tests.

What it computes (all deterministic; no randomness is involved, line selection uses SHA-256):

 a. tests/fixtures/corpus/sample.txt
      >= 5000 lines taken verbatim from /work/shared/data/corpus-zh/*/*.txt (every file, heldout
      included). Lines longer than 300 characters are skipped. From every file the lines with the
      smallest sha256("<relpath>\\0<line>") are kept, quota = min(eligible, 80 + round(3600 *
      eligible / all_eligible)); the kept lines are written file by file (sorted relative path),
      in their original order, joined with "\\n" (file ends with "\\n").
    tests/fixtures/corpus/SOURCES.md: line ranges, source files, licenses (facts copied from the
      data README); license texts copied into tests/fixtures/licenses/.
 b. tests/fixtures/tokenizers/expected/<tok>.corpus.ids
      one line per sample line: ids of sentencepiece `sp.encode(line)` (no BOS), single spaces.
    tests/fixtures/tokenizers/expected/<tok>.tests.out
      the 114 strings of test-vectors/tests.inp (split on "\\n__ggml_vocab_test__\\n"), same
      format as test-vectors/tests.*.out (every id preceded by one space, no BOS). Where a staged
      test-vectors/tests.<tok>.out exists the script checks that the two are identical.
 c. tests/fixtures/tokenizers/expected/hf-legacy.jsonl
      transformers' *slow* LlamaTokenizer(vocab_file=..., legacy=True) for chinese-llama-2
      (pad "<pad>") and chinese-alpaca-v1 (pad "[PAD]"):
        encode records  {"tokenizer", "text", "add_special_tokens", "ids", "pieces"}
        decode records  {"tokenizer", "decode_ids", "skip_special_tokens", "text"}
      "pieces" is informative only (convert_ids_to_tokens of "ids").

Run (about half a minute on 2 cores):
    /opt/calpaca-ref/bin/python tools/reference/make_tokenizer_fixtures.py
Environment: tools/reference/setup-venv.sh (sentencepiece 0.1.97, transformers 4.35.2).
"""

import hashlib
import json
import os
import shutil
import sys

import sentencepiece as spm

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.environ.get("CALPACA_SHARED_DATA", "/work/shared/data")
CORPUS = os.path.join(DATA, "corpus-zh")
FIX = os.path.join(REPO, "tests", "fixtures")
TOKDIR = os.path.join(FIX, "tokenizers")
EXPECTED = os.path.join(TOKDIR, "expected")
TOKENIZERS = ["llama", "chinese-llama-v1", "chinese-alpaca-v1", "chinese-llama-2"]
SEP = "\n__ggml_vocab_test__\n"

MAX_CHARS = 300
QUOTA_FLOOR = 80
QUOTA_PROPORTIONAL = 3600

# Per-source facts, copied from /work/shared/data/README.md §3 (license "as stated" by the source).
# (relative path, content, source, license as stated, NC?, license files in tests/fixtures/licenses)
SOURCES = {
    "classical/classics-misc_chinese-poetry.txt": (
        "元曲, 诗经, 楚辞, 论语, 四书, 蒙学, 五代, 幽梦影, 纳兰性德, 曹操 (t2s)",
        "chinese-poetry/chinese-poetry", "MIT (repo LICENSE); texts are public-domain classics", False,
        ["chinese-poetry_LICENSE.MIT"]),
    "classical/fortunes-zh.txt": (
        "Tang 300 + Song 100 poems and the `chinese` fortune file",
        "Debian `fortunes-zh` 2.98", "GPL-3.0+ (debian/copyright)", False,
        ["debian_fortunes-zh.copyright"]),
    "classical/song-ci_chinese-poetry.txt": (
        "Song ci", "chinese-poetry/chinese-poetry `宋词/`", "MIT", False, ["chinese-poetry_LICENSE.MIT"]),
    "classical/song-shi_chinese-poetry.txt": (
        "Song shi poems (t2s)", "chinese-poetry/chinese-poetry `全唐诗/poet.song.*.json`", "MIT", False,
        ["chinese-poetry_LICENSE.MIT"]),
    "classical/tang-shi_chinese-poetry.txt": (
        "Tang poems (t2s)", "chinese-poetry/chinese-poetry `全唐诗/`, `水墨唐诗/`", "MIT", False,
        ["chinese-poetry_LICENSE.MIT"]),
    "modern/c3-exam-texts.txt": (
        "C3 reading-comprehension documents", "dbiir/UER-py `datasets/c3/{dev,test}.json`",
        "repo Apache-2.0; C3 itself is distributed for non-commercial research (NC)", True,
        ["UER-py_LICENSE.Apache-2.0"]),
    "modern/clue-corpus-small-sample.txt": (
        "CLUECorpusSmall sample (news, web, Q&A, comments)", "dbiir/UER-py `corpora/CLUECorpusSmall_sampled.txt`",
        "repo Apache-2.0; no separate data license stated (CLUECorpus2020 is released for research)", True,
        ["UER-py_LICENSE.Apache-2.0"]),
    "modern/llm-outputs-chinese-llama-alpaca.txt": (
        "Chinese-Alpaca v1/v2 example prompts and answers",
        "ymcui/Chinese-LLaMA-Alpaca `examples/`, ymcui/Chinese-LLaMA-Alpaca-2 `examples/`", "Apache-2.0 (repos)", False,
        ["Chinese-LLaMA-Alpaca_LICENSE.Apache-2.0", "Chinese-LLaMA-Alpaca-2_LICENSE.Apache-2.0"]),
    "modern/reviews-chnsenticorp.txt": (
        "hotel / book / electronics reviews", "dbiir/UER-py `corpora/chnsenticorp.txt`",
        "repo Apache-2.0; no separate data license (ChnSentiCorp, research use)", True,
        ["UER-py_LICENSE.Apache-2.0"]),
    "modern/reviews-douban-book.txt": (
        "Douban book reviews", "dbiir/UER-py `datasets/book_review/`",
        "repo Apache-2.0; no separate data license", False, ["UER-py_LICENSE.Apache-2.0"]),
    "modern/wiki-cmrc2018.txt": (
        "Chinese Wikipedia paragraphs (CMRC 2018)", "ymcui/cmrc2018, dbiir/UER-py `datasets/cmrc2018/test.json`",
        "CC BY-SA 4.0 (cmrc2018 LICENCE)", False, ["cmrc2018_LICENCE.CC-BY-SA-4.0"]),
    "modern/wiki-drcd-t2s.txt": (
        "Wikipedia paragraphs of DRCD (t2s)", "DRCKnowledgeTeam/DRCD", "CC BY-SA 3.0 (README copyright notice)", False,
        ["DRCD_copyright-notice.txt"]),
    "tech/debian-edu-doc-zh-cn.txt": (
        "Debian Edu manuals", "Debian `debian-edu-doc-zh-cn`", "GPL-2+", False,
        ["debian_debian-edu-doc-zh-cn.copyright"]),
    "tech/debian-faq-zh-cn.txt": (
        "Debian FAQ", "Debian `debian-faq-zh-cn`", "verbatim-copy/modify permission notice", False,
        ["debian_debian-faq-zh-cn.copyright"]),
    "tech/debian-reference-zh-cn.txt": (
        "Debian Reference (2.100)", "Debian `debian-reference-zh-cn`", "GPL-2+", False,
        ["debian_debian-reference-zh-cn.copyright"]),
    "tech/gimp-help-zh-cn.txt": (
        "GIMP help", "Debian `gimp-help-zh-cn`", "GFDL-1.2+ (no invariant sections)", False,
        ["debian_gimp-help-zh-cn.copyright"]),
    "tech/kicad-doc-zh.txt": (
        "KiCad manuals", "Debian `kicad-doc-zh`", "GPL-2+ or CC-BY-SA-3.0 (debian/copyright `doc/*`)", False,
        ["debian_kicad-doc-zh.copyright"]),
    "tech/libreoffice-help-zh-cn.txt": (
        "LibreOffice help", "Debian `libreoffice-help-zh-cn`", "MPL-2.0", False,
        ["debian_libreoffice-help-zh-cn.copyright"]),
    "tech/lilypond-doc-html-zh.txt": (
        "LilyPond manual", "Debian `lilypond-doc-html-zh`", "GFDL-1.3+", False,
        ["debian_lilypond-doc-html-zh.copyright"]),
    "tech/maint-guide-zh-cn.txt": (
        "Debian New Maintainers' Guide", "Debian `maint-guide-zh-cn`", "GPL-2.0+", False,
        ["debian_maint-guide-zh-cn.copyright"]),
    "tech/manpages-zh.txt": (
        "zh_CN man pages", "Debian `manpages-zh` 1.6.4.0-1", "GFDL-1.2+", False,
        ["debian_manpages-zh.copyright"]),
}
HELDOUT = "heldout/heldout-mixed.txt"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def write_text(path, text):
    """Write UTF-8 text with "\\n" line ends, via a temporary name."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


def read_lines(path):
    """Split on "\\n" only (str.splitlines would also split on U+2028, \\x1c, ...)."""
    with open(path, "rb") as f:
        data = f.read().decode("utf-8")
    assert data.endswith("\n"), path
    return data[:-1].split("\n")


# --------------------------------------------------------------------------------------------
# a. corpus sample
# --------------------------------------------------------------------------------------------
def make_corpus_sample():
    files = sorted(SOURCES) + [HELDOUT]
    files.sort()
    eligible = {}
    heldout_src = {}
    for rel in files:
        lines = read_lines(os.path.join(CORPUS, rel))
        eligible[rel] = [(i, l) for i, l in enumerate(lines) if len(l) <= MAX_CHARS]
    # source file of every held-out line (1-based line numbers in the .tsv)
    for row in read_lines(os.path.join(CORPUS, "heldout", "heldout-mixed.sources.tsv"))[1:]:
        n, src = row.split("\t")
        heldout_src[int(n) - 1] = src
    total = sum(len(v) for v in eligible.values())

    out_lines, ranges, heldout_counts = [], [], {}
    for rel in files:
        cand = eligible[rel]
        quota = min(len(cand), QUOTA_FLOOR + round(QUOTA_PROPORTIONAL * len(cand) / total))
        key = lambda il: hashlib.sha256((rel + "\0" + il[1]).encode("utf-8")).digest()
        chosen = sorted(sorted(cand, key=key)[:quota])  # back to original order
        first = len(out_lines) + 1
        out_lines.extend(l for _, l in chosen)
        ranges.append((rel, first, len(out_lines), len(chosen), len(cand)))
        if rel == HELDOUT:
            for i, _ in chosen:
                s = heldout_src[i]
                heldout_counts[s] = heldout_counts.get(s, 0) + 1
        log(f"  {rel}: {len(chosen)} of {len(cand)} eligible lines")
    assert len(out_lines) >= 5000, len(out_lines)
    assert all("\n" not in l for l in out_lines)
    write_text(os.path.join(FIX, "corpus", "sample.txt"), "\n".join(out_lines) + "\n")
    log(f"corpus sample: {len(out_lines)} lines")
    write_sources_md(ranges, heldout_counts, len(out_lines))
    return out_lines


def write_sources_md(ranges, heldout_counts, n_lines):
    lic_dir = os.path.join(FIX, "licenses")
    needed = sorted({f for v in SOURCES.values() for f in v[4]})
    os.makedirs(lic_dir, exist_ok=True)
    for f in needed:
        src = os.path.join(DATA, "licenses", f)
        dst = os.path.join(lic_dir, f)
        if not os.path.exists(dst) or open(src, "rb").read() != open(dst, "rb").read():
            shutil.copyfile(src, dst)

    md = []
    md.append("# tests/fixtures/corpus — sources and licenses\n")
    md.append(f"`sample.txt` holds {n_lines} lines copied **verbatim** (one document per line, `\\n` line ends) from "
              "`shared/data/corpus-zh/` (see that folder's README for how the corpus itself was built).\n"
              "Generated by `tools/reference/make_tokenizer_fixtures.py`: from every file, lines of at most "
              f"{MAX_CHARS} characters; the ones with the smallest `sha256(\"<relpath>\\0<line>\")` are kept "
              f"(quota = min(eligible, {QUOTA_FLOOR} + round({QUOTA_PROPORTIONAL} × eligible / all eligible))), "
              "written file by file in the original line order.\n")
    md.append("Licenses below are quoted as stated by each source (facts copied from `shared/data/README.md`). "
              "**NC** marks sources that are, or are stated to be, for non-commercial / research use only: "
              "the fixture is for testing this project and must not be redistributed for other purposes "
              "without checking those terms. License texts are in `tests/fixtures/licenses/`.\n")
    md.append("| lines in sample.txt | count | of eligible | file (corpus-zh/) | content | source | license (as stated) | NC | license file(s) |")
    md.append("|---|---:|---:|---|---|---|---|---|---|")
    for rel, a, b, n, ne in ranges:
        if rel == HELDOUT:
            md.append(f"| {a}–{b} | {n} | {ne} | `{rel}` | held-out mix of all sources below (breakdown after the table) "
                      "| same as the originating file | as the originating file | see below | see below |")
            continue
        content, source, lic, nc, files = SOURCES[rel]
        md.append(f"| {a}–{b} | {n} | {ne} | `{rel}` | {content} | {source} | {lic} | {'**NC**' if nc else ''} | "
                  + ", ".join(f"`{f}`" for f in files) + " |")
    md.append("")
    md.append("Held-out lines by originating file (from `heldout/heldout-mixed.sources.tsv`; each keeps that file's license):\n")
    md.append("| originating file | lines |")
    md.append("|---|---:|")
    for src in sorted(heldout_counts):
        md.append(f"| `{src}`{' (NC)' if SOURCES[src][3] else ''} | {heldout_counts[src]} |")
    md.append("")
    write_text(os.path.join(FIX, "corpus", "SOURCES.md"), "\n".join(md) + "\n")


# --------------------------------------------------------------------------------------------
# b. sentencepiece ids
# --------------------------------------------------------------------------------------------
def load_sp(name):
    return spm.SentencePieceProcessor(model_file=os.path.join(TOKDIR, name, "tokenizer.model"))


def make_sp_expected(sample_lines):
    with open(os.path.join(TOKDIR, "test-vectors", "tests.inp"), "rb") as f:
        inp = f.read().decode("utf-8")
    assert inp.endswith(SEP)
    tests = inp[: -len(SEP)].split(SEP)
    assert len(tests) == 114, len(tests)
    report = {}
    for name in TOKENIZERS:
        sp = load_sp(name)
        ids = [sp.encode(l) for l in sample_lines]
        write_text(os.path.join(EXPECTED, f"{name}.corpus.ids"),
                   "".join(" ".join(map(str, x)) + "\n" for x in ids))
        out = "".join("".join(f" {i}" for i in sp.encode(t)) + "\n" for t in tests)
        write_text(os.path.join(EXPECTED, f"{name}.tests.out"), out)
        staged = os.path.join(TOKDIR, "test-vectors", f"tests.{name}.out")
        if os.path.exists(staged):
            same = open(staged, encoding="utf-8").read() == out
            report[name] = "identical to staged test vectors" if same else "DIFFERS from staged test vectors"
        else:
            report[name] = "no staged vector file"
        n_tok = sum(map(len, ids))
        log(f"  {name}: {sp.get_piece_size()} pieces, corpus {n_tok} tokens "
            f"({n_tok / sum(map(len, sample_lines)):.3f} tokens/char); tests.out {report[name]}")
    bad = [k for k, v in report.items() if v.startswith("DIFFERS")]
    if bad:
        raise SystemExit(f"tests.out differs from staged vectors for {bad}")
    return report


# --------------------------------------------------------------------------------------------
# c. transformers slow LlamaTokenizer, legacy=True
# --------------------------------------------------------------------------------------------
ALPACA2_MULTITURN = ("[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\n"
                     "你好 [/INST] 你好！</s><s>[INST] 再见 [/INST]")
HF_TEXTS = [
    "白日依山尽，黄河入海流。",                      # plain Chinese
    "",                                               # empty
    "   你好",                                         # leading spaces
    "  Hello world",                                  # leading spaces, ASCII
    "你好</s>世界",                                    # special in the middle
    "<s>你好",                                         # special at the start
    "你好 </s> 世界",                                  # spaces around a special
    "你好</s><s>再见",                                 # consecutive specials
    "</s><s>",                                        # only specials
    " </s>",                                          # space then special
    "hello</s> world",                                # legacy: text after a special gets a dummy prefix
    "未知<unk>字符",                                   # unk literal
    "填充<pad>符号",                                   # <pad>: special for llama-2, plain text for alpaca
    "填充[PAD]符号",                                   # [PAD]: special for alpaca, plain text for llama-2
    " [PAD] ",                                        # pad with spaces around
    ALPACA2_MULTITURN,                                # Alpaca-2 multi-turn prompt
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n你好\n\n### Response: ",  # Alpaca v1 prompt
    "emoji 😀 and 𠮷 (CJK Ext-B)",                    # byte fallback
]
HF_TOKENIZERS = {  # name -> pad token
    "chinese-llama-2": "<pad>",
    "chinese-alpaca-v1": "[PAD]",
}


def make_hf_legacy():
    import transformers
    from transformers import LlamaTokenizer

    records = []
    for name, pad in HF_TOKENIZERS.items():
        tok = LlamaTokenizer(vocab_file=os.path.join(TOKDIR, name, "tokenizer.model"), legacy=True,
                             pad_token=pad, add_bos_token=True, add_eos_token=False)
        sp = tok.sp_model
        log(f"  {name}: pad_token {tok.pad_token!r} id {tok.pad_token_id}, "
            f"special ids {tok.all_special_ids}, len {len(tok)}")
        for text in HF_TEXTS:
            for add_special in ([True, False] if text == ALPACA2_MULTITURN else [True]):
                ids = tok(text, add_special_tokens=add_special)["input_ids"]
                records.append({"tokenizer": name, "text": text, "add_special_tokens": add_special, "ids": ids,
                                "pieces": tok.convert_ids_to_tokens(ids)})

        def byte_ids(s):
            return [sp.piece_to_id("<0x%02X>" % b) for b in s.encode("utf-8")]

        nihao = sp.encode("你好")
        zaijian = sp.encode("再见")
        space = sp.piece_to_id("▁")
        decode_lists = [
            [1] + nihao,                                          # BOS skipped
            [1] + nihao + [2],                                    # BOS/EOS skipped
            nihao + [2, 1] + zaijian,                             # specials in the middle
            sp.encode("a") + byte_ids("𠮷") + [sp.piece_to_id("b")],  # byte fallback forming a 4-byte char
            [1] + byte_ids("你") + byte_ids("😀"),               # byte pieces right after BOS
            [space] + nihao,                                      # leading "▁" piece
            [1, space, space] + sp.encode("Hello world"),         # several leading spaces
            sp.encode("你好") + [0] + sp.encode("世界"),          # unk in the middle
            nihao + [tok.pad_token_id] + zaijian,                 # pad in the middle
            byte_ids("你")[:2] + sp.encode("好"),                 # incomplete UTF-8 sequence
            sp.encode(ALPACA2_MULTITURN),                         # a prompt, no specials
        ]
        for ids in decode_lists:
            for skip in (True, False):
                records.append({"tokenizer": name, "decode_ids": ids, "skip_special_tokens": skip,
                                "text": tok.decode(ids, skip_special_tokens=skip)})
    path = os.path.join(EXPECTED, "hf-legacy.jsonl")
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    log(f"  hf-legacy.jsonl: {len(records)} records (transformers {transformers.__version__})")


README_EXPECTED = """# tests/fixtures/tokenizers/expected — tokenizer ground truth

Generated by `tools/reference/make_tokenizer_fixtures.py` (edit the script, not this file):

```
/opt/calpaca-ref/bin/python tools/reference/make_tokenizer_fixtures.py
```

Versions: sentencepiece {spv}, transformers {tv} (slow `LlamaTokenizer`).

* `<tok>.corpus.ids` — one line per line of `tests/fixtures/corpus/sample.txt` ({n_lines} lines): the ids of
  sentencepiece `sp.encode(line)` (no BOS), separated by single spaces. `<tok>` ∈ llama, chinese-llama-v1,
  chinese-alpaca-v1, chinese-llama-2 (`tests/fixtures/tokenizers/<tok>/tokenizer.model`).
* `<tok>.tests.out` — the 114 strings of `../test-vectors/tests.inp` (split on `"\\n__ggml_vocab_test__\\n"`),
  one line per string, every id preceded by one space, no BOS (the llama.cpp `.out` format).
  {vector_report}
* `hf-legacy.jsonl` — transformers' slow `LlamaTokenizer(vocab_file=..., legacy=True, pad_token=...)` for
  chinese-llama-2 (pad `<pad>`, id 32000) and chinese-alpaca-v1 (pad `[PAD]`, id 49953). One JSON object per line:
  - encode: `{{"tokenizer", "text", "add_special_tokens", "ids", "pieces"}}` — `tok(text, add_special_tokens=...)["input_ids"]`;
    `pieces` is informative.
  - decode: `{{"tokenizer", "decode_ids", "skip_special_tokens", "text"}}` — `tok.decode(ids, skip_special_tokens=...)`.

  Behaviour these records pin down (transformers {tv}; older/newer releases differ in details around special tokens):
  literal `<s>`, `</s>`, `<unk>` and the pad token in the text are split out as single special ids; whitespace next to
  them is **not** stripped; every text segment, including the one after a special token, is encoded by sentencepiece
  on its own, so it gets its own dummy-prefix `▁` (e.g. `hello</s> world` → `▁hello </s> ▁ ▁world`);
  `[PAD]` is special only for chinese-alpaca-v1 (to plain sentencepiece it is `[ P AD ]`), `<pad>` only for
  chinese-llama-2. Decoding with `skip_special_tokens=False`: every run of ordinary tokens is decoded by sentencepiece
  separately (so each run loses its leading `▁`), and a run that ends at a special token, other than at position 0,
  gets one space prepended (legacy quirk: `<s> 你好 </s>` ids → `"<s> 你好</s>"`, `你好 <unk> 世界` → `" 你好<unk>世界"`).
"""


def write_expected_readme(report, n_lines):
    import transformers
    vr = "; ".join(f"{k}: {v}" for k, v in report.items())
    write_text(os.path.join(EXPECTED, "README.md"),
               README_EXPECTED.format(spv=spm.__version__, tv=transformers.__version__, n_lines=n_lines,
                                      vector_report="Compared with `../test-vectors/tests.<tok>.out`: " + vr + "."))


def main():
    log("a. corpus sample")
    lines = make_corpus_sample()
    log("b. sentencepiece ids")
    report = make_sp_expected(lines)
    write_expected_readme(report, len(lines))
    log("c. HF slow tokenizer, legacy=True")
    make_hf_legacy()
    total = 0
    for d in (EXPECTED, os.path.join(FIX, "corpus")):
        for f in sorted(os.listdir(d)):
            total += os.path.getsize(os.path.join(d, f))
    log(f"size of expected/ + corpus/: {total / 1e6:.2f} MB")
    if total > 12e6:
        raise SystemExit("fixtures too large (> 12 MB)")


if __name__ == "__main__":
    main()
