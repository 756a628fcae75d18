// Sharded checkpoints: every rank writes its own shard file, rank 0 writes the manifest last,
// and renaming the directory commits it. Any layout loads any other (boxes are intersected).
//
// A checkpoint.dir holds committed checkpoints step_NNNNNNNN/ and, after a crash, temporaries
// step_NNNNNNNN.tmp/ that are never read and are removed at the next start.
//
// The save protocol (Checkpointer::save), on every rank of the job:
//   1. rank 0 creates step_N.tmp/                                   (agreed: all ranks learn of a failure)
//   2. every rank writes the boxes assigned to it (each distinct box once, spread over the ranks
//      that hold it) to shard-rRRRRR.bin, computing CRC32C as it streams, and fsyncs it
//   3. all ranks agree: if any rank failed (disk full, I/O error), all abandon the save, rank 0
//      removes step_N.tmp/, and the previous checkpoint stays the latest
//   4. the chunk records reach rank 0, which checks that they cover every tensor exactly and
//      writes manifest.pb last: temp file, fsync, rename, fsync the directory
//   5. rank 0 renames step_N.tmp/ to step_N/ (the commit point) and fsyncs checkpoint.dir; only
//      then are checkpoints beyond checkpoint.keep_last deleted, oldest first
//   6. all ranks agree on the outcome.
// A process killed at any point leaves either the previous latest checkpoint or the new one,
// never a half-written one under a committed name.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/model/config.h"
#include "parallel/checkpoint/manifest.h"
#include "parallel/checkpoint/sharded_tensor.h"
#include "parallel/comm/communicator.h"

namespace cr {

class Checkpointer {
 public:
  // world: every rank of the job. keep_last: committed checkpoints to keep (0: all).
  Checkpointer(std::string dir, int keep_last, Communicator& world);

  // Rank 0 creates dir and removes temporaries a crashed save left behind. Collective.
  void prepare();
  // Saves this rank's boxes at meta.step(). meta carries everything but the tensors, the layout
  // and the format fields, which are filled here. Collective; returns true on every rank once
  // the checkpoint is committed, false on every rank when any rank failed.
  bool save(const std::vector<ShardedTensor>& tensors, proto::Manifest meta, int tp, int dp);
  // Finds the newest committed checkpoint whose manifest parses and whose shards verify (sizes
  // and CRC32C, the files spread over the ranks), reporting and skipping damaged ones; loads
  // `tensors` from it and returns its manifest. nullopt when there is none. A checkpoint of a
  // different model configuration is an error, not a fallback. Collective.
  std::optional<proto::Manifest> load_latest(const std::vector<ShardedTensor>& tensors,
                                             const ModelConfig& expect);

  struct Timing {
    double seconds = 0;        // wall time of the whole operation on this rank
    double crc_seconds = 0;    // of which computing CRC32C (this rank)
    double verify_seconds = 0; // load: the checksum pass before loading
    uint64_t bytes = 0;        // the whole checkpoint's size
  };
  const Timing& last_save() const { return save_timing_; }
  const Timing& last_load() const { return load_timing_; }

 private:
  bool agree(bool ok);  // true when every rank passes ok = true
  std::string dir_;
  int keep_last_;
  Communicator& world_;
  Timing save_timing_, load_timing_;
};

// ---- single-process access: the `chainrule ckpt` tools and Checkpointer itself ------------

std::string step_dir_name(int64_t step);  // "step_00000040"
// Committed checkpoints in a checkpoint.dir, newest first (full paths).
std::vector<std::string> committed_checkpoints(const std::string& dir);
// A checkpoint directory (holds manifest.pb) as is, or a checkpoint.dir's newest checkpoint.
std::string resolve_checkpoint(const std::string& dir);
// Checks every shard file's size and every chunk's CRC32C; the files with index % nranks ==
// rank only. Returns one line per problem, naming the file and tensor; empty when sound.
std::vector<std::string> verify_checkpoint(const std::string& ckpt, const proto::Manifest& m,
                                           int rank = 0, int nranks = 1,
                                           double* crc_seconds = nullptr);
// Fills each box from the checkpoint's chunks (re-checking their CRC32C). Global shapes must
// match except along a tensor's padded_dim, where parts outside the saved tensor (the extra
// vocabulary padding of a wider tp) are zero. Throws InputError naming the file and tensor.
void load_tensors(const std::string& ckpt, const proto::Manifest& m,
                  const std::vector<ShardedTensor>& tensors);

}  // namespace cr
