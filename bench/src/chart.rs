//! The chart of the throughput sweep: events/s against concurrency, raw loop and runtime, no-op
//! and 10 ms work, as an SVG that BENCHMARKS.md embeds. Each point is a median, with a whisker
//! from the minimum to the maximum.

use std::path::Path;

use plotters::prelude::*;

use super::throughput::{Point, CONCURRENCIES};
use super::BoxError;

/// Draws the one-instance points of the sweep into `path`.
pub fn draw(points: &[Point], path: &Path, title: &str) -> Result<(), BoxError> {
    let points: Vec<&Point> = points.iter().filter(|p| p.instances == 1).collect();
    let top = points
        .iter()
        .map(|p| p.raw.max.max(p.runtime.max))
        .fold(1.0, f64::max)
        * 1.1;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    // The x axis is log2(concurrency), so that the ticks fall on the measured concurrencies.
    let high = (CONCURRENCIES[CONCURRENCIES.len() - 1] as f64).log2();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.3..high + 0.3, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("concurrency (log scale)")
        .y_desc("events/s")
        .x_labels(high as usize + 1)
        .x_label_formatter(&|x| {
            let power = x.round() as u32;
            let measured = CONCURRENCIES.contains(&(1 << power));
            if measured {
                (1u64 << power).to_string()
            } else {
                String::new()
            }
        })
        .light_line_style(WHITE)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let series = [
        (0, false, "raw, no-op", RGBColor(120, 120, 120)),
        (0, true, "runtime default, no-op", RGBColor(31, 119, 180)),
        (10, false, "raw, 10 ms", RGBColor(190, 190, 190)),
        (10, true, "runtime default, 10 ms", RGBColor(255, 127, 14)),
    ];
    for (work_ms, runtime, label, color) in series {
        let line: Vec<(f64, f64, f64, f64)> = points
            .iter()
            .filter(|p| p.work_ms == work_ms)
            .map(|p| {
                let spread = if runtime { p.runtime } else { p.raw };
                (
                    (p.concurrency as f64).log2(),
                    spread.median,
                    spread.min,
                    spread.max,
                )
            })
            .collect();
        let style = color.stroke_width(if runtime { 3 } else { 2 });
        chart
            .draw_series(LineSeries::new(
                line.iter().map(|&(x, y, _, _)| (x, y)),
                style,
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        chart.draw_series(
            line.iter()
                .map(|&(x, y, _, _)| Circle::new((x, y), 4, color.filled())),
        )?;
        chart.draw_series(line.iter().map(|&(x, _, min, max)| {
            PathElement::new([(x, min), (x, max)], color.stroke_width(1))
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
