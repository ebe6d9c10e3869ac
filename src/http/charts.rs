//! The console dashboard's charts, drawn by the server as inline SVG: the page needs no
//! JavaScript and fetches nothing. Each function is pure, from the data to one `<svg>` element
//! that scales to its container (`viewBox`, `width="100%"`), so a phone shows it whole.
//!
//! Every text is XML-escaped: labels are channel and tier names that operators type. Empty or
//! all-zero data draws the frame and 暂无数据 ("no data yet") instead of scaling by zero, and every
//! number written is finite, so no `NaN` ever reaches the page.

use std::fmt::Write;

/// The drawing's width in user units; the height follows the content.
const WIDTH: f64 = 640.0;
/// Readable on white, told apart in order (blue, orange, green, red, purple, teal, pink, grey).
const PALETTE: [&str; 8] = [
    "#2563eb", "#ea580c", "#16a34a", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#4b5563",
];
const INK: &str = "#1f2937";
const MUTED: &str = "#6b7280";
const GRID: &str = "#e5e7eb";
const TRACK: &str = "#f3f4f6";
const EMPTY: &str = "暂无数据";
const FONT: &str = "system-ui, -apple-system, 'PingFang SC', 'Microsoft YaHei', sans-serif";
/// The plot of lines and columns.
const PLOT_HEIGHT: f64 = 180.0;

/// Horizontal bars, one per item, each with its label and value (customers per tier, per
/// segment). The largest value spans the plot's width; negative values draw as zero.
pub(crate) fn bars(title: &str, items: &[(String, i64)]) -> String {
    let max = items.iter().map(|(_, v)| (*v).max(0)).max().unwrap_or(0);
    if max == 0 {
        return empty(title);
    }
    let row = 28.0;
    let top = 40.0;
    let label_w = items
        .iter()
        .map(|(l, _)| text_width(l))
        .fold(40.0, f64::max)
        .min(200.0);
    let value_w = items
        .iter()
        .map(|(_, v)| text_width(&v.to_string()))
        .fold(0.0, f64::max)
        + 8.0;
    let left = 12.0 + label_w + 8.0;
    let plot_w = WIDTH - left - value_w - 12.0;
    let height = top + row * items.len() as f64 + 8.0;
    let mut svg = open(title, height);
    for (i, (label, value)) in items.iter().enumerate() {
        let y = top + row * i as f64;
        let v = (*value).max(0);
        let w = plot_w * v as f64 / max as f64;
        let mid = y + row / 2.0;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle" fill="{INK}">{}</text>"#,
            num(left - 8.0),
            num(mid),
            esc(&fit(label, label_w))
        );
        let _ = write!(
            svg,
            r#"<rect class="track" x="{}" y="{}" width="{}" height="18" fill="{TRACK}"/>"#,
            num(left),
            num(mid - 9.0),
            num(plot_w)
        );
        let _ = write!(
            svg,
            r#"<rect class="bar" x="{}" y="{}" width="{}" height="18" fill="{}"><title>{}: {value}</title></rect>"#,
            num(left),
            num(mid - 9.0),
            num(w),
            PALETTE[0],
            esc(label)
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" dominant-baseline="middle" fill="{INK}">{value}</text>"#,
            num(left + w + 6.0),
            num(mid)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One line per series over the days (new relations per channel per day), with a legend, y
/// ticks at round numbers and as many day labels as fit. A series shorter than `days` counts 0
/// for the days it lacks.
pub(crate) fn daily_lines(title: &str, days: &[String], series: &[(String, Vec<i64>)]) -> String {
    let n = days.len();
    let value = |s: &[i64], i: usize| s.get(i).copied().unwrap_or(0).max(0);
    let max = series
        .iter()
        .flat_map(|(_, s)| (0..n).map(|i| value(s, i)))
        .max()
        .unwrap_or(0);
    if max == 0 {
        return empty(title);
    }
    let names: Vec<&str> = series.iter().map(|(name, _)| name.as_str()).collect();
    let (legend, legend_h) = legend(&names, 36.0);
    let frame = Frame::new(max, 36.0 + legend_h + 8.0);
    let mut svg = open(title, frame.bottom + 28.0);
    svg.push_str(&legend);
    frame.y_axis(&mut svg);
    let x = |i: usize| {
        if n == 1 {
            frame.left + frame.width / 2.0
        } else {
            frame.left + frame.width * i as f64 / (n - 1) as f64
        }
    };
    frame.x_labels(&mut svg, days, x);
    for (k, (name, s)) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        if n == 1 {
            let _ = write!(
                svg,
                r#"<circle cx="{}" cy="{}" r="3" fill="{color}"><title>{}</title></circle>"#,
                num(x(0)),
                num(frame.y(value(s, 0))),
                esc(name)
            );
            continue;
        }
        let points: Vec<String> = (0..n)
            .map(|i| format!("{},{}", num(x(i)), num(frame.y(value(s, i)))))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="line" fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round" points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Two columns per label, `a` then `b` (promotions and demotions per week), with a legend and y
/// ticks at round numbers. A series shorter than `labels` counts 0 for the labels it lacks.
pub(crate) fn paired_columns(
    title: &str,
    labels: &[String],
    a: (&str, &[i64]),
    b: (&str, &[i64]),
) -> String {
    let n = labels.len();
    let value = |s: &[i64], i: usize| s.get(i).copied().unwrap_or(0).max(0);
    let max = (0..n)
        .flat_map(|i| [value(a.1, i), value(b.1, i)])
        .max()
        .unwrap_or(0);
    if max == 0 {
        return empty(title);
    }
    let (legend, legend_h) = legend(&[a.0, b.0], 36.0);
    let frame = Frame::new(max, 36.0 + legend_h + 8.0);
    let mut svg = open(title, frame.bottom + 28.0);
    svg.push_str(&legend);
    frame.y_axis(&mut svg);
    let group = frame.width / n as f64;
    let center = |i: usize| frame.left + group * (i as f64 + 0.5);
    frame.x_labels(&mut svg, labels, center);
    let column = (group * 0.4).min(28.0);
    for (i, label) in labels.iter().enumerate() {
        for (k, (name, s)) in [a, b].into_iter().enumerate() {
            let v = value(s, i);
            let y = frame.y(v);
            let _ = write!(
                svg,
                r#"<rect class="column" x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{} {}: {v}</title></rect>"#,
                num(center(i) - column + column * k as f64),
                num(y),
                num(column),
                num(frame.bottom - y),
                PALETTE[k],
                esc(label),
                esc(name)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The plot area of lines and columns, and its value scale.
struct Frame {
    left: f64,
    width: f64,
    bottom: f64,
    /// The scale's top value (a round number ≥ the largest value, ≥ 1) and its tick step.
    max: i64,
    step: i64,
}

impl Frame {
    fn new(max: i64, top: f64) -> Frame {
        let (max, step) = nice_scale(max);
        let left = (12.0 + text_width(&max.to_string()) + 8.0).max(36.0);
        Frame {
            left,
            width: WIDTH - left - 16.0,
            bottom: top + PLOT_HEIGHT,
            max,
            step,
        }
    }

    /// Where `v` lies: `max` ≥ 1, so the division is by a positive number.
    fn y(&self, v: i64) -> f64 {
        self.bottom - PLOT_HEIGHT * v.clamp(0, self.max) as f64 / self.max as f64
    }

    fn y_axis(&self, svg: &mut String) {
        let mut tick = 0;
        while tick <= self.max {
            let y = self.y(tick);
            let _ = write!(
                svg,
                r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{GRID}"/><text class="y" x="{}" y="{y}" text-anchor="end" dominant-baseline="middle" fill="{MUTED}">{tick}</text>"#,
                num(self.left),
                num(self.left + self.width),
                num(self.left - 6.0),
                y = num(y),
            );
            // The step is positive; a scale near i64::MAX ends rather than overflowing.
            match tick.checked_add(self.step) {
                Some(next) => tick = next,
                None => break,
            }
        }
    }

    /// The labels under the plot, every k-th so that they do not overlap.
    fn x_labels(&self, svg: &mut String, labels: &[String], x: impl Fn(usize) -> f64) {
        let shown: Vec<String> = labels.iter().map(|l| short_date(l)).collect();
        let widest = shown.iter().map(|l| text_width(l)).fold(0.0, f64::max) + 8.0;
        let fit = ((self.width / widest).floor() as usize).max(1);
        let every = labels.len().div_ceil(fit).max(1);
        for (i, label) in shown.iter().enumerate().step_by(every) {
            let _ = write!(
                svg,
                r#"<text class="x" x="{}" y="{}" text-anchor="middle" fill="{MUTED}">{}</text>"#,
                num(x(i)),
                num(self.bottom + 18.0),
                esc(label)
            );
        }
    }
}

/// A round scale for values up to `max` (≥ 1): its top and a step of 1, 2 or 5 × 10ⁿ giving
/// about four ticks.
fn nice_scale(max: i64) -> (i64, i64) {
    let max = max.max(1);
    let raw = ceil_div(max, 4);
    let mut magnitude: i64 = 1;
    while magnitude.saturating_mul(10) <= raw {
        magnitude = magnitude.saturating_mul(10);
    }
    let step = [1, 2, 5, 10]
        .iter()
        .map(|m| magnitude.saturating_mul(*m))
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    (ceil_div(max, step).saturating_mul(step), step)
}

/// `a / b` rounded up, for positive numbers (`i64::div_ceil` is not stable).
fn ceil_div(a: i64, b: i64) -> i64 {
    a / b + i64::from(a % b != 0)
}

/// The legend's items in rows from `y`; answers the drawing and its height.
fn legend(names: &[&str], y: f64) -> (String, f64) {
    let mut svg = String::new();
    let (mut x, mut row) = (12.0, 0.0);
    for (k, name) in names.iter().enumerate() {
        let label = fit(name, 200.0);
        let w = 14.0 + text_width(&label) + 16.0;
        if x + w > WIDTH - 12.0 && x > 12.0 {
            x = 12.0;
            row += 1.0;
        }
        let top = y + row * 18.0;
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" dominant-baseline="middle" fill="{INK}">{}</text>"#,
            num(x),
            num(top),
            PALETTE[k % PALETTE.len()],
            num(x + 14.0),
            num(top + 5.0),
            esc(&label)
        );
        x += w;
    }
    let height = if names.is_empty() {
        0.0
    } else {
        (row + 1.0) * 18.0
    };
    (svg, height)
}

/// The frame of a chart with nothing to show.
fn empty(title: &str) -> String {
    let mut svg = open(title, 120.0);
    let _ = write!(
        svg,
        r#"<text x="{}" y="78" text-anchor="middle" fill="{MUTED}">{EMPTY}</text></svg>"#,
        num(WIDTH / 2.0)
    );
    svg
}

/// The `<svg>` start, its accessible title and the visible one.
fn open(title: &str, height: f64) -> String {
    let title = esc(title);
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" role="img" font-family="{FONT}" font-size="12"><title>{title}</title><text x="12" y="22" font-size="14" font-weight="600" fill="{INK}">{title}</text>"#,
        num(WIDTH),
        num(height)
    )
}

/// `x` with one decimal at most; a value that is not finite (it cannot arise, but a `NaN` in
/// the page would break the drawing) writes as 0.
fn num(x: f64) -> String {
    if !x.is_finite() {
        return "0".into();
    }
    let text = format!("{x:.1}");
    match text.strip_suffix(".0") {
        Some(whole) => whole.to_string(),
        None => text,
    }
}

/// Escapes text for XML content and attribute values, and drops the control characters XML 1.0
/// does not allow at all.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            '\u{FFFE}' | '\u{FFFF}' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The width of `text` at 12 units, roughly: wide (CJK) characters take a full em, others about
/// half of one. Enough to lay out labels without measuring fonts.
fn text_width(text: &str) -> f64 {
    text.chars()
        .map(|c| if c.is_ascii() { 7.0 } else { 12.0 })
        .sum()
}

/// `text`, cut with an ellipsis to fit `max` units.
fn fit(text: &str, max: f64) -> String {
    if text_width(text) <= max {
        return text.to_string();
    }
    let mut out = String::new();
    let mut width = 12.0;
    for c in text.chars() {
        width += if c.is_ascii() { 7.0 } else { 12.0 };
        if width > max {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

/// `2026-11-02` as `11-02` (the year is in the page's heading); other labels as they are.
fn short_date(label: &str) -> String {
    let b = label.as_bytes();
    if b.len() == 10 && label.is_ascii() && b[4] == b'-' && b[7] == b'-' {
        label[5..].to_string()
    } else {
        label.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::events::{BytesStart, Event};

    /// Parses `svg` and fails on anything that is not well-formed XML with one `<svg>` root:
    /// unbalanced or mismatched tags, bad entities, duplicate or broken attributes.
    fn assert_well_formed(svg: &str) {
        fn attributes(e: &BytesStart) {
            for a in e.attributes() {
                let a = a.expect("a well-formed attribute");
                a.unescape_value()
                    .expect("an attribute value with valid entities");
            }
        }
        let mut reader = quick_xml::Reader::from_str(svg);
        let (mut depth, mut roots) = (0usize, 0);
        loop {
            match reader.read_event() {
                Ok(Event::Start(e)) => {
                    if depth == 0 {
                        roots += 1;
                        assert_eq!(e.name().as_ref(), b"svg");
                    }
                    attributes(&e);
                    depth += 1;
                }
                Ok(Event::Empty(e)) => {
                    assert!(depth > 0, "an element outside the root");
                    attributes(&e);
                }
                Ok(Event::End(_)) => depth -= 1,
                Ok(Event::Text(t)) => {
                    let text = t.unescape().expect("text with valid entities");
                    assert!(depth > 0 || text.trim().is_empty(), "text outside the root");
                }
                Ok(Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!(
                    "not well-formed at {}: {e}\n{svg}",
                    reader.buffer_position()
                ),
            }
        }
        assert_eq!((depth, roots), (0, 1), "{svg}");
    }

    /// What every chart must be, whatever its data.
    fn assert_chart(svg: &str) {
        assert_well_formed(svg);
        assert!(svg.starts_with("<svg "), "{svg}");
        for needed in [
            r#"viewBox="0 0 "#,
            r#"width="100%""#,
            r#"role="img""#,
            "<title>",
        ] {
            assert!(svg.contains(needed), "{needed} missing in {svg}");
        }
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    /// The value of `attr` in each element of `class`, in order.
    fn attr_of(svg: &str, class: &str, attr: &str) -> Vec<f64> {
        let mut reader = quick_xml::Reader::from_str(svg);
        let mut out = Vec::new();
        loop {
            match reader.read_event().unwrap() {
                Event::Start(e) | Event::Empty(e) => {
                    let get = |name: &str| {
                        e.attributes()
                            .map(Result::unwrap)
                            .find(|a| a.key.as_ref() == name.as_bytes())
                            .map(|a| a.unescape_value().unwrap().into_owned())
                    };
                    if get("class").as_deref() == Some(class) {
                        out.push(get(attr).unwrap().parse().unwrap());
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        out
    }

    fn items(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
        pairs.iter().map(|(l, v)| (l.to_string(), *v)).collect()
    }

    fn days(n: usize) -> Vec<String> {
        let first = chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
        (0..n)
            .map(|d| (first + chrono::Days::new(d as u64)).to_string())
            .collect()
    }

    #[test]
    fn labels_and_titles_are_escaped() {
        let evil = "<script>alert('x & \"y\"')</script>\u{0}";
        let charts = [
            bars(evil, &items(&[(evil, 3), ("普通会员", 1)])),
            daily_lines(evil, &[evil.to_string()], &[(evil.to_string(), vec![2])]),
            paired_columns(evil, &days(2), (evil, &[1, 0]), ("降级", &[0, 2])),
        ];
        for svg in charts {
            assert_chart(&svg);
            assert!(!svg.contains("<script>"), "{svg}");
            assert!(
                svg.contains("&lt;script&gt;alert(&apos;x &amp; &quot;y&quot;"),
                "{svg}"
            );
            assert!(!svg.contains('\u{0}'));
        }
    }

    #[test]
    fn the_largest_bar_spans_the_plot_and_zero_has_no_length() {
        let svg = bars(
            "客户等级",
            &items(&[("普通会员", 10), ("合作伙伴", 5), ("高级合伙人", 0)]),
        );
        assert_chart(&svg);
        let widths = attr_of(&svg, "bar", "width");
        let plot = attr_of(&svg, "track", "width");
        assert_eq!(widths.len(), 3);
        assert!(plot[0] > 100.0, "{plot:?}");
        assert_eq!(widths[0], plot[0]);
        assert!((widths[1] - plot[0] / 2.0).abs() <= 0.1, "{widths:?}");
        assert_eq!(widths[2], 0.0);
        assert!(svg.contains(">普通会员</text>") && svg.contains(">10</text>"));
    }

    #[test]
    fn lines_and_columns_scale_to_round_ticks() {
        let svg = daily_lines(
            "每日新增",
            &days(3),
            &[
                ("抖音".into(), vec![0, 7, 3]),
                ("小红书".into(), vec![1, 0]),
            ],
        );
        assert_chart(&svg);
        assert_eq!(attr_of(&svg, "line", "stroke-width").len(), 2);
        assert!(svg.contains(">8</text>"), "ticks 0 2 4 6 8: {svg}");
        assert!(svg.contains(">抖音</text>") && svg.contains(">10-02</text>"));

        let svg = paired_columns(
            "每周等级变化",
            &days(2),
            ("升级", &[4, 0]),
            ("降级", &[1, 2]),
        );
        assert_chart(&svg);
        let heights = attr_of(&svg, "column", "height");
        assert_eq!(
            heights,
            vec![PLOT_HEIGHT, PLOT_HEIGHT / 4.0, 0.0, PLOT_HEIGHT / 2.0]
        );
    }

    #[test]
    fn day_labels_are_thinned_to_fit() {
        let svg = daily_lines("每日新增", &days(90), &[("抖音".into(), vec![1; 90])]);
        assert_chart(&svg);
        let shown = attr_of(&svg, "x", "x");
        assert!(
            shown.len() > 4 && shown.len() <= 15,
            "{} labels",
            shown.len()
        );
        assert!(shown.windows(2).all(|w| w[1] - w[0] >= 40.0), "{shown:?}");
        // A single day is drawn as a point in the middle, not a line of no length.
        let one = daily_lines("每日新增", &days(1), &[("抖音".into(), vec![1])]);
        assert_chart(&one);
        assert!(one.contains("<circle"), "{one}");
    }

    #[test]
    fn nothing_to_show_says_so() {
        let charts = [
            bars("客户等级", &[]),
            bars("客户等级", &items(&[("普通会员", 0), ("合作伙伴", -2)])),
            daily_lines("每日新增", &[], &[]),
            daily_lines("每日新增", &days(30), &[]),
            daily_lines("每日新增", &days(30), &[("抖音".into(), vec![0; 30])]),
            daily_lines("每日新增", &[], &[("抖音".into(), vec![5])]),
            paired_columns("每周等级变化", &[], ("升级", &[]), ("降级", &[])),
            paired_columns("每周等级变化", &days(4), ("升级", &[0; 4]), ("降级", &[])),
        ];
        for svg in charts {
            assert_chart(&svg);
            assert!(svg.contains(EMPTY), "{svg}");
        }
    }

    #[test]
    fn scales_are_round() {
        assert_eq!(nice_scale(1), (1, 1));
        assert_eq!(nice_scale(7), (8, 2));
        assert_eq!(nice_scale(10), (10, 5));
        assert_eq!(nice_scale(11), (15, 5));
        assert_eq!(nice_scale(100), (100, 50));
        assert_eq!(nice_scale(1234), (1500, 500));
        let (top, step) = nice_scale(i64::MAX);
        assert!(top >= step && step > 0);
        assert_chart(&bars("大", &items(&[("a", i64::MAX), ("b", 1)])));
        assert_chart(&daily_lines(
            "大",
            &days(2),
            &[("a".into(), vec![i64::MAX, 0])],
        ));
    }

    #[test]
    fn numbers_are_short_and_finite() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(12.25), "12.2");
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(num(f64::INFINITY), "0");
    }
}
