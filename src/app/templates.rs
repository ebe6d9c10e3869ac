//! The texts operators change: notes, notices to staff, answers to staff. Built into the binary
//! from `templates/`, each replaceable by a file of the same name in `templates.dir`. Templates
//! are data: what they render is exactly what the member reads.

use std::path::Path;

use minijinja::Environment;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {name}: {reason}")]
    Bad { name: String, reason: String },
    #[error("templates.dir {dir}: {reason}")]
    Dir { dir: String, reason: String },
}

/// A console page's template, `templates/console/NAME`, known as `console/NAME`.
macro_rules! console {
    ($name:literal) => {
        (
            concat!("console/", $name),
            include_str!(concat!("../../templates/console/", $name)),
        )
    };
}

const BUILT_IN: &[(&str, &str)] = &[
    (
        "note_remark.j2",
        include_str!("../../templates/note_remark.j2"),
    ),
    (
        "note_description.j2",
        include_str!("../../templates/note_description.j2"),
    ),
    (
        "member_notice.j2",
        include_str!("../../templates/member_notice.j2"),
    ),
    (
        "staff_answer.j2",
        include_str!("../../templates/staff_answer.j2"),
    ),
    (
        "staff_list.j2",
        include_str!("../../templates/staff_list.j2"),
    ),
    (
        "staff_help.j2",
        include_str!("../../templates/staff_help.j2"),
    ),
    (
        "group_removal.j2",
        include_str!("../../templates/group_removal.j2"),
    ),
    (
        "group_invite_by_hand.j2",
        include_str!("../../templates/group_invite_by_hand.j2"),
    ),
    // The console's pages (HTML, so what they show is escaped).
    console!("base.html"),
    console!("error.html"),
    console!("login.html"),
    console!("overview.html"),
    console!("customers.html"),
    console!("customer.html"),
    console!("channels.html"),
    console!("channel.html"),
    console!("tiers.html"),
    console!("groups.html"),
    console!("group_members.html"),
    console!("campaigns.html"),
    console!("campaign.html"),
    console!("audit.html"),
    console!("jobs.html"),
    console!("users.html"),
];

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The built-in templates, with those in `dir` (if not empty) taking their place. A bad
    /// template stops the program at start, naming the file.
    pub fn load(dir: &str) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        for (name, text) in BUILT_IN {
            let text = if dir.is_empty() {
                (*text).to_string()
            } else {
                let path = Path::new(dir).join(name);
                match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => (*text).to_string(),
                    Err(e) => {
                        return Err(TemplateError::Dir {
                            dir: dir.into(),
                            reason: format!("{name}: {e}"),
                        });
                    }
                }
            };
            env.add_template_owned(name.to_string(), text)
                .map_err(|e| TemplateError::Bad {
                    name: name.to_string(),
                    reason: e.to_string(),
                })?;
        }
        let mut templates = Templates { env };
        templates.set_zone(chrono_tz::Asia::Shanghai);
        Ok(templates)
    }

    /// Times in templates (`{{ at | time }}`, Unix milliseconds) are shown in `zone`
    /// (`jobs.timezone`; Asia/Shanghai until told).
    pub fn set_zone(&mut self, zone: chrono_tz::Tz) {
        self.env
            .add_filter("time", move |ms: Option<i64>| -> String {
                ms.and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.with_timezone(&zone).format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default()
            });
    }

    pub fn render(&self, name: &str, ctx: impl Serialize) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| TemplateError::Bad {
                name: name.into(),
                reason: e.to_string(),
            })?;
        template
            .render(ctx)
            .map(|s| s.trim_end().to_string())
            .map_err(|e| TemplateError::Bad {
                name: name.into(),
                reason: e.to_string(),
            })
    }

    /// Renders a text an operator stored (a channel's welcome message).
    pub fn render_str(
        &self,
        what: &str,
        source: &str,
        ctx: impl Serialize,
    ) -> Result<String, TemplateError> {
        self.env
            .render_str(source, ctx)
            .map(|s| s.trim_end().to_string())
            .map_err(|e| TemplateError::Bad {
                name: what.into(),
                reason: e.to_string(),
            })
    }

    /// Checks that an operator's text is a valid template before it is stored.
    pub fn check_str(&self, source: &str) -> Result<(), String> {
        self.env
            .template_from_str(source)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// Cuts `text` to at most `max` characters (never inside a character), marking the cut with `…`.
pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut with `…`.
pub fn truncate_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn the_note_reads_as_the_member_will_see_it() {
        let t = Templates::load("").unwrap();
        let remark = t
            .render(
                "note_remark.j2",
                context! { name => "王小明", channel => "抖音" },
            )
            .unwrap();
        assert_eq!(remark, "王小明·抖音");
        let description = t
            .render(
                "note_description.j2",
                context! { tier => "普通会员", channel => "抖音", added_at => "2026-11-22 10:00" },
            )
            .unwrap();
        assert_eq!(description, "普通会员｜抖音｜2026-11-22 10:00");
    }

    #[test]
    fn the_member_notice_has_a_line_per_customer() {
        let t = Templates::load("").unwrap();
        let c = |name: &str| context! { name => name, channel => "抖音" };
        let tier = |name: &str| context! { name => name, from => "普通会员", to => "合作伙伴" };
        let one = t.render("member_notice.j2", context! { staff => "zhangsan", churned => vec![c("王小明")], tiers => Vec::<()>::new() });
        assert_eq!(one.unwrap(), "客户「王小明」（抖音）删除了zhangsan。");
        let text = t
            .render("member_notice.j2", context! { staff => "zhangsan", churned => vec![c("甲"), c("乙")], tiers => vec![tier("丙"), tier("丁")] })
            .unwrap();
        assert_eq!(
            text,
            "2 位客户删除了zhangsan：\n- 甲（抖音）\n- 乙（抖音）\n客户「丙」等级变化：普通会员 → 合作伙伴\n客户「丁」等级变化：普通会员 → 合作伙伴"
        );
        let only_tiers = t.render("member_notice.j2", context! { staff => "zhangsan", churned => Vec::<()>::new(), tiers => vec![tier("丙")] });
        assert_eq!(
            only_tiers.unwrap(),
            "客户「丙」等级变化：普通会员 → 合作伙伴"
        );
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate_chars("王小明·抖音", 20), "王小明·抖音");
        let long = "一".repeat(25);
        let cut = truncate_chars(&long, 20);
        assert_eq!(cut.chars().count(), 20);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn a_directory_overrides_a_template_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("note_remark.j2"),
            "{{ channel }}来的{{ name }}",
        )
        .unwrap();
        let t = Templates::load(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(
            t.render(
                "note_remark.j2",
                context! { name => "陈静", channel => "小红书" }
            )
            .unwrap(),
            "小红书来的陈静"
        );
        std::fs::write(dir.path().join("staff_help.j2"), "{% if %}").unwrap();
        let err = Templates::load(dir.path().to_str().unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("staff_help.j2"), "{err}");
    }
}
