#include <cstdio>
#include <fstream>
#include <iostream>

#include "calpaca/base/error.h"
#include "calpaca/base/utf8.h"
#include "calpaca/formats/gguf.h"
#include "calpaca/tokenizer/tokenizer.h"
#include "common.h"

namespace calpaca::cli {

namespace {
struct TokOpts {
    std::string model, vocab, file, text;
    bool ids = false, pieces = false, bos = false, special = false;
};

std::string render(const Tokenizer& tok, const std::vector<int32_t>& ids, bool pieces) {
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) {
        if (i) out += ' ';
        out += pieces ? tok.piece(ids[i]) : std::to_string(ids[i]);
    }
    return out;
}
}  // namespace

static Command add_tokenize(CLI::App& root) {
    auto* app = root.add_subcommand("tokenize", "Encode text to token ids or pieces (SentencePiece-exact)");
    auto o = std::make_shared<TokOpts>();
    app->add_option("-m,--model", o->model, "GGUF model (its vocabulary)");
    app->add_option("--vocab", o->vocab, "tokenizer.model (SentencePiece)");
    app->add_option("-f,--file", o->file, "encode each line of FILE (one output line per input line; '-' = stdin)");
    app->add_option("TEXT", o->text, "text to encode");
    app->add_flag("--ids", o->ids, "print ids (default)");
    app->add_flag("--pieces", o->pieces, "print pieces instead of ids");
    app->add_flag("--bos", o->bos, "prepend BOS");
    app->add_flag("--parse-special", o->special, "treat literal <s>, </s>, <unk>, pad in the text as special tokens (HF legacy)");
    app->footer(
        "Examples:\n"
        "  calpaca tokenize --vocab tokenizer.model '白日依山尽'\n"
        "  calpaca tokenize -m model.gguf --pieces --bos '你好'\n"
        "  calpaca tokenize --vocab tokenizer.model -f corpus.txt > corpus.ids");
    return {app, [o]() {
                if (o->model.empty() == o->vocab.empty()) fail("tokenize: give exactly one of -m MODEL.gguf or --vocab tokenizer.model");
                if (o->file.empty() == o->text.empty() && !(o->file.empty() && o->text.empty()))
                    fail("tokenize: give either TEXT or -f FILE, not both");
                if (o->ids && o->pieces) fail("tokenize: --ids and --pieces are exclusive");
                Vocab v;
                if (!o->model.empty()) {
                    auto f = GGUFFile::open(o->model);
                    v = load_vocab_gguf(*f);
                } else {
                    v = load_vocab_spm(o->vocab);
                }
                Tokenizer tok(std::move(v));
                Tokenizer::Options eo;
                eo.add_bos = o->bos;
                eo.parse_special = o->special;
                auto encode_line = [&](const std::string& line, const std::string& where) {
                    size_t bad = utf8::find_invalid(line);
                    if (bad != std::string::npos) fail("{}: invalid UTF-8 at byte {}", where, bad);
                    return render(tok, tok.encode(line, eo), o->pieces);
                };
                if (!o->file.empty()) {
                    std::ifstream in;
                    std::istream* is = &std::cin;
                    if (o->file != "-") {
                        in.open(o->file, std::ios::binary);
                        if (!in) fail("{}: cannot open", o->file);
                        is = &in;
                    }
                    std::string line, out;
                    size_t n = 0;
                    while (std::getline(*is, line)) {
                        ++n;
                        out = encode_line(line, fmt::format("{}: line {}", o->file, n));
                        out += '\n';
                        std::fwrite(out.data(), 1, out.size(), stdout);
                    }
                } else {
                    std::string out = encode_line(o->text, "TEXT") + "\n";
                    std::fwrite(out.data(), 1, out.size(), stdout);
                }
                return 0;
            }};
}

static const Registration kRegistration("tokenize", add_tokenize);

}  // namespace calpaca::cli
