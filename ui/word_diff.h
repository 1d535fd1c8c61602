#pragma once

// Word-level diff of two answers (longest common subsequence over whitespace-separated words).

#include <QColor>
#include <QPalette>
#include <QString>
#include <QVector>

namespace icet::ui {

struct DiffPiece {
  enum Kind { Same, Added, Removed };
  Kind kind = Same;
  QString text;  // words joined by single spaces
};

// Pieces that turn `base` into `other`; consecutive words of one kind are merged.
QVector<DiffPiece> wordDiff(const QString& base, const QString& other);

// HTML of `other` against `base`: added words underlined on a tinted background, removed
// words struck through (marked by shape, not only by colour), in colours readable on `palette`
// (default: the application's).
QString wordDiffHtml(const QString& base, const QString& other, const QPalette& palette = QPalette());

// The colour of removed words: between the palette's text and base colours, dimmer than the
// text but still readable on the base (light and dark palettes alike).
QColor diffRemovedColor(const QPalette& palette);

}  // namespace icet::ui
