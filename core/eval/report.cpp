#include "core/eval/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/eval/csv.h"

namespace icet::eval {
namespace {

std::string num(double v, const char* format = "%.9g") {
  if (!std::isfinite(v)) return "";
  char buf[48];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

bool is_rate(Metric m) { return m != Metric::reward; }

// A value as shown in the HTML: rates in percent (one decimal), rewards with three decimals.
std::string shown(double v, Metric m) {
  if (!std::isfinite(v)) return "n/a";
  return is_rate(m) ? num(100.0 * v, "%.1f") : num(v, "%.3f");
}

std::string shown(const Estimate& e, Metric m) {
  if (!e.measured()) return "n/a";
  std::string s = shown(e.value, m);
  if (std::isfinite(e.lo) && std::isfinite(e.hi)) s += " [" + shown(e.lo, m) + ", " + shown(e.hi, m) + "]";
  return s;
}

std::string adapter_name(const std::string& a) { return a.empty() ? "base" : a; }

void csv_row(std::string& out, const char* kind, const std::string& adapter, const std::string& layer,
             const std::string& group, const std::string& first, const std::string& last, const MetricValues& v) {
  out += std::string(kind) + "," + csv_escape(adapter) + "," + layer + "," + csv_escape(group) + "," + first + "," + last;
  for (Metric m : kMetrics) {
    const Estimate& e = v.at(m);
    out += "," + (e.measured() ? num(e.value) : "") + "," + (e.measured() ? num(e.lo) : "") + "," +
           (e.measured() ? num(e.hi) : "") + "," + std::to_string(e.n);
  }
  out += "\n";
}

const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"};

std::string chart(const MetricsReport& r, Metric m) {
  // Layout (pixels): plot area x in [left, left + pw], y in [top, top + ph].
  const double width = 720, height = 300, left = 60, right = 150, top = 20, bottom = 40;
  const double pw = width - left - right, ph = height - top - bottom;
  int64_t lmin = INT64_MAX, lmax = INT64_MIN;
  double vmin = is_rate(m) ? 0.0 : INFINITY, vmax = is_rate(m) ? 1.0 : -INFINITY;
  for (const auto& run : r.runs) {
    for (const auto& row : run.layers) {
      const Estimate& e = row.metrics.at(m);
      if (!e.measured()) continue;
      lmin = std::min(lmin, row.layer), lmax = std::max(lmax, row.layer);
      for (double v : {e.value, e.lo, e.hi}) {
        if (std::isfinite(v)) vmin = std::min(vmin, v), vmax = std::max(vmax, v);
      }
    }
  }
  if (lmin > lmax) return {};
  if (!is_rate(m)) {
    const double pad = vmax > vmin ? 0.05 * (vmax - vmin) : 0.5;
    vmin -= pad, vmax += pad;
  }
  const double lspan = lmax > lmin ? static_cast<double>(lmax - lmin) : 1.0;
  auto x = [&](double layer) { return left + (lmax > lmin ? (layer - static_cast<double>(lmin)) / lspan * pw : pw / 2); };
  auto y = [&](double v) { return top + ph - (v - vmin) / (vmax - vmin) * ph; };
  auto f = [](double v) { return num(v, "%.1f"); };

  std::string s = "<svg role=\"img\" width=\"" + f(width) + "\" height=\"" + f(height) +
                  "\" viewBox=\"0 0 " + f(width) + " " + f(height) + "\">\n<title>" + html_escape(metric_label(m)) +
                  " by layer</title>\n";
  // Group bands.
  for (size_t g = 0; g < r.groups.size(); ++g) {
    const auto& grp = r.groups[g];
    const double a = std::max(static_cast<double>(lmin), static_cast<double>(grp.first) - 0.5);
    const double b = std::min(static_cast<double>(lmax), static_cast<double>(grp.last) + 0.5);
    if (a > b) continue;
    s += "<rect x=\"" + f(x(a)) + "\" y=\"" + f(top) + "\" width=\"" + f(std::max(0.0, x(b) - x(a))) + "\" height=\"" + f(ph) +
         "\" fill=\"" + (g % 2 ? "#f4f4f4" : "#e8eef7") + "\"/>\n";
    s += "<text x=\"" + f((x(a) + x(b)) / 2) + "\" y=\"" + f(top + 12) + "\" class=\"band\">" + html_escape(grp.name) + "</text>\n";
  }
  // Axes and ticks.
  s += "<line x1=\"" + f(left) + "\" y1=\"" + f(top + ph) + "\" x2=\"" + f(left + pw) + "\" y2=\"" + f(top + ph) + "\" class=\"axis\"/>\n";
  s += "<line x1=\"" + f(left) + "\" y1=\"" + f(top) + "\" x2=\"" + f(left) + "\" y2=\"" + f(top + ph) + "\" class=\"axis\"/>\n";
  for (int t = 0; t <= 4; ++t) {
    const double v = vmin + (vmax - vmin) * t / 4.0;
    s += "<line x1=\"" + f(left - 4) + "\" y1=\"" + f(y(v)) + "\" x2=\"" + f(left + pw) + "\" y2=\"" + f(y(v)) + "\" class=\"grid\"/>\n";
    s += "<text x=\"" + f(left - 6) + "\" y=\"" + f(y(v) + 4) + "\" class=\"ytick\">" + shown(v, m) + "</text>\n";
  }
  const int64_t step = std::max<int64_t>(1, (lmax - lmin) / 16 + 1);
  for (int64_t l = lmin; l <= lmax; l += step) {
    s += "<text x=\"" + f(x(static_cast<double>(l))) + "\" y=\"" + f(top + ph + 16) + "\" class=\"xtick\">" + std::to_string(l) + "</text>\n";
  }
  s += "<text x=\"" + f(left + pw / 2) + "\" y=\"" + f(height - 6) + "\" class=\"xtick\">image-encoder exit layer</text>\n";
  // Series: whiskers, line, points; legend.
  for (size_t a = 0; a < r.runs.size(); ++a) {
    const char* colour = kColours[a % std::size(kColours)];
    std::string path;
    for (const auto& row : r.runs[a].layers) {
      const Estimate& e = row.metrics.at(m);
      if (!e.measured()) continue;
      const double px = x(static_cast<double>(row.layer));
      if (std::isfinite(e.lo) && std::isfinite(e.hi)) {
        s += "<path d=\"M" + f(px) + " " + f(y(e.lo)) + "V" + f(y(e.hi)) + "M" + f(px - 3) + " " + f(y(e.lo)) + "h6M" + f(px - 3) +
             " " + f(y(e.hi)) + "h6\" stroke=\"" + colour + "\" class=\"ci\"/>\n";
      }
      path += (path.empty() ? "M" : "L") + f(px) + " " + f(y(e.value));
    }
    if (!path.empty()) s += "<path d=\"" + path + "\" stroke=\"" + colour + "\" class=\"line\"/>\n";
    for (const auto& row : r.runs[a].layers) {
      const Estimate& e = row.metrics.at(m);
      if (!e.measured()) continue;
      s += "<circle cx=\"" + f(x(static_cast<double>(row.layer))) + "\" cy=\"" + f(y(e.value)) + "\" r=\"3\" fill=\"" + colour +
           "\"><title>" + html_escape(adapter_name(r.runs[a].adapter)) + ", layer " + std::to_string(row.layer) + ": " +
           shown(e, m) + "</title></circle>\n";
    }
    const double ly = top + 14 + 18.0 * static_cast<double>(a);
    s += "<rect x=\"" + f(left + pw + 12) + "\" y=\"" + f(ly - 9) + "\" width=\"12\" height=\"12\" fill=\"" + colour + "\"/>\n";
    s += "<text x=\"" + f(left + pw + 30) + "\" y=\"" + f(ly + 1) + "\" class=\"legend\">" + html_escape(adapter_name(r.runs[a].adapter)) + "</text>\n";
  }
  return s + "</svg>\n";
}

}  // namespace

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string metrics_csv(const MetricsReport& r) {
  std::string out = "kind,adapter,layer,group,first,last";
  for (Metric m : kMetrics) {
    const std::string k = metric_key(m);
    out += "," + k + "," + k + "_lo," + k + "_hi," + k + "_n";
  }
  out += "\n";
  auto emit = [&](const std::vector<AdapterMetrics>& list, const char* layer_kind, const char* group_kind) {
    for (const auto& run : list) {
      for (const auto& row : run.layers) csv_row(out, layer_kind, run.adapter, std::to_string(row.layer), "", "", "", row.metrics);
      for (const auto& g : run.groups) {
        csv_row(out, group_kind, run.adapter, "", g.group.name, std::to_string(g.group.first), std::to_string(g.group.last), g.metrics);
      }
    }
  };
  emit(r.runs, "layer", "group");
  emit(r.deltas, "delta_layer", "delta_group");
  return out;
}

std::string html_report(const MetricsReport& r, const ReportInfo& info) {
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" + html_escape(info.title) +
                  "</title>\n<style>\n"
                  "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
                  "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f0f0f0}"
                  "td.k,th.k{text-align:left}.axis{stroke:#444}.grid{stroke:#ddd}.line{fill:none;stroke-width:2}"
                  ".ci{fill:none;stroke-width:1}.ytick{font-size:11px;text-anchor:end}.xtick{font-size:11px;text-anchor:middle}"
                  ".band{font-size:11px;text-anchor:middle;fill:#666}.legend{font-size:12px}.note{color:#666;font-size:90%}\n"
                  "</style>\n</head>\n<body>\n<h1>" + html_escape(info.title) + "</h1>\n";
  if (!info.details.empty()) {
    h += "<table>\n";
    for (const auto& [k, v] : info.details) h += "<tr><th class=\"k\">" + html_escape(k) + "</th><td class=\"k\">" + html_escape(v) + "</td></tr>\n";
    h += "</table>\n";
  }
  h += "<p class=\"note\">" + std::to_string(r.prompts) + " prompts. Intervals: " + num(100.0 * r.options.confidence, "%g") +
       "% percentile bootstrap over prompts, " + std::to_string(r.options.resamples) + " resamples, seed " +
       std::to_string(r.options.seed) + ". Rates in percent. Groups: ";
  for (size_t g = 0; g < r.groups.size(); ++g) {
    h += (g ? ", " : "") + html_escape(r.groups[g].name) + " " + std::to_string(r.groups[g].first) + "-" + std::to_string(r.groups[g].last);
  }
  h += ".</p>\n";

  std::vector<Metric> measured;
  for (Metric m : kMetrics) {
    bool any = false;
    for (const auto& run : r.runs) {
      for (const auto& row : run.layers) any = any || row.metrics.at(m).measured();
    }
    if (any) measured.push_back(m);
  }

  h += "<h2>Layer groups</h2>\n<table>\n<tr><th class=\"k\">Group</th><th class=\"k\">Metric</th>";
  for (const auto& run : r.runs) h += "<th>" + html_escape(adapter_name(run.adapter)) + "</th>";
  for (const auto& d : r.deltas) h += "<th>&Delta; " + html_escape(adapter_name(d.adapter)) + " &minus; base</th>";
  h += "</tr>\n";
  for (size_t g = 0; g < r.groups.size(); ++g) {
    for (Metric m : measured) {
      h += "<tr><td class=\"k\">" + html_escape(r.groups[g].name) + " (" + std::to_string(r.groups[g].first) + "-" +
           std::to_string(r.groups[g].last) + ")</td><td class=\"k\">" + html_escape(metric_label(m)) + "</td>";
      for (const auto& run : r.runs) h += "<td>" + shown(run.groups[g].metrics.at(m), m) + "</td>";
      for (const auto& d : r.deltas) h += "<td>" + shown(d.groups[g].metrics.at(m), m) + "</td>";
      h += "</tr>\n";
    }
  }
  h += "</table>\n";

  for (Metric m : measured) {
    h += "<h2>" + html_escape(metric_label(m)) + " by layer</h2>\n" + chart(r, m);
  }

  h += "<h2>Per layer</h2>\n<table>\n<tr><th>Layer</th><th class=\"k\">Metric</th>";
  for (const auto& run : r.runs) h += "<th>" + html_escape(adapter_name(run.adapter)) + "</th>";
  for (const auto& d : r.deltas) h += "<th>&Delta; " + html_escape(adapter_name(d.adapter)) + " &minus; base</th>";
  h += "</tr>\n";
  std::vector<int64_t> layers;
  for (const auto& run : r.runs) {
    for (const auto& row : run.layers) layers.push_back(row.layer);
  }
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  auto find = [](const AdapterMetrics& run, int64_t layer) -> const MetricValues* {
    for (const auto& row : run.layers) {
      if (row.layer == layer) return &row.metrics;
    }
    return nullptr;
  };
  for (int64_t l : layers) {
    for (Metric m : measured) {
      h += "<tr><td>" + std::to_string(l) + "</td><td class=\"k\">" + html_escape(metric_label(m)) + "</td>";
      for (const auto& run : r.runs) {
        const MetricValues* v = find(run, l);
        h += "<td>" + (v ? shown(v->at(m), m) : std::string("n/a")) + "</td>";
      }
      for (const auto& d : r.deltas) {
        const MetricValues* v = find(d, l);
        h += "<td>" + (v ? shown(v->at(m), m) : std::string("n/a")) + "</td>";
      }
      h += "</tr>\n";
    }
  }
  h += "</table>\n</body>\n</html>\n";
  return h;
}

}  // namespace icet::eval
