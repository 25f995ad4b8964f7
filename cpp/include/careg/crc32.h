// CRC-32 (IEEE 802.3, as zlib.crc32): the profile checksum.
#pragma once
#include <cstddef>
#include <cstdint>

namespace careg {
std::uint32_t crc32(const std::uint8_t* data, std::size_t n, std::uint32_t crc = 0);
}
