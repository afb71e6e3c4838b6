//! Small inline SVG charts (pure): a department's 12-period on-time trend and a dataset's days
//! late per period. No script, no external asset: the markup is the chart.

use std::fmt::Write as _;

use kho_shared::freshness::history::Verdict;

use crate::freshness::views::DatasetScore;

/// A department's share of datasets on time in each of its last periods, oldest first: period
/// `i` counts each dataset's `i`-th last period (cadences differ, so periods align from the most
/// recent). `None` where no dataset had a judged (on time, late or missed) period.
pub fn department_trend(datasets: &[DatasetScore], periods: usize) -> Vec<Option<f64>> {
    (0..periods)
        .map(|i| {
            let back = periods - 1 - i;
            let (mut on_time, mut judged) = (0u32, 0u32);
            for d in datasets {
                let Some(p) = d.periods.len().checked_sub(back + 1).and_then(|j| d.periods.get(j)) else { continue };
                match p.outcome.verdict {
                    Verdict::OnTime => (on_time, judged) = (on_time + 1, judged + 1),
                    Verdict::Late | Verdict::Missed => judged += 1,
                    Verdict::Pending | Verdict::NotTracked => {}
                }
            }
            (judged > 0).then(|| f64::from(on_time) / f64::from(judged))
        })
        .collect()
}

const W: u32 = 132;
const H: u32 = 30;

/// Bars of the share on time (full height = 100 %); grey stubs where nothing was judged.
pub fn trend_svg(shares: &[Option<f64>], label: &str) -> String {
    let n = shares.len().max(1) as u32;
    let step = W / n;
    let mut out = format!(
        "<svg class=\"trend\" role=\"img\" aria-label=\"{}\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">",
        escape(label)
    );
    for (i, s) in shares.iter().enumerate() {
        let x = i as u32 * step + 1;
        let (h, class, title) = match s {
            Some(v) => {
                let h = ((v.clamp(0.0, 1.0) * f64::from(H - 2)).round() as u32).max(1);
                let class = if *v >= 0.999 {
                    "ok"
                } else if *v >= 0.5 {
                    "warn"
                } else {
                    "bad"
                };
                (h, class, format!("{:.0} %", v * 100.0))
            }
            None => (2, "none", "—".to_string()),
        };
        let _ = write!(
            out,
            "<rect class=\"{class}\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{h}\"><title>{title}</title></rect>",
            H - h,
            step.saturating_sub(2).max(1)
        );
    }
    out.push_str("</svg>");
    out
}

/// Days late per period (bars up, scaled to the worst), labelled with the period.
pub fn lateness_svg(periods: &[(String, i64, Verdict)]) -> String {
    let worst = periods.iter().map(|p| p.1).max().unwrap_or(0).max(1);
    let (w, h) = (360u32, 80u32);
    let n = periods.len().max(1) as u32;
    let step = w / n;
    let mut out = format!("<svg class=\"lateness\" role=\"img\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">");
    for (i, (label, days, verdict)) in periods.iter().enumerate() {
        let x = i as u32 * step + 1;
        let bar = ((*days as f64 / worst as f64) * f64::from(h - 4)).round() as u32;
        let class = match verdict {
            Verdict::OnTime => "ok",
            Verdict::Late => "warn",
            Verdict::Missed => "bad",
            Verdict::Pending | Verdict::NotTracked => "none",
        };
        let _ = write!(
            out,
            "<rect class=\"{class}\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>{}: {days}</title></rect>",
            h - bar.max(2),
            step.saturating_sub(2).max(1),
            bar.max(2),
            escape(label)
        );
    }
    out.push_str("</svg>");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trend_bars_follow_the_shares() {
        let svg = trend_svg(&[Some(1.0), None, Some(0.0), Some(0.5)], "a<b");
        assert!(svg.starts_with("<svg class=\"trend\" role=\"img\" aria-label=\"a&lt;b\""), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains("class=\"ok\"") && svg.contains("class=\"none\"") && svg.contains("class=\"bad\""));
        assert!(svg.contains("<title>50 %</title>"));
    }

    fn score(verdicts: &[Verdict]) -> DatasetScore {
        use kho_shared::freshness::history::PeriodOutcome;
        use kho_shared::schedule::Period;
        let t = jiff::Timestamp::UNIX_EPOCH;
        let periods = verdicts
            .iter()
            .map(|v| crate::freshness::views::PeriodScore {
                outcome: PeriodOutcome {
                    period: Period { start: t, end: t, label: String::new() },
                    deadline: t,
                    overdue_after: t,
                    satisfied_at: None,
                    verdict: *v,
                    late_by_s: None,
                },
                days_late: 0,
            })
            .collect();
        DatasetScore {
            dataset: "d".into(),
            title: "D".into(),
            status: None,
            periods,
            quality: None,
            quality_violations: None,
        }
    }

    #[test]
    fn the_trend_aligns_datasets_on_their_latest_periods() {
        use Verdict::*;
        // A monthly dataset with 3 ended periods and a daily one with 4: period i counts each
        // one's i-th last period; pending and untracked periods are not judged.
        let a = score(&[OnTime, Late, OnTime]);
        let b = score(&[Missed, OnTime, Pending, OnTime]);
        let trend = department_trend(&[a, b], 4);
        assert_eq!(trend, vec![Some(0.0), Some(1.0), Some(0.0), Some(1.0)]);
        assert_eq!(department_trend(&[score(&[NotTracked])], 2), vec![None, None]);
    }

    #[test]
    fn lateness_scales_to_the_worst_period() {
        let svg = lateness_svg(&[("2026-01".into(), 0, Verdict::OnTime), ("2026-02".into(), 4, Verdict::Late)]);
        assert!(svg.contains("height=\"76\"><title>2026-02: 4</title>"), "{svg}");
    }
}
