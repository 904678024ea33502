// Adapters on the fly (`--lora DIR[,DIR…]` on generate / chat, the original's --lora_model):
// merges PEFT adapters into a loaded Model's weights in memory, with exactly the arithmetic
// of merge-lora (merge_lora.h) — so the logits equal those of a merged file of the same
// weight type. Only the matrices an adapter touches are copied (into memory the Model owns);
// the rest stay views into the mmap'd GGUF. modules_to_save embeddings replace token_embd /
// output (resizing the vocabulary); the tokenizer then comes from the last adapter that has
// one (or `vocab_override`).
#pragma once
#include <string>
#include <vector>

namespace calpaca {

class Model;
class ThreadPool;

void apply_lora_in_memory(Model& model, const std::vector<std::string>& adapter_dirs, const std::string& vocab_override,
                          ThreadPool* pool);

}  // namespace calpaca
