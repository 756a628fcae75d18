// Which keys each query of a packed window attends to, as one contiguous range per query
// (backend.h's kv_range): the masks of data.document_mask and model.prefix_lm.
//
//   causal         query t sees keys [0, t].
//   document mask  documents are packed llm.c style, each starting with the end-of-text token
//                  (EOT); query t sees keys from the last EOT at or before it: attention never
//                  crosses a document boundary inside the window. A window that starts inside a
//                  document sees that document from the window's start.
//   prefix-LM      (T5, UniLM) the prompt is read bidirectionally: a prompt token sees every
//                  token of its prompt, including later ones; a completion token is causal.
//                  The prompt is the run of not-counted tokens (loss mask 0) that contains t; an
//                  EOT starts a new run, so two documents' prompts never merge.
// Both together: a prompt token's range is its prompt's run, clipped to its document.
#pragma once

#include <cstdint>

namespace cr {

struct AttentionMaskSpec {
  bool document_mask = false;
  bool prefix_lm = false;
  int32_t eot = -1;  // the end-of-text token (document_mask needs it)
};

// tokens [T]: the window's input tokens. prefix [T] (prefix_lm only): 1 where input token t is
// part of a prompt (its loss-mask byte is 0), else 0. range [T,2] receives [lo, hi] per query,
// with 0 <= lo <= t <= hi < T. Without document_mask and prefix_lm it is plain causal.
void build_kv_range(const int32_t* tokens, const uint8_t* prefix, int T,
                    const AttentionMaskSpec& spec, int32_t* range);

}  // namespace cr
