// A small telemetry chart as inline SVG: per bucket, the band from min to max and the
// average as a line with a point each. A gap breaks the line when it is more than twice the
// usual spacing of the points (the bucket width, or the device's reporting interval when it
// reports less often than once a bucket), so an outage shows and sparse readings do not.
// Built with createElementNS and text nodes only; colours come from app.css (.chart …).
//
// Accessible as one image: a <title> and a <desc> that says what it shows, the range of
// values and the latest one. The caller also shows the latest value as text.

const NS = "http://www.w3.org/2000/svg";
/** Room around the plot: value labels on the left, the latest value's label on the right. */
const MARGIN = { top: 14, right: 56, bottom: 26, left: 52 };

const numberFormat = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 4 });
const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

let charts = 0; // ids for <title>/<desc>, unique on the page

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child !== undefined && child !== null) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A value as shown: up to 4 significant digits, in the reader's locale. */
export function formatValue(value) {
  return numberFormat.format(value);
}

/** A bucket's start (Unix seconds) as a time; with the date when the range spans days. */
export function formatTime(secs, { long = false } = {}) {
  return (long ? dayFormat : clockFormat).format(new Date(secs * 1000));
}

/**
 * What the series says in words: how many readings, the range of values, the latest one.
 * `label` names the metric and the range ("temp, last hour").
 */
export function describe(series, label) {
  const { buckets } = series;
  if (buckets.length === 0) return `${label}: no readings in this range.`;
  const readings = buckets.reduce((n, b) => n + b.count, 0);
  const lo = Math.min(...buckets.map((b) => b.min));
  const hi = Math.max(...buckets.map((b) => b.max));
  const latest = buckets.at(-1);
  const long = series.to - series.from > 86_400;
  return `${label}: ${readings} ${readings === 1 ? "reading" : "readings"} in ${buckets.length} ` +
    `${buckets.length === 1 ? "interval" : "intervals"}, from ${formatValue(lo)} to ${formatValue(hi)}; ` +
    `latest ${formatValue(latest.last)} (${formatTime(latest.start, { long })}).`;
}

/** Runs of buckets without a gap in the readings (see the top of this file). */
function runs(series) {
  const { buckets } = series;
  const spacings = buckets.slice(1).map((b, i) => b.start - buckets[i].start).sort((a, b) => a - b);
  const usual = Math.max(series.bucket, spacings[Math.floor(spacings.length / 2)] ?? 0);
  const out = [];
  let run = [];
  for (const b of buckets) {
    const prev = run.at(-1);
    if (prev && b.start - prev.start > 2 * usual) {
      out.push(run);
      run = [];
    }
    run.push(b);
  }
  if (run.length) out.push(run);
  return out;
}

/** Ticks for the value axis: `lo`, `hi` and up to 3 round values between. */
function valueTicks(lo, hi) {
  const span = hi - lo;
  const rough = span / 4;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((x) => x >= rough) ?? rough;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks.length >= 2 ? ticks : [lo, hi];
}

/**
 * The chart of `series` (`{from, to, bucket, buckets}` as `GET …/telemetry` gives it) as an
 * <svg> of `width` × `height` pixels. `label` is its title ("temp, last hour").
 */
export function telemetryChart(series, { label, width = 640, height = 220 } = {}) {
  const id = `chart-${(charts += 1)}`;
  const w = Math.max(160, Math.round(width));
  const h = Math.max(120, Math.round(height));
  const plot = { x: MARGIN.left, y: MARGIN.top, w: w - MARGIN.left - MARGIN.right, h: h - MARGIN.top - MARGIN.bottom };
  const svg = s("svg", {
    class: "chart-svg", viewBox: `0 0 ${w} ${h}`, width: w, height: h,
    role: "img", "aria-labelledby": `${id}-title ${id}-desc`,
    "data-points": series.buckets.length,
  },
  s("title", { id: `${id}-title` }, label),
  s("desc", { id: `${id}-desc` }, describe(series, label)));

  // The frame and time axis are drawn even without readings, so the range is visible.
  const long = series.to - series.from > 86_400;
  const x = (secs) => plot.x + ((secs - series.from) / (series.to - series.from)) * plot.w;
  const axis = s("g", { class: "axis", "aria-hidden": "true" });
  axis.append(s("line", { class: "frame", x1: plot.x, y1: plot.y + plot.h, x2: plot.x + plot.w, y2: plot.y + plot.h }));
  for (const [at, anchor] of [[series.from, "start"], [(series.from + series.to) / 2, "middle"], [series.to, "end"]]) {
    axis.append(s("text", { x: x(at), y: h - 8, "text-anchor": anchor }, formatTime(at, { long })));
  }
  svg.append(axis);

  if (series.buckets.length === 0) {
    svg.append(s("text", { class: "empty", x: plot.x + plot.w / 2, y: plot.y + plot.h / 2, "text-anchor": "middle", "aria-hidden": "true" },
      "No readings in this range"));
    return svg;
  }

  let lo = Math.min(...series.buckets.map((b) => b.min));
  let hi = Math.max(...series.buckets.map((b) => b.max));
  if (hi === lo) {
    const pad = Math.abs(lo) * 0.05 || 1;
    lo -= pad;
    hi += pad;
  }
  const ticks = valueTicks(lo, hi);
  lo = Math.min(lo, ticks[0]);
  hi = Math.max(hi, ticks.at(-1));
  const y = (v) => plot.y + (1 - (v - lo) / (hi - lo)) * plot.h;
  const mid = (b) => x(b.start + series.bucket / 2);

  const grid = s("g", { class: "grid", "aria-hidden": "true" });
  for (const v of ticks) {
    grid.append(
      s("line", { x1: plot.x, y1: y(v), x2: plot.x + plot.w, y2: y(v) }),
      s("text", { x: plot.x - 6, y: y(v) + 4, "text-anchor": "end" }, formatValue(v)));
  }
  svg.insertBefore(grid, axis);

  const data = s("g", { class: "data", "aria-hidden": "true" });
  const f = (n) => n.toFixed(1);
  for (const run of runs(series)) {
    if (run.length === 1) {
      const b = run[0];
      data.append(s("rect", { class: "band", x: f(mid(b) - 2), y: f(y(b.max)), width: 4, height: f(Math.max(1, y(b.min) - y(b.max))) }));
      continue;
    }
    const top = run.map((b) => `${f(mid(b))},${f(y(b.max))}`);
    const bottom = run.map((b) => `${f(mid(b))},${f(y(b.min))}`).reverse();
    data.append(
      s("polygon", { class: "band", points: [...top, ...bottom].join(" ") }),
      s("polyline", { class: "avg", points: run.map((b) => `${f(mid(b))},${f(y(b.avg))}`).join(" ") }));
  }
  for (const b of series.buckets) {
    data.append(s("circle", { class: "point", cx: f(mid(b)), cy: f(y(b.avg)), r: 2.5 },
      s("title", {}, `${formatTime(b.start, { long })}: average ${formatValue(b.avg)}, ` +
        `min ${formatValue(b.min)}, max ${formatValue(b.max)}, ${b.count} ${b.count === 1 ? "reading" : "readings"}`)));
  }
  svg.append(data);

  // The latest value, labelled to the right of its point: nothing is drawn there (the
  // margin, or a stretch of the range without readings).
  const latest = series.buckets.at(-1);
  const lx = mid(latest);
  const ly = y(latest.last);
  svg.append(
    s("circle", { class: "latest", cx: f(lx), cy: f(ly), r: 4, "aria-hidden": "true" }),
    s("text", { class: "latest-label", "aria-hidden": "true", x: f(lx + 8), y: f(ly + 4) }, formatValue(latest.last)));
  return svg;
}
