#include "calpaca/convert/merge_lora.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>

#include "calpaca/base/error.h"
#include "calpaca/base/progress.h"
#include "calpaca/convert/lora_delta.h"
#include "calpaca/convert/names.h"
#include "calpaca/formats/hf_dir.h"
#include "calpaca/formats/peft_adapter.h"

namespace fs = std::filesystem;

namespace calpaca {

std::string default_chat_template(int64_t n_vocab) {
    if (n_vocab == 49954) return "alpaca";
    if (n_vocab == 55296) return "alpaca-2";
    return "";
}

std::vector<std::string> merge_input_files(const std::string& base, const std::vector<std::string>& lora_dirs) {
    std::vector<std::string> out;
    const fs::path b(base);
    if (!fs::is_directory(b)) {
        out.push_back(base);
    } else if (fs::exists(b / "params.json")) {
        std::vector<std::string> shards;
        for (const auto& e : fs::directory_iterator(b)) {
            std::string n = e.path().filename().string();
            if (n.rfind("consolidated.", 0) == 0 && e.path().extension() == ".pth") shards.push_back(e.path().string());
        }
        std::sort(shards.begin(), shards.end());
        out.insert(out.end(), shards.begin(), shards.end());
        for (const fs::path& t : {b / "tokenizer.model", b.parent_path() / "tokenizer.model"})
            if (fs::exists(t)) {
                out.push_back(t.string());
                break;
            }
    } else {
        for (const auto& f : hf_weight_files(base)) out.push_back(f);
        if (fs::exists(b / "tokenizer.model")) out.push_back((b / "tokenizer.model").string());
    }
    for (const auto& d : lora_dirs) {
        for (const char* f : {"adapter_model.safetensors", "adapter_model.bin", "tokenizer.model"})
            if (fs::exists(fs::path(d) / f)) out.push_back((fs::path(d) / f).string());
    }
    return out;
}

namespace {

struct Step {
    const PeftAdapter* adapter;
    std::string a, b;  // stored keys
};

struct Planned {
    std::string name;
    std::vector<uint64_t> shape;
    int64_t qk_heads = 0;
    const TensorSource* src = nullptr;
    std::string src_name;
    QKLayout src_layout = QKLayout::RotateHalf;
    DType storage = DType::F32;  // rounding type between steps (the base tensor's type)
    std::vector<Step> steps;
};

DType storage_of(DType t) { return (t == DType::F16 || t == DType::BF16) ? t : DType::F32; }

uint64_t stored_bytes(const TensorInfo& t) {
    const auto& d = dtype_info(t.type);
    return t.n_elements() / d.block_size * d.type_size;
}

std::string vocab_hint(size_t tok, int64_t rows) {
    auto known = [](int64_t n) -> const char* {
        switch (n) {
            case 32000: return "LLaMA";
            case 49953: return "Chinese-LLaMA";
            case 49954: return "Chinese-Alpaca";
            case 55296: return "Chinese-LLaMA-2/Alpaca-2";
            default: return nullptr;
        }
    };
    std::string h;
    if (const char* m = known(rows)) h += fmt::format("; the model's {} rows are the {} vocabulary", rows, m);
    if (const char* t = known(static_cast<int64_t>(tok))) h += fmt::format("; the tokenizer is the {} one", t);
    if ((tok == 49953 && rows == 49954) || (tok == 49954 && rows == 49953))
        h += " — Chinese-LLaMA (49953) and Chinese-Alpaca (49954) tokenizers are not interchangeable: use the tokenizer.model "
             "that ships with the adapter whose embeddings you merge";
    return h;
}

}  // namespace

MergeResult run_merge(const std::string& base, TensorSink& sink, const MergeOptions& opt) {
    const auto t0 = std::chrono::steady_clock::now();
    MergeResult res;
    LlamaCheckpoint ck = open_llama_checkpoint(base, opt.checkpoint);
    std::vector<PeftAdapter> adapters;
    adapters.reserve(opt.lora_dirs.size());
    for (const auto& d : opt.lora_dirs) adapters.push_back(open_peft_adapter(d));

    LlamaParams hp = ck.hp;
    // ---- plan the base tensors
    const std::vector<std::string> names = llama_hf_names(hp.n_layer, hp.has_head);
    std::vector<Planned> plan;
    std::map<std::string, size_t> at;
    for (const auto& n : names) {
        const TensorInfo* t = ck.tensors.find(n);
        if (!t) fail("{}: checkpoint lacks tensor '{}' (config says {} layers)", ck.path, n, hp.n_layer);
        std::vector<uint64_t> want = hp.shape_of(n);
        if (t->shape != want) {
            TensorInfo w;
            w.shape = want;
            fail("{}: tensor '{}': expected shape {} from the model's configuration, found {}", ck.path, n, w.shape_str(),
                 t->shape_str());
        }
        Planned p;
        p.name = n;
        p.shape = t->shape;
        p.qk_heads = qk_kind(n) == 1 ? hp.n_head : qk_kind(n) == 2 ? hp.n_head_kv : 0;
        p.src = &ck.tensors;
        p.src_name = n;
        p.src_layout = ck.layout;
        p.storage = storage_of(t->type);
        at[n] = plan.size();
        plan.push_back(std::move(p));
    }
    if (ck.tensors.tensors().size() != plan.size())
        for (const auto& t : ck.tensors.tensors())
            if (!at.count(t.name))
                fail("{}: tensor '{}' is not part of a {}-layer LLaMA (config and weights disagree)", ck.path, t.name, hp.n_layer);

    // ---- apply adapters to the plan, in order
    std::string tokenizer_model = ck.tokenizer_model, tokenizer_dir = ck.tokenizer_model.empty() ? "" : fs::path(ck.tokenizer_model).parent_path().string();
    nlohmann::json hf_config = ck.hf_config;
    std::string generation_config;
    if (ck.kind == LlamaCheckpoint::Kind::HF && fs::exists(fs::path(ck.path) / "generation_config.json"))
        generation_config = (fs::path(ck.path) / "generation_config.json").string();
    for (const PeftAdapter& a : adapters) {
        for (const auto& [key, stored] : a.replace) {
            auto it = at.find(key);
            if (it == at.end())
                fail("{}: adapter replaces '{}' ({}), which a {}-layer base model does not have", a.dir, key, stored, hp.n_layer);
            Planned& p = plan[it->second];
            const TensorInfo& t = a.tensors.get(stored);
            const bool vocab_tensor = key == "model.embed_tokens.weight" || key == "lm_head.weight";
            if (vocab_tensor) {
                if (t.shape.size() != 2 || t.shape[1] != static_cast<uint64_t>(hp.n_embd))
                    fail("{}: tensor '{}': shape {} does not fit a base of hidden size {} (adapter for another model size?)", a.dir,
                         stored, t.shape_str(), hp.n_embd);
                if (t.shape[0] < p.shape[0])
                    fail("{}: tensor '{}' has {} rows but the model already has {}: the vocabulary must not shrink (merge "
                         "adapters in order: LLaMA-Plus before Alpaca-Plus)",
                         a.dir, stored, t.shape[0], p.shape[0]);
            } else if (t.shape != p.shape) {
                TensorInfo w;
                w.shape = p.shape;
                fail("{}: tensor '{}': shape {} but the base tensor '{}' is {} (adapter for another model size?)", a.dir, stored,
                     t.shape_str(), key, w.shape_str());
            }
            p.shape = t.shape;
            p.src = &a.tensors;
            p.src_name = stored;
            p.src_layout = QKLayout::RotateHalf;
            p.steps.clear();
        }
        for (const auto& [key, ka] : a.lora_a) {
            auto it = at.find(key);
            if (it == at.end())
                fail("{}: adapter has LoRA weights for '{}', which a {}-layer base model does not have (adapter for another model?)",
                     a.dir, key, hp.n_layer);
            Planned& p = plan[it->second];
            const TensorInfo& A = a.tensors.get(ka);
            const TensorInfo& B = a.tensors.get(a.lora_b.at(key));
            std::vector<uint64_t> delta = a.fan_in_fan_out ? std::vector<uint64_t>{A.shape[1], B.shape[0]}
                                                           : std::vector<uint64_t>{B.shape[0], A.shape[1]};
            if (delta != p.shape) {
                TensorInfo d, w;
                d.shape = delta;
                w.shape = p.shape;
                fail("{}: shape mismatch for tensor '{}': the adapter's delta is {} but the base weight is {} (an adapter for "
                     "another model size?)",
                     a.dir, key, d.shape_str(), w.shape_str());
            }
            p.steps.push_back({&a, ka, a.lora_b.at(key)});
        }
        if (a.replace.count("model.embed_tokens.weight") && !a.tokenizer_model.empty()) {
            // the original asserts len(tokenizer) == embedding rows for each adapter
            Vocab v = load_vocab_spm(a.tokenizer_model);
            const uint64_t rows = a.tensors.get(a.replace.at("model.embed_tokens.weight")).shape[0];
            if (v.size() != rows)
                fail("vocabulary mismatch in adapter {}: its tokenizer.model has {} pieces but its embed_tokens has {} rows{}", a.dir,
                     v.size(), rows, vocab_hint(v.size(), static_cast<int64_t>(rows)));
        }
        if (!a.tokenizer_model.empty()) {
            tokenizer_model = a.tokenizer_model;
            tokenizer_dir = a.dir;
        }
        if (fs::exists(fs::path(a.dir) / "config.json")) hf_config = read_json_file((fs::path(a.dir) / "config.json").string());
        if (fs::exists(fs::path(a.dir) / "generation_config.json"))
            generation_config = (fs::path(a.dir) / "generation_config.json").string();
    }
    hp.n_vocab = static_cast<int64_t>(plan[at.at("model.embed_tokens.weight")].shape[0]);
    if (hp.has_head && plan[at.at("lm_head.weight")].shape[0] != static_cast<uint64_t>(hp.n_vocab))
        fail("after merging, embed_tokens has {} rows but lm_head has {}: the adapters must replace both", hp.n_vocab,
             plan[at.at("lm_head.weight")].shape[0]);

    // ---- vocabulary
    Vocab vocab;
    if (!opt.vocab_path.empty()) {
        tokenizer_model = opt.vocab_path;
        tokenizer_dir = fs::path(opt.vocab_path).parent_path().string();
    }
    if (!tokenizer_model.empty()) {
        vocab = load_vocab_spm(tokenizer_model);
    } else if (ck.vocab) {
        vocab = *ck.vocab;
    } else {
        fail("{}: no tokenizer.model in the base or the adapters: pass --vocab tokenizer.model", ck.path);
    }
    if (static_cast<int64_t>(vocab.size()) != hp.n_vocab)
        fail("vocabulary mismatch: tokenizer {} has {} pieces but the {} model has {} embedding rows{}",
             tokenizer_model.empty() ? ck.path : tokenizer_model, vocab.size(), adapters.empty() ? "converted" : "merged", hp.n_vocab,
             vocab_hint(vocab.size(), hp.n_vocab));

    // ---- output description
    OutputModel m;
    m.hp = hp;
    for (const auto& p : plan) m.tensors.push_back({p.name, p.shape});
    m.vocab = &vocab;
    m.tokenizer_model = tokenizer_model;
    m.tokenizer_dir = tokenizer_dir;
    m.hf_config = hf_config;
    m.generation_config = generation_config;
    m.outtype = opt.outtype;
    if (!opt.name.empty()) {
        m.name = opt.name;
    } else {
        m.name = ck.name;
        for (const auto& a : adapters) m.name += "+" + fs::absolute(a.dir).lexically_normal().filename().string();
    }
    if (opt.chat_template == "none") m.chat_template = "";
    else if (!opt.chat_template.empty()) m.chat_template = opt.chat_template;
    else if (!ck.chat_template.empty() && adapters.empty()) m.chat_template = ck.chat_template;
    else m.chat_template = default_chat_template(hp.n_vocab);

    sink.begin(m);

    // ---- stream
    uint64_t total = 0;
    for (const auto& p : plan) {
        uint64_t n = 1;
        for (auto d : p.shape) n *= d;
        total += n * 4;
    }
    Progress prog(adapters.empty() ? "convert" : "merge", total, opt.progress);
    uint64_t done = 0;
    std::vector<float> buf, A, B, scratch;
    for (size_t ti = 0; ti < plan.size(); ++ti) {
        const Planned& p = plan[ti];
        const TensorInfo& info = p.src->get(p.src_name);
        res.bytes_in += stored_bytes(info);
        const uint64_t rows = info.rows(), cols = info.row_elements();
        uint64_t block = std::max<uint64_t>(1, opt.block_floats / std::max<uint64_t>(cols, 1));
        int64_t head_dim = 0;
        if (p.qk_heads) {
            head_dim = static_cast<int64_t>(rows) / p.qk_heads;
            block = std::max<uint64_t>(static_cast<uint64_t>(head_dim), block / static_cast<uint64_t>(head_dim) * static_cast<uint64_t>(head_dim));
        }
        block = std::min(block, rows);
        // LoRA factors for this tensor
        std::vector<LoraFactors> factors;
        std::vector<std::vector<float>> store;
        for (const Step& s : p.steps) {
            const TensorInfo& ai = s.adapter->tensors.get(s.a);
            const TensorInfo& bi = s.adapter->tensors.get(s.b);
            res.bytes_in += stored_bytes(ai) + stored_bytes(bi);
            store.push_back(s.adapter->tensors.read_f32(s.a));
            store.push_back(s.adapter->tensors.read_f32(s.b));
            LoraFactors f;
            f.A = store[store.size() - 2].data();
            f.B = store.back().data();
            f.rank = static_cast<int64_t>(ai.shape[0]);
            f.n_in = static_cast<int64_t>(ai.shape[1]);
            f.n_out = static_cast<int64_t>(bi.shape[0]);
            f.fan_in_fan_out = s.adapter->fan_in_fan_out;
            f.scaling = static_cast<float>(s.adapter->scaling);
            factors.push_back(f);
        }
        const bool replaced = p.src != &ck.tensors;
        buf.resize(block * cols);
        for (uint64_t r0 = 0; r0 < rows; r0 += block) {
            const uint64_t r1 = std::min(rows, r0 + block), n = r1 - r0;
            p.src->read_rows_f32(p.src_name, r0, r1, buf.data());
            QKLayout layout = p.src_layout;
            if (replaced) round_to_storage(buf.data(), n * cols, p.storage);  // the original's .half() of the new tensor
            if (!factors.empty()) {
                if (p.qk_heads && layout != QKLayout::RotateHalf) {
                    qk_rows_interleaved_to_hf(buf.data(), static_cast<int64_t>(n), static_cast<int64_t>(cols), head_dim, scratch);
                    layout = QKLayout::RotateHalf;
                }
                for (const auto& f : factors)
                    add_lora_delta_rows(f, static_cast<int64_t>(r0), static_cast<int64_t>(r1), buf.data(), p.storage, opt.pool);
            }
            if (p.qk_heads && layout != sink.layout()) {
                if (sink.layout() == QKLayout::Interleaved)
                    qk_rows_hf_to_interleaved(buf.data(), static_cast<int64_t>(n), static_cast<int64_t>(cols), head_dim, scratch);
                else
                    qk_rows_interleaved_to_hf(buf.data(), static_cast<int64_t>(n), static_cast<int64_t>(cols), head_dim, scratch);
            }
            sink.write_rows(buf.data(), n);
            done += n * cols * 4;
            const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            prog.update(done, fmt::format("tensor {}/{} {:.0f} MB/s (f16)", ti + 1, plan.size(), secs > 0 ? done / 2 / 1e6 / secs : 0.0));
        }
    }
    prog.finish();
    res.files = sink.finish();
    for (const auto& f : res.files) {
        std::error_code ec;
        auto sz = fs::file_size(f, ec);
        if (!ec) res.bytes_out += sz;
    }
    res.n_tensors = plan.size();
    res.n_vocab = hp.n_vocab;
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res;
}

}  // namespace calpaca
