// The checkpoint manifest on disk (the schema is proto/checkpoint.proto).
//
// manifest.pb is framed so that any damage is detected before protobuf sees a byte:
//   8 bytes  magic "CRMANIF\n"
//   u32 LE   format version (kManifestFormat)
//   u32 LE   CRC32C of the payload
//   u64 LE   payload length; the file is exactly 24 + length bytes
//   payload  the serialized cr.proto.Manifest
// Everything read back is untrusted: validate_manifest() bounds-checks every count, shape,
// offset and file name before any of it is used to read or copy.
#pragma once

#include <functional>
#include <string>

#include "core/model/config.h"
#include "proto/checkpoint.pb.h"

namespace cr {

constexpr uint32_t kManifestFormat = 1;
constexpr const char* kManifestFile = "manifest.pb";

// Serializes and frames m. Writes `path` atomically: temp file, fsync, rename (the caller fsyncs
// the directory). Throws Error on I/O failure (disk full included), naming the file.
// before_rename runs between the fsync and the rename (the save protocol's crash-test hook).
void write_manifest(const proto::Manifest& m, const std::string& path,
                    const std::function<void()>& before_rename = {});
// Reads, unframes, parses and validates. Throws InputError naming the file and the problem.
proto::Manifest read_manifest(const std::string& path);
// Structural checks of untrusted content (shapes, chunk bounds and coverage, file names).
// `where` names the source in messages.
void validate_manifest(const proto::Manifest& m, const std::string& where);

// A stable 64-bit hash (FNV-1a) of the model configuration a checkpoint belongs to.
uint64_t model_config_hash(const ModelConfig& c);
proto::ModelConfig to_proto(const ModelConfig& c);
ModelConfig from_proto(const proto::ModelConfig& p);
// "4 layers, 4 heads, 128 wide, context 128, vocabulary 113"
std::string describe(const ModelConfig& c);

}  // namespace cr
