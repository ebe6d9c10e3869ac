//! `siyu import activity FILE`: CSV (header `kind,customer,amount,count,at,id`) or JSON Lines
//! with the fields of `POST /api/v1/activity`, streamed in chunks so files larger than memory
//! import in constant memory. Progress goes to stderr; a checkpoint beside the file (the byte
//! offset of the last committed chunk) lets an interrupted import resume where it stopped; bad
//! records go, with their line and reasons, to a rejects file; a summary ends it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::activity::{ActivityItem, Problem, check_item};
use super::{AppError, Services};
use crate::store::tiers::{NewActivity, insert_activity};

/// Records committed per transaction (and per checkpoint).
const CHUNK: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    App(#[from] AppError),
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportSummary {
    pub lines: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Whether this run resumed an interrupted one (its counts included).
    #[serde(default)]
    pub resumed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    /// Byte offset after the last committed record.
    offset: u64,
    /// File size when the import began: a different file is not resumed.
    size: u64,
    summary: ImportSummary,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> ImportError {
    ImportError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

pub fn checkpoint_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".progress");
    PathBuf::from(p)
}

pub fn rejects_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".rejected.jsonl");
    PathBuf::from(p)
}

/// A JSON value standing for a CSV field: the number itself when it is one, else a string (so
/// the record's checks report it).
fn raw_field(text: &str) -> Option<Box<RawValue>> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let json = if serde_json::from_str::<serde_json::Number>(t).is_ok() {
        t.to_string()
    } else {
        serde_json::Value::String(t.to_string()).to_string()
    };
    RawValue::from_string(json).ok()
}

/// The CSV columns, by header name.
struct Columns {
    kind: Option<usize>,
    customer: Option<usize>,
    amount: Option<usize>,
    count: Option<usize>,
    at: Option<usize>,
    id: Option<usize>,
}

impl Columns {
    fn of(header: &csv::StringRecord) -> Columns {
        let find = |name: &str| {
            header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        Columns {
            kind: find("kind"),
            customer: find("customer"),
            amount: find("amount"),
            count: find("count"),
            at: find("at"),
            id: find("id"),
        }
    }

    fn item(&self, record: &csv::StringRecord) -> ActivityItem {
        let text = |i: Option<usize>| i.and_then(|i| record.get(i)).map(str::to_string);
        ActivityItem {
            kind: text(self.kind),
            customer: text(self.customer),
            amount: self.amount.and_then(|i| record.get(i)).and_then(raw_field),
            count: self.count.and_then(|i| record.get(i)).and_then(raw_field),
            at: text(self.at),
            id: text(self.id),
        }
    }
}

/// Imports `path`, resuming an interrupted import of the same file. `progress` writes a live line
/// to stderr.
pub async fn import_activity(
    services: &Services,
    path: &Path,
    progress: bool,
) -> Result<ImportSummary, ImportError> {
    let format = match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => Format::Csv,
        Some("jsonl") | Some("ndjson") => Format::JsonLines,
        _ => return Err(file_err(path, "use a .csv or .jsonl file")),
    };
    let size = std::fs::metadata(path)
        .map_err(|e| file_err(path, e))?
        .len();
    let checkpoint_file = checkpoint_path(path);
    let resume: Option<Checkpoint> = std::fs::read_to_string(&checkpoint_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(|c: &Checkpoint| c.size == size && c.offset <= size);
    let mut summary = resume
        .as_ref()
        .map(|c| ImportSummary {
            resumed: true,
            ..c.summary.clone()
        })
        .unwrap_or_default();

    let mut file = File::open(path).map_err(|e| file_err(path, e))?;
    let mut reader = BufReader::new(&mut file);
    // The CSV header is read from the start even when resuming.
    let mut header_line = String::new();
    let columns = if format == Format::Csv {
        reader
            .read_line(&mut header_line)
            .map_err(|e| file_err(path, e))?;
        let header = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(header_line.as_bytes())
            .records()
            .next()
            .transpose()
            .map_err(|e| file_err(path, e))?
            .unwrap_or_default();
        let c = Columns::of(&header);
        if c.kind.is_none() || c.customer.is_none() || c.at.is_none() || c.id.is_none() {
            return Err(file_err(
                path,
                "the first line must name the columns kind,customer,amount,count,at,id",
            ));
        }
        Some(c)
    } else {
        None
    };
    let mut offset = header_line.len() as u64;
    let mut line_no = if format == Format::Csv { 1 } else { 0 };
    if let Some(c) = &resume {
        drop(reader);
        file.seek(SeekFrom::Start(c.offset))
            .map_err(|e| file_err(path, e))?;
        offset = c.offset;
        line_no = c.summary.lines + u64::from(format == Format::Csv);
        reader = BufReader::new(&mut file);
    }
    let mut rejects = std::fs::OpenOptions::new()
        .create(true)
        .append(resume.is_some())
        .write(true)
        .truncate(resume.is_none())
        .open(rejects_path(path))
        .map_err(|e| file_err(path, e))?;

    let mut chunk: Vec<NewActivity> = Vec::with_capacity(CHUNK);
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader.read_line(&mut line).map_err(|e| file_err(path, e))?;
        if read > 0 {
            offset += read as u64;
            line_no += 1;
            let text = line.trim_end_matches(['\n', '\r']);
            if !text.trim().is_empty() {
                summary.lines += 1;
                let item = match (&columns, format) {
                    (Some(cols), _) => csv::ReaderBuilder::new()
                        .has_headers(false)
                        .from_reader(text.as_bytes())
                        .records()
                        .next()
                        .transpose()
                        .map(|r| cols.item(&r.unwrap_or_default()))
                        .map_err(|e| e.to_string()),
                    (None, _) => {
                        serde_json::from_str::<ActivityItem>(text).map_err(|e| e.to_string())
                    }
                };
                match item.map_err(|reason| {
                    vec![Problem {
                        line: line_no as usize,
                        field: "record".into(),
                        reason,
                    }]
                }) {
                    Ok(item) => match check_item(line_no as usize, &item) {
                        Ok(record) => chunk.push(record),
                        Err(problems) => reject(&mut rejects, &mut summary, &problems, path)?,
                    },
                    Err(problems) => reject(&mut rejects, &mut summary, &problems, path)?,
                }
            }
        }
        let done = read == 0;
        if chunk.len() >= CHUNK || (done && !chunk.is_empty()) {
            commit(services, &mut chunk, &mut summary).await?;
            rejects.flush().map_err(|e| file_err(path, e))?;
            let c = Checkpoint {
                offset,
                size,
                summary: summary.clone(),
            };
            std::fs::write(
                &checkpoint_file,
                serde_json::to_string(&c).unwrap_or_default(),
            )
            .map_err(|e| file_err(path, e))?;
            if progress {
                let pct = if size == 0 {
                    100.0
                } else {
                    offset as f64 * 100.0 / size as f64
                };
                eprint!(
                    "\r{pct:5.1}%  {} lines  {} stored  {} duplicates  {} rejected",
                    summary.lines, summary.stored, summary.duplicates, summary.rejected
                );
            }
        }
        if done {
            break;
        }
    }
    if progress {
        eprintln!();
    }
    // Finished: nothing to resume.
    let _ = std::fs::remove_file(&checkpoint_file);
    if summary.stored > 0 {
        let key = format!("evaluate:import:{}", services.clock.now_ms());
        let mut tx = services.store.begin().await.map_err(AppError::from)?;
        super::tiers::enqueue_evaluation(services, &mut tx, None, &key).await?;
        tx.commit().await.map_err(AppError::from)?;
    }
    Ok(summary)
}

fn reject(
    out: &mut File,
    summary: &mut ImportSummary,
    problems: &[Problem],
    path: &Path,
) -> Result<(), ImportError> {
    summary.rejected += 1;
    let line =
        serde_json::json!({ "line": problems.first().map_or(0, |p| p.line), "problems": problems });
    writeln!(out, "{line}").map_err(|e| file_err(path, e))
}

/// Stores a chunk in one transaction (records under shop references count for their customer).
async fn commit(
    services: &Services,
    chunk: &mut Vec<NewActivity>,
    summary: &mut ImportSummary,
) -> Result<(), AppError> {
    let keys: Vec<String> = chunk
        .iter()
        .map(|r| r.customer.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let refs = services.store.refs_of(&keys).await?;
    for r in chunk.iter_mut() {
        if let Some(ext) = refs.get(&r.customer) {
            r.who = ext.clone();
        }
    }
    let mut tx = services.store.begin().await?;
    let stored = insert_activity(&mut tx, chunk, services.clock.now_ms()).await?;
    tx.commit().await?;
    summary.stored += stored;
    summary.duplicates += chunk.len() as u64 - stored;
    chunk.clear();
    Ok(())
}
