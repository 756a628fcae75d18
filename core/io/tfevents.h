// TensorBoard event files, written without TensorFlow: where `chainrule train` (run.tensorboard)
// records its scalars and text samples for `tensorboard --logdir RUN_DIR`.
//
// File: DIR/events.out.tfevents.<unix_seconds>.<hostname>.<pid>, a sequence of TFRecords
// (TensorFlow's record format, tensorflow/core/lib/io/record_writer.cc), each
//   uint64 length (little-endian) | uint32 masked CRC32C of those 8 bytes |
//   length bytes of data          | uint32 masked CRC32C of the data,
// with masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32), CRC32C as
// core/io/crc32c.h. Each record's data is one serialized Event (proto/tensorboard.proto, with
// TensorFlow's field numbers): first file_version "brain.Event:2", then SessionLog START at the
// first step this writer records, then summaries:
//   scalar(tag, step, v)  a Summary.Value with simple_value v (float32): the scalars plugin;
//   text(tag, step, s)    a Summary.Value with a rank-0 DT_STRING tensor holding s and metadata
//                         plugin_name "text": TensorBoard's text plugin (it renders Markdown).
// Records are buffered in memory and reach the file at flush() (and in the destructor), so a
// killed process loses at most what came after its last flush; a reader stops at a torn last
// record. A write error (disk full) is reported once as a warning and the writer stops
// recording: losing the charts must not stop a training run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace cr {

// TFRecord's masked CRC32C of data[0:n].
uint32_t masked_crc32c(const void* data, size_t n);
// One framed TFRecord holding `payload`.
std::string tfrecord_frame(std::string_view payload);

class EventWriter {
 public:
  // Creates a new event file in the existing directory `dir` (never overwrites one: a name
  // already taken throws InputError naming it), writes the file_version record and a SessionLog
  // START at `first_step`: TensorBoard drops what earlier files in `dir` hold at steps >=
  // first_step (a resumed run's steps after its checkpoint, an earlier run's data in a reused
  // directory). Throws InputError, naming the file, when it cannot be created.
  EventWriter(const std::string& dir, int64_t first_step);
  ~EventWriter();  // flushes; never throws
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  void scalar(const std::string& tag, int64_t step, float value);
  // text: UTF-8 (invalid sequences are replaced by U+FFFD: the reader decodes UTF-8).
  void text(const std::string& tag, int64_t step, const std::string& text);
  // Appends the buffered records to the file (write(2), no fsync).
  void flush();
  const std::string& path() const { return path_; }

 private:
  void append(const std::string& event);  // one serialized Event, framed into the buffer
  std::string path_;
  std::string buffer_;
  int fd_ = -1;
  bool failed_ = false;
};

}  // namespace cr
