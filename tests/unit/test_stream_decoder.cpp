// StreamDecoder: token-by-token output never ends inside a UTF-8 character and adds up to
// Tokenizer::decode() of all ids, for the HF reference tokenizers and their legacy/clean-up
// variants.

#include <QTemporaryDir>
#include <QTest>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <random>

#include "support/snapshot.h"
#include "core/base/error.h"
#include "core/text/stream_decoder.h"
#include "core/text/tokenizer.h"

namespace fs = std::filesystem;
using nlohmann::json;
using Ids = std::vector<int64_t>;

namespace {

using icet::test::fixture;
using icet::test::read_json;
using icet::test::snapshot_copy;

// Strict UTF-8 check (no truncated, overlong or surrogate sequences).
bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    char32_t cp = 0;
    if (b < 0x80) {
      n = 1;
      cp = b;
    } else if ((b & 0xE0) == 0xC0) {
      n = 2;
      cp = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
      n = 3;
      cp = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
      n = 4;
      cp = b & 0x07;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    const char32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

// Streams `ids`; checks every chunk is whole UTF-8 and returns the chunks.
std::vector<std::string> stream_chunks(const icet::text::Tokenizer& tok, const Ids& ids, bool skip,
                                       bool* all_valid) {
  icet::text::StreamDecoder stream(tok, skip);
  std::vector<std::string> chunks;
  *all_valid = true;
  for (int64_t id : ids) chunks.push_back(stream.push(id));
  chunks.push_back(stream.flush());
  for (const auto& c : chunks) *all_valid = *all_valid && valid_utf8(c);
  return chunks;
}

std::string concat(const std::vector<std::string>& chunks) {
  std::string s;
  for (const auto& c : chunks) s += c;
  return s;
}

#define COMPARE_STR(actual, expected) \
  QCOMPARE(QByteArray::fromStdString(actual), QByteArray::fromStdString(expected))

// Streaming equals decode() for both skip settings, chunk by chunk valid UTF-8.
#define VERIFY_STREAM_EQUALS_DECODE(tok, ids)                           \
  do {                                                                  \
    for (bool skip_ : {true, false}) {                                  \
      bool valid_ = false;                                              \
      const auto chunks_ = stream_chunks((tok), (ids), skip_, &valid_); \
      QVERIFY(valid_);                                                  \
      COMPARE_STR(concat(chunks_), (tok).decode((ids), skip_));         \
    }                                                                   \
  } while (0)


const std::string kMixed =
    "Hello \xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c "  // 你好，世界
    "\xf0\x9f\x99\x82\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd caf\xc3\xa9 "        // 🙂👍🏽 café
    "\xe2\x88\x91 \xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82";       // ∑ Привет

}  // namespace

class TestStreamDecoder : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void referenceGenerationsStreamLikeDecode_data() {
    QTest::addColumn<QString>("name");
    for (const char* n : {"llava", "llava_next", "mllama"})
      QTest::newRow(n) << QString::fromLatin1(n);
  }
  void referenceGenerationsStreamLikeDecode() {
    QFETCH(QString, name);
    const json refs = read_json(fixture(name.toStdString()) / "refs.json");
    const auto tok = icet::text::load_tokenizer(fixture(name.toStdString()));
    for (const auto& [choice, v] : refs["choices"].items()) {
      const Ids ids = v["generated_ids"].get<Ids>();
      VERIFY_STREAM_EQUALS_DECODE(*tok, ids);
      bool valid = false;
      // Streaming with skip_special_tokens=false reproduces HF's recorded text.
      COMPARE_STR(concat(stream_chunks(*tok, ids, false, &valid)),
                  v["generated_text"].get<std::string>());
    }
    // Prompts hold special and added tokens.
    VERIFY_STREAM_EQUALS_DECODE(*tok, refs["input_ids"].get<Ids>());
  }

  void skipSpecialTokensIsTheDefault() {
    const json refs = read_json(fixture("llava_next") / "refs.json");
    const auto tok = icet::text::load_tokenizer(fixture("llava_next"));
    const Ids ids = refs["choices"]["1"]["generated_ids"].get<Ids>();  // contains <unk> (id 0)
    icet::text::StreamDecoder stream(*tok);
    std::string text;
    for (int64_t id : ids) text += stream.push(id);
    text += stream.flush();
    COMPARE_STR(text, tok->decode(ids, true));
    QVERIFY(text.find("<unk>") == std::string::npos);
    QVERIFY(tok->decode(ids, false).find("<unk>") != std::string::npos);
  }

  void multiByteCharactersAppearWhole() {
    const auto tok = icet::text::load_tokenizer(fixture("llava"));
    const Ids ids = tok->encode_user(kMixed);  // CJK and emoji are byte-fallback pieces here
    QVERIFY(ids.size() > 40);
    bool valid = false;
    const auto chunks = stream_chunks(*tok, ids, true, &valid);
    QVERIFY(valid);
    COMPARE_STR(concat(chunks), kMixed);
    COMPARE_STR(tok->decode(ids), kMixed);

    // 你 is three byte pieces: nothing until the third.
    icet::text::StreamDecoder stream(*tok);
    COMPARE_STR(stream.push(3 + 0xE4), std::string());
    COMPARE_STR(stream.push(3 + 0xBD), std::string());
    COMPARE_STR(stream.push(3 + 0xA0), std::string("\xe4\xbd\xa0"));
    // 👍 then a skin-tone modifier: four bytes each.
    std::string emoji;
    for (int b : {0xF0, 0x9F, 0x91, 0x8D, 0xF0, 0x9F, 0x8F, 0xBD}) {
      const std::string out = stream.push(3 + b);
      QVERIFY(valid_utf8(out));
      emoji += out;
    }
    COMPARE_STR(emoji, std::string("\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd"));
    COMPARE_STR(stream.flush(), std::string());
  }

  void invalidBytesBecomeReplacementCharacters() {
    const auto tok = icet::text::load_tokenizer(fixture("llava"));
    const std::string fffd = "\xef\xbf\xbd";
    // A truncated sequence followed by text: one U+FFFD per byte, as SentencePiece decodes.
    icet::text::StreamDecoder stream(*tok);
    COMPARE_STR(stream.push(3 + 0xE4), std::string());
    COMPARE_STR(stream.push(3 + 0xBD), std::string());
    COMPARE_STR(stream.push(362), fffd + fffd + "W");
    // A lone continuation byte cannot start a character: replaced at once.
    COMPARE_STR(stream.push(3 + 0x80), fffd);
    // An unfinished character at the end comes out on flush.
    COMPARE_STR(stream.push(3 + 0xF0), std::string());
    COMPARE_STR(stream.push(3 + 0x9F), std::string());
    COMPARE_STR(stream.flush(), fffd + fffd);
    const Ids ids{3 + 0xE4, 3 + 0xBD, 362, 3 + 0x80, 3 + 0xF0, 3 + 0x9F};
    COMPARE_STR(tok->decode(ids), fffd + fffd + "W" + fffd + fffd + fffd);
    VERIFY_STREAM_EQUALS_DECODE(*tok, ids);
  }

  void flushStartsANewSequence() {
    const auto tok = icet::text::load_tokenizer(fixture("llava"));
    icet::text::StreamDecoder stream(*tok);
    std::string first;
    for (int64_t id : {293, 350}) first += stream.push(id);  // "▁USER", ":"
    first += stream.flush();
    std::string second;
    for (int64_t id : {293, 293}) second += stream.push(id);
    second += stream.flush();
    COMPARE_STR(first, std::string("USER:"));
    COMPARE_STR(second, std::string("USER USER"));  // the leading "▁" is dropped again
  }

  void randomIdsStreamLikeDecodeInEveryConfiguration() {
    QTemporaryDir tmp;
    std::vector<std::pair<std::string, std::unique_ptr<icet::text::Tokenizer>>> tokenizers;
    for (const char* n : {"llava", "mllama", "llama_guard"}) {
      tokenizers.emplace_back(n, icet::text::load_tokenizer(fixture(n)));
    }
    tokenizers.emplace_back("llava legacy",
                            icet::text::load_tokenizer(
                                snapshot_copy(tmp, "llava", [](json& c) { c["legacy"] = true; })));
    tokenizers.emplace_back("guard legacy+cleanup", icet::text::load_tokenizer(snapshot_copy(
                                                        tmp, "llama_guard", [](json& c) {
                                                          c["legacy"] = true;
                                                          c["clean_up_tokenization_spaces"] = true;
                                                        })));
    tokenizers.emplace_back("mllama cleanup",
                            icet::text::load_tokenizer(snapshot_copy(tmp, "mllama", [](json& c) {
                              c["clean_up_tokenization_spaces"] = true;
                              auto& d = c["added_tokens_decoder"];
                              d["391"] = {{"content", "<note>"}, {"special", false}};
                            })));
    std::mt19937 rng(1234);
    int cases = 0;
    for (const auto& [name, tok] : tokenizers) {
      const int64_t n = tok->size();
      // Byte pieces and the added tokens are drawn more often than their share.
      std::vector<int64_t> ids_pool;
      for (int64_t id = 0; id < n; ++id) {
        try {
          tok->piece(id);
          ids_pool.push_back(id);
        } catch (const icet::InputError&) {
        }
      }
      for (int round = 0; round < 300; ++round) {
        Ids ids;
        const int len = static_cast<int>(rng() % 24);
        for (int i = 0; i < len; ++i) {
          const unsigned pick = rng() % 4;
          if (pick == 0) {
            ids.push_back(3 + static_cast<int64_t>(rng() % 256));
          } else if (pick == 1) {
            ids.push_back(ids_pool[ids_pool.size() - 1 - rng() % 8]);
          } else {
            ids.push_back(ids_pool[rng() % ids_pool.size()]);
          }
        }
        for (bool skip : {true, false}) {
          bool valid = false;
          const auto chunks = stream_chunks(*tok, ids, skip, &valid);
          QVERIFY2(valid, name.c_str());
          QVERIFY2(concat(chunks) == tok->decode(ids, skip), name.c_str());
          ++cases;
        }
      }
      // Text with spaces and punctuation exercises the clean-up rules.
      const Ids text_ids = tok->encode_user("It is n't there . Is it ? Yes , it 's " + kMixed);
      VERIFY_STREAM_EQUALS_DECODE(*tok, text_ids);
    }
    QCOMPARE(cases, 6 * 300 * 2);
  }

  void unknownIdIsAnInputError() {
    const auto tok = icet::text::load_tokenizer(fixture("llava"));
    icet::text::StreamDecoder stream(*tok);
    QVERIFY_THROWS_EXCEPTION(icet::InputError, stream.push(399));
  }
};

QTEST_GUILESS_MAIN(TestStreamDecoder)
#include "test_stream_decoder.moc"
