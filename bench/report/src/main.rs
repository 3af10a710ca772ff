//! `tmi-bench-report RESULTS_DIR PAGE`: reads every `RESULTS_DIR/*.json` a benchmark suite wrote (see
//! [`model`]) and writes the Markdown page PAGE (docs/benchmarks.md) and its SVG charts in the directory
//! named like the page without `.md` (docs/benchmarks/). Does file IO; the rendering ([`markdown`],
//! [`chart`]) is pure. Suites whose file is absent keep their previous section out: run `make bench` for
//! the whole page, or one suite's `make bench-…` target followed by this command to refresh only it (the
//! other suites' JSON files stay in RESULTS_DIR between runs).

mod chart;
mod markdown;
mod model;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [results, page] = args.as_slice() else {
        bail!("usage: tmi-bench-report RESULTS_DIR PAGE.md");
    };
    let (results, page) = (PathBuf::from(results), PathBuf::from(page));
    let mut suites = read_suites(&results)?;
    if suites.is_empty() {
        bail!(
            "no benchmark results (*.json) in {}: run `make bench` first",
            results.display()
        );
    }
    markdown::order(&mut suites);

    let stem = page
        .file_stem()
        .context("the page needs a file name")?
        .to_string_lossy()
        .into_owned();
    let chart_dir = page.with_file_name(&stem);
    std::fs::create_dir_all(&chart_dir).with_context(|| format!("creating {}", chart_dir.display()))?;
    let mut written = 0;
    for s in &suites {
        for c in &s.charts {
            let caption = format!("{} · {}", s.machine, s.date);
            let svg = chart::svg(c, &caption).with_context(|| format!("suite {}", s.suite))?;
            std::fs::write(chart_dir.join(format!("{}.svg", c.id)), svg)?;
            written += 1;
        }
    }
    std::fs::write(&page, markdown::page(&suites, &stem))
        .with_context(|| format!("writing {}", page.display()))?;
    println!(
        "{}: {} suites, {} charts in {}",
        page.display(),
        suites.len(),
        written,
        chart_dir.display()
    );
    Ok(())
}

fn read_suites(dir: &Path) -> Result<Vec<model::Suite>> {
    let mut suites = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            let suite: model::Suite = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a suite's results", path.display()))?;
            suites.push(suite);
        }
    }
    Ok(suites)
}
