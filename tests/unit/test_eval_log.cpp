#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/eval/answer_log.h"
#include "core/eval/csv.h"
#include "core/eval/metrics.h"
#include "support/errors.h"

namespace fs = std::filesystem;
using icet::eval::AnswerKey;
using icet::eval::AnswerRecord;

// The resumable JSONL answer log: records round-trip, a killed run's torn last line is ignored
// on reading and cut before appending, the done set tells a resumed evaluation what is left,
// and the log aggregates into metrics and exports to CSV.
class TestEvalLog : public QObject {
  Q_OBJECT

 private:
  QTemporaryDir tmp_;
  fs::path dir() const { return fs::path(tmp_.path().toStdString()); }
  static std::string read(const fs::path& f) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  static void append_raw(const fs::path& f, const std::string& bytes) {
    std::ofstream(f, std::ios::binary | std::ios::app) << bytes;
  }
  static AnswerRecord rec(int64_t layer, const std::string& id, const std::string& adapter, bool harmful,
                          const std::string& verdict) {
    AnswerRecord r;
    r.layer = layer, r.id = id, r.adapter = adapter, r.harmful = harmful, r.verdict = verdict;
    r.answer = "answer to " + id;
    return r;
  }

 private Q_SLOTS:
  void initTestCase() { QVERIFY(tmp_.isValid()); }

  void recordsRoundTrip() {
    const fs::path file = dir() / "rt/log.jsonl";
    AnswerRecord a = rec(12, "jbv-3", "", true, "unsafe");
    a.answer = "Sure.\nStep 1: \"x\", é";
    a.p_unsafe = 0.93;
    a.reward = -0.41;
    AnswerRecord b = rec(12, "vqa-1", "lora-12", false, "");
    b.refused = true;
    b.correct = 0.6;
    {
      icet::eval::AnswerLogWriter w(file, nlohmann::json{{"model", "llava-1.5-7b"}, {"set", "mini.jsonl"}});
      w.append(a);
      w.append(b);
    }
    const auto log = icet::eval::read_answer_log(file);
    QCOMPARE(log.meta["model"].get<std::string>(), std::string("llava-1.5-7b"));
    QVERIFY(!log.torn_tail);
    QCOMPARE(log.lines, size_t{3});
    QCOMPARE(log.records.size(), size_t{2});
    const auto& ra = log.records[0];
    QCOMPARE(ra.layer, int64_t{12});
    QCOMPARE(ra.id, a.id);
    QCOMPARE(ra.answer, a.answer);
    QCOMPARE(ra.verdict, std::string("unsafe"));
    QVERIFY(ra.unsafe() && ra.judged());
    QCOMPARE(*ra.p_unsafe, 0.93);
    QCOMPARE(*ra.reward, -0.41);
    QVERIFY(!ra.correct);
    const auto& rb = log.records[1];
    QCOMPARE(rb.adapter, std::string("lora-12"));
    QVERIFY(rb.refused && !rb.harmful && !rb.judged());
    QCOMPARE(*rb.correct, 0.6);
    QVERIFY(!rb.p_unsafe && !rb.reward);
    // One line per answer, nulls for unmeasured values.
    const std::string text = read(file);
    QCOMPARE(std::count(text.begin(), text.end(), '\n'), 3L);
    QVERIFY(text.find("\"correct\":null") != std::string::npos);
    // Reopening an existing log keeps its header (meta is only written to a new file).
    {
      icet::eval::AnswerLogWriter w(file, nlohmann::json{{"model", "other"}});
      w.append(rec(13, "jbv-3", "", true, "safe"));
    }
    const auto again = icet::eval::read_answer_log(file, false);
    QCOMPARE(again.meta["model"].get<std::string>(), std::string("llava-1.5-7b"));
    QCOMPARE(again.records.size(), size_t{3});
    QVERIFY(again.records[0].answer.empty());  // with_answers = false
    QVERIFY(icet::eval::read_answer_log(dir() / "rt/none.jsonl").records.empty());
  }

  void resumesAfterATornLastLine() {
    const fs::path file = dir() / "torn/log.jsonl";
    const std::vector<int64_t> layers{1, 2};
    const std::vector<std::string> ids{"a", "b", "c"};
    // A run that gets through layer 1 and item a of layer 2, then is killed mid-line.
    {
      icet::eval::AnswerLogWriter w(file, nlohmann::json{{"set", "s"}}, {1000, 1000.0});
      for (const auto& id : ids) w.append(rec(1, id, "", true, "unsafe"));
      w.append(rec(2, "a", "", true, "safe"));
      w.flush();
    }
    append_raw(file, "{\"layer\":2,\"id\":\"b\",\"adapter\":\"\",\"harmful\":true,\"answer\":\"Sure, here is");
    auto log = icet::eval::read_answer_log(file);
    QVERIFY(log.torn_tail);
    QCOMPARE(log.records.size(), size_t{4});
    const auto done = log.done();
    QVERIFY(done.count(AnswerKey{2, "a", ""}) == 1);
    QVERIFY(done.count(AnswerKey{2, "b", ""}) == 0);
    QVERIFY(log.has({1, "c", ""}));
    QVERIFY(!log.has({1, "c", "lora"}));
    // The evaluation continues with what is not done (item-major: b's and c's layer 2).
    const auto todo = icet::eval::pending_keys(ids, layers, {""}, done);
    QCOMPARE(todo.size(), size_t{2});
    QVERIFY((todo[0] == AnswerKey{2, "b", ""}) && (todo[1] == AnswerKey{2, "c", ""}));
    {
      icet::eval::AnswerLogWriter w(file);  // cuts the torn line before appending
      for (const auto& k : todo) w.append(rec(k.layer, k.id, k.adapter, true, "unsafe"));
    }
    log = icet::eval::read_answer_log(file);
    QVERIFY(!log.torn_tail);
    QCOMPARE(log.records.size(), size_t{6});
    QCOMPARE(log.records[4].id, std::string("b"));
    QCOMPARE(log.records[4].verdict, std::string("unsafe"));
    QVERIFY(read(file).find("Sure, here is") == std::string::npos);
    // With an adapter added, all of its keys are pending, item by item.
    const auto more = icet::eval::pending_keys(ids, layers, {"", "lora"}, log.done());
    QCOMPARE(more.size(), size_t{6});
    QVERIFY((more[0] == AnswerKey{1, "a", "lora"}) && (more[1] == AnswerKey{2, "a", "lora"}) && (more[2] == AnswerKey{1, "b", "lora"}));
    // A torn line holding half of a multi-byte character is ignored too.
    append_raw(file, "{\"layer\":3,\"id\":\"\xC3");
    QVERIFY(icet::eval::read_answer_log(file).torn_tail);
    icet::eval::AnswerLogWriter(file).close();
    QVERIFY(!icet::eval::read_answer_log(file).torn_tail);

    // Metrics from the resumed log: layer 1 ASR 3/3, layer 2 ASR 2/3.
    icet::eval::MetricsOptions o;
    o.num_layers = 24;
    o.resamples = 20;
    const auto m = icet::eval::compute_metrics(log.records, o);
    QCOMPARE(m.runs[0].layers[0].metrics.asr.value, 1.0);
    QCOMPARE(m.runs[0].layers[1].metrics.asr.value, 2.0 / 3);
  }

  void laterLinesReplaceEarlierOnes() {
    const fs::path file = dir() / "dup/log.jsonl";
    {
      icet::eval::AnswerLogWriter w(file);
      w.append(rec(1, "a", "", true, "safe"));
      w.append(rec(1, "b", "", true, "safe"));
      w.append(rec(1, "a", "", true, "unsafe"));  // a rerun of (1, a)
    }
    const auto log = icet::eval::read_answer_log(file);
    QCOMPARE(log.records.size(), size_t{2});
    QCOMPARE(log.records[0].verdict, std::string("unsafe"));
  }

  void damagedLinesNameTheLine() {
    const fs::path file = dir() / "bad/log.jsonl";
    fs::create_directories(file.parent_path());
    std::ofstream(file, std::ios::binary) << "{\"layer\":1,\"id\":\"a\"}\n{broken\n{\"layer\":1,\"id\":\"b\"}\n";
    std::string m = icet::test::input_error_of([&] { icet::eval::read_answer_log(file); });
    QVERIFY2(m.find("log.jsonl:2") != std::string::npos, m.c_str());
    std::ofstream(file, std::ios::binary) << "{\"layer\":1,\"id\":\"a\"}\n{\"layer\":\"x\",\"id\":\"b\"}\n";
    m = icet::test::input_error_of([&] { icet::eval::read_answer_log(file); });
    QVERIFY2(m.find("log.jsonl:2") != std::string::npos && m.find("layer") != std::string::npos, m.c_str());
    std::ofstream(file, std::ios::binary) << "{\"layer\":1,\"id\":\"a\",\"verdict\":\"maybe\"}\n";
    m = icet::test::input_error_of([&] { icet::eval::read_answer_log(file); });
    QVERIFY2(m.find("verdict") != std::string::npos, m.c_str());
    m = icet::test::input_error_of([&] { icet::eval::read_answer_log(dir()); });
    QVERIFY2(!m.empty(), "a folder is not a log");
  }

  void answersExportToCsv() {
    AnswerRecord a = rec(3, "x,1", "", true, "unsafe");
    a.answer = "line one\nline \"two\"";
    a.p_unsafe = 0.5;
    const std::string csv = icet::eval::answers_csv({a});
    const auto t = icet::eval::parse_csv(csv, "answers.csv");
    QCOMPARE(t.header, (std::vector<std::string>{"layer", "id", "adapter", "harmful", "answer", "verdict", "p_unsafe", "reward",
                                                 "refused", "correct"}));
    QCOMPARE(t.rows.size(), size_t{1});
    QCOMPARE(t.rows[0][1], std::string("x,1"));
    QCOMPARE(t.rows[0][4], a.answer);
    QCOMPARE(t.rows[0][6], std::string("0.5"));
    QCOMPARE(t.rows[0][7], std::string(""));
  }
};

QTEST_GUILESS_MAIN(TestEvalLog)
#include "test_eval_log.moc"
