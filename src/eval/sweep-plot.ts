// The ScalingVis sweep as an SVG line plot (a pure function returning the document's text): accuracy (%) against
// alpha, one polyline with a marker per alpha for the overall accuracy and for each question type (or function),
// the baseline (alpha 1) as a dashed vertical line, axes with ticks and labels, and a legend naming each series with
// its best alpha. Browser-safe, no dependencies.

import { fmtAlpha, sweepRows, type SweepResult, type SweepRow } from './sweep.js';

export interface SweepPlotOptions {
  /** Lines per question type (default) or per function label, besides the overall line. */
  series?: 'type' | 'function';
  width?: number;
  height?: number;
  title?: string;
}

/** Tableau 10: a distinct colour per series (the overall line is black); reused cyclically past ten. */
const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

const num = (x: number) => String(Math.round(x * 100) / 100);

/** The series drawn: overall first, then one per type (or function), in the order of sweepRows. */
export function plotSeries(result: SweepResult, series: 'type' | 'function' = 'type'): SweepRow[] {
  return sweepRows(result).filter((r) => r.group === 'overall' || r.group === series);
}

/** The SVG document (UTF-8 text, XML declaration first). */
export function sweepSvg(result: SweepResult, opts: SweepPlotOptions = {}): string {
  const width = opts.width ?? 760;
  const height = opts.height ?? 440;
  const rows = plotSeries(result, opts.series ?? 'type');
  const title = opts.title ?? `ScalingVis: accuracy vs image-attention temperature (${result.runs[0].report.total} questions)`;

  const legendW = 230;
  const m = { left: 64, right: legendW + 16, top: 44, bottom: 58 };
  const pw = width - m.left - m.right;
  const ph = height - m.top - m.bottom;
  const alphas = result.alphas;
  let lo = Math.min(...alphas);
  let hi = Math.max(...alphas);
  if (hi - lo < 1e-9) {
    lo -= 0.5;
    hi += 0.5;
  }
  const pad = (hi - lo) * 0.05;
  lo -= pad;
  hi += pad;
  const x = (a: number) => m.left + ((a - lo) / (hi - lo)) * pw;
  const y = (acc: number) => m.top + (1 - acc) * ph;

  const out: string[] = [];
  out.push('<?xml version="1.0" encoding="UTF-8"?>');
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<title>${escapeXml(title)}</title>`);
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text class="title" x="${num(m.left + pw / 2)}" y="24" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`);

  // Grid and y axis: 0..100 % every 20.
  out.push('<g class="y-axis">');
  for (let t = 0; t <= 100; t += 20) {
    const yy = num(y(t / 100));
    out.push(`<line x1="${m.left}" y1="${yy}" x2="${num(m.left + pw)}" y2="${yy}" stroke="#e5e5e5"/>`);
    out.push(`<line class="tick" x1="${m.left - 5}" y1="${yy}" x2="${m.left}" y2="${yy}" stroke="#000000"/>`);
    out.push(`<text class="tick-label" x="${m.left - 8}" y="${yy}" text-anchor="end" dominant-baseline="middle">${t}</text>`);
  }
  out.push(`<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${num(m.top + ph)}" stroke="#000000"/>`);
  out.push(`<text class="axis-label" x="18" y="${num(m.top + ph / 2)}" text-anchor="middle" transform="rotate(-90 18 ${num(m.top + ph / 2)})">accuracy (%)</text>`);
  out.push('</g>');

  // x axis: a tick at every swept alpha; a label is left out where it would overlap the previous one.
  out.push('<g class="x-axis">');
  out.push(`<line x1="${m.left}" y1="${num(m.top + ph)}" x2="${num(m.left + pw)}" y2="${num(m.top + ph)}" stroke="#000000"/>`);
  let lastLabel = -Infinity;
  for (const a of alphas) {
    const xx = x(a);
    out.push(`<line class="tick" x1="${num(xx)}" y1="${num(m.top + ph)}" x2="${num(xx)}" y2="${num(m.top + ph + 5)}" stroke="#000000"/>`);
    if (xx - lastLabel >= 28) {
      out.push(`<text class="tick-label" x="${num(xx)}" y="${num(m.top + ph + 18)}" text-anchor="middle">${escapeXml(fmtAlpha(a))}</text>`);
      lastLabel = xx;
    }
  }
  out.push(`<text class="axis-label" x="${num(m.left + pw / 2)}" y="${height - 14}" text-anchor="middle">alpha (image-key logit scale; 1 = baseline)</text>`);
  out.push('</g>');

  // Baseline.
  const bx = num(x(alphas[result.baselineIndex]));
  out.push(`<line class="baseline" x1="${bx}" y1="${m.top}" x2="${bx}" y2="${num(m.top + ph)}" stroke="#888888" stroke-dasharray="4 3"/>`);
  out.push(`<text x="${bx}" y="${m.top - 4}" text-anchor="middle" fill="#666666" font-size="10">baseline</text>`);

  // Series: a polyline and a marker per alpha (the best one ringed); the overall line is drawn last, on top.
  const colour = (k: number) => (k === 0 ? '#000000' : PALETTE[(k - 1) % PALETTE.length]);
  [...rows.keys()].reverse().forEach((k) => {
    const r = rows[k];
    const c = colour(k);
    const name = escapeXml(r.name);
    const pts = alphas.map((a, i) => `${num(x(a))},${num(y(r.accuracy[i]))}`).join(' ');
    out.push(`<g class="series" data-series="${name}" data-group="${r.group}">`);
    out.push(`<polyline points="${pts}" fill="none" stroke="${c}" stroke-width="${k === 0 ? 2.5 : 1.5}"/>`);
    alphas.forEach((a, i) => {
      const pct = (r.accuracy[i] * 100).toFixed(1);
      out.push(
        `<circle cx="${num(x(a))}" cy="${num(y(r.accuracy[i]))}" r="${i === r.best ? 4.5 : 3}" fill="${i === r.best ? '#ffffff' : c}" stroke="${c}" stroke-width="1.5"><title>${name} alpha ${escapeXml(fmtAlpha(a))}: ${pct}%</title></circle>`,
      );
    });
    out.push('</g>');
  });

  // Legend.
  const lx = width - legendW;
  out.push(`<g class="legend" transform="translate(${lx} ${m.top})">`);
  rows.forEach((r, k) => {
    const yy = k * 18;
    const best = `best ${fmtAlpha(alphas[r.best])}: ${(r.accuracy[r.best] * 100).toFixed(1)}%`;
    out.push(`<line x1="0" y1="${yy}" x2="22" y2="${yy}" stroke="${colour(k)}" stroke-width="${k === 0 ? 2.5 : 1.5}"/>`);
    out.push(`<text class="legend-label" x="28" y="${yy}" dominant-baseline="middle">${escapeXml(r.name)} (n=${r.total}, ${escapeXml(best)})</text>`);
  });
  out.push(`<text x="0" y="${rows.length * 18 + 6}" fill="#666666" font-size="10">ringed marker: best alpha of the line</text>`);
  out.push('</g>');
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
