// tokenizer merge / stats / train (the vocabulary extension tools).
#include <gtest/gtest.h>
#include "../common/test_util.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "calpaca/base/error.h"
#include "calpaca/base/fileio.h"
#include "calpaca/base/threadpool.h"
#include "calpaca/tokenizer/merge.h"
#include "calpaca/tokenizer/spm_model.h"
#include "calpaca/tokenizer/stats.h"
#include "calpaca/tokenizer/tokenizer.h"
#include "calpaca/tokenizer/train.h"

namespace fs = std::filesystem;
using namespace calpaca;
using namespace calpaca::test;

namespace {

const std::string kTok = std::string(CALPACA_TEST_DATA) + "/tokenizers/";
std::string tok_path(const std::string& name) { return kTok + name + "/tokenizer.model"; }


// ---------------------------------------------------------------------------------------
// merge

TEST(TokenizerMerge, ReproducesChineseLlamaAndAlpacaByteForByte) {
    TempDir d("merge");
    TokenizerMergeOptions o;
    o.base = tok_path("llama");
    o.add = kTok + "chinese_sp.model";
    o.out = d / "chinese_llama.model";
    auto r = merge_tokenizers(o);
    EXPECT_EQ(r.base_pieces, 32000u);
    EXPECT_EQ(r.add_pieces, 20000u);
    EXPECT_EQ(r.added, 17953u);
    EXPECT_EQ(r.total, 49953u);
    EXPECT_EQ(r.pad_id, -1);
    // byte-identical to the published tokenizer (sha256 e2676d4c…, the committed fixture)
    EXPECT_TRUE(read_file(o.out) == read_file(tok_path("chinese-llama-v1")));
    const std::string hf = kTok + "expected/hf-merge/";
    EXPECT_EQ(read_file(d / "tokenizer_config.json"), read_file(hf + "chinese-llama-v1/tokenizer_config.json"));
    EXPECT_EQ(read_file(d / "special_tokens_map.json"), read_file(hf + "chinese-llama-v1/special_tokens_map.json"));

    o.pad = "[PAD]";
    o.out = d / "alpaca/tokenizer.model";
    fs::create_directories(d.p / "alpaca");
    o.hf_dir = d / "alpaca_hf";
    r = merge_tokenizers(o);
    EXPECT_EQ(r.total, 49954u);
    EXPECT_EQ(r.pad_id, 49953);
    EXPECT_TRUE(read_file(o.out) == read_file(tok_path("chinese-alpaca-v1")));  // sha256 2d967e85…
    EXPECT_TRUE(read_file(d / "alpaca_hf/tokenizer.model") == read_file(o.out));
    EXPECT_EQ(read_file(d / "alpaca_hf/tokenizer_config.json"),
              read_file(hf + "chinese-alpaca-v1/tokenizer_config.json"));
    EXPECT_EQ(read_file(d / "alpaca_hf/special_tokens_map.json"),
              read_file(hf + "chinese-alpaca-v1/special_tokens_map.json"));
    EXPECT_FALSE(fs::exists(d / "alpaca/tokenizer_config.json"));  // --hf-dir moves the JSON files
    // the written folder loads with the pad token declared
    const Vocab v = load_vocab_spm(d / "alpaca_hf/tokenizer.model");
    EXPECT_EQ(v.pad_id, 49953);
    EXPECT_EQ(v.size(), 49954u);
}

TEST(TokenizerMerge, BadInputsGiveOneLineErrors) {
    TempDir d("merge-bad");
    TokenizerMergeOptions o;
    o.add = kTok + "chinese_sp.model";
    o.out = d / "out.model";
    // a unigram model as the base
    o.base = kTok + "chinese_sp.model";
    expect_one_line(error_of([&] { merge_tokenizers(o); }), "must be a BPE model");
    // not a SentencePiece file
    write_file_atomic(d / "junk.model", "this is not a protobuf \xff\xff\xff");
    o.base = d / "junk.model";
    expect_one_line(error_of([&] { merge_tokenizers(o); }), "not a SentencePiece model");
    o.base = tok_path("llama");
    o.add = d / "junk.model";
    expect_one_line(error_of([&] { merge_tokenizers(o); }), "junk.model");
    o.add = d / "missing.model";
    expect_one_line(error_of([&] { merge_tokenizers(o); }), "not found");
    // a pad piece that already exists
    o.add = kTok + "chinese_sp.model";
    o.pad = "<s>";
    expect_one_line(error_of([&] { merge_tokenizers(o); }), "--add-pad");
    EXPECT_FALSE(fs::exists(o.out));  // nothing written on error
}

// ---------------------------------------------------------------------------------------
// stats

std::vector<std::vector<int32_t>> read_ids(const std::string& path) {
    std::ifstream in(path);
    std::vector<std::vector<int32_t>> out;
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ss(line);
        std::vector<int32_t> ids;
        int32_t x;
        while (ss >> x) ids.push_back(x);
        out.push_back(ids);
    }
    return out;
}

TEST(TokenizerStats, CountsMatchSentencepieceIdsOfTheCorpusSample) {
    const std::string text = read_file(std::string(CALPACA_TEST_DATA) + "/corpus/sample.txt");
    ThreadPool pool(3);
    for (const std::string name : {"llama", "chinese-llama-v1", "chinese-llama-2"}) {
        SCOPED_TRACE(name);
        Tokenizer tok(load_vocab_spm(tok_path(name)));
        const auto ids = read_ids(kTok + "expected/" + name + ".corpus.ids");
        uint64_t tokens = 0, byte_tokens = 0, byte_chars = 0, unk = 0;
        for (const auto& line : ids)
            for (int32_t id : line) {
                ++tokens;
                unk += id == 0;
                if (id >= 3 && id <= 258) {  // <0x00>..<0xFF> in every LLaMA-family vocabulary
                    ++byte_tokens;
                    byte_chars += ((id - 3) & 0xC0) != 0x80;
                }
            }
        const TokenizerStats s = measure_tokenizer(tok, text, "sample.txt", &pool);
        EXPECT_EQ(s.lines, ids.size());
        EXPECT_EQ(s.tokens, tokens);
        EXPECT_EQ(s.unk_tokens, unk);
        EXPECT_EQ(s.byte_tokens, byte_tokens);
        EXPECT_EQ(s.byte_chars, byte_chars);
        EXPECT_EQ(s.bytes, text.size() - s.lines);  // every line ends with '\n'
        const TokenizerStats one = measure_tokenizer(tok, text, "sample.txt", nullptr);
        EXPECT_EQ(one.tokens, s.tokens);
        EXPECT_EQ(one.chars, s.chars);
    }
}

TEST(TokenizerStats, SmallTextByHand) {
    Tokenizer tok(load_vocab_spm(tok_path("llama")));
    // "a" → ▁a; "é" is one piece or bytes; an empty line costs nothing; the last line has no '\n'
    const std::string text = "a\n\n\xF0\x9F\xA6\x99";  // 🦙 (not a LLaMA piece: 4 byte tokens)
    const TokenizerStats s = measure_tokenizer(tok, text, "t");
    EXPECT_EQ(s.lines, 3u);
    EXPECT_EQ(s.chars, 2u);
    EXPECT_EQ(s.bytes, 5u);
    const auto a = tok.encode("a"), llama = tok.encode("\xF0\x9F\xA6\x99");
    EXPECT_EQ(s.tokens, a.size() + llama.size());
    EXPECT_EQ(s.byte_tokens, 4u);
    EXPECT_EQ(s.byte_chars, 1u);
    EXPECT_DOUBLE_EQ(s.tokens_per_char(), static_cast<double>(s.tokens) / 2);
    const std::string md = format_stats_markdown({s, s}, "t");
    EXPECT_NE(md.find("| tokens vs first column | 1.000× | 1.000× |"), std::string::npos) << md;
    EXPECT_NE(format_stats_json({s}).find("\"byte_tokens\": 4"), std::string::npos);
}

TEST(TokenizerStats, InvalidUtf8NamesTheLine) {
    Tokenizer tok(load_vocab_spm(tok_path("llama")));
    ThreadPool pool(2);
    const std::string text = "ok\nok\nbad \xC3\n";
    expect_one_line(error_of([&] { measure_tokenizer(tok, text, "x.txt", &pool); }), "x.txt: line 3");
}

// ---------------------------------------------------------------------------------------
// train (libsentencepiece's trainer, loaded at run time)

std::string corpus_head(const TempDir& d, size_t n_lines) {
    std::ifstream in(std::string(CALPACA_TEST_DATA) + "/corpus/sample.txt");
    std::string line, out;
    for (size_t i = 0; i < n_lines && std::getline(in, line); ++i) out += line + "\n";
    const std::string p = d / "corpus.txt";
    write_file_atomic(p, out);
    return p;
}

TEST(TokenizerTrain, BpeModelWithByteFallbackRunsInOurTokenizer) {
    TempDir d("train");
    SpmTrainOptions o;
    o.inputs = {corpus_head(d, 1000)};
    o.model_type = "bpe";
    o.vocab_size = 4000;  // about 2600 characters + 256 byte pieces + merges
    o.character_coverage = 0.98;
    o.byte_fallback = true;
    o.split_digits = true;
    o.normalization = "identity";
    o.remove_extra_whitespaces = false;
    o.threads = 2;
    o.model_prefix = "zh_bpe";
    o.progress = false;
    const SpmTrainResult r = train_sentencepiece(o);
    EXPECT_EQ(r.pieces, 4000u);
    EXPECT_GE(r.sentences, 1000u);
    EXPECT_GT(r.alphabet, 1000u);
    EXPECT_GT(r.coverage, 0.979);
    EXPECT_LE(r.coverage, 1.0);
    const auto m = parse_model_proto(r.model, "trained");
    EXPECT_EQ(m.trainer_spec().model_type(), spm::TrainerSpec::BPE);
    EXPECT_EQ(m.trainer_spec().vocab_size(), 4000);
    EXPECT_EQ(m.trainer_spec().model_prefix(), "zh_bpe");
    EXPECT_TRUE(m.trainer_spec().byte_fallback());
    EXPECT_EQ(m.normalizer_spec().name(), "identity");
    // our tokenizer accepts it (BPE + identity) and covers unseen characters with bytes
    Tokenizer tok(parse_vocab_spm(r.model, "trained"));
    const auto ids = tok.encode("白日依山尽 🦙");
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(tok.decode(ids), "白日依山尽 🦙");
}

TEST(TokenizerTrain, BadOptionsGiveOneLineErrors) {
    TempDir d("train-bad");
    SpmTrainOptions o;
    o.progress = false;
    o.threads = 2;
    o.inputs = {d / "missing.txt"};
    expect_one_line(error_of([&] { train_sentencepiece(o); }), "missing.txt: input file not found");
    write_file_atomic(d / "empty.txt", "");
    o.inputs = {d / "empty.txt"};
    expect_one_line(error_of([&] { train_sentencepiece(o); }), "empty");
    o.inputs = {corpus_head(d, 300)};
    o.model_type = "wordpiece";
    expect_one_line(error_of([&] { train_sentencepiece(o); }), "--model-type");
    o.model_type = "unigram";
    // the trainer's own refusal comes back as one line without its source location
    o.vocab_size = 100;
    const std::string msg = error_of([&] { train_sentencepiece(o); });
    expect_one_line(msg, "Vocabulary size is smaller than required_chars");
    EXPECT_EQ(msg.find(".cc("), std::string::npos) << msg;
    o.vocab_size = 3000;
    o.extra = {{"no_such_flag", "1"}};
    expect_one_line(error_of([&] { train_sentencepiece(o); }), "libsentencepiece");
}

TEST(TokenizerTrain, DefaultsAreChineseSpTrainerSpec) {
    // chinese_sp.model's trainer_spec sets exactly: vocab_size 20000, character_coverage 0.9995,
    // num_threads 32, train_extremely_large_corpus true; model_type unset (= UNIGRAM) and the
    // normalizer unset (= nmt_nfkc, add_dummy_prefix, remove_extra_whitespaces).
    const auto m = load_model_proto(kTok + "chinese_sp.model");
    const auto& ts = m.trainer_spec();
    SpmTrainOptions o;
    EXPECT_EQ(o.vocab_size, ts.vocab_size());
    EXPECT_FLOAT_EQ(static_cast<float>(o.character_coverage), ts.character_coverage());
    EXPECT_EQ(o.threads, ts.num_threads());
    EXPECT_EQ(o.train_extremely_large_corpus, ts.train_extremely_large_corpus());
    EXPECT_FALSE(ts.has_model_type());
    EXPECT_EQ(o.model_type, "unigram");
    EXPECT_EQ(o.normalization, m.normalizer_spec().name());
    EXPECT_EQ(o.add_dummy_prefix, m.normalizer_spec().add_dummy_prefix());
    EXPECT_EQ(o.remove_extra_whitespaces, m.normalizer_spec().remove_extra_whitespaces());
    EXPECT_EQ(o.byte_fallback, ts.byte_fallback());
    EXPECT_EQ(o.split_digits, ts.split_digits());
    EXPECT_EQ(o.max_sentencepiece_length, ts.max_sentencepiece_length());
    EXPECT_EQ(o.max_sentence_length, ts.max_sentence_length());
    EXPECT_EQ(o.input_sentence_size, ts.input_sentence_size());
}

std::vector<int> set_fields(const google::protobuf::Message& m) {
    std::vector<const google::protobuf::FieldDescriptor*> f;
    m.GetReflection()->ListFields(m, &f);
    std::vector<int> out;
    for (const auto* x : f) out.push_back(x->number());
    return out;
}

TEST(TokenizerTrain, DefaultRunRecordsTheTrainerSpecFieldsOfChineseSp) {
    TempDir d("train-default");
    SpmTrainOptions o;  // defaults: unigram, nmt_nfkc, 32 threads, ...
    o.inputs = {corpus_head(d, 1000)};
    o.model_prefix = "20000";
    o.vocab_size = 3000;          // small corpus: fewer pieces, a smaller alphabet
    o.character_coverage = 0.98;
    o.progress = false;
    const SpmTrainResult r = train_sentencepiece(o);
    EXPECT_EQ(r.pieces, 3000u);
    const auto m = parse_model_proto(r.model, "trained");
    const auto sp = load_model_proto(kTok + "chinese_sp.model");
    // the same trainer_spec fields are present (input, model_prefix, vocab_size,
    // character_coverage, num_threads, train_extremely_large_corpus), so model_type is unset
    EXPECT_EQ(set_fields(m.trainer_spec()), set_fields(sp.trainer_spec()));
    EXPECT_EQ(m.trainer_spec().num_threads(), 32);
    EXPECT_EQ(m.trainer_spec().model_prefix(), "20000");
    EXPECT_EQ(m.normalizer_spec().name(), "nmt_nfkc");
    EXPECT_EQ(m.normalizer_spec().precompiled_charsmap(), sp.normalizer_spec().precompiled_charsmap());
    // unigram pieces carry their log-probabilities, like chinese_sp.model's
    EXPECT_LT(m.pieces(3000 - 1).score(), m.pieces(10).score());
}

}  // namespace
