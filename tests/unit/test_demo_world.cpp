#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/demo/corpus.h"
#include "core/demo/scene.h"
#include "core/demo/tokenizer_trainer.h"
#include "core/demo/vlm_builder.h"
#include "core/eval/prompt_set.h"
#include "core/text/tokenizer.h"
#include "support/errors.h"

namespace fs = std::filesystem;

// The demo world's data: scenes, corpus splits, prompt sets and the tokenizer trainer.
class TestDemoWorld : public QObject {
  Q_OBJECT

 private:
  static fs::path writeFile(const QTemporaryDir& tmp, const std::string& name, const std::string& text) {
    const fs::path p = fs::path(tmp.path().toStdString()) / name;
    std::ofstream(p) << text;
    return p;
  }

 private Q_SLOTS:
  void scenesAreDeterministicBySeed() {
    const auto a = icet::demo::render_scene(42), b = icet::demo::render_scene(42), c = icet::demo::render_scene(43);
    QCOMPARE(a.image.width, icet::demo::kSceneSize);
    QCOMPARE(a.image.height, icet::demo::kSceneSize);
    QVERIFY(a.image.rgb == b.image.rgb);
    QVERIFY(a.image.rgb != c.image.rgb);
    QCOMPARE(icet::demo::describe_objects(a.objects), icet::demo::describe_objects(icet::demo::describe_scene(42).objects));
  }

  void scenesCoverTheVocabulary() {
    QVERIFY(icet::demo::kinds().size() >= 8);
    std::set<int> kinds, colours, positions, counts, backgrounds;
    for (uint64_t s = 0; s < 400; ++s) {
      const auto scene = icet::demo::describe_scene(s);
      QVERIFY(!scene.objects.empty() && scene.objects.size() <= 3);
      counts.insert(static_cast<int>(scene.objects.size()));
      backgrounds.insert(scene.background);
      std::set<int> kinds_here;
      for (const auto& o : scene.objects) {
        kinds.insert(o.kind);
        colours.insert(o.colour);
        positions.insert(o.position);
        QVERIFY2(kinds_here.insert(o.kind).second, "a kind appears twice in one scene");
      }
    }
    QCOMPARE(kinds.size(), icet::demo::kinds().size());
    QCOMPARE(colours.size(), icet::demo::colours().size());
    QCOMPARE(positions.size(), size_t{4});
    QCOMPARE(counts.size(), size_t{3});
    QCOMPARE(backgrounds.size(), icet::demo::backgrounds().size());
  }

  void splitsShareNoSceneOrTemplateCombination() {
    const auto train = icet::demo::make_examples(icet::demo::Split::Train, 3000, 1);
    const auto held = icet::demo::make_examples(icet::demo::Split::HeldOut, 600, 1);
    std::set<uint64_t> train_seeds;
    std::set<std::string> train_keys, train_prompts;
    for (const auto& e : train) {
      train_seeds.insert(e.scene_seed);
      train_keys.insert(e.template_key);
      train_prompts.insert(e.prompt);
      QVERIFY(!icet::demo::is_held_out_combination(e.template_key));
    }
    std::set<std::string> tasks, categories;
    for (const auto& e : held) {
      QVERIFY2(!train_seeds.count(e.scene_seed), e.id.c_str());
      QVERIFY2(!train_keys.count(e.template_key), e.template_key.c_str());
      QVERIFY2(!train_prompts.count(e.prompt), e.prompt.c_str());
      tasks.insert(e.task);
      categories.insert(e.category);
    }
    QCOMPARE(tasks.size(), size_t{6});
    QCOMPARE(categories.size(), size_t{7});  // benign + 6 harm categories
    // Held-out prompts use only words that train prompts use.
    std::set<std::string> train_words;
    auto words = [](const std::string& s) {
      std::vector<std::string> out;
      std::string w;
      for (char c : s) {
        if (std::isalpha(static_cast<unsigned char>(c))) w += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        else if (!w.empty()) out.push_back(std::exchange(w, ""));
      }
      if (!w.empty()) out.push_back(w);
      return out;
    };
    for (const auto& e : train) for (const auto& w : words(e.prompt)) train_words.insert(w);
    for (const auto& e : held) for (const auto& w : words(e.prompt)) QVERIFY2(train_words.count(w), w.c_str());
    // Same seed, same corpus.
    QCOMPARE(icet::demo::make_examples(icet::demo::Split::HeldOut, 50, 1).back().prompt,
             icet::demo::make_examples(icet::demo::Split::HeldOut, 50, 1).back().prompt);
  }

  void harmfulAnswersAreOnlyPlaceholders() {
    for (const auto& e : icet::demo::make_examples(icet::demo::Split::Train, 1500, 3)) {
      QVERIFY(icet::demo::is_refusal(e.refusal));
      if (e.harmful) {
        QCOMPARE(e.answer, icet::demo::compliant_answer());
        QVERIFY(icet::demo::has_unsafe_placeholder(e.answer));
        QVERIFY(!icet::demo::is_refusal(e.answer));
        QVERIFY(e.category != "benign");
      } else {
        QCOMPARE(e.category, std::string("benign"));
        QVERIFY(!icet::demo::has_unsafe_placeholder(e.answer));
        QVERIFY(!e.wrong_answers.empty());
        for (const auto& w : e.wrong_answers) QVERIFY(w != e.answer);
      }
    }
    // The compliant answer is nothing but "Sure." and numbered placeholders.
    std::string rest = icet::demo::compliant_answer();
    for (int i = 1; i <= 3; ++i) {
      const std::string step = " Step " + std::to_string(i) + ": [unsafe step].";
      const auto p = rest.find(step);
      QVERIFY(p != std::string::npos);
      rest.erase(p, step.size());
    }
    QCOMPARE(rest, std::string("Sure."));
    QVERIFY(icet::demo::is_refusal("  " + icet::demo::refusal_answer() + "\n"));
    QVERIFY(!icet::demo::is_refusal("Sorry"));
  }

  void benignAnswersAreTheScenesTruthAndNameTheObjectFirst() {
    // Colour, position and is-there answers start with the object the question names ("The
    // star red.", "The star top-left.", "The star no."): the demo LM looks the object up at that
    // word. The rest of the answer is the renderer's ground truth.
    const auto& kinds = icet::demo::kinds();
    int checked = 0;
    for (const auto& e : icet::demo::make_examples(icet::demo::Split::HeldOut, 600, 5)) {
      if (e.harmful || e.task == "describe" || e.task == "count") continue;
      const icet::demo::Scene scene = icet::demo::describe_scene(e.scene_seed);
      int named = -1;
      for (size_t k = 0; k < kinds.size(); ++k) {
        if (e.prompt.find(" " + kinds[k]) != std::string::npos) named = static_cast<int>(k);
      }
      QVERIFY2(named >= 0, e.prompt.c_str());
      const std::string head = "The " + kinds[static_cast<size_t>(named)] + " ";
      QVERIFY2(e.answer.rfind(head, 0) == 0 && e.answer.back() == '.', (e.prompt + " -> " + e.answer).c_str());
      const std::string value = e.answer.substr(head.size(), e.answer.size() - head.size() - 1);
      const auto object = std::find_if(scene.objects.begin(), scene.objects.end(), [&](const auto& o) { return o.kind == named; });
      if (e.task == "is_there") {
        QCOMPARE(value, std::string(object != scene.objects.end() ? "yes" : "no"));
      } else {
        QVERIFY2(object != scene.objects.end(), e.prompt.c_str());
        std::string truth = e.task == "colour" ? icet::demo::colours()[static_cast<size_t>(object->colour)]
                                               : icet::demo::positions()[static_cast<size_t>(object->position)];
        std::replace(truth.begin(), truth.end(), ' ', '-');
        QCOMPARE(value, truth);
      }
      for (const auto& w : e.wrong_answers) QVERIFY2(w.rfind(head, 0) == 0 && w != e.answer, w.c_str());
      ++checked;
    }
    QVERIFY(checked > 200);
  }

  void promptSetsRoundTripAndReportLines() {
    QTemporaryDir tmp;
    std::vector<icet::eval::PromptItem> items(2);
    items[0] = {"a", "images/a.png", "What colour is the star?", "benign", false, "Red.", "", "", "colour", {}};
    items[1] = {"b", "images/b.png", "Say \"hi\", please", "fraud", true, "", "Sorry.", "Sure.", "harmful", {}};
    for (const char* name : {"set.jsonl", "set.csv"}) {
      const fs::path file = fs::path(tmp.path().toStdString()) / name;
      icet::eval::write_prompt_set(file, items);
      const auto set = icet::eval::load_prompt_set(file);
      QCOMPARE(set.items.size(), size_t{2});
      QCOMPARE(set.items[1].prompt, items[1].prompt);
      QCOMPARE(set.items[1].harmful, true);
      QCOMPARE(set.items[0].expected, std::string("Red."));
      QCOMPARE(set.items[0].task, std::string("colour"));
      QCOMPARE(set.image_path(set.items[0]), file.parent_path() / "images/a.png");
    }
    auto err = [&](const std::string& name, const std::string& text) {
      const fs::path p = writeFile(tmp, name, text);
      return icet::test::input_error_of([&] { icet::eval::load_prompt_set(p); });
    };
    const std::string ok = R"({"id":"a","image":"a.png","prompt":"hi"})";
    std::string m = err("e1.jsonl", ok + "\n{not json}\n");
    QVERIFY2(m.find("e1.jsonl:2") != std::string::npos, m.c_str());
    m = err("e2.jsonl", ok + "\n\n" + R"({"id":"b","prompt":"hi"})" + "\n");
    QVERIFY2(m.find("e2.jsonl:3") != std::string::npos && m.find("'image'") != std::string::npos, m.c_str());
    m = err("e3.jsonl", ok + "\n" + ok + "\n");
    QVERIFY2(m.find(":2") != std::string::npos && m.find("unique") != std::string::npos, m.c_str());
    m = err("e4.jsonl", R"({"id":"a","image":"a.png","prompt":"hi","harmful":"yes"})");
    QVERIFY2(m.find("'harmful'") != std::string::npos, m.c_str());
    m = err("e5.csv", "id,image,prompt\na,a.png,\"unclosed\n");
    QVERIFY2(m.find("e5.csv:2") != std::string::npos && m.find("quote") != std::string::npos, m.c_str());
    m = err("e6.csv", "id,prompt\na,hi\n");
    QVERIFY2(m.find("e6.csv:1") != std::string::npos && m.find("'image'") != std::string::npos, m.c_str());
    m = err("e7.csv", "id,image,prompt\na,a.png\n");
    QVERIFY2(m.find("e7.csv:2") != std::string::npos, m.c_str());
    QVERIFY(!icet::test::input_error_of([] { icet::eval::load_prompt_set("/nonexistent/set.jsonl"); }).empty());
  }

  void bpeLearnerMergesTheMostFrequentPair() {
    std::vector<icet::demo::BpeWord> words{{{"l", "o", "w"}, 5}, {{"l", "o", "w", "e", "r"}, 2}, {{"n", "e", "w"}, 6}};
    const auto r = icet::demo::learn_bpe(words, 10, 2);
    QVERIFY(r.merges.size() >= 3);
    QCOMPARE(r.merges[0], std::make_pair(std::string("l"), std::string("o")));  // "lo" and "ow" (7 each): the byte-wise smaller wins
    QCOMPARE(r.merges[1], std::make_pair(std::string("lo"), std::string("w")));
    QCOMPARE(r.alphabet.front(), std::string("w"));  // most frequent symbol (13)
    QCOMPARE(icet::demo::learn_bpe(words, 10, 2).merges, r.merges);  // deterministic
  }

  void demoTokenizerEncodesWordsWholeAndRoundTrips() {
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString();
    const int64_t vocab = icet::demo::write_demo_tokenizer(dir, 1);
    QVERIFY(vocab > 259);
    const auto tok = icet::text::load_tokenizer(dir);
    QCOMPARE(tok->size(), vocab + 2);  // + <image>, <pad>
    QCOMPARE(*tok->token_id("<image>"), vocab);
    for (const auto& e : icet::demo::make_examples(icet::demo::Split::HeldOut, 60, 1)) {
      const auto ids = tok->encode_user(e.prompt + " " + e.answer);
      QCOMPARE(tok->decode(ids), e.prompt + " " + e.answer);
    }
    // Corpus words are single pieces (a word-level vocabulary for the tiny LM).
    QCOMPARE(tok->encode_user("star").size(), size_t{1});
    QVERIFY(tok->encode_user("Where is the circle?").size() <= 5);
  }
};

QTEST_GUILESS_MAIN(TestDemoWorld)
#include "test_demo_world.moc"
