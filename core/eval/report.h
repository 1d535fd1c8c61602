#pragma once

// Exports of evaluation metrics (torch-free): a CSV table and a self-contained HTML report
// (inline CSS and SVG, no scripts, fonts, images or links to anything outside the file; every
// text from the log or the caller is HTML-escaped).

#include <string>
#include <utility>
#include <vector>

#include "core/eval/metrics.h"

namespace icet::eval {

// One row per (kind, adapter, layer or group):
//   kind,adapter,layer,group,first,last,<metric>,<metric>_lo,<metric>_hi,<metric>_n for each of
//   asr, refusal, over_refusal, accuracy, reward
// kind: "layer", "group", "delta_layer", "delta_group" (delta = adapter - base). Rates are
// fractions (0..1); unmeasured values are empty cells.
std::string metrics_csv(const MetricsReport& report);

struct ReportInfo {
  std::string title = "ICET evaluation";
  // Shown as a two-column table under the title (model, prompt set, judge, reward model, ...).
  std::vector<std::pair<std::string, std::string>> details;
};

// The HTML page: details; for each measured metric a per-layer chart (one line per adapter,
// 95% interval whiskers, group bands Early/Middle/Late shaded); the group table (the paper's
// Table 2: base, each adapter, and the delta, value [lo, hi]); the per-layer table.
// Rates are shown in percent, rewards as they are.
std::string html_report(const MetricsReport& report, const ReportInfo& info = {});

// & < > " ' escaped for HTML text and attribute values.
std::string html_escape(const std::string& text);

}  // namespace icet::eval
