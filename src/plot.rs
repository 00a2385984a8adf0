//! Line plots as PNG without a plotting crate: a [`Figure`] (an RGB canvas) draws [`Axes`]
//! (lines, ticks, a legend) with a built-in 5x7 bitmap font. Enough for training curves.

use crate::io::RgbImage;
use crate::Result;
use std::path::Path;

pub type Rgb = [u8; 3];

pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [30, 30, 30];
const GRID: Rgb = [232, 232, 232];
const FRAME: Rgb = [110, 110, 110];
const MUTED: Rgb = [90, 90, 90];

/// Distinct line colours (the usual ten-colour categorical palette).
pub const PALETTE: [Rgb; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// Glyph cell: 5 columns; rows 0-6 hold capitals and digits, rows 7-8 descenders.
pub const GLYPH_W: usize = 5;
pub const GLYPH_H: usize = 9;
/// Horizontal advance per character, in font pixels (one blank column between glyphs).
const ADVANCE: usize = GLYPH_W + 1;

/// Each glyph as rows of `#` (on) and `.` (off), separated by spaces; missing rows are blank.
const FONT: &[(char, &str)] = &[
    ('0', ".###. #...# #..## #.#.# ##..# #...# .###."),
    ('1', "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###."),
    ('2', ".###. #...# ....# ...#. ..#.. .#... #####"),
    ('3', "##### ...#. ..#.. ...#. ....# #...# .###."),
    ('4', "...#. ..##. .#.#. #..#. ##### ...#. ...#."),
    ('5', "##### #.... ####. ....# ....# #...# .###."),
    ('6', "..##. .#... #.... ####. #...# #...# .###."),
    ('7', "##### ....# ...#. ..#.. .#... .#... .#..."),
    ('8', ".###. #...# #...# .###. #...# #...# .###."),
    ('9', ".###. #...# #...# .#### ....# ...#. .##.."),
    ('A', ".###. #...# #...# ##### #...# #...# #...#"),
    ('B', "####. #...# #...# ####. #...# #...# ####."),
    ('C', ".###. #...# #.... #.... #.... #...# .###."),
    ('D', "###.. #..#. #...# #...# #...# #..#. ###.."),
    ('E', "##### #.... #.... ####. #.... #.... #####"),
    ('F', "##### #.... #.... ####. #.... #.... #...."),
    ('G', ".###. #...# #.... #.### #...# #...# .####"),
    ('H', "#...# #...# #...# ##### #...# #...# #...#"),
    ('I', ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###."),
    ('J', "..### ...#. ...#. ...#. ...#. #..#. .##.."),
    ('K', "#...# #..#. #.#.. ##... #.#.. #..#. #...#"),
    ('L', "#.... #.... #.... #.... #.... #.... #####"),
    ('M', "#...# ##.## #.#.# #.#.# #...# #...# #...#"),
    ('N', "#...# #...# ##..# #.#.# #..## #...# #...#"),
    ('O', ".###. #...# #...# #...# #...# #...# .###."),
    ('P', "####. #...# #...# ####. #.... #.... #...."),
    ('Q', ".###. #...# #...# #...# #.#.# #..#. .##.#"),
    ('R', "####. #...# #...# ####. #.#.. #..#. #...#"),
    ('S', ".#### #.... #.... .###. ....# ....# ####."),
    ('T', "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#.."),
    ('U', "#...# #...# #...# #...# #...# #...# .###."),
    ('V', "#...# #...# #...# #...# #...# .#.#. ..#.."),
    ('W', "#...# #...# #...# #.#.# #.#.# #.#.# .#.#."),
    ('X', "#...# #...# .#.#. ..#.. .#.#. #...# #...#"),
    ('Y', "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#.."),
    ('Z', "##### ....# ...#. ..#.. .#... #.... #####"),
    ('a', "..... ..... .###. ....# .#### #...# .####"),
    ('b', "#.... #.... #.##. ##..# #...# #...# ####."),
    ('c', "..... ..... .###. #.... #.... #...# .###."),
    ('d', "....# ....# .##.# #..## #...# #...# .####"),
    ('e', "..... ..... .###. #...# ##### #.... .###."),
    ('f', "..##. .#..# .#... ###.. .#... .#... .#..."),
    ('g', "..... ..... .#### #...# #...# #...# .#### ....# .###."),
    ('h', "#.... #.... #.##. ##..# #...# #...# #...#"),
    ('i', "..#.. ..... .##.. ..#.. ..#.. ..#.. .###."),
    ('j', "...#. ..... ..##. ...#. ...#. ...#. ...#. #..#. .##.."),
    ('k', "#.... #.... #..#. #.#.. ##... #.#.. #..#."),
    ('l', "##... .#... .#... .#... .#... .#... ..##."),
    ('m', "..... ..... ##.#. #.#.# #.#.# #...# #...#"),
    ('n', "..... ..... #.##. ##..# #...# #...# #...#"),
    ('o', "..... ..... .###. #...# #...# #...# .###."),
    ('p', "..... ..... ####. #...# #...# #...# ####. #.... #...."),
    ('q', "..... ..... .#### #...# #...# #...# .#### ....# ....#"),
    ('r', "..... ..... #.##. ##..# #.... #.... #...."),
    ('s', "..... ..... .###. #.... .###. ....# ####."),
    ('t', ".#... .#... ###.. .#... .#... .#..# ..##."),
    ('u', "..... ..... #...# #...# #...# #..## .##.#"),
    ('v', "..... ..... #...# #...# #...# .#.#. ..#.."),
    ('w', "..... ..... #...# #...# #.#.# #.#.# .#.#."),
    ('x', "..... ..... #...# .#.#. ..#.. .#.#. #...#"),
    ('y', "..... ..... #...# #...# #...# #...# .#### ....# .###."),
    ('z', "..... ..... ##### ...#. ..#.. .#... #####"),
    (' ', ""),
    ('.', "..... ..... ..... ..... ..... .##.. .##.."),
    (',', "..... ..... ..... ..... ..... .##.. ..#.. .#..."),
    (':', "..... .##.. .##.. ..... .##.. .##.. ....."),
    ('-', "..... ..... ..... .###. ..... ..... ....."),
    ('_', "..... ..... ..... ..... ..... ..... ..... #####"),
    ('+', "..... ..#.. ..#.. ##### ..#.. ..#.. ....."),
    ('=', "..... ..... ##### ..... ##### ..... ....."),
    ('%', "##... ##..# ...#. ..#.. .#... #..## ...##"),
    ('/', "..... ....# ...#. ..#.. .#... #.... ....."),
    ('(', "...#. ..#.. .#... .#... .#... ..#.. ...#."),
    (')', ".#... ..#.. ...#. ...#. ...#. ..#.. .#..."),
    ('[', ".###. .#... .#... .#... .#... .#... .###."),
    (']', ".###. ...#. ...#. ...#. ...#. ...#. .###."),
    ('\'', "..#.. ..#.. ..... ..... ..... ..... ....."),
    ('#', ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#."),
    ('*', "..... ..#.. #.#.# .###. #.#.# ..#.. ....."),
    ('?', ".###. #...# ....# ...#. ..#.. ..... ..#.."),
];

/// The bitmap of `c`, one `u8` per row with bit 4 the leftmost column; unknown characters
/// render as `?`.
pub fn glyph(c: char) -> [u8; GLYPH_H] {
    let rows = FONT.iter().find(|(k, _)| *k == c).or_else(|| FONT.iter().find(|(k, _)| *k == '?'));
    let mut out = [0u8; GLYPH_H];
    for (i, row) in
        rows.map(|(_, r)| *r).unwrap_or("").split(' ').filter(|r| !r.is_empty()).enumerate()
    {
        out[i] = row.bytes().fold(0, |acc, b| (acc << 1) | u8::from(b == b'#'));
    }
    out
}

/// Width in pixels of `s` drawn at `scale`.
pub fn text_width(s: &str, scale: usize) -> usize {
    let n = s.chars().count();
    if n == 0 {
        0
    } else {
        (n * ADVANCE - 1) * scale
    }
}

/// Height of a text line at `scale` (cap height plus descenders).
pub fn text_height(scale: usize) -> usize {
    GLYPH_H * scale
}

/// Axis ticks: "nice" values (steps of 1, 2 or 5 times a power of ten), about `target`
/// intervals over the axis range `lo..hi`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticks {
    pub lo: f64,
    pub hi: f64,
    pub step: f64,
    pub values: Vec<f64>,
}

impl Ticks {
    /// Ticks inside `[lo, hi]`, which stays the axis range.
    pub fn inside(lo: f64, hi: f64, target: usize) -> Ticks {
        let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 0.5, lo + 0.5) };
        let raw = (hi - lo) / target.max(1) as f64;
        let mag = 10f64.powf(raw.log10().floor());
        // The nice step nearest to the raw one (in ratio).
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .min_by(|a, b| (a / raw).ln().abs().total_cmp(&(b / raw).ln().abs()))
            .expect("four candidates");
        // The tolerance keeps float noise (0.30000000000000004) from dropping an end tick.
        let first = (lo / step - 1e-9).ceil() as i64;
        let last = (hi / step + 1e-9).floor() as i64;
        let values = (first..=last).map(|i| i as f64 * step).collect();
        Ticks { lo, hi, step, values }
    }

    /// Ticks whose first and last value are the axis range, covering `[lo, hi]`.
    pub fn snapped(lo: f64, hi: f64, target: usize) -> Ticks {
        let t = Ticks::inside(lo, hi, target);
        let lo = (t.lo / t.step + 1e-9).floor() * t.step;
        let hi = (t.hi / t.step - 1e-9).ceil() * t.step;
        Ticks { lo, hi, ..Ticks::inside(lo, hi, ((hi - lo) / t.step).round() as usize) }
    }

    /// `v` with as many decimals as the step needs ("0.05" -> 2, "2" -> 0).
    pub fn label(&self, v: f64) -> String {
        let decimals = (-self.step.log10().floor()).max(0.0) as usize;
        let s = format!("{v:.decimals$}");
        // No "-0" or "-0.00".
        if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
            s.trim_start_matches('-').to_string()
        } else {
            s
        }
    }
}

#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub color: Rgb,
    /// (x, y) points; non-finite y values break the line.
    pub points: Vec<(f64, f64)>,
}

/// One plot: title, axis labels, lines and an optional legend.
#[derive(Debug, Clone, Default)]
pub struct Axes {
    pub title: String,
    pub xlabel: String,
    pub ylabel: String,
    pub series: Vec<Series>,
    pub show_legend: bool,
    /// Start the x axis at 0 (epochs) rather than at the data's minimum.
    pub x_from_zero: bool,
}

impl Axes {
    pub fn new(title: &str, xlabel: &str, ylabel: &str) -> Axes {
        Axes {
            title: title.into(),
            xlabel: xlabel.into(),
            ylabel: ylabel.into(),
            ..Axes::default()
        }
    }
    pub fn line(&mut self, label: &str, color: Rgb, points: Vec<(f64, f64)>) -> &mut Self {
        self.series.push(Series { label: label.into(), color, points });
        self
    }
    pub fn legend(&mut self) -> &mut Self {
        self.show_legend = true;
        self
    }

    fn finite_points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    }

    /// Tick sets for x and y covering the data (0..1 when there is none).
    pub fn ticks(&self) -> (Ticks, Ticks) {
        let range = |vals: Vec<f64>| {
            let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if lo.is_finite() {
                (lo, hi)
            } else {
                (0.0, 1.0)
            }
        };
        let (mut x0, x1) = range(self.finite_points().map(|p| p.0).collect());
        if self.x_from_zero {
            x0 = x0.min(0.0);
        }
        let (y0, y1) = range(self.finite_points().map(|p| p.1).collect());
        // Headroom so lines do not run along the frame; x ends on ticks (epochs).
        let pad = if y1 > y0 { (y1 - y0) * 0.06 } else { y0.abs().max(1.0) * 0.05 };
        (Ticks::snapped(x0, x1, 6), Ticks::inside(y0 - pad, y1 + pad, 5))
    }
}

/// A rectangle in pixels: left, top, width, height.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// An RGB canvas with drawing primitives.
pub struct Figure {
    pub width: usize,
    pub height: usize,
    pixels: Vec<Rgb>,
}

/// Text scale for tick labels, axis labels and legends; titles use the same, in black.
const SCALE: usize = 2;

impl Figure {
    pub fn new(width: usize, height: usize) -> Figure {
        Figure { width, height, pixels: vec![WHITE; width * height] }
    }

    pub fn pixel(&self, x: usize, y: usize) -> Rgb {
        self.pixels[y * self.width + x]
    }

    /// Mixes `c` into pixel (x, y) with opacity `a` in [0, 1]; outside the canvas is ignored.
    fn blend(&mut self, x: i64, y: i64, c: Rgb, a: f64) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 || a <= 0.0 {
            return;
        }
        let p = &mut self.pixels[y as usize * self.width + x as usize];
        let a = a.min(1.0);
        for i in 0..3 {
            p[i] = (f64::from(p[i]) * (1.0 - a) + f64::from(c[i]) * a).round() as u8;
        }
    }

    pub fn fill_rect(&mut self, r: Rect, c: Rgb, alpha: f64) {
        for y in r.y.round() as i64..(r.y + r.h).round() as i64 {
            for x in r.x.round() as i64..(r.x + r.w).round() as i64 {
                self.blend(x, y, c, alpha);
            }
        }
    }

    /// A 1-pixel rectangle outline.
    pub fn stroke_rect(&mut self, r: Rect, c: Rgb) {
        let (x0, y0) = (r.x.round() as i64, r.y.round() as i64);
        let (x1, y1) = ((r.x + r.w).round() as i64, (r.y + r.h).round() as i64);
        for x in x0..=x1 {
            self.blend(x, y0, c, 1.0);
            self.blend(x, y1, c, 1.0);
        }
        for y in y0..=y1 {
            self.blend(x0, y, c, 1.0);
            self.blend(x1, y, c, 1.0);
        }
    }

    /// An antialiased polyline of the given width. Each pixel's coverage comes from its distance
    /// to the nearest segment, so joins are neither gappy nor darker.
    pub fn polyline(&mut self, pts: &[(f64, f64)], width: f64, c: Rgb) {
        let r = width / 2.0;
        let mut cover: Vec<f32> = vec![0.0; self.width * self.height];
        for w in pts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (dx, dy) = (b.0 - a.0, b.1 - a.1);
            let len2 = (dx * dx + dy * dy).max(1e-12);
            let x0 = (a.0.min(b.0) - r - 1.0).floor().max(0.0) as usize;
            let y0 = (a.1.min(b.1) - r - 1.0).floor().max(0.0) as usize;
            let x1 = ((a.0.max(b.0) + r + 1.0).ceil().max(0.0) as usize).min(self.width);
            let y1 = ((a.1.max(b.1) + r + 1.0).ceil().max(0.0) as usize).min(self.height);
            for y in y0..y1 {
                for x in x0..x1 {
                    let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                    let t = (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0);
                    let d = ((px - a.0 - t * dx).powi(2) + (py - a.1 - t * dy).powi(2)).sqrt();
                    let k = y * self.width + x;
                    cover[k] = cover[k].max((r + 0.5 - d).clamp(0.0, 1.0) as f32);
                }
            }
        }
        for (k, a) in cover.into_iter().enumerate() {
            if a > 0.0 {
                self.blend((k % self.width) as i64, (k / self.width) as i64, c, f64::from(a));
            }
        }
    }

    /// A filled antialiased disc.
    pub fn disc(&mut self, cx: f64, cy: f64, radius: f64, c: Rgb) {
        for y in (cy - radius - 1.0).floor() as i64..=(cy + radius + 1.0).ceil() as i64 {
            for x in (cx - radius - 1.0).floor() as i64..=(cx + radius + 1.0).ceil() as i64 {
                let d = ((x as f64 + 0.5 - cx).powi(2) + (y as f64 + 0.5 - cy).powi(2)).sqrt();
                self.blend(x, y, c, (radius + 0.5 - d).clamp(0.0, 1.0));
            }
        }
    }

    /// Draws `s` with its top-left corner at (x, y); `scale` pixels per font pixel.
    pub fn text(&mut self, x: f64, y: f64, s: &str, scale: usize, c: Rgb) {
        self.glyphs(s, scale, c, |gx, gy| (x as i64 + gx, y as i64 + gy));
    }

    /// Draws `s` rotated a quarter turn counter-clockwise (reading upwards), its baseline side at
    /// the right; (x, y) is the bottom-left corner of the rotated text.
    pub fn text_up(&mut self, x: f64, y: f64, s: &str, scale: usize, c: Rgb) {
        self.glyphs(s, scale, c, |gx, gy| (x as i64 + gy, y as i64 - gx));
    }

    fn glyphs(&mut self, s: &str, scale: usize, c: Rgb, at: impl Fn(i64, i64) -> (i64, i64)) {
        for (i, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits & (1 << (GLYPH_W - 1 - col)) == 0 {
                        continue;
                    }
                    for sy in 0..scale {
                        for sx in 0..scale {
                            let gx = ((i * ADVANCE + col) * scale + sx) as i64;
                            let gy = (row * scale + sy) as i64;
                            let (px, py) = at(gx, gy);
                            self.blend(px, py, c, 1.0);
                        }
                    }
                }
            }
        }
    }

    /// Draws `axes` into `area`: title, frame, grid, ticks, labels, lines and legend.
    pub fn draw(&mut self, axes: &Axes, area: Rect) {
        let (xt, yt) = axes.ticks();
        let th = text_height(SCALE) as f64;
        let ylabels: Vec<String> = yt.values.iter().map(|v| yt.label(*v)).collect();
        let ylabel_w = ylabels.iter().map(|l| text_width(l, SCALE)).max().unwrap_or(0) as f64;
        // Margins: y-axis label and tick labels at left, title on top, x labels below.
        let left = 12.0 + th + 14.0 + ylabel_w + 10.0;
        let plot = Rect {
            x: area.x + left,
            y: area.y + 16.0 + th + 16.0,
            w: area.w - left - 24.0,
            h: area.h - (16.0 + th + 16.0) - (10.0 + th + 12.0 + th + 14.0),
        };
        let tx = |v: f64| plot.x + (v - xt.lo) / (xt.hi - xt.lo) * plot.w;
        let ty = |v: f64| plot.y + plot.h - (v - yt.lo) / (yt.hi - yt.lo) * plot.h;

        let title_x = plot.x + (plot.w - text_width(&axes.title, SCALE) as f64) / 2.0;
        // Titles in faux bold: the text twice, one pixel apart.
        self.text(title_x, area.y + 16.0, &axes.title, SCALE, BLACK);
        self.text(title_x + 1.0, area.y + 16.0, &axes.title, SCALE, BLACK);
        for (v, label) in yt.values.iter().zip(&ylabels) {
            let y = ty(*v).round();
            self.fill_rect(Rect { x: plot.x, y, w: plot.w, h: 1.0 }, GRID, 1.0);
            self.fill_rect(Rect { x: plot.x - 5.0, y, w: 5.0, h: 1.0 }, FRAME, 1.0);
            let w = text_width(label, SCALE) as f64;
            self.text(plot.x - 10.0 - w, y - (7 * SCALE) as f64 / 2.0, label, SCALE, MUTED);
        }
        for v in &xt.values {
            let x = tx(*v).round();
            self.fill_rect(Rect { x, y: plot.y, w: 1.0, h: plot.h }, GRID, 1.0);
            self.fill_rect(Rect { x, y: plot.y + plot.h, w: 1.0, h: 5.0 }, FRAME, 1.0);
            let label = xt.label(*v);
            let w = text_width(&label, SCALE) as f64;
            self.text(x - w / 2.0, plot.y + plot.h + 10.0, &label, SCALE, MUTED);
        }
        self.stroke_rect(plot, FRAME);
        let xl_w = text_width(&axes.xlabel, SCALE) as f64;
        let xl_y = plot.y + plot.h + 10.0 + th + 12.0;
        self.text(plot.x + (plot.w - xl_w) / 2.0, xl_y, &axes.xlabel, SCALE, BLACK);
        let yl_w = text_width(&axes.ylabel, SCALE) as f64;
        self.text_up(area.x + 12.0, plot.y + (plot.h + yl_w) / 2.0, &axes.ylabel, SCALE, BLACK);

        if axes.series.iter().all(|s| s.points.iter().all(|p| !p.1.is_finite())) {
            let msg = "no data";
            let w = text_width(msg, SCALE) as f64;
            self.text(plot.x + (plot.w - w) / 2.0, plot.y + plot.h / 2.0, msg, SCALE, MUTED);
            return;
        }
        let mut drawn: Vec<(f64, f64)> = Vec::new();
        for s in &axes.series {
            let px: Vec<Option<(f64, f64)>> = s
                .points
                .iter()
                .map(|&(x, y)| (x.is_finite() && y.is_finite()).then(|| (tx(x), ty(y))))
                .collect();
            // Non-finite values split the line into runs.
            for run in px.split(Option::is_none) {
                let run: Vec<(f64, f64)> = run.iter().flatten().copied().collect();
                self.polyline(&run, 2.5, s.color);
                // Samples along the line, for the legend's placement.
                for w in run.windows(2) {
                    drawn.extend((0..=8).map(|k| {
                        let t = f64::from(k) / 8.0;
                        (w[0].0 + t * (w[1].0 - w[0].0), w[0].1 + t * (w[1].1 - w[0].1))
                    }));
                }
            }
            // Markers while points are few enough to tell apart.
            if s.points.len() <= 40 {
                for p in px.iter().flatten() {
                    self.disc(p.0, p.1, 3.5, s.color);
                    drawn.push(*p);
                }
            }
        }
        if axes.show_legend && !axes.series.is_empty() {
            self.legend(&axes.series, plot, &drawn);
        }
    }

    /// A boxed legend in the plot corner that hides the fewest drawn points.
    fn legend(&mut self, series: &[Series], plot: Rect, drawn: &[(f64, f64)]) {
        let th = text_height(SCALE) as f64;
        let row_h = th + 8.0;
        let sample_w = 28.0;
        let text_w = series.iter().map(|s| text_width(&s.label, SCALE)).max().unwrap_or(0) as f64;
        let (w, h) = (10.0 + sample_w + 8.0 + text_w + 12.0, 8.0 + row_h * series.len() as f64);
        let m = 10.0;
        let corners = [
            (plot.x + plot.w - w - m, plot.y + plot.h - h - m), // bottom right
            (plot.x + plot.w - w - m, plot.y + m),              // top right
            (plot.x + m, plot.y + plot.h - h - m),              // bottom left
            (plot.x + m, plot.y + m),                           // top left
        ];
        let hidden = |(x, y): (f64, f64)| {
            drawn.iter().filter(|p| p.0 >= x && p.0 <= x + w && p.1 >= y && p.1 <= y + h).count()
        };
        let (x, y) = corners.into_iter().min_by_key(|c| hidden(*c)).expect("four corners");
        let bx = Rect { x, y, w, h };
        self.fill_rect(bx, WHITE, 0.9);
        self.stroke_rect(bx, [200, 200, 200]);
        for (i, s) in series.iter().enumerate() {
            let ry = y + 6.0 + row_h * i as f64;
            let mid = ry + (7 * SCALE) as f64 / 2.0;
            self.polyline(&[(x + 10.0, mid), (x + 10.0 + sample_w, mid)], 2.5, s.color);
            self.disc(x + 10.0 + sample_w / 2.0, mid, 3.5, s.color);
            self.text(x + 10.0 + sample_w + 8.0, ry, &s.label, SCALE, BLACK);
        }
    }

    pub fn to_image(&self) -> RgbImage {
        RgbImage {
            width: self.width,
            height: self.height,
            hwc: self.pixels.iter().flat_map(|p| p.iter().copied()).collect(),
        }
    }

    /// Writes the figure as PNG (atomically).
    pub fn save_png(&self, path: &Path) -> Result<()> {
        self.to_image().save_png(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(c: char) -> Vec<String> {
        glyph(c)
            .iter()
            .map(|r| {
                (0..GLYPH_W).map(|i| if r & (1 << (4 - i)) != 0 { '#' } else { '.' }).collect()
            })
            .collect()
    }

    #[test]
    fn glyphs_have_known_bitmaps() {
        assert_eq!(
            art('4'),
            ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#.", ".....", "....."]
        );
        assert_eq!(glyph('A'), [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11, 0, 0]);
        // Descenders use the two rows under the baseline.
        assert_eq!(art('g')[7..], ["....#", ".###."]);
        assert_eq!(art('_')[7], "#####");
        // Unknown characters fall back to '?'.
        assert_eq!(glyph('~'), glyph('?'));
        assert_eq!(glyph(' '), [0; GLYPH_H]);
    }

    #[test]
    fn every_font_row_is_five_columns_and_rows_fit_the_cell() {
        for (c, rows) in FONT {
            let rows: Vec<&str> = rows.split(' ').filter(|r| !r.is_empty()).collect();
            assert!(rows.len() <= GLYPH_H, "{c:?}");
            for r in rows {
                assert!(r.len() == GLYPH_W && r.bytes().all(|b| b == b'#' || b == b'.'), "{c:?}");
            }
        }
        let mut chars: Vec<char> = FONT.iter().map(|(c, _)| *c).collect();
        chars.sort();
        chars.dedup();
        assert_eq!(chars.len(), FONT.len(), "no character defined twice");
    }

    #[test]
    fn text_is_drawn_pixel_for_pixel() {
        let mut f = Figure::new(20, 20);
        f.text(1.0, 2.0, "1", 1, BLACK);
        // '1' row 0 is "..#..": only column 2 of the first row is set.
        assert_eq!(f.pixel(3, 2), BLACK);
        assert_eq!(f.pixel(2, 2), WHITE);
        assert_eq!(f.pixel(4, 2), WHITE);
        // Row 6 is ".###.", drawn at scale 1 from x = 1.
        assert_eq!(
            (1..7).map(|x| f.pixel(x, 8) == BLACK).collect::<Vec<_>>(),
            [false, true, true, true, false, false]
        );
        assert_eq!(text_width("12", 2), 22);
        assert_eq!(text_width("", 2), 0);
    }

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        let t = Ticks::snapped(0.0, 6.0, 6);
        assert_eq!((t.lo, t.hi, t.step), (0.0, 6.0, 1.0));
        assert_eq!(t.values, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let t = Ticks::snapped(0.0, 13.0, 6);
        assert_eq!((t.lo, t.hi, t.step), (0.0, 14.0, 2.0));
        assert_eq!(t.values.len(), 8);
        let t = Ticks::snapped(0.0, 300.0, 6);
        assert_eq!(t.step, 50.0);
        assert_eq!(t.label(150.0), "150");
        // Inside ticks keep the given range.
        let t = Ticks::inside(23.41, 27.9, 5);
        assert_eq!((t.lo, t.hi, t.step), (23.41, 27.9, 1.0));
        assert_eq!(t.values, [24.0, 25.0, 26.0, 27.0]);
        let t = Ticks::inside(0.013, 0.061, 5);
        assert_eq!(t.step, 0.01);
        assert_eq!(
            t.values.iter().map(|v| t.label(*v)).collect::<Vec<_>>(),
            ["0.02", "0.03", "0.04", "0.05", "0.06"]
        );
        let t = Ticks::inside(-0.4, 0.4, 4);
        assert_eq!(t.step, 0.2);
        assert_eq!(
            t.values.iter().map(|v| t.label(*v)).collect::<Vec<_>>(),
            ["-0.4", "-0.2", "0.0", "0.2", "0.4"]
        );
        // A single value still gets a range.
        let t = Ticks::inside(5.0, 5.0, 5);
        assert!(t.lo < 5.0 && t.hi > 5.0 && t.values.contains(&5.0));
    }

    #[test]
    fn a_line_is_antialiased_and_drawn_between_its_points() {
        let mut f = Figure::new(40, 20);
        f.polyline(&[(5.0, 10.3), (20.0, 10.3), (35.0, 10.3)], 2.0, [0, 0, 255]);
        // Full coverage on the line (also at the join), none away from it, partial at its edges.
        assert_eq!(f.pixel(20, 10), [0, 0, 255]);
        assert_eq!(f.pixel(12, 10), [0, 0, 255]);
        assert_eq!(f.pixel(20, 14), WHITE);
        assert_eq!(f.pixel(2, 10), WHITE);
        let edge = f.pixel(20, 11);
        assert!(edge != WHITE && edge != [0, 0, 255], "{edge:?}");
    }
}
