#include "careg/profile.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <locale>
#include <sstream>
#include <tuple>
#include <utility>

#include "careg/crc32.h"
#include "careg/json.h"
#include "careg/road.h"

namespace careg {
namespace {

constexpr std::uint64_t kMaxHeader = 100ull << 20;
constexpr const char* kKind = "careg-profile";
constexpr const char* kVersion = "1";

[[noreturn]] void refuse(FileProblem p, const std::string& where, const std::string& why) {
  throw FileError(p, where + ": " + why);
}

bool dtype_of(const std::string& s, DType& d, std::size_t& size) {
  static const struct { const char* name; DType d; std::size_t size; } table[] = {
      {"F32", DType::F32, 4}, {"F16", DType::F16, 2}, {"F64", DType::F64, 8},
      {"I64", DType::I64, 8}, {"I32", DType::I32, 4}, {"U8", DType::U8, 1}};
  for (const auto& t : table)
    if (s == t.name) {
      d = t.d;
      size = t.size;
      return true;
    }
  return false;
}

// Where the 8 hex digits of the checksum sit in the header; exactly one occurrence.
std::size_t checksum_at(const std::string& header, const std::string& value, const std::string& where) {
  std::string needle = "\"checksum\":\"" + value + "\"";
  std::size_t pos = header.find(needle);
  if (value.size() != 8 || pos == std::string::npos || header.find(needle, pos + 1) != std::string::npos)
    refuse(FileProblem::Format, where, "checksum field missing or malformed");
  return pos + std::strlen("\"checksum\":\"");
}

void verify_checksum(const std::uint8_t* data, std::size_t n, std::size_t at, const std::string& value,
                     const std::string& where) {
  const std::uint8_t zeros[8] = {'0', '0', '0', '0', '0', '0', '0', '0'};
  std::uint32_t c = crc32(data, at);
  c = crc32(zeros, 8, c);
  c = crc32(data + at + 8, n - at - 8, c);
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", c);
  if (value != hex)
    refuse(FileProblem::Checksum, where, "checksum mismatch, the file is corrupt; write it again (re-enroll / re-save)");
}

Tensor read_tensor(const std::string& name, const Json& spec, const std::uint8_t* body, std::size_t body_size,
                   const std::string& where) {
  const std::string bad = "tensor '" + name + "' has a malformed entry";
  const Json *dt = spec.find("dtype"), *shape = spec.find("shape"), *offs = spec.find("data_offsets");
  Tensor t;
  std::size_t esize = 0;
  if (spec.type != Json::Object || !dt || dt->type != Json::String || !dtype_of(dt->text, t.dtype, esize) ||
      !shape || shape->type != Json::Array || shape->items.size() > 8 || !offs ||
      offs->type != Json::Array || offs->items.size() != 2)
    refuse(FileProblem::Format, where, bad);
  std::uint64_t b, e, numel = 1;
  if (!offs->items[0].as_index(b) || !offs->items[1].as_index(e)) refuse(FileProblem::Format, where, bad);
  for (const Json& s : shape->items) {
    std::uint64_t v;
    if (!s.as_index(v)) refuse(FileProblem::Format, where, bad);
    // Bounded by the file size long before overflow: each factor <= body_size.
    if (v > body_size || (v != 0 && numel > body_size / v)) numel = body_size + 1;
    else numel *= v;
    t.shape.push_back(std::size_t(v));
  }
  if (!(b <= e && e <= body_size))
    refuse(FileProblem::Format, where, "tensor '" + name + "' lies outside the file");
  if (numel > body_size || numel * esize != e - b)
    refuse(FileProblem::Format, where, "tensor '" + name + "' size does not match its shape");
  t.nbytes = std::size_t(e - b);
  t.storage.resize((t.nbytes + 7) / 8);
  if (t.nbytes) std::memcpy(t.storage.data(), body + b, t.nbytes);
  return t;
}

const std::string& meta_string(const Json& meta, const char* key, const std::string& where) {
  const Json* v = meta.find(key);
  if (!v) refuse(FileProblem::Format, where, std::string("profile metadata lacks '") + key + "'; re-enroll");
  return v->text;
}

float meta_float(const Json& meta, const char* key, const std::string& where) {
  const std::string& s = meta_string(meta, key, where);
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v) || std::fabs(v) > 3e38)
    refuse(FileProblem::Format, where, std::string("metadata '") + key + "' is not a finite number");
  return float(v);
}

std::size_t meta_size(const Json& meta, const char* key, const std::string& where) {
  const std::string& s = meta_string(meta, key, where);
  Json num;
  num.type = Json::Number;
  num.text = s;
  std::uint64_t v;
  if (!num.as_index(v) || v == 0 || v > 65536)
    refuse(FileProblem::Format, where, std::string("metadata '") + key + "' must be an integer in [1, 65536]");
  return std::size_t(v);
}

// The optional `image_score` key -> (rule, P): absent or "max" -> 0 (older
// profiles were all scored by the maximum), "mean" -> 100 (the mean of all values).
std::pair<std::string, double> meta_image_score(const Json& meta, const std::string& where) {
  const Json* v = meta.find("image_score");
  if (!v || v->text == "max") return {"max", 0.0};
  Rule rule = Rule::Max;
  double p = 0.0;
  if (!parse_rule(v->text, rule, p))  // the scorer's own reading of the rule
    refuse(FileProblem::Format, where, "metadata 'image_score' is '" + v->text.substr(0, 40) +
                                           "', expected max, mean or top<P>% with 0 < P <= 100; re-enroll");
  return {v->text, p};
}

}  // namespace

Container parse_container(const std::uint8_t* data, std::size_t n, const std::string& where, const char* kind,
                          const char* version) {
  if (n < 8) refuse(FileProblem::Format, where, "file is " + std::to_string(n) + " bytes, too short to be a " + kind);
  std::uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | data[i];  // little-endian u64
  if (hlen > n - 8 || hlen > kMaxHeader)
    refuse(FileProblem::Format, where, "header length " + std::to_string(hlen) + " exceeds the file size (" +
                                           std::to_string(n) + " bytes); the file is truncated or not a careg-edge file");
  std::string header(reinterpret_cast<const char*>(data + 8), std::size_t(hlen));
  Json root;
  try {
    root = parse_json(header.data(), header.size(), where);
  } catch (const Error& e) {
    refuse(FileProblem::Format, where, "header is not valid careg-edge JSON metadata");
  }
  const Json* meta = root.type == Json::Object ? root.find("__metadata__") : nullptr;
  bool strings = meta && meta->type == Json::Object;
  for (std::size_t i = 0; strings && i < meta->members.size(); ++i)
    strings = meta->members[i].second.type == Json::String;
  if (!strings) refuse(FileProblem::Format, where, "header is not valid careg-edge JSON metadata");
  const Json* fmt = meta->find("format");
  if (!fmt || fmt->text != kind)
    refuse(FileProblem::Kind, where, "is a " + (fmt ? fmt->text : std::string("foreign")) + " file, expected " + kind);
  const Json* sum = meta->find("checksum");
  std::string value = sum ? sum->text : std::string();
  verify_checksum(data, n, 8 + checksum_at(header, value, where), value, where);
  const Json* ver = meta->find("format_version");
  if (!ver || ver->text != version)
    refuse(FileProblem::Version, where, std::string(kind) + " format version " + (ver ? ver->text : "?") +
                                            "; this careg-edge reads version " + version + ": re-create the file");
  Container c;
  const std::uint8_t* body = data + 8 + hlen;
  std::size_t body_size = n - 8 - std::size_t(hlen);
  for (const auto& m : root.members)
    if (m.first != "__metadata__") c.tensors[m.first] = read_tensor(m.first, m.second, body, body_size, where);
  c.meta = *meta;
  return c;
}

// The whole file in memory: every reader validates it from the bytes, never the stream.
static std::vector<std::uint8_t> read_bytes(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) refuse(FileProblem::Io, path, std::string("cannot open the ") + what + " (check the path and permissions)");
  std::streamoff size = f.tellg();
  if (size < 0) refuse(FileProblem::Io, path, std::string("cannot read the ") + what);
  std::vector<std::uint8_t> raw(static_cast<std::size_t>(size));
  f.seekg(0);
  if (size > 0 && !f.read(reinterpret_cast<char*>(raw.data()), size))
    refuse(FileProblem::Io, path, std::string("cannot read the ") + what);
  return raw;
}

Container read_file(const std::string& path, const char* kind, const char* version) {
  std::vector<std::uint8_t> raw = read_bytes(path, "file");
  return parse_container(raw.data(), raw.size(), path, kind, version);
}

Profile Profile::load(const std::string& path) {
  std::vector<std::uint8_t> raw = read_bytes(path, "profile");
  return parse(raw.data(), raw.size(), path);
}

Profile Profile::parse(const std::uint8_t* data, std::size_t n, const std::string& where) {
  Container c = parse_container(data, n, where, kKind, kVersion);
  const Json* meta = &c.meta;
  Profile p;
  p.tensors_ = std::move(c.tensors);
  p.estimator = meta_string(*meta, "estimator", where);
  p.encoder_hash = meta_string(*meta, "encoder_hash", where);
  p.threshold = meta_float(*meta, "threshold", where);
  p.sigma = meta_float(*meta, "sigma", where);
  p.grid_h = meta_size(*meta, "grid_h", where);
  p.grid_w = meta_size(*meta, "grid_w", where);
  p.image_h = meta_size(*meta, "image_h", where);
  p.image_w = meta_size(*meta, "image_w", where);
  std::tie(p.image_score_, p.top_percent_) = meta_image_score(*meta, where);
  if (const Json* info = meta->find("profile")) {
    try {
      p.info_ = parse_json(info->text.data(), info->text.size(), where + " (profile JSON)");
      p.info_ok_ = p.info_.type == Json::Object;
    } catch (const Error&) {
      p.info_ok_ = false;  // reported by layout_of when the road needs it
    }
  }
  p.validate(where);
  return p;
}

const Tensor* Profile::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

}  // namespace careg
