//! The result file every benchmark suite writes to `$BENCH_RESULTS_DIR/<suite>.json` (the format is
//! described in docs/development.md, "Benchmark reports"). Pure data, no IO.

use serde::Deserialize;

/// One suite's results.
#[derive(Debug, Clone, Deserialize)]
pub struct Suite {
    /// Short name, also the file's stem: `api`, `collab`, `operator`, …
    pub suite: String,
    /// Heading of the suite's section.
    pub title: String,
    /// When the suite ran (RFC 3339).
    pub date: String,
    /// The machine it ran on (cores, memory, CPU model).
    pub machine: String,
    /// Sentences shown under the heading: how to read the figures.
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(default)]
    pub tables: Vec<Table>,
    #[serde(default)]
    pub charts: Vec<Chart>,
}

/// A table of preformatted cells.
#[derive(Debug, Clone, Deserialize)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// A line chart: every series against the same axes; the baseline series are drawn dashed and grey.
#[derive(Debug, Clone, Deserialize)]
pub struct Chart {
    /// File stem of the SVG (`docs/benchmarks/<id>.svg`); unique across suites.
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// A logarithmic y axis (for latencies that span orders of magnitude).
    #[serde(default)]
    pub log_y: bool,
    pub series: Vec<Series>,
}

/// One line of a chart.
#[derive(Debug, Clone, Deserialize)]
pub struct Series {
    pub name: String,
    /// A baseline measured in the same run (drawn dashed).
    #[serde(default)]
    pub baseline: bool,
    pub points: Vec<(f64, f64)>,
}
