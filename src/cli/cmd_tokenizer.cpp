// calpaca tokenizer train | merge | stats — the Chinese vocabulary extension tools.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/formats/gguf.h"
#include "calpaca/tokenizer/merge.h"
#include "calpaca/tokenizer/stats.h"
#include "calpaca/tokenizer/tokenizer.h"
#include "calpaca/tokenizer/train.h"
#include "common.h"

namespace calpaca::cli {

namespace {

namespace fs = std::filesystem;

// ---- train ---------------------------------------------------------------------------

struct TrainCli {
    SpmTrainOptions o;
    std::string out;
    bool model_prefix_set = false;
    bool no_dummy_prefix = false, keep_whitespace = false;
    std::vector<std::string> spm_options;
};

Command add_train(CLI::App* parent) {
    auto* app = parent->add_subcommand("train", "Train a SentencePiece model with libsentencepiece's trainer");
    auto c = std::make_shared<TrainCli>();
    auto& o = c->o;
    app->add_option("-f,--file", o.inputs, "training text, one sentence per line (repeatable)")->required();
    app->add_option("-o,--out", c->out, "output tokenizer.model")->required();
    app->add_option("--vocab-size", o.vocab_size, "pieces in the model (default 20000, as chinese_sp.model)");
    app->add_option("--model-type", o.model_type, "unigram (default, as chinese_sp.model), bpe, word or char")
        ->check(CLI::IsMember({"unigram", "bpe", "word", "char"}));
    app->add_option("--character-coverage", o.character_coverage,
                    "share of characters the alphabet must cover (default 0.9995)");
    app->add_flag("--byte-fallback", o.byte_fallback, "add the 256 <0xXX> byte pieces (LLaMA-style)");
    app->add_flag("--split-digits", o.split_digits, "split numbers into single digits (LLaMA-style)");
    app->add_option("--normalization", o.normalization,
                    "nmt_nfkc (default, as chinese_sp.model), nfkc, nmt_nfkc_cf, nfkc_cf or identity (LLaMA)")
        ->check(CLI::IsMember({"nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity"}));
    app->add_flag("--no-dummy-prefix", c->no_dummy_prefix, "do not prepend '▁' to each sentence");
    app->add_flag("--keep-extra-whitespaces", c->keep_whitespace,
                  "keep runs of spaces (LLaMA-style; default: collapse them, as chinese_sp.model)");
    app->add_option("-t,--threads", o.threads,
                    "trainer threads (default 32, as chinese_sp.model; the unigram result depends on it)");
    app->add_option("--input-sentence-size", o.input_sentence_size, "sample this many sentences (default 0 = all)");
    app->add_option("--max-sentence-length", o.max_sentence_length, "longer sentences are skipped (bytes, default 4192)");
    app->add_option("--max-piece-length", o.max_sentencepiece_length, "longest piece in characters (default 16)");
    app->add_option("--user-defined-symbol", o.user_defined_symbols, "piece that is always kept whole (repeatable)");
    app->add_option("--spm-option", c->spm_options, "any other spm_train flag as NAME=VALUE (repeatable)");
    app->add_option("--model-prefix", o.model_prefix,
                    "value recorded as trainer_spec.model_prefix (default: the output path without .model)");
    app->add_flag("-v,--verbose", o.verbose, "show sentencepiece's own log");
    app->footer(
        "Examples:\n"
        "  # like chinese_sp.model (unigram, 20000 pieces, nmt_nfkc, coverage 0.9995):\n"
        "  calpaca tokenizer train -f zh_corpus.txt -o chinese_sp.model\n"
        "  # a LLaMA-style BPE model with byte fallback:\n"
        "  calpaca tokenizer train -f a.txt -f b.txt --vocab-size 8000 --model-type bpe --byte-fallback \\\n"
        "      --split-digits --normalization identity --keep-extra-whitespaces -o zh_bpe.model\n"
        "Defaults reproduce chinese_sp.model's trainer_spec; the pieces and scores are exactly those\n"
        "spm_train produces with the same settings (see docs/tokenizer.md).");
    return {app, [c]() {
                auto& o = c->o;
                o.add_dummy_prefix = !c->no_dummy_prefix;
                o.remove_extra_whitespaces = !c->keep_whitespace;
                if (o.model_prefix.empty()) {
                    std::string p = c->out;
                    if (p.size() > 6 && p.compare(p.size() - 6, 6, ".model") == 0) p.resize(p.size() - 6);
                    o.model_prefix = p;
                }
                for (const auto& kv : c->spm_options) {
                    const size_t eq = kv.find('=');
                    if (eq == std::string::npos || eq == 0) fail("--spm-option '{}': expected NAME=VALUE", kv);
                    o.extra.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
                }
                SpmTrainResult r = train_sentencepiece(o);
                write_file_atomic(c->out, r.model);
                std::string cov = r.coverage >= 0 ? fmt::format("{:.4f}%", 100 * r.coverage) : std::string("n/a");
                std::fprintf(stderr,
                             "wrote %s: %zu pieces (%s), %llu sentences, alphabet %llu characters, character "
                             "coverage %s, %.1f s\n",
                             c->out.c_str(), r.pieces, o.model_type.c_str(),
                             static_cast<unsigned long long>(r.sentences), static_cast<unsigned long long>(r.alphabet),
                             cov.c_str(), r.seconds);
                return 0;
            }};
}

// ---- merge ---------------------------------------------------------------------------

Command add_merge(CLI::App* parent) {
    auto* app = parent->add_subcommand(
        "merge", "Append a model's new pieces to a BPE tokenizer (Chinese-LLaMA's merge_tokenizers.py)");
    auto o = std::make_shared<TokenizerMergeOptions>();
    auto no_hf = std::make_shared<bool>(false);
    app->add_option("--base", o->base, "BPE tokenizer.model to extend (LLaMA's)")->required();
    app->add_option("--add", o->add, "model whose pieces are appended (e.g. chinese_sp.model)")->required();
    app->add_option("-o,--out", o->out, "merged tokenizer.model")->required();
    app->add_option("--add-pad", o->pad, "then append this pad piece, score 0 (Chinese-Alpaca: \"[PAD]\")");
    app->add_option("--hf-dir", o->hf_dir,
                    "write a complete HF tokenizer folder here (tokenizer.model + JSON files; default: the JSON "
                    "files next to -o)");
    app->add_flag("--no-hf-files", *no_hf, "do not write tokenizer_config.json / special_tokens_map.json");
    app->footer(
        "Examples:\n"
        "  # the Chinese-LLaMA tokenizer (49953 pieces, sha256 e2676d4c...):\n"
        "  calpaca tokenizer merge --base llama/tokenizer.model --add chinese_sp.model -o chinese-llama/tokenizer.model\n"
        "  # the Chinese-Alpaca tokenizer (49954 pieces, [PAD] = 49953, sha256 2d967e85...):\n"
        "  calpaca tokenizer merge --base llama/tokenizer.model --add chinese_sp.model --add-pad '[PAD]' \\\n"
        "      -o chinese_alpaca.model --hf-dir merged_tokenizer_hf");
    return {app, [o, no_hf]() {
                o->hf_files = !*no_hf;
                TokenizerMergeResult r = merge_tokenizers(*o);
                std::string pad = r.pad_id >= 0 ? fmt::format(", pad '{}' = id {}", o->pad, r.pad_id) : "";
                std::fprintf(stderr, "merged: %zu base pieces + %zu new of %zu = %zu pieces%s\n", r.base_pieces, r.added,
                             r.add_pieces, r.total, pad.c_str());
                for (const auto& f : r.written) std::fprintf(stderr, "wrote %s\n", f.c_str());
                return 0;
            }};
}

// ---- stats ---------------------------------------------------------------------------

std::string column_name(const std::string& path) {
    const fs::path p(path);
    if (p.filename() == "tokenizer.model" && p.has_parent_path() && !p.parent_path().filename().empty())
        return p.parent_path().filename().string();
    return p.filename().string();
}

Vocab load_any_vocab(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    char magic[4] = {};
    if (in && in.read(magic, 4) && std::string(magic, 4) == "GGUF") {
        auto f = GGUFFile::open(path);
        return load_vocab_gguf(*f);
    }
    return load_vocab_spm(path);
}

Command add_stats(CLI::App* parent) {
    auto* app = parent->add_subcommand("stats", "Compare tokenizers on a text: tokens per character / byte, unk and "
                                                "byte-fallback rates");
    struct O {
        std::vector<std::string> vocabs;
        std::string file;
        int threads = 0;
        bool json = false;
    };
    auto o = std::make_shared<O>();
    app->add_option("--vocab", o->vocabs, "tokenizer.model or GGUF model (repeatable; one column each)")->required();
    app->add_option("-f,--file", o->file, "text to encode line by line ('-' = stdin)")->required();
    app->add_option("-t,--threads", o->threads, "threads (default: physical cores)");
    app->add_flag("--json", o->json, "print JSON instead of a Markdown table");
    app->footer(
        "Examples:\n"
        "  calpaca tokenizer stats --vocab llama/tokenizer.model --vocab chinese-llama-v1/tokenizer.model \\\n"
        "      --vocab chinese-llama-2/tokenizer.model -f heldout-mixed.txt\n"
        "  calpaca tokenizer stats --vocab model.gguf -f text.txt --json");
    return {app, [o]() {
                if (o->threads < 0) fail("--threads must be positive, got {}", o->threads);
                std::vector<Tokenizer> toks;
                toks.reserve(o->vocabs.size());
                for (const auto& v : o->vocabs) toks.emplace_back(load_any_vocab(v));  // all checked before encoding
                const std::string text = read_text_arg(o->file);
                ThreadPool pool(o->threads > 0 ? o->threads : default_thread_count());
                std::vector<TokenizerStats> stats;
                for (size_t i = 0; i < toks.size(); ++i) {
                    stats.push_back(measure_tokenizer(toks[i], text, o->file == "-" ? "stdin" : o->file, &pool));
                    stats.back().name = column_name(o->vocabs[i]);
                }
                const std::string out = o->json ? format_stats_json(stats)
                                                 : format_stats_markdown(stats, o->file == "-" ? "stdin" : o->file);
                std::fwrite(out.data(), 1, out.size(), stdout);
                return 0;
            }};
}

Command add_tokenizer(CLI::App& root) {
    auto* app = root.add_subcommand("tokenizer", "Vocabulary extension tools: train, merge, stats");
    app->require_subcommand(1);
    auto subs = std::make_shared<std::vector<Command>>();
    subs->push_back(add_train(app));
    subs->push_back(add_merge(app));
    subs->push_back(add_stats(app));
    app->footer(
        "Examples:\n"
        "  calpaca tokenizer train -f zh_corpus.txt -o chinese_sp.model\n"
        "  calpaca tokenizer merge --base llama/tokenizer.model --add chinese_sp.model -o chinese_llama.model\n"
        "  calpaca tokenizer stats --vocab llama/tokenizer.model --vocab chinese_llama.model -f text.txt\n"
        "Run 'calpaca tokenizer SUBCOMMAND --help' for each one's options.");
    return {app, [subs]() {
                for (auto& s : *subs)
                    if (s.app->parsed()) return s.run();
                fail("tokenizer: give a subcommand: train, merge or stats");
            }};
}

}  // namespace

static const Registration kRegistration("tokenizer", add_tokenizer);

}  // namespace calpaca::cli
