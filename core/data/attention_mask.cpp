#include "core/data/attention_mask.h"

#include "core/common/error.h"

namespace cr {

void build_kv_range(const int32_t* tokens, const uint8_t* prefix, int T,
                    const AttentionMaskSpec& spec, int32_t* range) {
  CR_CHECK(!spec.document_mask || spec.eot >= 0, "a document mask needs an end-of-text token");
  CR_CHECK(!spec.prefix_lm || prefix != nullptr, "prefix-LM needs the window's loss mask");
  // lo: where t's document starts (0 without a document mask); a forward pass.
  int doc_start = 0;
  for (int t = 0; t < T; t++) {
    if (spec.document_mask && tokens[t] == spec.eot) doc_start = t;
    range[2 * t] = doc_start;
    range[2 * t + 1] = t;
  }
  if (!spec.prefix_lm) return;
  // hi: a prompt token sees to the end of its prompt run; a backward pass carrying the run end.
  int run_end = -1;  // last position of the prompt run that contains t, or -1
  for (int t = T - 1; t >= 0; t--) {
    if (!prefix[t]) {
      run_end = -1;
      continue;
    }
    if (run_end < 0) run_end = t;
    range[2 * t + 1] = run_end;
    if (tokens[t] == spec.eot) run_end = -1;  // an EOT starts its run: the run ends before it
  }
}

}  // namespace cr
