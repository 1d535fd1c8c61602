#include "ui/charts/line_chart.h"

#include <QAreaSeries>
#include <QChart>
#include <QChartView>
#include <QLegendMarker>
#include <QLineSeries>
#include <QLogValueAxis>
#include <QFontMetrics>
#include <QMouseEvent>
#include <QResizeEvent>
#include <QScatterSeries>
#include <QValueAxis>
#include <QVBoxLayout>

#include <cmath>
#include <limits>
#include <optional>
#include <map>

namespace icet::ui {
namespace {

class ClickableView : public QChartView {
 public:
  ClickableView(QChart* chart, LineChart* owner) : QChartView(chart), m_owner(owner) {}
  std::function<void(double)> onClick;

 protected:
  void mousePressEvent(QMouseEvent* event) override {
    const QPointF inChart = chart()->mapFromScene(mapToScene(event->position().toPoint()));
    if (event->button() == Qt::LeftButton && chart()->plotArea().contains(inChart)) {
      const QPointF v = chart()->mapToValue(inChart);
      if (onClick) {
        onClick(v.x());
      }
    }
    QChartView::mousePressEvent(event);
  }

 private:
  LineChart* m_owner;
};

}  // namespace

struct LineChart::Impl {
  QChart* chart = nullptr;
  ClickableView* view = nullptr;
  QValueAxis* x = nullptr;
  QValueAxis* y = nullptr;
  QLogValueAxis* logY = nullptr;
  bool log = false;
  bool fixedX = false;
  std::optional<std::pair<double, double>> fixedY;
  double tickInterval = 0;  // setXTicks' interval (0: evenly spread ticks)
  struct Entry {
    QLineSeries* line = nullptr;
    QScatterSeries* dots = nullptr;
    QVector<QPointF> points;
  };
  std::map<QString, Entry> series;
  std::vector<QAreaSeries*> bands;
  QVector<Band> bandSpec;

  QAbstractAxis* yAxis() const { return log ? static_cast<QAbstractAxis*>(logY) : y; }
  void attach(QAbstractSeries* s) const {
    s->attachAxis(x);
    s->attachAxis(yAxis());
  }
};

LineChart::LineChart(QWidget* parent) : QWidget(parent), d(std::make_unique<Impl>()) {
  d->chart = new QChart;
  d->chart->legend()->setAlignment(Qt::AlignBottom);
  d->chart->setMargins(QMargins(4, 4, 4, 4));
  d->chart->setAnimationOptions(QChart::NoAnimation);  // live data: animations lag behind
  d->x = new QValueAxis;
  d->x->setLabelFormat(QStringLiteral("%g"));
  d->y = new QValueAxis;
  d->y->setLabelFormat(QStringLiteral("%.3g"));
  d->logY = new QLogValueAxis;
  d->logY->setLabelFormat(QStringLiteral("%.3g"));
  d->chart->addAxis(d->x, Qt::AlignBottom);
  d->chart->addAxis(d->y, Qt::AlignLeft);
  d->view = new ClickableView(d->chart, this);
  d->view->setRenderHint(QPainter::Antialiasing);
  d->view->onClick = [this](double x) { Q_EMIT clicked(x); };
  // Drops go past the chart to the window (images dropped anywhere open in the lab).
  d->view->setAcceptDrops(false);
  d->view->viewport()->setAcceptDrops(false);
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(0, 0, 0, 0);
  layout->addWidget(d->view);
  setMinimumHeight(180);
  applyPalette();
}

void LineChart::changeEvent(QEvent* event) {
  QWidget::changeEvent(event);
  if (event->type() == QEvent::PaletteChange) {
    applyPalette();
  }
}

void LineChart::resizeEvent(QResizeEvent* event) {
  QWidget::resizeEvent(event);
  updateXTicks();
}

void LineChart::applyPalette() {
  // The chart's own themes are fixed light or dark sets that would also recolour the series:
  // take background, text and grid from the widget palette instead (light and dark themes).
  const QPalette p = palette();
  const QColor text = p.color(QPalette::Text);
  const QColor base = p.color(QPalette::Base);
  auto mix = [&](double k) {
    return QColor::fromRgbF(static_cast<float>(k * text.redF() + (1 - k) * base.redF()),
                            static_cast<float>(k * text.greenF() + (1 - k) * base.greenF()),
                            static_cast<float>(k * text.blueF() + (1 - k) * base.blueF()));
  };
  d->chart->setBackgroundBrush(base);
  d->chart->setBackgroundPen(QPen(mix(0.15)));
  d->chart->setTitleBrush(text);
  d->chart->legend()->setLabelColor(text);
  d->view->setBackgroundBrush(p.color(QPalette::Window));
  for (QAbstractAxis* axis : {static_cast<QAbstractAxis*>(d->x), static_cast<QAbstractAxis*>(d->y),
                              static_cast<QAbstractAxis*>(d->logY)}) {
    axis->setLabelsColor(text);
    axis->setTitleBrush(text);
    axis->setGridLineColor(mix(0.12));
    axis->setMinorGridLineColor(mix(0.06));
    axis->setLinePenColor(mix(0.4));
  }
}

void LineChart::updateXTicks() {
  // Integer ticks (layers 1..N) thin out to 2, 5, 10... when their labels would not fit.
  if (d->tickInterval <= 0) {
    return;
  }
  const double span = d->x->max() - d->x->min();
  const QFontMetrics metrics(d->x->labelsFont());
  const int label = metrics.horizontalAdvance(QString::number(static_cast<long long>(std::abs(d->x->max())) + 1)) + 12;
  const double plot = std::max(40, width() - 90);  // the axis and margins take the rest
  double interval = d->tickInterval;
  for (double k : {1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0}) {
    interval = d->tickInterval * k;
    if (span / interval * label <= plot) {
      break;
    }
  }
  if (d->x->tickInterval() != interval) {
    d->x->setTickInterval(interval);
  }
}

LineChart::~LineChart() = default;

void LineChart::setTitle(const QString& title) {
  d->chart->setTitle(title);
  setAccessibleName(title);
}

void LineChart::setAxisTitles(const QString& x, const QString& y) {
  d->x->setTitleText(x);
  d->y->setTitleText(y);
  d->logY->setTitleText(y + tr(" (log)"));
}

void LineChart::setSeries(const QString& name, const QVector<QPointF>& points, const QColor& color,
                          bool markers, bool dashed) {
  auto it = d->series.find(name);
  if (it == d->series.end()) {
    Impl::Entry e;
    e.line = new QLineSeries;
    e.line->setName(name);
    d->chart->addSeries(e.line);  // first, so the chart theme picks a colour
    QPen pen = e.line->pen();
    pen.setWidthF(2.0);
    if (color.isValid()) {
      pen.setColor(color);
    }
    if (dashed) {
      pen.setStyle(Qt::DashLine);
    }
    e.line->setPen(pen);
    d->attach(e.line);
    if (markers) {
      e.dots = new QScatterSeries;
      e.dots->setMarkerSize(7);
      e.dots->setColor(pen.color());
      e.dots->setBorderColor(pen.color());
      d->chart->addSeries(e.dots);
      d->attach(e.dots);
      for (QLegendMarker* m : d->chart->legend()->markers(e.dots)) {
        m->setVisible(false);
      }
    }
    it = d->series.emplace(name, e).first;
  }
  it->second.points = points;
  QVector<QPointF> shown;
  shown.reserve(points.size());
  for (const QPointF& p : points) {
    if (std::isfinite(p.y()) && (!d->log || p.y() > 0)) {
      shown.push_back(p);
    }
  }
  it->second.line->replace(shown);  // one bulk update, not one per point
  if (it->second.dots != nullptr) {
    it->second.dots->replace(shown);
  }
  rescale();
}

void LineChart::removeSeries(const QString& name) {
  auto it = d->series.find(name);
  if (it == d->series.end()) {
    return;
  }
  d->chart->removeSeries(it->second.line);
  delete it->second.line;
  if (it->second.dots != nullptr) {
    d->chart->removeSeries(it->second.dots);
    delete it->second.dots;
  }
  d->series.erase(it);
  rescale();
}

void LineChart::clear() {
  while (!d->series.empty()) {
    removeSeries(d->series.begin()->first);
  }
}

QVector<QPointF> LineChart::points(const QString& name) const {
  auto it = d->series.find(name);
  return it == d->series.end() ? QVector<QPointF>{} : it->second.points;
}

QStringList LineChart::seriesNames() const {
  QStringList names;
  for (const auto& [name, e] : d->series) {
    names << name;
  }
  return names;
}

void LineChart::setBands(const QVector<Band>& bands) {
  for (QAreaSeries* b : d->bands) {
    d->chart->removeSeries(b);
    delete b;
  }
  d->bands.clear();
  d->bandSpec = bands;
  for (const Band& band : bands) {
    auto* upper = new QLineSeries;
    auto* lower = new QLineSeries;
    auto* area = new QAreaSeries(upper, lower);
    area->setName(band.label);
    QColor fill = band.color.isValid() ? band.color : QColor(128, 128, 128);
    fill.setAlpha(40);
    area->setBrush(fill);
    area->setPen(Qt::NoPen);
    d->chart->addSeries(area);
    d->attach(area);
    d->bands.push_back(area);
  }
  rescale();
}

void LineChart::setLogY(bool on) {
  if (on == d->log) {
    return;
  }
  QAbstractAxis* old = d->yAxis();
  d->log = on;
  QAbstractAxis* now = d->yAxis();
  const auto attached = d->chart->series();
  for (QAbstractSeries* s : attached) {
    s->detachAxis(old);
  }
  d->chart->removeAxis(old);
  d->chart->addAxis(now, Qt::AlignLeft);
  for (QAbstractSeries* s : attached) {
    s->attachAxis(now);
  }
  // Re-filter points for the new scale.
  for (auto& [name, e] : d->series) {
    const QVector<QPointF> pts = e.points;
    QVector<QPointF> shown;
    for (const QPointF& p : pts) {
      if (std::isfinite(p.y()) && (!d->log || p.y() > 0)) {
        shown.push_back(p);
      }
    }
    e.line->replace(shown);
    if (e.dots != nullptr) {
      e.dots->replace(shown);
    }
  }
  rescale();
}

bool LineChart::logY() const {
  return d->log;
}

void LineChart::setXRange(double min, double max) {
  d->fixedX = true;
  d->x->setRange(min, max);
  rescale();
}

void LineChart::setYRange(double min, double max) {
  d->fixedY = std::make_pair(min, max);
  rescale();
}

void LineChart::clearYRange() {
  d->fixedY.reset();
  rescale();
}

void LineChart::setXTicks(double anchor, double interval) {
  d->x->setTickType(QValueAxis::TicksDynamic);
  d->x->setTickAnchor(anchor);
  d->tickInterval = interval;
  d->x->setTickInterval(interval);
  d->x->setLabelFormat(QStringLiteral("%d"));
  updateXTicks();
}

QPoint LineChart::positionOf(const QPointF& value) const {
  const QPointF inChart = d->chart->mapToPosition(value);
  return d->view->mapFromScene(d->chart->mapToScene(inChart));
}

QWidget* LineChart::plotViewport() const {
  return d->view->viewport();
}

void LineChart::rescale() {
  double xmin = std::numeric_limits<double>::infinity();
  double xmax = -xmin;
  double ymin = xmin;
  double ymax = -xmin;
  for (const auto& [name, e] : d->series) {
    for (const QPointF& p : e.points) {
      if (!std::isfinite(p.y()) || (d->log && p.y() <= 0)) {
        continue;
      }
      xmin = std::min(xmin, p.x());
      xmax = std::max(xmax, p.x());
      ymin = std::min(ymin, p.y());
      ymax = std::max(ymax, p.y());
    }
  }
  if (!std::isfinite(ymin)) {
    ymin = d->log ? 0.1 : 0.0;
    ymax = 1.0;
    xmin = 0;
    xmax = 1;
  }
  if (d->log) {
    d->logY->setRange(ymin * 0.9, ymax * 1.1);
  } else if (d->fixedY) {
    d->y->setRange(d->fixedY->first, d->fixedY->second);
  } else {
    const double pad = ymax > ymin ? (ymax - ymin) * 0.08 : 0.5;
    ymin -= pad;
    ymax += pad;
    d->y->setRange(ymin, ymax);
    d->y->applyNiceNumbers();
  }
  if (!d->fixedX) {
    d->x->setRange(xmin, xmax > xmin ? xmax : xmin + 1);
  }
  updateXTicks();
  // Bands span the visible y range.
  const double lo = d->log ? d->logY->min() : d->y->min();
  const double hi = d->log ? d->logY->max() : d->y->max();
  for (size_t i = 0; i < d->bands.size(); ++i) {
    const Band& b = d->bandSpec[static_cast<qsizetype>(i)];
    d->bands[i]->upperSeries()->replace({QPointF(b.from, hi), QPointF(b.to, hi)});
    d->bands[i]->lowerSeries()->replace({QPointF(b.from, lo), QPointF(b.to, lo)});
  }
}

}  // namespace icet::ui
