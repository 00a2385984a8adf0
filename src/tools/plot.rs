//! Line charts as PNG through `plotters` (bitmap backend), with DejaVu Sans from the `dejavu`
//! crate so no system font is needed.

use crate::io::RgbImage;
use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

pub type Rgb = [u8; 3];

/// Text and frame colour.
pub const BLACK: Rgb = [30, 30, 30];

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

const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Only fails on bytes that are not a font; these are DejaVu Sans.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

fn rgb(c: Rgb) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// One line of a panel: its legend name, colour and (x, y) points (NaN y values are gaps).
pub struct Series {
    pub name: String,
    pub color: Rgb,
    pub points: Vec<(f64, f64)>,
}

/// A panel: title, axis labels and its lines.
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Usage(format!("drawing the chart failed: {e}"))
}

/// The finite range of `v`, widened a little (and made non-empty).
fn range(v: impl Iterator<Item = f64>, from_zero: bool) -> Option<(f64, f64)> {
    let (lo, hi) = v
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    if lo > hi {
        return None;
    }
    let lo = if from_zero { lo.min(0.0) } else { lo };
    let pad = if hi > lo { (hi - lo) * 0.05 } else { lo.abs().max(1.0) * 0.05 };
    Some((if from_zero && lo >= 0.0 { lo } else { lo - pad }, hi + pad))
}

fn draw_panel(area: &DrawingArea<BitMapBackend<'_>, Shift>, p: &Panel) -> Result<()> {
    let xs = p.series.iter().flat_map(|s| s.points.iter().filter(|q| q.1.is_finite()).map(|q| q.0));
    let ys = p.series.iter().flat_map(|s| s.points.iter().map(|q| q.1));
    let (Some(x), Some(y)) = (range(xs, true), range(ys, false)) else {
        // Nothing to draw yet: the title and a note, so the figure keeps its layout.
        let style = (FONT, 22).into_font().color(&rgb(BLACK));
        area.titled(&p.title, style.clone()).map_err(plot_err)?;
        let (w, h) = area.dim_in_pixel();
        area.draw_text("no data", &style, (w as i32 / 2 - 40, h as i32 / 2)).map_err(plot_err)?;
        return Ok(());
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FONT, 22).into_font().color(&rgb(BLACK)))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)
        .map_err(plot_err)?;
    let text = (FONT, 16).into_font().color(&rgb(BLACK));
    chart
        .configure_mesh()
        .x_desc(&p.x_label)
        .y_desc(&p.y_label)
        .label_style(text.clone())
        .axis_desc_style(text.clone())
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(220, 220, 220))
        .draw()
        .map_err(plot_err)?;
    for s in &p.series {
        let color = rgb(s.color);
        // Split at NaN values so a missing point leaves a gap instead of a wrong segment.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &(px, py) in &s.points {
            if py.is_finite() {
                runs.last_mut().expect("one run").push((px, py));
            } else if !runs.last().expect("one run").is_empty() {
                runs.push(Vec::new());
            }
        }
        let style = ShapeStyle::from(&color).stroke_width(3);
        let mut labelled = false;
        for run in runs.into_iter().filter(|r| !r.is_empty()) {
            let drawn = chart.draw_series(LineSeries::new(run, style)).map_err(plot_err)?;
            if !labelled {
                drawn
                    .label(&s.name)
                    .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 24, ly)], style));
                labelled = true;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(text)
        .background_style(WHITE.mix(0.85))
        .border_style(rgb(BLACK))
        .draw()
        .map_err(plot_err)
}

/// Draws `panels` side by side on a white `width x height` image.
pub fn render(panels: &[Panel], width: usize, height: usize) -> Result<RgbImage> {
    register_font();
    let mut hwc = vec![255u8; width * height * 3];
    {
        let root =
            BitMapBackend::with_buffer(&mut hwc, (width as u32, height as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        for (area, p) in root.split_evenly((1, panels.len().max(1))).iter().zip(panels) {
            draw_panel(area, p)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(RgbImage { width, height, hwc })
}

/// [`render`], saved as a PNG.
pub fn save_png(panels: &[Panel], width: usize, height: usize, path: &Path) -> Result<()> {
    render(panels, width, height)?.save_png(path)
}
