// The evaluation path end to end on the committed demo world (core/eval/run.h, `icet eval`):
// resume after a stop gives the metrics of an uninterrupted run, a changed plan is refused,
// adapters are answered side by side, the exports are written, and `icet eval` on the demo's
// held-out set gives `icet demo report`'s numbers.

#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/eval/run.h"
#include "support/adapter.h"
#include "support/cli.h"
#include "support/errors.h"

namespace fs = std::filesystem;
using icet::eval::EvalPlan;

namespace {

const fs::path kDemo = fs::path(ICET_SOURCE_DIR) / "models" / "demo";

EvalPlan demo_plan(const fs::path& out) {
  EvalPlan plan;
  plan.model = kDemo / "vlm";
  plan.set = kDemo / "sets" / "heldout.jsonl";
  plan.reward = kDemo / "reward";
  plan.layers = "1,8,16";  // + the default layer 23
  plan.limit = 16;
  plan.max_new_tokens = 24;
  plan.device = "cpu";
  plan.dtype = "float32";
  plan.metrics.resamples = 200;
  plan.out = out;
  return plan;
}

// The answers and metrics, without the timing and resume counts that differ between runs.
nlohmann::json comparable(nlohmann::json j) {
  for (const char* key : {"seconds", "resumed", "meta"}) j.erase(key);
  return j;
}

// a == b, floating-point numbers within 1e-6 relative; `where` names the first difference.
bool same(const nlohmann::json& a, const nlohmann::json& b, const std::string& path, std::string& where) {
  if (a.is_number_float() || b.is_number_float()) {
    if (a.is_number() && b.is_number() &&
        std::abs(a.get<double>() - b.get<double>()) <= 1e-6 * std::max(1.0, std::abs(b.get<double>()))) {
      return true;
    }
  } else if (a.is_structured() && a.type() == b.type() && a.size() == b.size()) {
    if (a.is_array()) {
      for (size_t i = 0; i < a.size(); ++i) {
        if (!same(a[i], b[i], path + "/" + std::to_string(i), where)) return false;
      }
      return true;
    }
    for (const auto& [key, value] : a.items()) {
      if (!b.contains(key) || !same(value, b.at(key), path + "/" + key, where)) return false;
    }
    return true;
  } else if (a == b) {
    return true;
  }
  where = path + ": " + a.dump() + " vs " + b.dump();
  return false;
}

size_t lines_of(const fs::path& file) {
  std::ifstream in(file);
  return static_cast<size_t>(std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n'));
}

}  // namespace

class TestEvalRun : public QObject {
  Q_OBJECT

  QTemporaryDir m_tmp;
  fs::path root() const { return fs::path(m_tmp.path().toStdString()); }

 private Q_SLOTS:
  void stoppedRunResumesToTheMetricsOfAWholeRun() {
    const auto whole = icet::eval::run_evaluation(demo_plan(root() / "whole"));
    QCOMPARE(whole.layers, (std::vector<int64_t>{1, 8, 16, 23}));
    QCOMPARE(whole.records.size(), size_t{16 * 4});
    QCOMPARE(whole.resumed, size_t{0});
    // Every answer is judged (harmful ones), rewarded and scored where it has a reference.
    for (const auto& r : whole.records) {
      QVERIFY(r.reward.has_value());
      QCOMPARE(r.judged(), r.harmful);
      QCOMPARE(r.correct.has_value(), !r.harmful);
    }

    // Stop after 20 answers: what was answered is in the log, and a rerun answers only the rest.
    const fs::path out = root() / "stopped";
    bool stopped = false;
    try {
      icet::eval::run_evaluation(demo_plan(out), [](const icet::eval::EvalProgress& p) { return p.done < 20; });
    } catch (const icet::Cancelled&) {
      stopped = true;
    }
    QVERIFY(stopped);
    const size_t logged = lines_of(out / icet::eval::kAnswerLogName) - 1;  // minus the header
    QVERIFY2(logged >= 20 && logged < 64, std::to_string(logged).c_str());
    QVERIFY(!fs::exists(out / icet::eval::kMetricsJsonName));  // no report of a partial run

    // A torn last line (a kill mid-write) is cut off, not an error.
    {
      std::ofstream(out / icet::eval::kAnswerLogName, std::ios::app) << "{\"layer\":1,\"id\":\"heldo";
    }
    size_t seen_resumed = 0;
    const auto resumed = icet::eval::run_evaluation(demo_plan(out), [&](const icet::eval::EvalProgress& p) {
      seen_resumed = p.resumed;
      return true;
    });
    QCOMPARE(resumed.resumed, logged);
    QCOMPARE(seen_resumed, logged);
    QCOMPARE(lines_of(out / icet::eval::kAnswerLogName), size_t{64 + 1});
    // Answers, verdicts and scores are equal; rewards up to float32 rounding (the reward
    // model's batches are composed differently after a resume).
    std::string where;
    QVERIFY2(same(comparable(icet::eval::eval_summary_json(resumed)), comparable(icet::eval::eval_summary_json(whole)), "", where),
             where.c_str());

    // A third run has nothing left to answer; the report is recomputed from the log alone too.
    const auto again = icet::eval::run_evaluation(demo_plan(out));
    QCOMPARE(again.resumed, size_t{64});
    const auto loaded = icet::eval::load_evaluation(out, demo_plan(out).metrics);
    QCOMPARE(loaded.records.size(), size_t{64});
    QVERIFY2(same(icet::eval::eval_summary_json(loaded).at("runs"), icet::eval::eval_summary_json(whole).at("runs"), "", where),
             where.c_str());
  }

  void exportsAreWritten() {
    const fs::path out = root() / "whole";  // written by the test above
    const auto j = nlohmann::json::parse(std::ifstream(out / icet::eval::kMetricsJsonName));
    QCOMPARE(j.at("layers").size(), size_t{4});
    QCOMPARE(j.at("groups").size(), size_t{3});  // Early 1-8, Middle 9-16, Late 17-24
    const auto& l1 = j.at("runs").at(0).at("layers").at(0);
    QCOMPARE(l1.at("layer").get<int>(), 1);
    QVERIFY(l1.at("reward").at("lo").get<double>() <= l1.at("reward").at("value").get<double>());
    QVERIFY(l1.at("reward").at("value").get<double>() <= l1.at("reward").at("hi").get<double>());
    QCOMPARE(lines_of(out / icet::eval::kAnswersCsvName), size_t{64 + 1});
    std::ifstream csv(out / icet::eval::kMetricsCsvName);
    std::string header;
    std::getline(csv, header);
    QVERIFY(header.rfind("kind,adapter,layer,group,first,last,asr,", 0) == 0);
    std::ifstream html(out / icet::eval::kReportHtmlName);
    const std::string page((std::istreambuf_iterator<char>(html)), std::istreambuf_iterator<char>());
    QVERIFY(page.find("<svg") != std::string::npos);
    QVERIFY(page.find("Early") != std::string::npos);
    QVERIFY(page.find("<script") == std::string::npos);
  }

  void aChangedPlanIsRefusedUnlessRestarted() {
    const fs::path out = root() / "changed";
    icet::eval::run_evaluation(demo_plan(out));
    EvalPlan plan = demo_plan(out);
    plan.max_new_tokens = 12;
    ICET_EXPECT_INPUT_ERROR(icet::eval::run_evaluation(plan), {"meta.max_new_tokens", "12", "24", "restart"});
    plan = demo_plan(out);
    plan.reward.reset();
    ICET_EXPECT_INPUT_ERROR(icet::eval::run_evaluation(plan), {"meta.reward", "null"});
    plan = demo_plan(out);
    plan.max_new_tokens = 12;
    plan.restart = true;
    const auto fresh = icet::eval::run_evaluation(plan);
    QCOMPARE(fresh.resumed, size_t{0});
    // More layers on the same log: only the new ones are answered.
    plan.restart = false;
    plan.layers = "1,8,16,24";
    const auto more = icet::eval::run_evaluation(plan);
    QCOMPARE(more.resumed, size_t{64});
    QCOMPARE(more.records.size(), size_t{80});
  }

  void adaptersAreAnsweredBesideTheBase() {
    const fs::path adapter = root() / "adapter";
    icet::test::write_random_adapter(kDemo / "vlm", adapter, 7);
    const fs::path out = root() / "adapters";
    EvalPlan plan = demo_plan(out);
    plan.limit = 6;
    plan.adapters = {adapter};
    const auto outcome = icet::eval::run_evaluation(plan);
    QCOMPARE(outcome.metrics.runs.size(), size_t{2});
    QCOMPARE(outcome.metrics.runs.at(0).adapter, std::string());
    QCOMPARE(outcome.metrics.deltas.size(), size_t{1});
    size_t differ = 0, adapter_answers = 0;
    std::map<std::pair<int64_t, std::string>, std::string> base;
    for (const auto& r : outcome.records) {
      if (r.adapter.empty()) base[{r.layer, r.id}] = r.answer;
    }
    for (const auto& r : outcome.records) {
      if (r.adapter.empty()) continue;
      ++adapter_answers;
      differ += base.at({r.layer, r.id}) != r.answer ? 1 : 0;
    }
    QCOMPARE(adapter_answers, size_t{6 * 4});
    QVERIFY2(differ > 0, "the adapter's answers are its own");
    // The delta is adapter minus base, per layer.
    const auto& d = outcome.metrics.deltas.front().layers.front().metrics.reward;
    const auto& b = outcome.metrics.runs.at(0).layers.front().metrics.reward;
    const auto& a = outcome.metrics.runs.at(1).layers.front().metrics.reward;
    QVERIFY(std::abs(d.value - (a.value - b.value)) < 1e-9);

    // The adapter's weights change (a training run went on): its old answers are refused.
    icet::test::write_random_adapter(kDemo / "vlm", adapter, 8);
    ICET_EXPECT_INPUT_ERROR(icet::eval::run_evaluation(plan), {"meta.adapters", "restart"});

    // A second adapter added to the log: only its answers are produced, and the header keeps
    // its fingerprint for later resumes.
    const fs::path second = root() / "adapter2";
    icet::test::write_random_adapter(kDemo / "vlm", second, 9);
    plan.adapters = {second};
    const auto added = icet::eval::run_evaluation(plan);
    QCOMPARE(added.resumed, size_t{6 * 4});  // the base answers
    QCOMPARE(added.meta.at("adapters").size(), size_t{2});
    const auto header = icet::eval::read_answer_log(out / icet::eval::kAnswerLogName).meta;
    QCOMPARE(header.at("adapters").size(), size_t{2});
  }

  void badInputIsRefusedBeforeAnyModelTime() {
    const fs::path dir = root() / "badset";
    fs::create_directories(dir);
    std::ofstream(dir / "set.jsonl") << "{\"id\":\"a\",\"image\":\"missing.png\",\"prompt\":\"What colour?\",\"expected\":\"red\"}" << "\n";
    EvalPlan plan = demo_plan(root() / "bad-out");
    plan.set = dir / "set.jsonl";
    plan.model = root() / "no-model-here";  // the set is refused first: no model is opened
    ICET_EXPECT_INPUT_ERROR(icet::eval::run_evaluation(plan), {"item a", "missing.png", "does not exist"});
    plan = demo_plan(root() / "bad-out");
    plan.layers = "0,30";
    ICET_EXPECT_INPUT_ERROR(icet::eval::run_evaluation(plan), {"30"});
    ICET_EXPECT_INPUT_ERROR(icet::eval::load_evaluation(root() / "nothing-here"), {"answers.jsonl", "missing"});
  }

  // `icet eval` on the demo world's held-out set gives `icet demo report`'s numbers: both go
  // through run_evaluation with the demo guard and reward model.
  void cliEvalMatchesDemoReport() {
    const QString home = m_tmp.path();
    const QString demo = QString::fromStdString(kDemo.string());
    const auto report = icet::test::run_cli({QStringLiteral("--no-log-file"), QStringLiteral("demo"), QStringLiteral("report"),
                                             QStringLiteral("--dir"), demo, QStringLiteral("--layers"),
                                             QStringLiteral("1,12"), QStringLiteral("--limit"), QStringLiteral("12"),
                                             QStringLiteral("--json")},
                                            home);
    QVERIFY2(report.code == 0, report.err.constData());
    const QString out = m_tmp.filePath(QStringLiteral("cli"));
    const auto eval = icet::test::run_cli(
        {QStringLiteral("--no-log-file"), QStringLiteral("eval"), QStringLiteral("--model"), demo + QStringLiteral("/vlm"),
         QStringLiteral("--set"), demo + QStringLiteral("/sets/heldout.jsonl"), QStringLiteral("--reward"),
         demo + QStringLiteral("/reward"), QStringLiteral("--layers"), QStringLiteral("1,12"), QStringLiteral("--max-prompts"),
         QStringLiteral("12"), QStringLiteral("--device"), QStringLiteral("cpu"), QStringLiteral("--out"), out,
         QStringLiteral("--json")},
        home);
    QVERIFY2(eval.code == 0, eval.err.constData());
    const auto r = nlohmann::json::parse(report.out.toStdString());
    const auto e = nlohmann::json::parse(eval.out.toStdString());
    for (const char* key : {"asr_by_layer", "refusal_by_layer", "benign_accuracy_by_layer", "reward_by_layer",
                            "task_accuracy_by_layer", "runs", "groups", "judge_id", "default_layer"}) {
      QVERIFY2(r.contains(key) && e.contains(key), key);
      QVERIFY2(r.at(key) == e.at(key), (std::string(key) + ": " + r.at(key).dump() + " vs " + e.at(key).dump()).c_str());
    }
    QCOMPARE(e.at("asr_by_layer").size(), size_t{3});  // 1, 12 and the default 23

    // --report-only recomputes from the log with other interval settings, without a model.
    const auto again = icet::test::run_cli({QStringLiteral("--no-log-file"), QStringLiteral("eval"),
                                            QStringLiteral("--report-only"), QStringLiteral("--out"), out,
                                            QStringLiteral("--resamples"), QStringLiteral("0")},
                                           home);
    QVERIFY2(again.code == 0, again.err.constData());
    QVERIFY2(again.out.contains("Early") && again.out.contains("base model"), again.out.constData());
  }
};

QTEST_GUILESS_MAIN(TestEvalRun)
#include "test_eval_run.moc"
