// CRC32C (Castagnoli polynomial 0x1EDC6F41, reflected 0x82F63B78): the checksum of every
// checkpoint chunk and manifest. It detects every single-, double- and odd-bit error and every
// burst up to 32 bits. x86-64 computes it in hardware (SSE4.2 crc32, ~8 bytes a cycle); other
// machines use a table. Streaming: crc = crc32c_extend(crc, next_bytes, n), starting from 0.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cr {

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n);
inline uint32_t crc32c(const void* data, size_t n) { return crc32c_extend(0, data, n); }

}  // namespace cr
