#include "core/io/tfevents.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/common/error.h"
#include "core/common/log.h"
#include "core/io/crc32c.h"
#include "proto/tensorboard.pb.h"

namespace cr {

namespace {

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) out.push_back((char)(uint8_t)(v >> (8 * i)));
}

// s with every invalid UTF-8 sequence replaced by U+FFFD (a byte-level tokenizer's sample can
// end inside a character; the text plugin decodes the bytes as UTF-8). nlohmann's dump does the
// replacing; parsing its JSON string back gives the clean bytes.
std::string valid_utf8(const std::string& s) {
  const std::string quoted = nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return nlohmann::json::parse(quoted).get<std::string>();
}

}  // namespace

uint32_t masked_crc32c(const void* data, size_t n) {
  const uint32_t crc = crc32c(data, n);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string tfrecord_frame(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 16);
  put_le(out, payload.size(), 8);
  put_le(out, masked_crc32c(out.data(), 8), 4);
  out.append(payload);
  put_le(out, masked_crc32c(payload.data(), payload.size()), 4);
  return out;
}

EventWriter::EventWriter(const std::string& dir, int64_t first_step) {
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  path_ = (std::filesystem::path(dir) /
           fmt::format("events.out.tfevents.{}.{}.{}", (long long)unix_seconds(), host, (long)::getpid()))
              .string();
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) CR_INPUT_ERROR("{}: cannot create the TensorBoard event file: {}", path_, std::strerror(errno));
  tensorboard::Event version;
  version.set_wall_time(unix_seconds());
  version.set_file_version("brain.Event:2");
  append(version.SerializeAsString());
  tensorboard::Event start;
  start.set_wall_time(unix_seconds());
  start.set_step(first_step);
  start.mutable_session_log()->set_status(tensorboard::SessionLog::START);
  append(start.SerializeAsString());
  flush();  // the file is a valid event file from the start
}

EventWriter::~EventWriter() {
  try {
    flush();
  } catch (...) {  // flush reports by warning; nothing may escape a destructor
  }
  if (fd_ >= 0) ::close(fd_);
}

void EventWriter::scalar(const std::string& tag, int64_t step, float value) {
  tensorboard::Event e;
  e.set_wall_time(unix_seconds());
  e.set_step(step);
  auto* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(value);
  append(e.SerializeAsString());
}

void EventWriter::text(const std::string& tag, int64_t step, const std::string& text) {
  tensorboard::Event e;
  e.set_wall_time(unix_seconds());
  e.set_step(step);
  auto* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  auto* meta = v->mutable_metadata();
  meta->mutable_plugin_data()->set_plugin_name("text");
  meta->set_data_class(tensorboard::DATA_CLASS_TENSOR);
  auto* t = v->mutable_tensor();
  t->set_dtype(tensorboard::DT_STRING);
  t->mutable_tensor_shape();  // present and empty: a scalar
  t->add_string_val(valid_utf8(text));
  append(e.SerializeAsString());
}

void EventWriter::append(const std::string& event) {
  if (!failed_) buffer_ += tfrecord_frame(event);
}

void EventWriter::flush() {
  size_t done = 0;
  while (!failed_ && done < buffer_.size()) {
    const ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      failed_ = true;
      log::warn("{}: cannot write TensorBoard events ({}); no more are recorded in this run", path_,
                n < 0 ? std::strerror(errno) : "no progress");
    } else {
      done += (size_t)n;
    }
  }
  buffer_.clear();
}

}  // namespace cr
