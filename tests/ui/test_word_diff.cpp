// Word-level diff of two answers, as shown in the comparison panes.
#include <QTest>

#include "ui/word_diff.h"

using icet::ui::DiffPiece;

class TestWordDiff : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void marksAddedAndRemovedWords() {
    const auto d = icet::ui::wordDiff(QStringLiteral("I cannot help with that."),
                                      QStringLiteral("Sure, I can help with that."));
    QString rebuiltOther;
    QString rebuiltBase;
    for (const DiffPiece& p : d) {
      if (p.kind != DiffPiece::Removed) {
        rebuiltOther += p.text + QLatin1Char(' ');
      }
      if (p.kind != DiffPiece::Added) {
        rebuiltBase += p.text + QLatin1Char(' ');
      }
    }
    QCOMPARE(rebuiltOther.trimmed(), QStringLiteral("Sure, I can help with that."));
    QCOMPARE(rebuiltBase.trimmed(), QStringLiteral("I cannot help with that."));
    int same = 0;
    for (const DiffPiece& p : d) {
      same += p.kind == DiffPiece::Same ? static_cast<int>(p.text.split(QLatin1Char(' ')).size()) : 0;
    }
    QCOMPARE(same, 4);  // I, help, with, that.
  }

  void identicalTextsAreOnePiece() {
    const auto d = icet::ui::wordDiff(QStringLiteral("a b  c"), QStringLiteral("a b c"));
    QCOMPARE(d.size(), 1);
    QCOMPARE(d[0].kind, DiffPiece::Same);
    QCOMPARE(d[0].text, QStringLiteral("a b c"));
  }

  void htmlMarksChangesByShapeAndEscapes() {
    const QString html = icet::ui::wordDiffHtml(QStringLiteral("x <b>"), QStringLiteral("y <b>"));
    QVERIFY(html.contains(QStringLiteral("underline")));
    QVERIFY(html.contains(QStringLiteral("line-through")));
    QVERIFY(html.contains(QStringLiteral("&lt;b&gt;")));
    QVERIFY(icet::ui::wordDiff(QString(), QString()).isEmpty());
  }
};

QTEST_MAIN(TestWordDiff)
#include "test_word_diff.moc"
