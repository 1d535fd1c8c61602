#include <QTemporaryDir>
#include <QTest>

#include <filesystem>
#include <initializer_list>
#include <fstream>
#include <string>

#include "core/base/error.h"
#include "core/base/json_util.h"
#include "core/eval/prompt_set.h"
#include "core/io/safetensors.h"
#include "core/models/config.h"
#include "core/text/tokenizer.h"
#include "support/errors.h"
#include "support/snapshot.h"

namespace fs = std::filesystem;

// Deeply nested JSON in files other people send (checkpoint indexes, configs, tokenizers,
// prompt sets) is refused while parsing, with an error naming the file. Without the limit,
// nlohmann's recursive copy and dump overflow the stack on such a value: the index case below
// crashed the process (its metadata is dumped to a string).
class TestJsonLimits : public QObject {
  Q_OBJECT

 private:
  static std::string nested(int depth, const std::string& inner = "1") {
    return std::string(static_cast<size_t>(depth), '[') + inner + std::string(static_cast<size_t>(depth), ']');
  }
  static void write(const fs::path& file, const std::string& text) {
    std::ofstream out(file, std::ios::binary);
    out << text;
  }

 private Q_SLOTS:
  void parseRefusesNestingPastTheLimit() {
    const int limit = icet::json_util::kMaxDepth;
    QVERIFY(icet::json_util::parse(nested(limit - 1), "ok.json").is_array());
    ICET_EXPECT_INPUT_ERROR(icet::json_util::parse(nested(limit + 2), "deep.json"),
                            {"deep.json", "nested at most " + std::to_string(limit)});
    ICET_EXPECT_INPUT_ERROR(icet::json_util::parse("{\"a\": " + nested(1'000'000) + "}", "bomb.json"),
                            {"bomb.json", "nested at most"});
    ICET_EXPECT_INPUT_ERROR(icet::json_util::parse("{\"a\": [1, 2", "torn.json"), {"torn.json", "valid JSON"});
  }

  void checkpointIndexMetadata() {
    QTemporaryDir tmp;
    const fs::path index = fs::path(tmp.path().toStdString()) / "model.safetensors.index.json";
    write(index, "{\"metadata\": {\"total_size\": " + nested(200'000) + "}, \"weight_map\": {}}");
    ICET_EXPECT_INPUT_ERROR(icet::io::TensorStore::open_index(index), {index.string(), "nested at most"});
  }

  void modelConfig() {
    QTemporaryDir tmp;
    const fs::path config = fs::path(tmp.path().toStdString()) / "config.json";
    write(config, "{\"model_type\": \"llava\", \"text_config\": {\"x\": " + nested(200'000) + "}}");
    ICET_EXPECT_INPUT_ERROR(icet::models::load_llava_config(config), {config.string(), "nested at most"});
  }

  void tokenizerJson() {
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString();
    write(dir / "tokenizer.json", "{\"version\": \"1.0\", \"model\": " + nested(200'000) + "}");
    ICET_EXPECT_INPUT_ERROR(icet::text::load_tokenizer(dir), {"tokenizer.json", "nested at most"});
  }

  void promptSetLine() {
    QTemporaryDir tmp;
    const fs::path set = fs::path(tmp.path().toStdString()) / "set.jsonl";
    write(set, "{\"id\": \"a\", \"prompt\": \"hi\", \"image\": \"x.png\"}\n{\"id\": " + nested(200'000) + "}\n");
    ICET_EXPECT_INPUT_ERROR(icet::eval::load_prompt_set(set), {"set.jsonl", ":2", "nested at most"});
  }
};

QTEST_GUILESS_MAIN(TestJsonLimits)
#include "test_json_limits.moc"
