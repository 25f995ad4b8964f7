#include "careg/json.h"

#include "careg/error.h"

namespace careg {
namespace {

constexpr int kMaxDepth = 16;

struct Parser {
  const char* s;
  std::size_t n, i = 0;
  const std::string& where;

  [[noreturn]] void fail(const char* why) {
    throw Error(where + ": header is not valid JSON (" + why + " at byte " + std::to_string(i) + ")");
  }
  void ws() {
    while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) ++i;
  }
  char peek() { return i < n ? s[i] : '\0'; }
  void expect(char c) {
    if (peek() != c) fail("unexpected character");
    ++i;
  }

  void utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }

  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (i >= n) fail("unterminated string");
      char c = s[i++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= n) fail("unterminated escape");
      char e = s[i++];
      switch (e) {
        case '"': case '\\': case '/': out += e; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          if (n - i < 4) fail("short \\u escape");
          unsigned cp = 0;
          for (int k = 0; k < 4; ++k) {
            char h = s[i++];
            cp <<= 4;
            if (h >= '0' && h <= '9') cp |= unsigned(h - '0');
            else if (h >= 'a' && h <= 'f') cp |= unsigned(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') cp |= unsigned(h - 'A' + 10);
            else fail("bad \\u escape");
          }
          utf8(out, cp);  // surrogate pairs are kept as two code points: names only
          break;
        }
        default: fail("bad escape");
      }
    }
  }

  std::string number() {
    std::size_t b = i;
    if (peek() == '-') ++i;
    if (!(peek() >= '0' && peek() <= '9')) fail("bad number");
    while (i < n && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == 'e' || s[i] == 'E' ||
                     s[i] == '+' || s[i] == '-'))
      ++i;
    return std::string(s + b, i - b);
  }

  void literal(const char* word) {
    for (const char* w = word; *w; ++w) expect(*w);
  }

  Json value(int depth) {
    if (depth > kMaxDepth) fail("nesting too deep");
    ws();
    Json v;
    char c = peek();
    if (c == '{') {
      v.type = Json::Object;
      ++i;
      ws();
      if (peek() == '}') { ++i; return v; }
      while (true) {
        ws();
        std::string key = string();
        ws();
        expect(':');
        v.members.emplace_back(std::move(key), value(depth + 1));
        ws();
        if (peek() == ',') { ++i; continue; }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.type = Json::Array;
      ++i;
      ws();
      if (peek() == ']') { ++i; return v; }
      while (true) {
        v.items.push_back(value(depth + 1));
        ws();
        if (peek() == ',') { ++i; continue; }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.type = Json::String;
      v.text = string();
      return v;
    }
    if (c == 't') { literal("true"); v.type = Json::Bool; v.text = "true"; return v; }
    if (c == 'f') { literal("false"); v.type = Json::Bool; v.text = "false"; return v; }
    if (c == 'n') { literal("null"); return v; }
    v.type = Json::Number;
    v.text = number();
    return v;
  }
};

}  // namespace

const Json* Json::find(const std::string& key) const {
  const Json* hit = nullptr;
  for (const auto& m : members)
    if (m.first == key) hit = &m.second;  // last one wins, like Python's json
  return hit;
}

bool Json::as_index(std::uint64_t& out) const {
  if (type != Number || text.empty() || text.size() > 18) return false;
  std::uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + std::uint64_t(c - '0');
  }
  out = v;
  return true;
}

Json parse_json(const char* data, std::size_t n, const std::string& where) {
  Parser p{data, n, 0, where};
  Json v = p.value(0);
  p.ws();
  if (p.i != n) p.fail("trailing bytes");
  return v;
}

}  // namespace careg
