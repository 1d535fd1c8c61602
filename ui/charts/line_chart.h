#pragma once

// A small line-chart interface for the app's charts (sweep, training metrics, ASR). Qt Charts
// is deprecated from Qt 6.10, so it stays behind this pimpl: callers see names, points and
// bands only. Updates are bulk: setSeries() replaces a series' points in one call.

#include <QColor>
#include <QPointF>
#include <QString>
#include <QStringList>
#include <QVector>
#include <QWidget>

#include <memory>

namespace icet::ui {

class LineChart : public QWidget {
  Q_OBJECT

 public:
  struct Band {  // a shaded x range with a label, e.g. Early layers 1-8
    double from = 0;
    double to = 0;
    QString label;
    QColor color;
  };

  explicit LineChart(QWidget* parent = nullptr);
  ~LineChart() override;

  void setTitle(const QString& title);
  void setAxisTitles(const QString& x, const QString& y);
  // Replaces all points of `name` (created on first use). `dashed` for reference series.
  void setSeries(const QString& name, const QVector<QPointF>& points, const QColor& color = {},
                 bool markers = false, bool dashed = false);
  void removeSeries(const QString& name);
  void clear();
  QVector<QPointF> points(const QString& name) const;
  QStringList seriesNames() const;
  void setBands(const QVector<Band>& bands);
  // Log-scaled y (points <= 0 are left out while it is on).
  void setLogY(bool on);
  bool logY() const;
  // Fixed x range; without it the range follows the data.
  void setXRange(double min, double max);
  // Fixed linear y range (rates: 0-100 %); clearYRange() follows the data again.
  void setYRange(double min, double max);
  void clearYRange();
  // x ticks at anchor + k * interval (integer layers: 1, 1), instead of evenly spread ones.
  void setXTicks(double anchor, double interval);
  // plotViewport() coordinates of a data point (for tests and tooltips).
  QPoint positionOf(const QPointF& value) const;
  QWidget* plotViewport() const;

 Q_SIGNALS:
  // A click on the plot at data x (nearest integer for layer charts is the caller's choice).
  void clicked(double x);

 protected:
  void changeEvent(QEvent* event) override;  // palette: light and dark themes
  void resizeEvent(QResizeEvent* event) override;

 private:
  struct Impl;
  void rescale();
  void applyPalette();
  void updateXTicks();
  std::unique_ptr<Impl> d;
};

}  // namespace icet::ui
