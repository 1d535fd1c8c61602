#pragma once

// The demo world's scenes: small RGB images with 1-3 large, clear glyphs on a plain or lightly
// patterned background, deterministic by seed (OpenCV stays in scene.cpp).
//
// Layout: the 64x64 image is split into four quadrants ("top left", "top right", "bottom left",
// "bottom right"), 32x32 pixels each = 2x2 patches of 16 pixels, so a vision tower with patch 16
// sees every object in exactly four patches. An object fills most of its quadrant, jittered by a
// few pixels. Kinds are unique within a scene, so "the star" always names one object.

#include <cstdint>
#include <string>
#include <vector>

#include "core/vision/image.h"

namespace icet::demo {

inline constexpr int kSceneSize = 64;
inline constexpr int kGrid = 2;  // quadrants per side

const std::vector<std::string>& kinds();      // "circle", "square", ... (>= 8)
const std::vector<std::string>& colours();    // "red", "green", ... (>= 6)
const std::vector<std::string>& positions();  // "top left", "top right", "bottom left", "bottom right"
const std::vector<std::string>& backgrounds();  // "gray", "beige", "slate", "stripes", "dots"

struct SceneObject {
  int kind = 0;      // index into kinds()
  int colour = 0;    // index into colours()
  int position = 0;  // index into positions() (row-major quadrant)
};

struct SceneOptions {
  int min_objects = 1;
  int max_objects = 3;
  bool text = false;  // draw one short word in an empty quadrant (typographic text)
};

struct Scene {
  uint64_t seed = 0;
  int background = 0;  // index into backgrounds()
  std::vector<SceneObject> objects;  // ordered by position
  std::string text;                  // drawn word, empty when none
  vision::Image image;               // kSceneSize x kSceneSize RGB
};

// Draws the scene of `seed`: same seed, same objects and same pixels.
Scene render_scene(uint64_t seed, const SceneOptions& options = {});

// Only the description (no pixels): what render_scene(seed, options) would draw.
Scene describe_scene(uint64_t seed, const SceneOptions& options = {});

// "a red circle at the top left and a blue star at the bottom right"
std::string describe_objects(const std::vector<SceneObject>& objects);

}  // namespace icet::demo
