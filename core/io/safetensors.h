// The safetensors file format: u64 little-endian header length N, N bytes of JSON
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then
// the raw little-endian tensor bytes. Reading treats the file as untrusted: every offset and
// shape is checked against the file before use.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace cr {

class SafetensorsWriter {
 public:
  void add(const std::string& name, const float* data, std::vector<int64_t> shape);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  // Writes atomically: temp file, fsync, rename.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> data;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsReader {
 public:
  struct Info {
    std::string dtype;
    std::vector<int64_t> shape;
    size_t begin = 0, end = 0;  // byte range within the data section
    size_t numel() const;
  };
  explicit SafetensorsReader(std::string path);
  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const Info& info(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Reads a tensor as fp32 (F32, F16, BF16 and F64 are converted).
  std::vector<float> read_f32(const std::string& name) const;

 private:
  std::string path_;
  std::vector<char> data_;
  std::map<std::string, Info> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace cr
