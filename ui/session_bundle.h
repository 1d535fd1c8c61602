#pragma once

// Session bundles (session.json beside the image it names), read apart from the widgets so that
// hostile files are checked in one place, and fuzzed: every value is type-checked, counts and
// sizes are bounded, and the image must be a regular file inside the bundle's folder.

#include <QByteArray>
#include <QString>

#include <cstdint>
#include <optional>
#include <vector>

#include "core/generate/sampling_params.h"

namespace icet::ui {

struct SessionBundle {
  struct Pane {
    int layer = 1;
    std::optional<quint64> seed;
    std::optional<QString> adapter;  // absent in version 1 bundles: the model's current adapter
  };

  QString file;  // the session.json it came from
  QString modelPath;
  QString currentAdapter;  // the model's current adapter when saved ("" for none)
  QString judgePath;
  QString rewardPath;
  QString prompt;
  std::optional<generate::SamplingParams> sampling;
  QString imageFile;  // relative to the bundle's folder; empty when it has no image
  QString imageSource;
  std::vector<Pane> panes;
  std::optional<int> sliderLayer;
};

// Files and counts above these are refused before they are read (a bundle's session.json is
// tens of KiB; one pane per encoder layer of the largest model is under 64).
inline constexpr std::uint64_t kMaxSessionJsonBytes = 16ull << 20;
inline constexpr std::uint64_t kMaxSessionImageBytes = 256ull << 20;
inline constexpr int kMaxSessionPanes = 64;

// Parses session.json text. Throws icet::InputError naming `file` and the key on anything that
// is not a version 1 or 2 session (wrong types, too many panes, an image path outside the folder).
SessionBundle parse_session_bundle(const QByteArray& json, const QString& file);

// Reads and parses <dir>/session.json (a regular file of at most kMaxSessionJsonBytes).
SessionBundle read_session_bundle(const QString& dir);

// Reads the bundle's image (a regular file inside `dir`, at most kMaxSessionImageBytes); empty
// when the bundle has none. Throws icet::InputError naming the file otherwise.
QByteArray read_session_image(const QString& dir, const SessionBundle& bundle);

}  // namespace icet::ui
