#include "ui/word_diff.h"

#include <QRegularExpression>
#include <QStringList>

#include <vector>

namespace icet::ui {

QVector<DiffPiece> wordDiff(const QString& base, const QString& other) {
  static const QRegularExpression space(QStringLiteral("\\s+"));
  const QStringList a = base.split(space, Qt::SkipEmptyParts);
  const QStringList b = other.split(space, Qt::SkipEmptyParts);
  const auto n = static_cast<size_t>(a.size());
  const auto m = static_cast<size_t>(b.size());
  // lcs[i][j]: LCS length of a[i..] and b[j..]. Answers are short (hundreds of words).
  std::vector<std::vector<int>> lcs(n + 1, std::vector<int>(m + 1, 0));
  for (size_t i = n; i-- > 0;) {
    for (size_t j = m; j-- > 0;) {
      lcs[i][j] = a[static_cast<qsizetype>(i)] == b[static_cast<qsizetype>(j)]
                      ? lcs[i + 1][j + 1] + 1
                      : std::max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  QVector<DiffPiece> out;
  auto push = [&out](DiffPiece::Kind kind, const QString& word) {
    if (!out.isEmpty() && out.back().kind == kind) {
      out.back().text += QLatin1Char(' ') + word;
    } else {
      out.push_back({kind, word});
    }
  };
  size_t i = 0;
  size_t j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[static_cast<qsizetype>(i)] == b[static_cast<qsizetype>(j)]) {
      push(DiffPiece::Same, b[static_cast<qsizetype>(j)]);
      ++i;
      ++j;
    } else if (j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j])) {
      push(DiffPiece::Added, b[static_cast<qsizetype>(j)]);
      ++j;
    } else {
      push(DiffPiece::Removed, a[static_cast<qsizetype>(i)]);
      ++i;
    }
  }
  return out;
}

QColor diffRemovedColor(const QPalette& palette) {
  const QColor text = palette.color(QPalette::Active, QPalette::Text);
  const QColor back = palette.color(QPalette::Active, QPalette::Base);
  constexpr double k = 0.65;  // share of the text colour (a fixed gray fails on light or dark)
  return QColor::fromRgbF(static_cast<float>(k * text.redF() + (1 - k) * back.redF()),
                          static_cast<float>(k * text.greenF() + (1 - k) * back.greenF()),
                          static_cast<float>(k * text.blueF() + (1 - k) * back.blueF()));
}

QString wordDiffHtml(const QString& base, const QString& other, const QPalette& palette) {
  const QString removed =
      QStringLiteral("<span style='color:%1;text-decoration:line-through'>").arg(diffRemovedColor(palette).name());
  QString html;
  for (const DiffPiece& p : wordDiff(base, other)) {
    const QString t = p.text.toHtmlEscaped();
    switch (p.kind) {
      case DiffPiece::Same: html += t; break;
      case DiffPiece::Added:
        html += QStringLiteral("<span style='background:rgba(255,170,0,0.30);text-decoration:underline'>") + t +
                QStringLiteral("</span>");
        break;
      case DiffPiece::Removed:
        html += removed + t + QStringLiteral("</span>");
        break;
    }
    html += QLatin1Char(' ');
  }
  return html.trimmed();
}

}  // namespace icet::ui
