//! The benchmark result file for the report generator: when `BENCH_RESULTS_DIR` is set, a suite
//! writes `$BENCH_RESULTS_DIR/<suite>.json` (tables of preformatted cells, charts of f64 points).
//! IO: /proc (the machine's description) and the result file.

use serde_json::{Value, json};

/// One chart series: (name, is it a baseline, points).
pub type Series = (String, bool, Vec<(f64, f64)>);

pub struct Results {
    pub suite: &'static str,
    pub title: &'static str,
    pub notes: Vec<String>,
    pub tables: Vec<Value>,
    pub charts: Vec<Value>,
}

impl Results {
    pub fn new(suite: &'static str, title: &'static str) -> Self {
        Self {
            suite,
            title,
            notes: Vec::new(),
            tables: Vec::new(),
            charts: Vec::new(),
        }
    }

    pub fn table(&mut self, title: &str, columns: &[&str], rows: Vec<Vec<String>>) {
        self.tables
            .push(json!({"title": title, "columns": columns, "rows": rows}));
    }

    pub fn chart(&mut self, id: &str, title: &str, x_label: &str, y_label: &str, series: Vec<Series>) {
        let series: Vec<Value> = series
            .into_iter()
            .map(|(name, baseline, points)| {
                let points: Vec<[f64; 2]> = points.into_iter().map(|(x, y)| [x, y]).collect();
                json!({"name": name, "baseline": baseline, "points": points})
            })
            .collect();
        self.charts
            .push(json!({"id": id, "title": title, "x_label": x_label,
            "y_label": y_label, "log_y": false, "series": series}));
    }

    /// Writes the file when `BENCH_RESULTS_DIR` is set.
    pub fn write(&self) {
        let Ok(dir) = std::env::var("BENCH_RESULTS_DIR") else {
            return;
        };
        let doc = json!({
            "suite": self.suite,
            "title": self.title,
            "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "machine": machine(),
            "notes": self.notes,
            "tables": self.tables,
            "charts": self.charts,
        });
        let path = std::path::Path::new(&dir).join(format!("{}.json", self.suite));
        let _ = std::fs::create_dir_all(&dir);
        match std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap_or_default()) {
            Ok(()) => eprintln!("results written to {}", path.display()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
}

/// "N cores, M GiB (model)" from /proc.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    format!("{cores} cores, {:.0} GiB ({model})", mem_kib / 1024.0 / 1024.0)
}
