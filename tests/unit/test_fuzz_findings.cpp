#include <QTemporaryDir>
#include <QTest>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <string>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/io/safetensors.h"
#include "core/models/lora.h"
#include "support/errors.h"

namespace fs = std::filesystem;

// Inputs found by the libFuzzer targets (tests/fuzz, `packaging/setup.sh fuzz`), minimised:
// each crashed, hung or escaped as a non-InputError before its fix.
class TestFuzzFindings : public QObject {
  Q_OBJECT

 private:
  QTemporaryDir tmp_;

  fs::path write(const std::string& name, const std::string& bytes) {
    const fs::path file = fs::path(tmp_.path().toStdString()) / name;
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << bytes;
    return file;
  }
  // A safetensors file: the 8-byte little-endian header length, the header, then `data`.
  static std::string safetensors(const std::string& header, const std::string& data = {}) {
    std::string out(8, '\0');
    for (size_t i = 0; i < 8; ++i) out[i] = static_cast<char>((uint64_t{header.size()} >> (8 * i)) & 0xff);
    return out + header + data;
  }

 private Q_SLOTS:
  void initTestCase() { QVERIFY(tmp_.isValid()); }

  // fuzz_safetensors: a number past double's range made nlohmann throw out_of_range (406),
  // which the parse_error handlers let through (std::terminate in the fuzzer, "unknown error"
  // in the app). Every JSON reader goes through json_util::parse or the safetensors header parser.
  void jsonNumberOverflow() {
    ICET_EXPECT_INPUT_ERROR(icet::json_util::parse("{\"a\": 1e999}", "overflow.json"),
                            {"overflow.json", "valid JSON", "number overflow"});
    ICET_EXPECT_INPUT_ERROR(icet::json_util::parse("[-2222222222222222.2E22222222]", "neg.json"), {"neg.json"});
    const fs::path file = write("overflow.safetensors", safetensors("{\"w\":2222222.22E22222222}"));
    ICET_EXPECT_INPUT_ERROR(icet::io::SafetensorsFile::open(file), {file.string(), "number overflow"});
  }

  // fuzz_adapter_config: {"r": 1.1e43} reached static_cast<int64_t>(double) out of range in
  // json_util::Reader::integer (UBSan: undefined behaviour; in practice a garbage rank), and an
  // unsigned above 2^63 - 1 wrapped to a negative number. Both are now an InputError naming the key.
  void integerOutOfInt64Range() {
    for (const char* text : {R"({"r": 11000000000040992764600009927646082434122222})", R"({"r": 9.3e18})",
                             R"({"r": -9.3e18})", R"({"r": 18446744073709551615})"}) {
      const nlohmann::json j = icet::json_util::parse(text, "adapter_config.json");
      ICET_EXPECT_INPUT_ERROR(icet::json_util::Reader(j, "adapter_config.json").integer("r"),
                              {"adapter_config.json: key 'r'", "an integer from -2^63 to 2^63 - 1"});
    }
    const nlohmann::json list = icet::json_util::parse(R"({"eos": [2, 18446744073709551615]})", "config.json");
    ICET_EXPECT_INPUT_ERROR(icet::json_util::Reader(list, "config.json").integers("eos"), {"key 'eos'", "2^63 - 1"});
    // Integral floats in range still read as integers ("r": 8.0 from some writers).
    const nlohmann::json ok = icet::json_util::parse(R"({"r": 8.0, "n": -9223372036854775808})", "ok.json");
    QCOMPARE(icet::json_util::Reader(ok, "ok.json").integer("r"), int64_t{8});
    QCOMPARE(icet::json_util::Reader(ok, "ok.json").integer("n"), std::numeric_limits<int64_t>::min());
  }

  // adapter_config.json values the adapter cannot use are refused by name (r = 0 made
  // scale() = alpha / 0).
  void adapterConfigRanges() {
    const auto parse = [](const char* text) {
      return icet::models::parse_peft_adapter_config(icet::json_util::parse(text, "adapter_config.json"),
                                                     "adapter_config.json");
    };
    ICET_EXPECT_INPUT_ERROR(parse(R"({"r": 0, "lora_alpha": 16})"), {"key 'r'", "rank >= 1"});
    ICET_EXPECT_INPUT_ERROR(parse(R"({"r": 8, "lora_alpha": 16, "lora_dropout": 1.0})"), {"key 'lora_dropout'"});
    const auto config = parse(R"({"r": 4, "lora_alpha": 8, "use_rslora": true, "base_model_name_or_path": "m"})");
    QCOMPARE(config.r, int64_t{4});
    QCOMPARE(config.alpha, 16.0);  // rsLoRA: alpha * sqrt(r)
    QCOMPARE(config.base_model, std::string("m"));
  }
};

QTEST_GUILESS_MAIN(TestFuzzFindings)
#include "test_fuzz_findings.moc"
