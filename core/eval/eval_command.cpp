#include "core/eval/eval_command.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <sstream>

#include "core/base/error.h"
#include "core/base/strings.h"
#include "core/safety/judge_factory.h"

namespace icet::eval {
namespace {

bool is_rate(Metric m) { return m != Metric::reward; }

// "12.5 [8.3, 16.7]" (rates in %), "-0.412 [-0.50, -0.31]" (rewards), "-" unmeasured.
std::string cell(const nlohmann::json& e, Metric m) {
  if (e.is_null() || e.at("value").is_null()) return "-";
  const double k = is_rate(m) ? 100.0 : 1.0;
  const char* f = is_rate(m) ? "%.1f" : "%.3f";
  auto num = [&](const nlohmann::json& v) {
    if (v.is_null()) return std::string("?");
    char buf[32];
    std::snprintf(buf, sizeof buf, f, k * v.get<double>());
    return std::string(buf);
  };
  std::string s = num(e.at("value"));
  if (!e.at("lo").is_null()) s += " [" + num(e.at("lo")) + ", " + num(e.at("hi")) + "]";
  return s;
}

std::string run_title(const std::string& adapter, const char* what) {
  return std::string(what) + (adapter.empty() ? "base model" : "adapter " + adapter);
}

}  // namespace

std::string format_eval_tables(const nlohmann::json& summary) {
  std::ostringstream out;
  auto table = [&](const nlohmann::json& run, const char* what) {
    // Columns: the metrics measured somewhere in this run.
    std::vector<Metric> cols;
    for (Metric m : kMetrics) {
      bool any = false;
      for (const char* part : {"layers", "groups"}) {
        for (const auto& row : run.at(part)) any = any || !row.at(metric_key(m)).is_null();
      }
      if (any) cols.push_back(m);
    }
    out << run_title(run.at("adapter").get<std::string>(), what) << "\n";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%-8s", "layer");
    out << buf;
    for (Metric m : cols) {
      std::snprintf(buf, sizeof buf, "  %-22s", (std::string(metric_label(m)) + (is_rate(m) ? " %" : "")).c_str());
      out << buf;
    }
    out << "\n";
    auto row = [&](const std::string& name, const nlohmann::json& r) {
      std::snprintf(buf, sizeof buf, "%-8s", name.c_str());
      out << buf;
      for (Metric m : cols) {
        std::snprintf(buf, sizeof buf, "  %-22s", cell(r.at(metric_key(m)), m).c_str());
        out << buf;
      }
      out << "\n";
    };
    for (const auto& r : run.at("layers")) row(std::to_string(r.at("layer").get<int64_t>()), r);
    for (const auto& r : run.at("groups")) row(r.at("name").get<std::string>(), r);
    out << "\n";
  };
  for (const auto& run : summary.at("runs")) table(run, "");
  for (const auto& run : summary.at("deltas")) table(run, "difference: ");
  return out.str();
}

nlohmann::json run_eval_command(const EvalCommand& cmd, std::ostream& progress_out, const std::atomic<bool>* cancel) {
  EvalOutcome outcome;
  if (cmd.report_only) {
    if (!cmd.plan.out) throw InputError("eval --report-only: give --out DIR (a folder an earlier `icet eval --out` wrote)");
    outcome = load_evaluation(*cmd.plan.out, cmd.plan.metrics);
    write_exports(outcome, *cmd.plan.out);
  } else {
    if (!cmd.plan.judge && !safety::judge_beside(cmd.plan.model)) {
      throw InputError(describe("eval: --judge", "a Llama Guard judge folder", "none given and no guard/ beside the model",
                                "Pass --judge DIR (e.g. models/demo/guard), or --judge placeholder for sets whose "
                                "unsafe answers carry the \"[unsafe step]\" marker."));
    }
    auto last = std::chrono::steady_clock::time_point{};
    auto progress = [&](const EvalProgress& p) {
      if (!cmd.progress_bar) return true;
      const auto now = std::chrono::steady_clock::now();
      if (now - last < std::chrono::milliseconds(200) && p.done != p.total) return true;
      last = now;
      progress_out << "\r[eval] " << p.stage;
      if (p.total > 0) {
        progress_out << " " << p.done << "/" << p.total;
        if (p.resumed > 0) progress_out << " (" << p.resumed << " resumed)";
        progress_out << " ETA " << format_eta(p.eta_s);
      }
      progress_out << "        " << std::flush;
      return true;
    };
    try {
      outcome = run_evaluation(cmd.plan, progress, cancel);
    } catch (const Cancelled&) {
      if (cmd.progress_bar) progress_out << "\n";
      if (cmd.plan.out) {
        progress_out << "[eval] stopped; the answers so far are in " << (*cmd.plan.out / kAnswerLogName).string()
                     << ": run the same command again to continue\n";
      }
      throw;
    }
    if (cmd.progress_bar) progress_out << "\n";
  }
  nlohmann::json j = eval_summary_json(outcome);
  double mean = 0;
  size_t counted = 0;
  if (j.contains("asr_by_layer")) {
    for (const auto& [layer, v] : j.at("asr_by_layer").items()) {
      mean += v.get<double>();
      ++counted;
    }
  }
  j["mean_asr"] = counted ? nlohmann::json(mean / static_cast<double>(counted)) : nlohmann::json(nullptr);
  j["device"] = outcome.meta.value("device", "");
  j["dtype"] = outcome.meta.value("dtype", "");
  j["out"] = outcome.out ? outcome.out->string() : std::string();
  nlohmann::json files = nlohmann::json::array();
  if (outcome.out) {
    for (const char* name : {kAnswerLogName, kMetricsJsonName, kMetricsCsvName, kAnswersCsvName, kReportHtmlName}) {
      files.push_back((*outcome.out / name).string());
    }
  }
  j["files"] = files;
  return j;
}

}  // namespace icet::eval
