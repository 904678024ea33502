// SentencePiece training through libsentencepiece_train.so.0, loaded at run time (see train.h for
// why it is never linked).
#include "calpaca/tokenizer/train.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <new>
#include <streambuf>
#include <unordered_map>

// Only the declarations are used (types and signatures); nothing of libsentencepiece is linked.
#include <sentencepiece_trainer.h>

#include "calpaca/base/error.h"
#include "calpaca/base/progress.h"
#include "calpaca/tokenizer/spm_model.h"

namespace calpaca {

namespace {

namespace sp = sentencepiece;
using ArgMap = std::unordered_map<std::string, std::string>;

// ---------------------------------------------------------------------------------------
// The library, resolved once. Functions are looked up by their Itanium-ABI (mangled) names,
// which encode the full signature; the function-pointer types are spelled with the types of
// Debian's sentencepiece_trainer.h. A library with another ABI has no symbol of that name, and
// the Error says which one is missing.

using TrainFn = sp::util::Status (*)(const ArgMap&, sp::SentenceIterator*, std::string*);
using StatusDtorFn = void (*)(sp::util::Status*);
using StatusMessageFn = const char* (*)(const sp::util::Status*);

constexpr const char* kTrainSym =
    "_ZN13sentencepiece20SentencePieceTrainer5TrainERKSt13unordered_mapINSt7__cxx1112basic_stringIcSt11char_"
    "traitsIcESaIcEEES7_St4hashIS7_ESt8equal_toIS7_ESaISt4pairIKS7_S7_EEEPNS_16SentenceIteratorEPS7_";
constexpr const char* kStatusDtorSym = "_ZN13sentencepiece4util6StatusD1Ev";
constexpr const char* kStatusMessageSym = "_ZNK13sentencepiece4util6Status13error_messageEv";

struct SpmTrainerLib {
    TrainFn train = nullptr;
    StatusDtorFn status_dtor = nullptr;
    StatusMessageFn status_message = nullptr;
};

const SpmTrainerLib& trainer_lib() {
    static const SpmTrainerLib lib = [] {
        const char* env = std::getenv("CALPACA_SPM_TRAIN_LIB");
        const std::string name = env && *env ? env : "libsentencepiece_train.so.0";
        void* h = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char* why = ::dlerror();
            fail("cannot load {} ({}): install Debian's libsentencepiece0 (scripts/install-deps.sh) or set "
                 "CALPACA_SPM_TRAIN_LIB",
                 name, why ? why : "unknown reason");
        }
        auto sym = [&](const char* s, const char* what) {
            void* p = ::dlsym(h, s);
            if (!p) fail("{}: symbol {} not found (a sentencepiece 0.1.9x C++ ABI is expected)", name, what);
            return p;
        };
        SpmTrainerLib l;
        l.train = reinterpret_cast<TrainFn>(sym(kTrainSym, "SentencePieceTrainer::Train(map, ...)"));
        l.status_dtor = reinterpret_cast<StatusDtorFn>(sym(kStatusDtorSym, "util::Status::~Status()"));
        l.status_message = reinterpret_cast<StatusMessageFn>(sym(kStatusMessageSym, "util::Status::error_message()"));
        return l;
    }();
    return lib;
}

// The Status returned by the trainer is constructed in place (guaranteed copy elision) and
// destroyed through the library's own destructor: no sentencepiece code is linked into calpaca.
class StatusHolder {
public:
    template <typename F>
    explicit StatusHolder(F&& call) {
        ::new (static_cast<void*>(buf_)) sp::util::Status(call());
    }
    ~StatusHolder() { trainer_lib().status_dtor(get()); }
    StatusHolder(const StatusHolder&) = delete;
    StatusHolder& operator=(const StatusHolder&) = delete;
    bool ok() const { return get()->ok(); }  // inline in the header: rep_ == nullptr
    std::string message() const {
        const char* m = trainer_lib().status_message(get());
        return m ? m : "";
    }

private:
    sp::util::Status* get() const {
        return std::launder(reinterpret_cast<sp::util::Status*>(const_cast<unsigned char*>(buf_)));
    }
    alignas(sp::util::Status) unsigned char buf_[sizeof(sp::util::Status)];
};

// "./src/trainer_interface.cc(580) [cond] Vocabulary size is smaller ..." → the message part.
std::string clean_spm_message(std::string m) {
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
    if (m.rfind("./src/", 0) == 0 || m.find(".cc(") != std::string::npos) {
        size_t close = m.find(") [");
        if (close != std::string::npos) {
            // skip the bracketed condition, which may itself contain brackets
            size_t depth = 0, i = close + 2;
            for (; i < m.size(); ++i) {
                if (m[i] == '[') ++depth;
                else if (m[i] == ']' && --depth == 0) break;
            }
            if (i < m.size()) m = m.substr(i + 1);
        }
    }
    size_t b = m.find_first_not_of(' ');
    m = b == std::string::npos ? std::string() : m.substr(b);
    for (auto& c : m)
        if (c == '\n') c = ' ';
    // the one spm_train flag its messages name has a calpaca spelling
    for (size_t p; (p = m.find("--character_coverage")) != std::string::npos;) m.replace(p, 20, "--character-coverage");
    return m;
}

// ---------------------------------------------------------------------------------------
// sentencepiece logs through std::cerr (one "file(line) LOG(LEVEL) text" line per event). While
// training, std::cerr writes into this buffer: each line is parsed for progress and the summary,
// and passed through to the real stderr when verbose (warnings and errors always).

class TrainLog : public std::streambuf {
public:
    TrainLog(const SpmTrainOptions& o, std::streambuf* real)
        : opt_(o), real_(real), progress_("train", 1000, o.progress) {}

    uint64_t sentences = 0, alphabet = 0;
    double coverage = -1;

    void done(bool ok) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!line_.empty()) handle(line_);
        line_.clear();
        if (ok) progress_.update(1000, "done");
        progress_.finish();
    }

protected:
    int_type overflow(int_type c) override {
        if (c == traits_type::eof()) return traits_type::not_eof(c);
        char ch = static_cast<char>(c);
        xsputn(&ch, 1);
        return c;
    }
    std::streamsize xsputn(const char* s, std::streamsize n) override {
        std::lock_guard<std::mutex> lk(mu_);
        for (std::streamsize i = 0; i < n; ++i) {
            if (s[i] == '\n') {
                handle(line_);
                line_.clear();
            } else {
                line_ += s[i];
            }
        }
        return n;
    }

private:
    static bool after(const std::string& line, const char* key, std::string& rest) {
        size_t p = line.find(key);
        if (p == std::string::npos) return false;
        rest = line.substr(p + std::strlen(key));
        return true;
    }
    static uint64_t num(const std::string& s) { return std::strtoull(s.c_str(), nullptr, 10); }

    void set(uint64_t v, const std::string& note) {
        pos_ = std::max(pos_, std::min<uint64_t>(v, 990));
        progress_.update(pos_, note);
    }

    void handle(const std::string& line) {
        // "file.cc(123) LOG(LEVEL) text"; lines without that header continue the previous one
        // (the trainer dumps its specs over many lines)
        const size_t h = line.find(") LOG(");
        if (h != std::string::npos) {
            const size_t e = line.find(')', h + 6);
            level_ = e == std::string::npos ? "" : line.substr(h + 6, e - h - 6);
        }
        if (opt_.verbose || (level_ != "INFO" && !line.empty())) {
            real_->sputn(line.data(), static_cast<std::streamsize>(line.size()));
            real_->sputc('\n');
            real_->pubsync();
        }
        std::string r;
        if (after(line, "Loaded all ", r)) {
            sentences = num(r);
            set(40, "loaded " + std::to_string(sentences) + " sentences");
        } else if (after(line, "Loaded ", r) && r.find(" lines") != std::string::npos) {
            set(20, "loading: " + std::to_string(num(r)) + " lines");
        } else if (after(line, "Alphabet size=", r)) {
            alphabet = num(r);
            set(80, "alphabet " + std::to_string(alphabet));
        } else if (after(line, "Final character coverage=", r)) {
            coverage = std::strtod(r.c_str(), nullptr);
        } else if (after(line, "Done! preprocessed ", r)) {
            sentences = num(r);
            set(100, "preprocessed");
        } else if (after(line, "Initialized ", r) && r.find("seed sentencepieces") != std::string::npos) {
            seeds_ = num(r);
            set(120, std::to_string(seeds_) + " seed pieces");
        } else if (after(line, "EM sub_iter=", r)) {
            std::string z;
            if (after(r, "size=", z) && seeds_ > 0) {
                // the unigram trainer shrinks the seed set by a constant factor until it reaches
                // 1.1 × vocab_size, then prunes to vocab_size
                const double size = static_cast<double>(num(z)), target = 1.1 * opt_.vocab_size;
                const double f = std::log(seeds_ / std::max(size, 1.0)) / std::log(std::max(seeds_ / target, 1.0001));
                set(120 + static_cast<uint64_t>(860 * std::clamp(f, 0.0, 1.0)), "EM, " + std::to_string(num(z)) + " pieces");
            }
        } else if (after(line, "Added: freq=", r)) {
            std::string z;
            if (after(r, "size=", z)) {
                const double merges = std::max<double>(1.0, static_cast<double>(opt_.vocab_size) - alphabet - 3);
                const double f = static_cast<double>(num(z)) / merges;
                set(100 + static_cast<uint64_t>(880 * std::clamp(f, 0.0, 1.0)), std::to_string(num(z)) + " merges");
            }
        } else if (line.find("Saving model") != std::string::npos) {
            set(990, "saving");
        }
    }

    const SpmTrainOptions& opt_;
    std::streambuf* real_;
    Progress progress_;
    std::mutex mu_;
    std::string line_;
    uint64_t pos_ = 0, seeds_ = 0;
    std::string level_ = "INFO";
};

class CerrRedirect {
public:
    explicit CerrRedirect(std::streambuf* to) : old_(std::cerr.rdbuf(to)) {}
    ~CerrRedirect() { std::cerr.rdbuf(old_); }
    std::streambuf* old() const { return old_; }

private:
    std::streambuf* old_;
};

std::string fmt_double(double x) {
    std::string s = fmt::format("{:.6g}", x);
    return s;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> spm_train_args(const SpmTrainOptions& o) {
    std::string inputs;
    for (const auto& f : o.inputs) inputs += (inputs.empty() ? "" : ",") + f;
    // Always the fields chinese_sp.model's trainer_spec sets; the others only when they differ
    // from sentencepiece's defaults, so a default run records the same trainer_spec fields as
    // chinese_sp.model (the trainer stores exactly the fields it was given).
    std::vector<std::pair<std::string, std::string>> a = {
        {"input", inputs},
        {"model_prefix", o.model_prefix},
        {"vocab_size", std::to_string(o.vocab_size)},
        {"character_coverage", fmt_double(o.character_coverage)},
        {"num_threads", std::to_string(o.threads)},
        {"train_extremely_large_corpus", o.train_extremely_large_corpus ? "true" : "false"},
    };
    if (o.model_type != "unigram") a.emplace_back("model_type", o.model_type);
    if (o.byte_fallback) a.emplace_back("byte_fallback", "true");
    if (o.split_digits) a.emplace_back("split_digits", "true");
    if (o.normalization != "nmt_nfkc") a.emplace_back("normalization_rule_name", o.normalization);
    if (!o.add_dummy_prefix) a.emplace_back("add_dummy_prefix", "false");
    if (!o.remove_extra_whitespaces) a.emplace_back("remove_extra_whitespaces", "false");
    if (o.input_sentence_size) a.emplace_back("input_sentence_size", std::to_string(o.input_sentence_size));
    if (o.max_sentence_length != 4192) a.emplace_back("max_sentence_length", std::to_string(o.max_sentence_length));
    if (o.max_sentencepiece_length != 16)
        a.emplace_back("max_sentencepiece_length", std::to_string(o.max_sentencepiece_length));
    if (!o.user_defined_symbols.empty()) {
        std::string s;
        for (const auto& u : o.user_defined_symbols) s += (s.empty() ? "" : ",") + u;
        a.emplace_back("user_defined_symbols", s);
    }
    for (const auto& kv : o.extra) {
        auto it = std::find_if(a.begin(), a.end(), [&](const auto& x) { return x.first == kv.first; });
        if (it != a.end()) it->second = kv.second;
        else a.push_back(kv);
    }
    return a;
}

SpmTrainResult train_sentencepiece(const SpmTrainOptions& o) {
    namespace fs = std::filesystem;
    // --- validate what sentencepiece would otherwise report badly (or exit the process on)
    if (o.inputs.empty()) fail("tokenizer train: no input file (give -f CORPUS)");
    for (const auto& f : o.inputs) {
        std::error_code ec;
        if (f.find(',') != std::string::npos)
            fail("{}: input file names must not contain ',' (sentencepiece separates inputs with commas)", f);
        if (!fs::exists(f, ec)) fail("{}: input file not found", f);
        if (!fs::is_regular_file(f, ec)) fail("{}: not a regular file", f);
        std::ifstream in(f, std::ios::binary);
        if (!in) fail("{}: cannot open for reading", f);
        if (fs::file_size(f, ec) == 0) fail("{}: input file is empty", f);
    }
    static const char* kTypes[] = {"unigram", "bpe", "word", "char"};
    if (std::find_if(std::begin(kTypes), std::end(kTypes), [&](const char* t) { return o.model_type == t; }) ==
        std::end(kTypes))
        fail("--model-type must be unigram, bpe, word or char, got '{}'", o.model_type);
    static const char* kNorms[] = {"nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity"};
    if (std::find_if(std::begin(kNorms), std::end(kNorms), [&](const char* t) { return o.normalization == t; }) ==
        std::end(kNorms))
        fail("--normalization must be nmt_nfkc, nfkc, nmt_nfkc_cf, nfkc_cf or identity, got '{}'", o.normalization);
    if (o.vocab_size < 4) fail("--vocab-size must be at least 4, got {}", o.vocab_size);
    if (!(o.character_coverage > 0 && o.character_coverage <= 1))
        fail("--character-coverage must be in (0, 1], got {}", o.character_coverage);
    if (o.threads < 1 || o.threads > 1024) fail("--threads must be in 1..1024, got {}", o.threads);
    if (o.max_sentence_length < 1) fail("--max-sentence-length must be positive, got {}", o.max_sentence_length);
    if (o.max_sentencepiece_length < 1 || o.max_sentencepiece_length > 512)
        fail("--max-piece-length must be in 1..512, got {}", o.max_sentencepiece_length);
    for (const auto& u : o.user_defined_symbols)
        if (u.empty() || u.find(',') != std::string::npos)
            fail("--user-defined-symbol '{}': must be non-empty and contain no ','", u);
    for (const auto& kv : o.extra)
        if (kv.first == "minloglevel" || kv.first == "model_prefix" || kv.first == "input")
            fail("--spm-option {}: set by calpaca itself (use the dedicated option)", kv.first);

    const SpmTrainerLib& lib = trainer_lib();

    ArgMap args;
    for (const auto& [k, v] : spm_train_args(o)) args[k] = v;
    // The trainer returns the model instead of writing files only when model_prefix is empty;
    // the prefix is recorded in the trainer_spec afterwards, as spm_train would have.
    args["model_prefix"] = "";
    args["minloglevel"] = "0";  // every INFO line reaches TrainLog (it decides what is shown)

    SpmTrainResult res;
    const auto t0 = std::chrono::steady_clock::now();
    TrainLog log(o, std::cerr.rdbuf());
    std::string model;
    {
        CerrRedirect redirect(&log);
        StatusHolder st([&] { return lib.train(args, nullptr, &model); });
        log.done(st.ok());
        if (!st.ok()) fail("tokenizer train: libsentencepiece: {}", clean_spm_message(st.message()));
    }
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (model.empty()) fail("tokenizer train: libsentencepiece returned an empty model");
    // Our own parser must accept what the trainer wrote (it counts the pieces, checks the bytes).
    auto proto = parse_model_proto(model, "trained model");
    res.pieces = static_cast<size_t>(proto.pieces_size());
    if (!o.model_prefix.empty()) {
        proto.mutable_trainer_spec()->set_model_prefix(o.model_prefix);
        model = serialize_model_proto(proto);
    }
    res.model = std::move(model);
    res.sentences = log.sentences;
    res.alphabet = log.alphabet;
    res.coverage = log.coverage;
    return res;
}

}  // namespace calpaca
