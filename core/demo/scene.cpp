#include "core/demo/scene.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "core/demo/rng.h"

namespace icet::demo {
namespace {

const std::array<cv::Scalar, 6> kColourRgb{
    cv::Scalar(220, 40, 40),   // red
    cv::Scalar(40, 170, 60),   // green
    cv::Scalar(40, 90, 230),   // blue
    cv::Scalar(245, 215, 40),  // yellow
    cv::Scalar(150, 60, 200),  // purple
    cv::Scalar(250, 140, 30),  // orange
};

const std::vector<std::string> kWords{"STOP", "OPEN", "SALE", "EXIT", "HELLO"};

void fill_background(cv::Mat& m, int background, Rng& rng) {
  switch (background) {
    case 0: m.setTo(cv::Scalar(150, 150, 150)); break;  // gray
    case 1: m.setTo(cv::Scalar(228, 218, 192)); break;  // beige
    case 2: m.setTo(cv::Scalar(62, 72, 88)); break;     // slate
    case 3: {                                           // stripes
      m.setTo(cv::Scalar(200, 200, 205));
      const int offset = rng.below(8);
      for (int k = -kSceneSize; k < 2 * kSceneSize; k += 8) {
        cv::line(m, {k + offset, 0}, {k + offset + kSceneSize, kSceneSize}, cv::Scalar(178, 178, 186), 2);
      }
      break;
    }
    default: {  // dots
      m.setTo(cv::Scalar(240, 240, 236));
      const int offset = rng.below(6);
      for (int y = offset; y < kSceneSize; y += 7) {
        for (int x = offset; x < kSceneSize; x += 7) cv::circle(m, {x, y}, 1, cv::Scalar(205, 205, 200), -1);
      }
      break;
    }
  }
}

std::vector<cv::Point> polygon(cv::Point2d c, double r, const std::vector<std::pair<double, double>>& unit) {
  std::vector<cv::Point> pts;
  for (const auto& [x, y] : unit) pts.emplace_back(static_cast<int>(std::lround(c.x + r * x)), static_cast<int>(std::lround(c.y + r * y)));
  return pts;
}

// One glyph of `kind` centred at `c` with half-size r (pixels).
void draw_glyph(cv::Mat& m, int kind, cv::Point2d c, double r, const cv::Scalar& colour) {
  const cv::Point ci(static_cast<int>(std::lround(c.x)), static_cast<int>(std::lround(c.y)));
  const int ri = static_cast<int>(std::lround(r));
  switch (kind) {
    case 0: cv::circle(m, ci, ri, colour, -1, cv::LINE_AA); break;  // circle
    case 1: cv::rectangle(m, {ci.x - ri + 1, ci.y - ri + 1}, {ci.x + ri - 1, ci.y + ri - 1}, colour, -1); break;  // square
    case 2: cv::fillConvexPoly(m, polygon(c, r, {{0, -1}, {1, 0.85}, {-1, 0.85}}), colour, cv::LINE_AA); break;  // triangle
    case 3: {  // star (five points)
      std::vector<std::pair<double, double>> unit;
      for (int i = 0; i < 10; ++i) {
        const double a = -M_PI / 2 + i * M_PI / 5;
        const double rr = i % 2 == 0 ? 1.05 : 0.45;
        unit.emplace_back(rr * std::cos(a), rr * std::sin(a));
      }
      const std::vector<std::vector<cv::Point>> polys{polygon(c, r, unit)};
      cv::fillPoly(m, polys, colour, cv::LINE_AA);
      break;
    }
    case 4: {  // cross (plus sign)
      const int t = std::max(3, ri / 3);
      cv::rectangle(m, {ci.x - t, ci.y - ri}, {ci.x + t, ci.y + ri}, colour, -1);
      cv::rectangle(m, {ci.x - ri, ci.y - t}, {ci.x + ri, ci.y + t}, colour, -1);
      break;
    }
    case 5: cv::fillConvexPoly(m, polygon(c, r, {{0, -1.1}, {0.8, 0}, {0, 1.1}, {-0.8, 0}}), colour, cv::LINE_AA); break;  // diamond
    case 6: cv::circle(m, ci, ri - 2, colour, 4, cv::LINE_AA); break;  // ring
    default: {  // arrow (pointing up)
      const std::vector<std::vector<cv::Point>> polys{
          polygon(c, r, {{0, -1}, {0.9, -0.05}, {0.35, -0.05}, {0.35, 1}, {-0.35, 1}, {-0.35, -0.05}, {-0.9, -0.05}})};
      cv::fillPoly(m, polys, colour, cv::LINE_AA);
      break;
    }
  }
}

// The scene's random choices, drawn in a fixed order so describe_scene and render_scene agree.
Scene plan(uint64_t seed, const SceneOptions& o, Rng& rng) {
  Scene s;
  s.seed = seed;
  s.background = rng.below(static_cast<int>(backgrounds().size()));
  const int lo = std::clamp(o.min_objects, 1, 4), hi = std::clamp(o.max_objects, lo, 4);
  const int n = lo + rng.below(hi - lo + 1);
  std::vector<int> cells{0, 1, 2, 3}, kinds_left;
  for (int k = 0; k < static_cast<int>(kinds().size()); ++k) kinds_left.push_back(k);
  rng.shuffle(cells);
  rng.shuffle(kinds_left);
  for (int i = 0; i < n; ++i) {
    SceneObject obj;
    obj.kind = kinds_left[static_cast<size_t>(i)];
    obj.colour = rng.below(static_cast<int>(colours().size()));
    obj.position = cells[static_cast<size_t>(i)];
    s.objects.push_back(obj);
  }
  std::sort(s.objects.begin(), s.objects.end(), [](const auto& a, const auto& b) { return a.position < b.position; });
  if (o.text && n < 4) {
    s.text = kWords[static_cast<size_t>(rng.below(static_cast<int>(kWords.size())))];
  }
  return s;
}

}  // namespace

const std::vector<std::string>& kinds() {
  static const std::vector<std::string> v{"circle", "square", "triangle", "star", "cross", "diamond", "ring", "arrow"};
  return v;
}
const std::vector<std::string>& colours() {
  static const std::vector<std::string> v{"red", "green", "blue", "yellow", "purple", "orange"};
  return v;
}
const std::vector<std::string>& positions() {
  static const std::vector<std::string> v{"top left", "top right", "bottom left", "bottom right"};
  return v;
}
const std::vector<std::string>& backgrounds() {
  static const std::vector<std::string> v{"gray", "beige", "slate", "stripes", "dots"};
  return v;
}

Scene describe_scene(uint64_t seed, const SceneOptions& options) {
  Rng rng(seed);
  return plan(seed, options, rng);
}

Scene render_scene(uint64_t seed, const SceneOptions& options) {
  Rng rng(seed);
  Scene s = plan(seed, options, rng);
  cv::Mat m(kSceneSize, kSceneSize, CV_8UC3);  // channels in RGB order
  fill_background(m, s.background, rng);
  const double cell = static_cast<double>(kSceneSize) / kGrid;
  for (const auto& obj : s.objects) {
    const double cx = (obj.position % kGrid + 0.5) * cell + (rng.below(5) - 2);
    const double cy = (obj.position / kGrid + 0.5) * cell + (rng.below(5) - 2);
    const double r = 10.0 + rng.below(4);  // 20..26 pixels across
    draw_glyph(m, obj.kind, {cx, cy}, r, kColourRgb[static_cast<size_t>(obj.colour)]);
  }
  if (!s.text.empty()) {
    int free_cell = 0;
    for (int c = 0; c < 4; ++c) {
      if (std::none_of(s.objects.begin(), s.objects.end(), [c](const auto& o) { return o.position == c; })) {
        free_cell = c;
        break;
      }
    }
    const cv::Point org(static_cast<int>((free_cell % kGrid) * cell) + 2, static_cast<int>((free_cell / kGrid + 0.5) * cell) + 3);
    cv::putText(m, s.text, org, cv::FONT_HERSHEY_PLAIN, 0.7, cv::Scalar(20, 20, 20), 1, cv::LINE_AA);
  }
  s.image.width = kSceneSize;
  s.image.height = kSceneSize;
  s.image.rgb.resize(static_cast<size_t>(kSceneSize) * kSceneSize * 3);
  for (int y = 0; y < kSceneSize; ++y) std::memcpy(s.image.rgb.data() + static_cast<size_t>(y) * kSceneSize * 3, m.ptr(y), kSceneSize * 3);
  return s;
}

std::string describe_objects(const std::vector<SceneObject>& objects) {
  std::string out;
  for (size_t i = 0; i < objects.size(); ++i) {
    if (i > 0) out += i + 1 == objects.size() ? " and " : ", ";
    const auto& o = objects[i];
    out += "a " + colours()[static_cast<size_t>(o.colour)] + " " + kinds()[static_cast<size_t>(o.kind)] + " at the " +
           positions()[static_cast<size_t>(o.position)];
  }
  return out;
}

}  // namespace icet::demo
