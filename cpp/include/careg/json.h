// A strict, bounded JSON reader for container headers (untrusted input):
// nesting depth and sizes are limited, every error is a careg::Error.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace careg {

struct Json {
  enum Type { Null, Bool, Number, String, Array, Object } type = Null;
  std::string text;  // String: decoded value; Number: its literal
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;

  const Json* find(const std::string& key) const;  // nullptr if absent (objects only)
  // Non-negative integer literal (no sign, fraction or exponent) that fits in 63 bits.
  bool as_index(std::uint64_t& out) const;
};

// Throws careg::Error("<where>: header is not valid JSON (...)") on malformed input.
Json parse_json(const char* data, std::size_t n, const std::string& where);

}  // namespace careg
