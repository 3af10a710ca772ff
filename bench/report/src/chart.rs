//! Renders one [`Chart`] as an SVG document with plotters. Pure: returns the SVG text.

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::model::{Chart, Series};

const WIDTH: u32 = 760;
const HEIGHT: u32 = 420;

/// Colours of the measured series, in order; baselines use the greys.
const MEASURED: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];
const BASELINE: [RGBColor; 3] = [
    RGBColor(90, 90, 90),
    RGBColor(140, 140, 140),
    RGBColor(60, 60, 60),
];

/// The SVG of `chart`, with `caption_note` (machine and date) under the title.
pub fn svg(chart: &Chart, caption_note: &str) -> Result<String> {
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let (mut x_min, mut x_max, mut y_max) = (f64::MAX, f64::MIN, 0.0_f64);
    let mut y_min_positive = f64::MAX;
    for &(x, y) in points {
        if !x.is_finite() || !y.is_finite() {
            return Err(anyhow!("chart {}: a point is not a finite number", chart.id));
        }
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_max = y_max.max(y);
        if y > 0.0 {
            y_min_positive = y_min_positive.min(y);
        }
    }
    if x_min > x_max {
        return Err(anyhow!("chart {} has no points", chart.id));
    }
    if x_min == x_max {
        x_min -= 1.0;
        x_max += 1.0;
    }
    // A little room either side so that the first and last points' markers are not cut.
    let pad = (x_max - x_min) * 0.03;
    let (x_min, x_max) = (x_min - pad, x_max + pad);
    if y_max <= 0.0 {
        y_max = 1.0;
    }

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (title_area, plot_area) = root.split_vertically(48);
        title_area
            .titled(&chart.title, ("sans-serif", 18))
            .map_err(plot_err)?
            .draw_text(
                caption_note,
                &TextStyle::from(("sans-serif", 11)).color(&BLACK.mix(0.6)),
                (10, 4),
            )
            .map_err(plot_err)?;
        if chart.log_y {
            let low = if y_min_positive == f64::MAX {
                0.1
            } else {
                y_min_positive / 1.5
            };
            let mut ctx = ChartBuilder::on(&plot_area)
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(x_min..x_max, (low..y_max * 1.5).log_scale())
                .map_err(plot_err)?;
            ctx.configure_mesh()
                .light_line_style(BLACK.mix(0.04))
                .x_desc(&chart.x_label)
                .y_desc(&chart.y_label)
                .draw()
                .map_err(plot_err)?;
            draw_series(&mut ctx, &chart.series)?;
        } else {
            let mut ctx = ChartBuilder::on(&plot_area)
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(x_min..x_max, 0.0..y_max * 1.1)
                .map_err(plot_err)?;
            ctx.configure_mesh()
                .light_line_style(BLACK.mix(0.04))
                .x_desc(&chart.x_label)
                .y_desc(&chart.y_label)
                .draw()
                .map_err(plot_err)?;
            draw_series(&mut ctx, &chart.series)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(out)
}

/// Draws every series (measured ones solid and coloured, baselines dashed and grey) and the legend.
fn draw_series<'a, Y>(
    ctx: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    series: &[Series],
) -> Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    let (mut measured, mut baseline) = (0, 0);
    for s in series {
        let color = if s.baseline {
            baseline += 1;
            BASELINE[(baseline - 1) % BASELINE.len()]
        } else {
            measured += 1;
            MEASURED[(measured - 1) % MEASURED.len()]
        };
        let style = color.stroke_width(2);
        let mut points = s.points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let label = if s.baseline {
            format!("{} (baseline)", s.name)
        } else {
            s.name.clone()
        };
        if s.baseline {
            ctx.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        } else {
            ctx.draw_series(LineSeries::new(points.clone(), style))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        ctx.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_err)?;
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart failed: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(log_y: bool) -> Chart {
        Chart {
            id: "c".into(),
            title: "latency against load".into(),
            x_label: "concurrency".into(),
            y_label: "p99 (ms)".into(),
            log_y,
            series: vec![
                Series {
                    name: "server p99".into(),
                    baseline: false,
                    points: vec![(1.0, 9.0), (32.0, 25.0)],
                },
                Series {
                    name: "bare sqlx p99".into(),
                    baseline: true,
                    points: vec![(32.0, 11.0), (1.0, 1.2)],
                },
            ],
        }
    }

    #[test]
    fn both_lines_legend_and_caption_are_drawn() {
        for log_y in [false, true] {
            let svg = svg(&chart(log_y), "2 cores · 2026-12-03").expect("svg");
            assert!(svg.starts_with("<svg"), "{svg}");
            assert!(svg.contains("latency against load"));
            assert!(svg.contains("2 cores · 2026-12-03"));
            assert!(svg.contains("server p99"));
            assert!(svg.contains("bare sqlx p99 (baseline)"));
            assert!(svg.contains("concurrency") && svg.contains("p99 (ms)"));
            // One solid polyline for the server and dashes (many short lines) for the baseline.
            assert!(svg.matches("<polyline").count() >= 2, "{svg}");
        }
    }

    #[test]
    fn a_chart_without_points_or_with_nan_is_an_error() {
        let mut empty = chart(false);
        empty.series.iter_mut().for_each(|s| s.points.clear());
        assert!(svg(&empty, "").is_err());
        let mut nan = chart(false);
        nan.series[0].points.push((f64::NAN, 1.0));
        assert!(svg(&nan, "").is_err());
    }
}
