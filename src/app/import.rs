//! `siyu import activity FILE`: CSV (header `kind,customer,amount,count,at,id`) or JSON Lines
//! with the fields of `POST /api/v1/activity`, streamed in chunks so files larger than memory
//! import in constant memory; a CSV file is one csv-crate stream, so a quoted field may span
//! lines. Progress goes to stderr (a bar on a terminal, else a plain line); a checkpoint beside
//! the file (the byte offset of the last committed chunk, and the SHA-256 of the file's content)
//! lets an interrupted import of the same content resume where it stopped; bad records go, with
//! their line and reasons, to a rejects file; a summary ends it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
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
    /// File size when the import began.
    size: u64,
    /// SHA-256 of the file's content when the import began (hex): a file whose content changed,
    /// even to the same size, is imported from the start. A checkpoint written before siyu
    /// recorded it is trusted on the size alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    /// The line number at `offset` (for the line numbers of rejected records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    summary: ImportSummary,
}

impl Checkpoint {
    fn resumes(&self, size: u64, sha256: &str) -> bool {
        self.size == size
            && self.offset <= size
            && self.sha256.as_deref().is_none_or(|h| h == sha256)
    }
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
    let mut progress = Progress::new(progress, size);
    let sha256 = sha256_of(path, &progress).map_err(|e| file_err(path, e))?;
    let checkpoint_file = checkpoint_path(path);
    let resume: Option<Checkpoint> = std::fs::read_to_string(&checkpoint_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(|c: &Checkpoint| c.resumes(size, &sha256));
    let mut summary = resume
        .as_ref()
        .map(|c| ImportSummary {
            resumed: true,
            ..c.summary.clone()
        })
        .unwrap_or_default();

    let file = File::open(path).map_err(|e| file_err(path, e))?;
    let mut source = match format {
        Format::Csv => Source::csv(file, resume.as_ref(), path)?,
        Format::JsonLines => Source::json_lines(file, resume.as_ref(), path)?,
    };
    let mut rejects = std::fs::OpenOptions::new()
        .create(true)
        .append(resume.is_some())
        .write(true)
        .truncate(resume.is_none())
        .open(rejects_path(path))
        .map_err(|e| file_err(path, e))?;

    let mut chunk: Vec<NewActivity> = Vec::with_capacity(CHUNK);
    loop {
        let next = source.next(path)?;
        let done = next.is_none();
        if let Some((line_no, item)) = next {
            summary.lines += 1;
            let line_no = line_no as usize;
            match item {
                Ok(item) => match check_item(line_no, &item) {
                    Ok(record) => chunk.push(record),
                    Err(problems) => reject(&mut rejects, &mut summary, &problems, path)?,
                },
                Err(reason) => {
                    let problems = [Problem {
                        line: line_no,
                        field: "record".into(),
                        reason,
                    }];
                    reject(&mut rejects, &mut summary, &problems, path)?
                }
            }
            progress.read(source.offset());
        }
        if chunk.len() >= CHUNK || (done && !chunk.is_empty()) {
            commit(services, &mut chunk, &mut summary).await?;
            rejects.flush().map_err(|e| file_err(path, e))?;
            let c = Checkpoint {
                offset: source.offset(),
                size,
                sha256: Some(sha256.clone()),
                line: Some(source.line()),
                summary: summary.clone(),
            };
            std::fs::write(
                &checkpoint_file,
                serde_json::to_string(&c).unwrap_or_default(),
            )
            .map_err(|e| file_err(path, e))?;
            progress.committed(source.offset(), &summary);
        }
        if done {
            break;
        }
    }
    progress.finish(&summary);
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
            r.who = ext.to_string();
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

/// The records of the file, from the start or from a checkpoint: CSV as one csv-crate stream (a
/// quoted field may span lines), JSON Lines a line at a time.
enum Source {
    Csv {
        reader: csv::Reader<File>,
        columns: Columns,
        record: csv::StringRecord,
    },
    JsonLines {
        reader: BufReader<File>,
        /// Bytes read so far.
        offset: u64,
        /// The last line read.
        line: u64,
        text: String,
    },
}

impl Source {
    fn csv(file: File, resume: Option<&Checkpoint>, path: &Path) -> Result<Source, ImportError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(file);
        // The header is read from the start even when resuming.
        let columns = Columns::of(reader.headers().map_err(|e| file_err(path, e))?);
        if columns.kind.is_none()
            || columns.customer.is_none()
            || columns.at.is_none()
            || columns.id.is_none()
        {
            return Err(file_err(
                path,
                "the first line must name the columns kind,customer,amount,count,at,id",
            ));
        }
        if let Some(c) = resume {
            let mut at = csv::Position::new();
            at.set_byte(c.offset)
                .set_line(c.line.unwrap_or(c.summary.lines + 2))
                .set_record(c.summary.lines + 1);
            reader.seek(at).map_err(|e| file_err(path, e))?;
        }
        Ok(Source::Csv {
            reader,
            columns,
            record: csv::StringRecord::new(),
        })
    }

    fn json_lines(
        mut file: File,
        resume: Option<&Checkpoint>,
        path: &Path,
    ) -> Result<Source, ImportError> {
        let (offset, line) = match resume {
            Some(c) => {
                file.seek(SeekFrom::Start(c.offset))
                    .map_err(|e| file_err(path, e))?;
                (c.offset, c.line.map_or(c.summary.lines, |l| l - 1))
            }
            None => (0, 0),
        };
        Ok(Source::JsonLines {
            reader: BufReader::new(file),
            offset,
            line,
            text: String::new(),
        })
    }

    /// The next record with its (first) line number, or `None` at the end. Blank lines are
    /// skipped; a record that cannot be read is an `Err` with the reason, to be rejected.
    #[allow(clippy::type_complexity)]
    fn next(
        &mut self,
        path: &Path,
    ) -> Result<Option<(u64, Result<ActivityItem, String>)>, ImportError> {
        match self {
            Source::Csv {
                reader,
                columns,
                record,
            } => loop {
                let before = reader.position().byte();
                match reader.read_record(record) {
                    Ok(false) => return Ok(None),
                    Ok(true) => {
                        let line = record.position().map_or(0, |p| p.line());
                        if record.len() == 1 && record[0].trim().is_empty() {
                            continue;
                        }
                        return Ok(Some((line, Ok(columns.item(record)))));
                    }
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line());
                        if matches!(e.kind(), csv::ErrorKind::Io(_))
                            || reader.position().byte() == before
                        {
                            return Err(file_err(path, e));
                        }
                        return Ok(Some((line, Err(e.to_string()))));
                    }
                }
            },
            Source::JsonLines {
                reader,
                offset,
                line,
                text,
            } => loop {
                text.clear();
                let read = reader.read_line(text).map_err(|e| file_err(path, e))?;
                if read == 0 {
                    return Ok(None);
                }
                *offset += read as u64;
                *line += 1;
                let t = text.trim_end_matches(['\n', '\r']);
                if t.trim().is_empty() {
                    continue;
                }
                let item = serde_json::from_str::<ActivityItem>(t).map_err(|e| e.to_string());
                return Ok(Some((*line, item)));
            },
        }
    }

    /// Bytes of the file read up to the end of the last record.
    fn offset(&self) -> u64 {
        match self {
            Source::Csv { reader, .. } => reader.position().byte(),
            Source::JsonLines { offset, .. } => *offset,
        }
    }

    /// The line number at [`Source::offset`].
    fn line(&self) -> u64 {
        match self {
            Source::Csv { reader, .. } => reader.position().line(),
            Source::JsonLines { line, .. } => *line + 1,
        }
    }
}

/// The SHA-256 of the file's content, read in blocks (constant memory), in hex.
fn sha256_of(path: &Path, progress: &Progress) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut read_so_far = 0u64;
    progress.hashing(0);
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        read_so_far += n as u64;
        progress.hashing(read_so_far);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Progress on stderr: a bar by bytes read when stderr is a terminal, else the plain line
/// (`\r`-rewritten at each committed chunk); nothing with `--quiet`.
enum Progress {
    Off,
    Line { size: u64 },
    Bar(indicatif::ProgressBar),
}

impl Progress {
    fn new(enabled: bool, size: u64) -> Progress {
        use std::io::IsTerminal;
        if !enabled {
            return Progress::Off;
        }
        if !std::io::stderr().is_terminal() {
            return Progress::Line { size };
        }
        let bar = indicatif::ProgressBar::new(size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {percent:>3}%  {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress::Bar(bar)
    }

    /// The content check before the import reads the file again.
    fn hashing(&self, bytes: u64) {
        if let Progress::Bar(bar) = self {
            bar.set_prefix("checking");
            bar.set_position(bytes);
        }
    }

    /// A record was read, the file read up to `offset`.
    fn read(&mut self, offset: u64) {
        if let Progress::Bar(bar) = self {
            bar.set_prefix("import");
            bar.set_position(offset);
        }
    }

    /// A chunk was committed.
    fn committed(&mut self, offset: u64, s: &ImportSummary) {
        match self {
            Progress::Off => {}
            Progress::Line { size } => {
                let pct = if *size == 0 {
                    100.0
                } else {
                    offset as f64 * 100.0 / *size as f64
                };
                eprint!(
                    "\r{pct:5.1}%  {} lines  {} stored  {} duplicates  {} rejected",
                    s.lines, s.stored, s.duplicates, s.rejected
                );
            }
            Progress::Bar(bar) => {
                bar.set_position(offset);
                bar.set_message(format!(
                    "{} lines  {} stored  {} duplicates  {} rejected",
                    s.lines, s.stored, s.duplicates, s.rejected
                ));
            }
        }
    }

    fn finish(&mut self, s: &ImportSummary) {
        match self {
            Progress::Off => {}
            Progress::Line { .. } => eprintln!(),
            Progress::Bar(bar) => {
                bar.set_prefix("import");
                bar.set_message(format!(
                    "{} lines  {} stored  {} duplicates  {} rejected",
                    s.lines, s.stored, s.duplicates, s.rejected
                ));
                bar.finish();
            }
        }
    }
}
