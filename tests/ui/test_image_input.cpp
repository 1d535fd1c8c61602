// Image input besides the open dialog, on the tiny HF LLaVA fixture: image files dropped on the
// image area, the prompt, an answer pane or the window's frame; image data and file URLs pasted
// (menu action and Ctrl+V, also while the prompt has focus). The image is shown and encoded by
// the model; a dropped non-image file, a folder or a remote URL shows an error and the current
// image stays.
#include <QAction>
#include <QClipboard>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QElapsedTimer>
#include <QFile>
#include <QLabel>
#include <QMimeData>
#include <QPlainTextEdit>
#include <QSignalSpy>
#include <QStatusBar>
#include <QTemporaryDir>
#include <QTest>
#include <QUrl>

#include "core/runtime/diagnostics.h"
#include "support/ui.h"
#include "ui/comparison_lab.h"
#include "ui/comparison_pane.h"
#include "ui/main_window.h"
#include "ui/message_bar.h"

using icet::ui::MessageBar;

class TestImageInput : public QObject {
  Q_OBJECT

 private:
  std::unique_ptr<icet::ui::MainWindow> m_window;
  icet::ui::ComparisonLab* m_lab = nullptr;
  QTemporaryDir m_tmp;
  int m_files = 0;

  MessageBar* bar() const { return m_window->messageBar(); }

  // A PNG in the temp folder with a colour of its own (so each load is a new image).
  QString writePng(QImage* image = nullptr) {
    QImage img(48, 40, QImage::Format_RGB888);
    img.fill(QColor::fromHsv((m_files * 47) % 360, 200, 220));
    img.setPixelColor(3, 5, Qt::black);
    const QString path = m_tmp.filePath(QStringLiteral("image-%1.png").arg(m_files++));
    if (!img.save(path)) {
      return QString();
    }
    if (image != nullptr) {
      *image = img;
    }
    return path;
  }

  static QByteArray bytesOf(const QString& path) {
    QFile f(path);
    return f.open(QIODevice::ReadOnly) ? f.readAll() : QByteArray();
  }

  // A drag that enters the window at `widget`'s centre and drops there, routed by the window
  // as a real one is (to the first widget under the point that accepts drops).
  bool dragAndDrop(QWidget* widget, QMimeData* mime) {
    QWindow* handle = m_window->windowHandle();
    const QPointF at = widget->mapTo(m_window.get(), widget->rect().center());
    QDragEnterEvent enter(at.toPoint(), Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
    QCoreApplication::sendEvent(handle, &enter);
    QDragMoveEvent move(at.toPoint(), Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
    QCoreApplication::sendEvent(handle, &move);
    if (!move.isAccepted()) {
      return false;
    }
    QDropEvent drop(at, Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
    QCoreApplication::sendEvent(handle, &drop);
    return drop.isAccepted();
  }

  static QMimeData* filesMime(const QString& path) {
    auto* mime = new QMimeData;
    mime->setUrls({QUrl::fromLocalFile(path)});
    return mime;
  }

  QLabel* preview() const { return m_lab->findChild<QLabel*>(QStringLiteral("ImagePreview")); }

  // The lab holds `bytes` as its image, shows it and the model encoded it.
  bool waitForImage(const QByteArray& bytes, const QString& hashBefore) {
    if (!QTest::qWaitFor([&] { return m_lab->service()->imageHash() != hashBefore && m_lab->service()->pending() == 0; },
                         30000)) {
      qWarning() << "no new image hash;" << bar()->text();
      return false;
    }
    const QPixmap shown = preview()->pixmap();
    return m_lab->imageBytes() == bytes && !shown.isNull() && shown.width() > 0;
  }

  // An error naming `what` arrived and the image did not change.
  bool refused(int before, const QString& what, const QByteArray& bytes, const QString& hash) {
    if (!QTest::qWaitFor([&] { return bar()->count() > before; }, 5000)) {
      return false;
    }
    QTest::qWait(50);  // nothing reached the worker: no new image arrives
    if (bar()->kind() != MessageBar::Error || !bar()->text().contains(what)) {
      qWarning() << "message:" << bar()->text();
      return false;
    }
    return m_lab->imageBytes() == bytes && m_lab->service()->imageHash() == hash &&
           m_lab->service()->pending() == 0;
  }

 private Q_SLOTS:
  void initTestCase() {
    icet::test::init_ui_test("icet-studio-test-image-input");
    QVERIFY(m_tmp.isValid());
    m_window = std::make_unique<icet::ui::MainWindow>(icet::runtime::collect_runtime_info("test"));
    m_window->resize(1200, 800);
    m_window->show();
    QVERIFY(QTest::qWaitForWindowExposed(m_window.get()));
    m_lab = m_window->lab();
    m_lab->openModel(icet::test::hf_fixture("llava"));
    QTRY_VERIFY_WITH_TIMEOUT(m_lab->service()->hasModel() && m_lab->service()->pending() == 0, 60000);
  }

  void cleanupTestCase() { m_window.reset(); }

  void droppedFilesLoadWhereverTheyLand() {
    const QList<QWidget*> targets = {
        preview(),                                                                // the image area
        m_lab->findChild<QPlainTextEdit*>(QStringLiteral("PromptEdit"))->viewport(),  // the prompt
        m_lab->panes()[1]->findChild<QWidget*>(QStringLiteral("PaneText")),       // an answer
        m_window->statusBar(),                                                    // the window frame
    };
    for (QWidget* target : targets) {
      const QString path = writePng();
      QVERIFY(!path.isEmpty());
      const QString hash = m_lab->service()->imageHash();
      std::unique_ptr<QMimeData> mime(filesMime(path));
      QVERIFY2(dragAndDrop(target, mime.get()), qPrintable(target->objectName()));
      QVERIFY2(waitForImage(bytesOf(path), hash), qPrintable(target->objectName()));
      QCOMPARE(m_lab->imageName(), path);
    }
    QCOMPARE(m_lab->findChild<QPlainTextEdit*>(QStringLiteral("PromptEdit"))->toPlainText(), QString());

    // Image data (dragged from a browser or an image viewer) works too.
    QImage image;
    writePng(&image);
    const QString hash = m_lab->service()->imageHash();
    QMimeData data;
    data.setImageData(image);
    QVERIFY(dragAndDrop(preview(), &data));
    QTRY_VERIFY_WITH_TIMEOUT(m_lab->service()->imageHash() != hash, 30000);
    QCOMPARE(QImage::fromData(m_lab->imageBytes()).convertToFormat(QImage::Format_RGB888), image);
  }

  void droppedNonImagesShowAnErrorAndKeepTheImage() {
    const QByteArray bytes = m_lab->imageBytes();
    const QString hash = m_lab->service()->imageHash();
    QVERIFY(!bytes.isEmpty() && !hash.isEmpty());

    const QString notes = m_tmp.filePath(QStringLiteral("notes.txt"));
    QFile f(notes);
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write("not a picture at all\n");
    f.close();
    int before = bar()->count();
    std::unique_ptr<QMimeData> text(filesMime(notes));
    QVERIFY(dragAndDrop(preview(), text.get()));  // taken, so the user gets an explanation
    QVERIFY(refused(before, QStringLiteral("notes.txt is not an image"), bytes, hash));
    QVERIFY(bar()->isVisible());

    // A damaged file that looks like an image goes to the model's decoder, which refuses it:
    // the lab goes back to the image the model still holds.
    const QString fake = m_tmp.filePath(QStringLiteral("photo.png"));
    QFile p(fake);
    QVERIFY(p.open(QIODevice::WriteOnly));
    p.write("\x89PNG\r\n\x1a\n but the rest is not");
    p.close();
    before = bar()->count();
    std::unique_ptr<QMimeData> fakeMime(filesMime(fake));
    QVERIFY(dragAndDrop(m_window->statusBar(), fakeMime.get()));
    QVERIFY(refused(before, QStringLiteral("photo.png"), bytes, hash));
    QVERIFY(bar()->text().contains(QStringLiteral("kept the previous image")));
    QTRY_VERIFY(!preview()->pixmap().isNull());

    before = bar()->count();
    std::unique_ptr<QMimeData> folder(filesMime(m_tmp.path()));
    QVERIFY(dragAndDrop(preview(), folder.get()));
    QVERIFY(refused(before, QStringLiteral("is a folder"), bytes, hash));

    before = bar()->count();
    QMimeData remote;
    remote.setUrls({QUrl(QStringLiteral("https://example.org/cat.png"))});
    QVERIFY(dragAndDrop(preview(), &remote));
    QVERIFY(refused(before, QStringLiteral("Only local image files"), bytes, hash));
  }

  // A large photo is decoded for the preview on a pool thread: opening it returns at once
  // (decoding 7000 x 7000 pixels and scaling them took about 0.6 s on the GUI thread), and the
  // preview follows.
  void largeImagesPreviewOffTheGuiThread() {
    QImage big(7000, 7000, QImage::Format_RGB888);
    big.fill(QColor(30, 90, 200));
    const QString path = m_tmp.filePath(QStringLiteral("large.png"));
    QVERIFY(big.save(path, "PNG", 0));  // fastest compression: the decode still inflates 147 MB
    big = QImage();
    const QString hash = m_lab->service()->imageHash();
    QElapsedTimer timer;
    timer.start();
    QVERIFY(m_lab->openImageFile(path));
    const qint64 ms = timer.elapsed();
    QVERIFY2(ms < 200, qPrintable(QStringLiteral("openImageFile blocked the GUI thread for %1 ms").arg(ms)));
    QTRY_VERIFY_WITH_TIMEOUT(!preview()->pixmap().isNull() && preview()->toolTip() == path, 30000);
    QCOMPARE(preview()->pixmap().toImage().pixelColor(10, 10), QColor(30, 90, 200));
    QTRY_VERIFY_WITH_TIMEOUT(m_lab->service()->imageHash() != hash && m_lab->service()->pending() == 0, 60000);
  }

  void pastesImagesAndImageFiles() {
    QClipboard* clipboard = QApplication::clipboard();
    auto* paste = m_window->findChild<QAction*>(QStringLiteral("actionPaste"));
    QVERIFY(paste != nullptr);

    // Image data from the menu action.
    QImage image;
    writePng(&image);
    QString hash = m_lab->service()->imageHash();
    clipboard->setImage(image);
    paste->trigger();
    QTRY_VERIFY_WITH_TIMEOUT(m_lab->service()->imageHash() != hash && m_lab->service()->pending() == 0, 30000);
    QCOMPARE(QImage::fromData(m_lab->imageBytes()).convertToFormat(QImage::Format_RGB888), image);
    QTRY_VERIFY(!preview()->pixmap().isNull());

    // A copied file (file manager): its bytes, as if opened; Ctrl+V with the prompt focused.
    auto* prompt = m_lab->findChild<QPlainTextEdit*>(QStringLiteral("PromptEdit"));
    prompt->setPlainText(QStringLiteral("What is this?"));
    prompt->setFocus();
    QTRY_VERIFY(prompt->hasFocus());
    const QString path = writePng();
    hash = m_lab->service()->imageHash();
    clipboard->setMimeData(filesMime(path));
    QTest::keyClick(prompt, Qt::Key_V, Qt::ControlModifier);
    QVERIFY(waitForImage(bytesOf(path), hash));
    QCOMPARE(prompt->toPlainText(), QStringLiteral("What is this?"));  // no file URL pasted as text

    // Text still pastes into the prompt, and so does a copied web link (a URL with its text).
    clipboard->setText(QStringLiteral(" Be brief."));
    prompt->moveCursor(QTextCursor::End);
    QTest::keyClick(prompt, Qt::Key_V, Qt::ControlModifier);
    QCOMPARE(prompt->toPlainText(), QStringLiteral("What is this? Be brief."));
    auto* link = new QMimeData;
    link->setUrls({QUrl(QStringLiteral("https://example.org/a"))});
    link->setText(QStringLiteral(" https://example.org/a"));
    clipboard->setMimeData(link);
    QTest::keyClick(prompt, Qt::Key_V, Qt::ControlModifier);
    QCOMPARE(prompt->toPlainText(), QStringLiteral("What is this? Be brief. https://example.org/a"));
    prompt->setFocus();
    paste->trigger();  // the menu's Paste too
    QCOMPARE(prompt->toPlainText(), QStringLiteral("What is this? Be brief. https://example.org/a https://example.org/a"));
    QCOMPARE(m_lab->imageBytes(), bytesOf(path));

    // A copied non-image file: the same error as a drop.
    const QByteArray bytes = m_lab->imageBytes();
    hash = m_lab->service()->imageHash();
    const int before = bar()->count();
    clipboard->setMimeData(filesMime(m_tmp.filePath(QStringLiteral("notes.txt"))));
    paste->trigger();
    QVERIFY(refused(before, QStringLiteral("notes.txt is not an image"), bytes, hash));
    clipboard->clear();
  }
};

QTEST_MAIN(TestImageInput)
#include "test_image_input.moc"
