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
    Error::Internal(format!("drawing the chart failed: {e}"))
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

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// The legend as rows of `--- name` entries above the chart (inside it, it would hide the
/// points a curve ends on).
fn draw_legend(area: &Area<'_>, series: &[&Series]) -> Result<()> {
    let text = (FONT, 16).into_font().color(&rgb(BLACK));
    let (w, _) = area.dim_in_pixel();
    let (mut x, mut y) = (12i32, 12i32);
    for s in series {
        let (tw, _) = area.estimate_text_size(&s.name, &text).map_err(plot_err)?;
        let entry = 36 + tw as i32 + 20;
        if x > 12 && x + entry > w as i32 {
            (x, y) = (12, y + 22);
        }
        let line = ShapeStyle::from(&rgb(s.color)).stroke_width(3);
        area.draw(&PathElement::new(vec![(x, y), (x + 28, y)], line)).map_err(plot_err)?;
        area.draw_text(&s.name, &text, (x + 36, y - 8)).map_err(plot_err)?;
        x += entry;
    }
    Ok(())
}

/// Rows the legend of `series` needs in `width` pixels (estimated from the font size, to lay
/// the panel out before drawing).
fn legend_rows(series: &[&Series], width: u32) -> u32 {
    let (mut rows, mut x) = (1u32, 12u32);
    for s in series {
        let entry = 36 + 9 * s.name.chars().count() as u32 + 20;
        if x > 12 && x + entry > width {
            (rows, x) = (rows + 1, 12);
        }
        x += entry;
    }
    rows
}

fn draw_panel(area: &Area<'_>, p: &Panel) -> Result<()> {
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
    let area =
        area.titled(&p.title, (FONT, 22).into_font().color(&rgb(BLACK))).map_err(plot_err)?;
    // Only series with a point to show get a legend entry.
    let named: Vec<&Series> =
        p.series.iter().filter(|s| s.points.iter().any(|q| q.1.is_finite())).collect();
    let legend_h = 10 + 22 * legend_rows(&named, area.dim_in_pixel().0);
    let (legend, plot) = area.split_vertically(legend_h);
    draw_legend(&legend, &named)?;
    let mut chart = ChartBuilder::on(&plot)
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
        for run in runs.into_iter().filter(|r| !r.is_empty()) {
            // A marker on every point, so a run validated once still shows.
            let dots = run.iter().map(|&p| Circle::new(p, 4, color.filled()));
            chart.draw_series(dots).map_err(plot_err)?;
            chart.draw_series(LineSeries::new(run, style)).map_err(plot_err)?;
        }
    }
    Ok(())
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
