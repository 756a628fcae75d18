#include "core/io/safetensors.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/common/error.h"
#include "core/io/atomic_file.h"

namespace cr {

size_t SafetensorsReader::Info::numel() const {
  size_t n = 1;
  for (auto d : shape) n *= (size_t)d;
  return n;
}

void SafetensorsWriter::add(const std::string& name, const float* data, std::vector<int64_t> shape) {
  size_t n = 1;
  for (auto d : shape) n *= (size_t)d;
  entries_.push_back({name, std::move(shape), std::vector<float>(data, data + n)});
}

void SafetensorsWriter::write(const std::string& path) const {
  nlohmann::json header;
  size_t offset = 0;
  for (const auto& e : entries_) {
    const size_t bytes = e.data.size() * sizeof(float);
    header[e.name] = {{"dtype", "F32"}, {"shape", e.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  std::string h = header.dump();
  while ((8 + h.size()) % 8) h += ' ';  // keep tensor data 8-byte aligned, as the spec suggests
  const uint64_t hlen = h.size();

  std::vector<std::string_view> parts{
      std::string_view(reinterpret_cast<const char*>(&hlen), 8), std::string_view(h)};
  for (const auto& e : entries_)
    parts.emplace_back(reinterpret_cast<const char*>(e.data.data()), e.data.size() * sizeof(float));
  write_file_atomically(path, parts);
}

SafetensorsReader::SafetensorsReader(std::string path) : path_(std::move(path)) {
  std::ifstream in(path_, std::ios::binary | std::ios::ate);
  if (!in) CR_INPUT_ERROR("{}: cannot open safetensors file", path_);
  const size_t file_bytes = (size_t)in.tellg();
  in.seekg(0);
  uint64_t hlen = 0;
  if (file_bytes < 8 || !in.read(reinterpret_cast<char*>(&hlen), 8))
    CR_INPUT_ERROR("{}: not a safetensors file (shorter than 8 bytes)", path_);
  if (hlen > file_bytes - 8 || hlen > (100u << 20))
    CR_INPUT_ERROR("{}: safetensors header length {} exceeds the file ({} bytes)", path_, hlen,
                   file_bytes);
  std::string h(hlen, '\0');
  in.read(h.data(), (std::streamsize)hlen);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(h);
  } catch (const std::exception& e) {
    CR_INPUT_ERROR("{}: malformed safetensors header: {}", path_, e.what());
  }
  if (!header.is_object()) CR_INPUT_ERROR("{}: safetensors header is not a JSON object", path_);
  const size_t data_bytes = file_bytes - 8 - hlen;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it.value().is_object())
        for (auto m = it.value().begin(); m != it.value().end(); ++m)
          if (m.value().is_string()) metadata_[m.key()] = m.value().get<std::string>();
      continue;
    }
    try {
      Info info;
      info.dtype = it.value().at("dtype").get<std::string>();
      info.shape = it.value().at("shape").get<std::vector<int64_t>>();
      const auto off = it.value().at("data_offsets").get<std::vector<uint64_t>>();
      if (off.size() != 2) throw std::runtime_error("data_offsets needs 2 entries");
      info.begin = off[0];
      info.end = off[1];
      size_t elem = info.dtype == "F32" ? 4 : info.dtype == "F64" ? 8
                    : (info.dtype == "F16" || info.dtype == "BF16") ? 2 : 0;
      if (elem == 0) throw std::runtime_error("unsupported dtype " + info.dtype);
      size_t numel = 1;  // overflow-checked: a hostile shape must not wrap around to a small size
      for (auto d : info.shape) {
        if (d < 0 || (d > 0 && numel > data_bytes / (size_t)d))
          throw std::runtime_error("shape " + nlohmann::json(info.shape).dump() + " exceeds the file");
        numel *= (size_t)d;
      }
      if (info.begin > info.end || info.end > data_bytes || info.end - info.begin != numel * elem)
        throw std::runtime_error("data_offsets do not match shape and file size");
      tensors_[it.key()] = info;
    } catch (const std::exception& e) {
      CR_INPUT_ERROR("{}: tensor '{}': {}", path_, it.key(), e.what());
    }
  }
  data_.resize(data_bytes);
  if (data_bytes && !in.read(data_.data(), (std::streamsize)data_bytes))
    CR_INPUT_ERROR("{}: truncated safetensors data", path_);
}

const SafetensorsReader::Info& SafetensorsReader::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) CR_INPUT_ERROR("{}: no tensor named '{}'", path_, name);
  return it->second;
}

std::vector<std::string> SafetensorsReader::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : tensors_) out.push_back(k);
  return out;
}

static float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  int exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000 | (mant << 13);
  } else if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      exp = 1;
      while (!(mant & 0x400)) {
        mant <<= 1;
        exp--;
      }
      bits = sign | ((uint32_t)(exp + 112) << 23) | ((mant & 0x3FF) << 13);
    }
  } else {
    bits = sign | ((uint32_t)(exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::vector<float> SafetensorsReader::read_f32(const std::string& name) const {
  const Info& in = info(name);
  const char* p = data_.data() + in.begin;
  std::vector<float> out(in.numel());
  for (size_t i = 0; i < out.size(); i++) {
    if (in.dtype == "F32") {
      std::memcpy(&out[i], p + 4 * i, 4);
    } else if (in.dtype == "F64") {
      double d;
      std::memcpy(&d, p + 8 * i, 8);
      out[i] = (float)d;
    } else {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      if (in.dtype == "BF16") {
        uint32_t bits = (uint32_t)h << 16;
        std::memcpy(&out[i], &bits, 4);
      } else {
        out[i] = half_to_float(h);
      }
    }
  }
  return out;
}

}  // namespace cr
