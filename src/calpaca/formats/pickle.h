// Restricted unpickler for PyTorch state dicts (the data.pkl inside a torch.save zip).
//
// It implements the pickle opcodes torch.save emits (protocols 2–4: PROTO, FRAME, MARK,
// tuples, lists, dicts, ints, floats, strings, memo get/put, GLOBAL/STACK_GLOBAL, REDUCE,
// BUILD, BINPERSID, STOP) over an arena of plain values. Nothing is ever executed: a GLOBAL
// is accepted only if it is one of the names torch uses for tensors and state dicts —
//   collections.OrderedDict
//   torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter,
//   torch._utils._rebuild_parameter_with_state
//   torch.{Float,Half,BFloat16,Double,Long,Int,Short,Char,Byte,Bool}Storage
// — and REDUCE is interpreted only for those callables with the argument shapes torch
// writes. Any other global (os.system, builtins.eval, …) is refused with an Error naming
// it, before anything else happens.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "calpaca/tensor/dtype.h"

namespace calpaca {

struct TorchTensorRef {
    std::string storage_key;       // "0", "1", … → entry "<archive>/data/<key>"
    std::string storage_type;      // e.g. "HalfStorage"
    bool dtype_supported = false;  // false for Byte/Bool storages (no DType equivalent)
    DType type = DType::F32;       // element type when dtype_supported
    uint32_t elem_size = 0;
    uint64_t storage_numel = 0;
    uint64_t offset = 0;           // in elements
    std::vector<uint64_t> shape;
    std::vector<int64_t> stride;   // in elements
};

struct TorchStateDict {
    std::vector<std::pair<std::string, TorchTensorRef>> tensors;  // in pickle order
    size_t skipped_non_tensors = 0;  // entries whose value is not a tensor (ints, strings, …)
};

// Parses a pickle whose top-level object is a dict / OrderedDict of name → tensor.
// `name` is used in error messages. Throws Error on anything unexpected.
TorchStateDict unpickle_torch_state_dict(const uint8_t* data, size_t size, const std::string& name);

}  // namespace calpaca
