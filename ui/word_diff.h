#pragma once

// Word-level diff of two answers (longest common subsequence over whitespace-separated words).

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
// words struck through (marked by shape, not only by colour).
QString wordDiffHtml(const QString& base, const QString& other);

}  // namespace icet::ui
