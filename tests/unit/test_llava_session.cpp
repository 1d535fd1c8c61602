#include <ATen/Functions.h>
#include <QTemporaryDir>
#include <QTest>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/engine/session.h"
#include "core/io/safetensors.h"
#include "core/runtime/threads.h"
#include "core/vision/image.h"

namespace fs = std::filesystem;

// The session API on the llava fixture: batched sweeps, replay, streaming, cancellation and
// every bad input the engine must turn into a clear error.
class TestLlavaSession : public QObject {
  Q_OBJECT

 private:
  fs::path m_dir = fs::path(ICET_FIXTURES) / "hf-reference" / "llava";
  std::unique_ptr<icet::engine::Session> m_session;
  const std::string m_prompt = "What is in the picture?";

  static icet::generate::SamplingParams greedy(int64_t n) {
    icet::generate::SamplingParams p;
    p.max_new_tokens = n;
    p.stop_at_eos = false;
    return p;
  }

  // A copy of the fixture folder to break on purpose.
  static fs::path copyFixture(const QTemporaryDir& tmp, const fs::path& from) {
    const fs::path to = fs::path(tmp.path().toStdString()) / "model";
    fs::copy(from, to, fs::copy_options::recursive);
    return to;
  }

  static void rewriteWeights(const fs::path& dir, const std::function<void(std::vector<std::pair<std::string, at::Tensor>>&)>& edit) {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    {
      auto file = icet::io::SafetensorsFile::open(dir / "model.safetensors");
      for (const auto& name : file->names()) tensors.emplace_back(name, file->tensor(name).clone());
    }
    edit(tensors);
    icet::io::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  }

  static void editConfig(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j;
    {
      std::ifstream in(dir / "config.json");
      in >> j;
    }
    edit(j);
    std::ofstream(dir / "config.json") << j.dump(2);
  }

  // Runs `f`, expects an icet::Error whose message contains every one of `needles`.
  template <typename F>
  static void expectError(F&& f, std::initializer_list<const char*> needles) {
    try {
      f();
    } catch (const icet::Error& e) {
      const std::string msg = e.what();
      for (const char* n : needles) {
        QVERIFY2(msg.find(n) != std::string::npos, (std::string("missing '") + n + "' in: " + msg).c_str());
      }
      return;
    }
    QFAIL("no icet::Error thrown");
  }

  // Caps this process's address space at its current size + `extra` bytes while alive (not
  // under AddressSanitizer, whose shadow memory needs terabytes of address space).
  struct AddressSpaceCap {
    rlimit old{};
    bool set = false;
    explicit AddressSpaceCap(long long extra) {
#if !defined(__SANITIZE_ADDRESS__)
      std::ifstream statm("/proc/self/statm");
      long long pages = 0;
      statm >> pages;
      ::getrlimit(RLIMIT_AS, &old);
      rlimit cap = old;
      cap.rlim_cur = static_cast<rlim_t>(pages * ::sysconf(_SC_PAGESIZE) + extra);
      set = ::setrlimit(RLIMIT_AS, &cap) == 0;
#else
      (void)extra;
#endif
    }
    ~AddressSpaceCap() {
      if (set) ::setrlimit(RLIMIT_AS, &old);
    }
  };

 private Q_SLOTS:
  void initTestCase() {
    icet::runtime::apply_threads(2);
    m_session = icet::engine::Session::open(m_dir, {"cpu", "float32"});
    m_session->set_image(icet::vision::load_image(m_dir / "image.png"));
  }

  void batchedSweepEqualsPerLayerRunsGreedy() {
    const std::vector<int64_t> layers{1, 2, 3, 4, 5, 6};
    const auto rows = m_session->sweep(m_prompt, layers, greedy(8));
    QCOMPARE(rows.size(), layers.size());
    for (size_t i = 0; i < layers.size(); ++i) {
      const auto single = m_session->generate(m_prompt, layers[i], greedy(8));
      QCOMPARE(rows[i].layer, layers[i]);
      QCOMPARE(rows[i].token_ids, single.token_ids);
      QCOMPARE(rows[i].text, single.text);
    }
  }

  void batchedSweepEqualsPerLayerRunsSampled() {
    auto p = greedy(8);
    p.do_sample = true;
    p.temperature = 1.3;
    p.top_p = 0.95;
    p.top_k = 50;
    p.seed = 7;
    const std::vector<int64_t> layers{2, 4, 6};
    const auto rows = m_session->sweep(m_prompt, layers, p);
    for (size_t i = 0; i < layers.size(); ++i) {
      QCOMPARE(rows[i].token_ids, m_session->generate(m_prompt, layers[i], p).token_ids);
    }
  }

  void rowsThatFinishEarlyLeaveTheBatch() {
    // Stop strings end rows at different steps; the remaining rows must be unaffected.
    const auto full = m_session->sweep(m_prompt, {1, 2, 3, 4, 5, 6}, greedy(8));
    auto p = greedy(8);
    p.max_new_tokens = 8;
    p.stop_strings = {full[0].text.substr(0, 1)};  // row 0 stops after its first character
    const auto rows = m_session->sweep(m_prompt, {1, 2, 3, 4, 5, 6}, p);
    QCOMPARE(rows[0].stop_reason, std::string("stop_string"));
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      // Each row is a prefix of its unconstrained run.
      QVERIFY(r.token_ids.size() <= full[i].token_ids.size());
      QVERIFY(std::equal(r.token_ids.begin(), r.token_ids.end(), full[i].token_ids.begin()));
    }
  }

  void rowsLeavingInAnyOrderKeepTheirOwnAnswers() {
    // Stop strings taken from several rows' answers end rows at different steps and batch
    // positions (the leaving row's place is taken by the batch's last row); every row must still
    // equal its layer's run alone, answer and stop reason.
    const std::vector<int64_t> layers{1, 2, 3, 4, 5, 6};
    const auto full = m_session->sweep(m_prompt, layers, greedy(8));
    auto p = greedy(8);
    for (size_t i = 0; i < full.size(); i += 2) {
      if (full[i].text.size() > 3) p.stop_strings.push_back(full[i].text.substr(2, 2));
    }
    const auto rows = m_session->sweep(m_prompt, layers, p);
    std::set<size_t> lengths;
    bool early_not_last = false;
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto single = m_session->generate(m_prompt, layers[i], p);
      QCOMPARE(rows[i].token_ids, single.token_ids);
      QCOMPARE(rows[i].stop_reason, single.stop_reason);
      lengths.insert(rows[i].token_ids.size());
      early_not_last |= i + 1 < rows.size() && rows[i].token_ids.size() < 8;
    }
    QVERIFY2(lengths.size() >= 2 && early_not_last, "the stop strings must end rows at different steps");
  }

  void replayGivesTheSameTokens() {
    auto p = greedy(8);
    p.do_sample = true;
    p.temperature = 0.9;
    const auto first = m_session->generate(m_prompt, 3, p);
    QVERIFY(first.params.seed.has_value());  // a fresh seed was drawn and recorded
    QCOMPARE(first.model_id, std::string("llava"));
    QCOMPARE(first.weights_hash.size(), size_t{16});
    QVERIFY(!first.image_hash.empty());
    QCOMPARE(first.layer, int64_t{3});
    auto replay = first.params;
    const auto again = m_session->generate(first.prompt, first.layer, replay);
    QCOMPARE(again.token_ids, first.token_ids);
    const auto j = icet::engine::to_json(first);
    QCOMPARE(j.at("seed").get<uint64_t>(), *first.params.seed);
  }

  void streamingConcatenatesToTheText() {
    std::string streamed;
    int tokens = 0;
    const auto r = m_session->generate(m_prompt, 2, greedy(8), [&](const icet::engine::StreamEvent& e) {
      streamed += e.text;
      if (e.token >= 0) ++tokens;
      QCOMPARE(e.layer, int64_t{2});
    });
    QCOMPARE(streamed, r.text);
    QCOMPARE(tokens, 8);
  }

  void cancellationStopsWithinOneStep() {
    std::atomic<bool> cancel{false};
    int seen = 0;
    const auto r = m_session->generate(
        m_prompt, 1, greedy(8),
        [&](const icet::engine::StreamEvent& e) {
          if (e.token >= 0 && ++seen == 2) cancel = true;
        },
        &cancel);
    QCOMPARE(r.stop_reason, std::string("cancelled"));
    QCOMPARE(r.token_ids.size(), size_t{2});
  }

  void specialTokenTextInThePromptStaysText() {
    const auto plain = m_session->prompt_ids("Describe this.");
    const auto tricky = m_session->prompt_ids("Describe <image> and </s> this.");
    const auto count = [](const std::vector<int64_t>& ids, int64_t id) { return std::count(ids.begin(), ids.end(), id); };
    QCOMPARE(count(tricky, 384), count(plain, 384));  // still exactly the 25 real image tokens
    QCOMPARE(count(plain, 384), 25L);
    QCOMPARE(count(tricky, 2), 0L);  // no </s>
    QVERIFY(tricky.size() > plain.size());
    const auto r = m_session->generate("Describe <image> and </s> this.", std::nullopt, greedy(4));
    QCOMPARE(r.token_ids.size(), size_t{4});
  }

  void emptyPromptIsAClearError() {
    expectError([&] { m_session->generate("", std::nullopt, greedy(4)); }, {"prompt is empty"});
    expectError([&] { m_session->generate("  \n ", std::nullopt, greedy(4)); }, {"prompt is empty"});
  }

  void promptLongerThanTheContextIsAClearError() {
    std::string long_prompt;
    for (int i = 0; i < 3000; ++i) long_prompt += "word ";
    expectError([&] { m_session->generate(long_prompt, std::nullopt, greedy(4)); },
                {"context window is 4096", "Shorten the prompt"});
  }

  void layerOutOfRangeIsAClearError() {
    expectError([&] { m_session->generate(m_prompt, 0, greedy(2)); }, {"exit layer", "1..6"});
    expectError([&] { m_session->generate(m_prompt, 7, greedy(2)); }, {"exit layer", "1..6", "7"});
    expectError([&] { icet::engine::parse_layers("3-9", 6); }, {"3-9"});
    expectError([&] { icet::engine::parse_layers("a,b", 6); }, {"layers"});
    QCOMPARE(icet::engine::parse_layers("1-3,6,2", 6), (std::vector<int64_t>{1, 2, 3, 6}));
    QCOMPARE(icet::engine::parse_layers("all", 3), (std::vector<int64_t>{1, 2, 3}));
  }

  void generatingWithoutAnImageIsAClearError() {
    auto fresh = icet::engine::Session::open(m_dir, {"cpu", "float32"});
    expectError([&] { fresh->generate(m_prompt, std::nullopt, greedy(2)); }, {"no image"});
  }

  void notAModelFolder() {
    QTemporaryDir tmp;
    expectError([&] { icet::engine::Session::open(tmp.path().toStdString()); }, {"not a model folder", "config.json"});
    expectError([&] { icet::engine::Session::open(m_dir / "image.png"); }, {"not a folder"});
  }

  void missingTokenizer() {
    QTemporaryDir tmp;
    const fs::path dir = copyFixture(tmp, m_dir);
    fs::remove(dir / "tokenizer.model");
    expectError([&] { icet::engine::Session::open(dir); }, {"tokenizer"});
  }

  void malformedConfig() {
    QTemporaryDir tmp;
    const fs::path dir = copyFixture(tmp, m_dir);
    std::ofstream(dir / "config.json") << R"({"model_type": "llava", "text_config": {"hidden_size": )";
    expectError([&] { icet::engine::Session::open(dir); }, {"config.json", "valid JSON"});
  }

  void incompleteOrMistypedConfig() {
    QTemporaryDir tmp;
    const fs::path dir = copyFixture(tmp, m_dir);
    editConfig(dir, [](nlohmann::json& j) { j["text_config"]["hidden_size"] = "64"; });
    expectError([&] { icet::engine::Session::open(dir); }, {"config.json", "text_config.hidden_size", "an integer", "a string"});
    editConfig(dir, [](nlohmann::json& j) {
      j["text_config"]["hidden_size"] = 64;
      j.erase("model_type");
    });
    expectError([&] { icet::engine::Session::open(dir); }, {"config.json", "model_type"});
    editConfig(dir, [](nlohmann::json& j) {
      j["model_type"] = "llava";
      j["vision_feature_layer"] = 9;
    });
    expectError([&] { icet::engine::Session::open(dir); }, {"vision_feature_layer", "9"});
  }

  void shapeNotMatchingTheConfig() {
    QTemporaryDir tmp;
    const fs::path dir = copyFixture(tmp, m_dir);
    editConfig(dir, [](nlohmann::json& j) { j["text_config"]["intermediate_size"] = 128; });
    expectError([&] { icet::engine::Session::open(dir); },
                {"language_model.model.layers.0.mlp.gate_proj.weight", "expected shape [128, 64]", "found [96, 64]"});
  }

  // A config.json typo that sizes the model far past its weights (hidden_size 64 -> 65536:
  // one q_proj alone would be 16 GiB), or one without text_config (transformers then assumes
  // Llama-2-7B: 26 GiB), is reported tensor by tensor without allocating in the config's
  // shapes. The address space is capped at +1 GiB meanwhile, so such an allocation fails here.
  void configTyposAreReportedWithoutAllocatingTheirShapes() {
    QTemporaryDir tmp;
    const fs::path dir = copyFixture(tmp, m_dir);
    editConfig(dir, [](nlohmann::json& j) {
      j["text_config"]["hidden_size"] = 65536;
      j["text_config"].erase("head_dim");  // hidden_size / heads: 16384
    });
    {
      AddressSpaceCap cap(1ll << 30);
      expectError([&] { icet::engine::Session::open(dir); },
                  {"the weights do not match config.json", ", 65536] (from config.json)", "more"});
    }
    editConfig(dir, [](nlohmann::json& j) { j.erase("text_config"); });
    {
      AddressSpaceCap cap(1ll << 30);
      expectError([&] { icet::engine::Session::open(dir); },
                  {"config.json has no text_config (Llama-2-7B", "expected shape [32000, 4096]"});
    }
    editConfig(dir, [](nlohmann::json& j) { j["text_config"] = {{"num_hidden_layers", 2000000000}}; });
    expectError([&] { icet::engine::Session::open(dir); }, {"text_config.num_hidden_layers", "up to 1024"});
  }

  void missingAndUnexpectedTensors() {
    QTemporaryDir tmp;
    const fs::path dir = copyFixture(tmp, m_dir);
    rewriteWeights(dir, [](auto& tensors) {
      tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                                   [](const auto& t) { return t.first == "multi_modal_projector.linear_2.weight"; }),
                    tensors.end());
      tensors.emplace_back("extra.head.weight", at::zeros({2, 2}));
    });
    expectError([&] { icet::engine::Session::open(dir); },
                {"missing tensor 'multi_modal_projector.linear_2.weight'", "unexpected tensor 'extra.head.weight'"});
  }
};

QTEST_GUILESS_MAIN(TestLlavaSession)
#include "test_llava_session.moc"
