//! The jobs' SQLite table: its DBURL, made by the master, rows taken and
//! written back by workers.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, TransactionBehavior};

use crate::run::exec::Outcome;
use crate::run::input::Values;

/// `Exitval` of a row ready to run (written by the master).
const READY: i64 = -1000;
/// `Exitval` of a row a worker has taken.
const TAKEN: i64 = -1220;
/// How long a statement waits for another process's lock on the file.
const BUSY_WAIT: Duration = Duration::from_secs(60);

/// Bytes bound as SQL TEXT whatever they hold (GNU parallel's table holds
/// its `\257` markers and the values' bytes as text).
struct Text<'a>(&'a [u8]);

impl ToSql for Text<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.0)))
    }
}

/// A DBURL read: the database file, the table, and whether to append.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DbUrl {
    pub(crate) file: PathBuf,
    pub(crate) table: String,
    /// `+DBURL`: add rows to the table as it is (else it is made anew).
    pub(crate) append: bool,
}

impl DbUrl {
    /// Reads `[+][sql:]sqlite3://[host]/DATABASE/TABLE` (`/` in the
    /// database's path written `%2F`), or a `:alias` from `~/.sql/aliases`
    /// or `/etc/sql/aliases`, as GNU parallel reads it; vendors other than
    /// SQLite are refused.
    pub(crate) fn parse(spec: &str) -> anyhow::Result<DbUrl> {
        let (append, rest) = match spec.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, spec),
        };
        let url = resolve_alias(rest, &mut Vec::new())?;
        let re = regex::Regex::new(
            r"(?ix)^(?:sql:)*
              ([a-z0-9]+)://                  # vendor
              (?:[^:@/][^:@]*(?::[^@]*)?@)?   # user, password
              [^:/]*(?::[^/]*)?               # host, port
              (?:/([^/?]*))?                  # database
              (?:/([^?]*))?                   # table
              (?:\?.*)?$",
        )
        .expect("a valid DBURL pattern");
        let Some(caps) = re.captures(&url) else {
            bail!("{url} is not a valid DBURL (e.g. sqlite3:///%2Ftmp%2Fjobs.sqlite/jobs)");
        };
        let vendor = caps[1].to_ascii_lowercase();
        if !matches!(vendor.as_str(), "sqlite" | "sqlite3") {
            bail!(
                "{url}: parpool keeps jobs in SQLite only, not {vendor}; give an sqlite3:// \
                 DBURL (e.g. sqlite3:///%2Ftmp%2Fjobs.sqlite/jobs)"
            );
        }
        let database = caps.get(2).map_or(String::new(), |m| unescape(m.as_str()));
        let table = caps.get(3).map_or(String::new(), |m| unescape(m.as_str()));
        if database.is_empty() || table.is_empty() {
            bail!("The DBURL ({url}) must contain a database file and a table.");
        }
        let plain = table.chars().next().is_some_and(|c| !c.is_ascii_digit())
            && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            bail!("{url}: the table `{table}` must be a plain name (letters, digits and _)");
        }
        Ok(DbUrl {
            file: database.into(),
            table,
            append,
        })
    }
}

/// `%XX` escapes decoded (`%2F` is `/`).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A DBURL that starts with `:name` replaced by the alias's DBURL (the
/// rest kept), as GNU parallel's `sql` reads its alias files.
fn resolve_alias(url: &str, seen: &mut Vec<String>) -> anyhow::Result<String> {
    let url = url.trim_start_matches("sql:");
    let Some(body) = url.strip_prefix(':') else {
        return Ok(url.to_owned());
    };
    let name_len = body
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, rest) = (format!(":{}", &body[..name_len]), &body[name_len..]);
    if seen.contains(&name) {
        bail!("{name} is a cyclic alias.");
    }
    seen.push(name.clone());
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let files = [
        home.join(".sql/aliases"),
        home.join(".dburl.aliases"),
        "/etc/sql/aliases".into(),
    ];
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines() {
            let mut parts = line.splitn(2, char::is_whitespace);
            if parts.next() == Some(name.as_str())
                && let Some(target) = parts.next().map(str::trim).filter(|t| !t.is_empty())
            {
                return resolve_alias(&format!("{target}{rest}"), seen);
            }
        }
    }
    bail!(
        "{name} is not defined in {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The table of jobs, open.
pub(crate) struct Table {
    conn: Mutex<Connection>,
    /// Rows this process has taken.
    taken: std::sync::atomic::AtomicU64,
    url: DbUrl,
    /// How many value columns (`V1` …) it has.
    values: usize,
    host: String,
}

impl Table {
    /// Opens the database of `url`: made if it is not there (for the
    /// master); a worker's must exist and hold the table.
    pub(crate) fn open(url: DbUrl, worker: bool) -> anyhow::Result<Table> {
        let flags = if worker {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        };
        let conn = Connection::open_with_flags(&url.file, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_context(|| format!("cannot open the database {}", url.file.display()))?;
        conn.busy_timeout(BUSY_WAIT)?;
        let mut table = Table {
            conn: Mutex::new(conn),
            taken: Default::default(),
            values: 0,
            host: hostname(),
            url,
        };
        table.values = table.value_columns()?;
        if worker && table.values == 0 {
            bail!(
                "{} has no table {} of jobs (run --sqlmaster first)",
                table.url.file.display(),
                table.url.table
            );
        }
        Ok(table)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many `V` columns the table has (0: there is no table).
    fn value_columns(&self) -> rusqlite::Result<usize> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", self.url.table))?;
        let names = stmt.query_map([], |row| row.get::<_, String>(1))?;
        let mut n = 0;
        for name in names {
            let name = name?;
            if name.len() > 1
                && name.starts_with('V')
                && name[1..].bytes().all(|b| b.is_ascii_digit())
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// How many value columns a worker's jobs have (`{}` stands for them
    /// all).
    pub(crate) fn values(&self) -> usize {
        self.values
    }

    /// `--sqlmaster`: the table made anew (unless appending) and a ready
    /// row written for each job, numbered after those already there.
    pub(crate) fn submit(
        &mut self,
        command: &[u8],
        jobs: impl Iterator<Item = io::Result<Values>>,
    ) -> anyhow::Result<usize> {
        let jobs: Vec<Values> = jobs.collect::<io::Result<_>>()?;
        let wanted = jobs.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let table = self.url.table.clone();
        if !self.url.append || self.values == 0 {
            self.create(wanted)?;
        } else if self.values < wanted {
            bail!(
                "--sqlmaster +DBURL: table {table} has {} value columns; these jobs have {wanted}",
                self.values
            );
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let first: i64 = tx
            .query_row(&format!("SELECT max(Seq) FROM {table}"), [], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .unwrap_or(0)
            + 1;
        let columns: String = (1..=self.values).map(|i| format!(",V{i}")).collect();
        let marks: String = (0..self.values).map(|_| ",?").collect();
        {
            let mut insert = tx.prepare(&format!(
                "INSERT INTO {table} (Seq,Command,Exitval,Send{columns}) VALUES (?,?,?,?{marks})"
            ))?;
            let command = Text(command);
            for (seq, values) in (first..).zip(&jobs) {
                let mut params: Vec<&dyn ToSql> = vec![&seq, &command, &READY, &0];
                let texts: Vec<Option<Text<'_>>> = (0..self.values)
                    .map(|i| values.get(i).map(|v| Text(v.as_bytes())))
                    .collect();
                params.extend(texts.iter().map(|t| t as &dyn ToSql));
                insert.execute(params.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(jobs.len())
    }

    /// Drops the table and makes it as GNU parallel does, with `values`
    /// value columns.
    fn create(&mut self, values: usize) -> rusqlite::Result<()> {
        let t = &self.url.table;
        let v: String = (1..=values).map(|i| format!("V{i} TEXT,")).collect();
        let conn = self.conn();
        conn.execute_batch(&format!(
            "DROP TABLE IF EXISTS {t};\n\
             CREATE TABLE {t}\n\t\t(Seq BIGINT,\n\t\t Host TEXT,\n\t\t Starttime FLOAT(44),\n\t\t \
             JobRuntime FLOAT(44),\n\t\t Send BIGINT,\n\t\t Receive BIGINT,\n\t\t \
             Exitval BIGINT,\n\t\t _Signal BIGINT,\n\t\t Command TEXT,{v}Stdout TEXT,\n\t\t \
             Stderr TEXT);"
        ))?;
        drop(conn);
        self.values = values;
        Ok(())
    }

    /// `--sqlmaster --wait`: returns once no row is ready or taken.
    pub(crate) fn wait_done(&self) -> anyhow::Result<()> {
        let mut pause = Duration::from_millis(10);
        let query = format!(
            "SELECT 1 FROM {} WHERE Exitval <= {READY} LIMIT 1",
            self.url.table
        );
        while self
            .conn()
            .query_row(&query, [], |_| Ok(()))
            .optional()?
            .is_some()
        {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        Ok(())
    }

    /// The command of the lowest ready row, if one is ready.
    pub(crate) fn next_command(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let query = format!(
            "SELECT Command FROM {} WHERE Exitval = {READY} ORDER BY Seq LIMIT 1",
            self.url.table
        );
        Ok(self
            .conn()
            .query_row(&query, [], |r| Ok(bytes(r.get_ref(0)?)))
            .optional()?)
    }

    /// How many rows the table holds (GNU's `total_jobs()` for a worker).
    pub(crate) fn rows(&self) -> anyhow::Result<u64> {
        let query = format!("SELECT count(*) FROM {}", self.url.table);
        Ok(self.conn().query_row(&query, [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Takes the lowest ready row whose command is `command`: its number
    /// and values (trailing empty columns left out); `None` when none is
    /// left. One transaction: two workers never take the same row.
    pub(crate) fn take(&self, command: &[u8]) -> anyhow::Result<Option<(u64, Values)>> {
        let t = &self.url.table;
        let columns: String = (1..=self.values).map(|i| format!(",V{i}")).collect();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row = tx
            .query_row(
                &format!(
                    "SELECT Seq{columns} FROM {t} WHERE Exitval = {READY} AND Command = ? \
                     ORDER BY Seq LIMIT 1"
                ),
                [Text(command)],
                |r| {
                    let seq: i64 = r.get(0)?;
                    let mut values = Vec::with_capacity(self.values);
                    for i in 1..=self.values {
                        values.push(match r.get_ref(i)? {
                            ValueRef::Null => None,
                            v => Some(OsString::from_vec(bytes(v))),
                        });
                    }
                    Ok((seq, values))
                },
            )
            .optional()?;
        let Some((seq, mut values)) = row else {
            return Ok(None);
        };
        tx.execute(
            &format!("UPDATE {t} SET Exitval = ?, Host = ? WHERE Seq = ?"),
            rusqlite::params![TAKEN, self.host, seq],
        )?;
        tx.commit()?;
        self.taken
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        while values.last().is_some_and(Option::is_none) {
            values.pop();
        }
        let values = values.into_iter().map(Option::unwrap_or_default).collect();
        Ok(Some((u64::try_from(seq).unwrap_or(0), values)))
    }

    /// How many rows this process has taken.
    pub(crate) fn taken(&self) -> u64 {
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes row `seq` ready again (its job was taken but never ran to its
    /// end: a halt or an interrupt stopped the run).
    pub(crate) fn release(&self, seq: u64) -> anyhow::Result<()> {
        self.conn().execute(
            &format!(
                "UPDATE {} SET Exitval = {READY}, Host = NULL WHERE Seq = ?",
                self.url.table
            ),
            [i64::try_from(seq).unwrap_or(i64::MAX)],
        )?;
        Ok(())
    }

    /// Writes a finished job's row: where and when it ran, its exit
    /// value and signal, its command as run, and its output.
    pub(crate) fn save(&self, o: &mut Outcome) -> anyhow::Result<()> {
        let stdout = o.stdout.contents()?;
        let stderr = o.stderr.contents()?;
        let started = o
            .started
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| millis(d.as_secs_f64()));
        let host = o.host.clone().unwrap_or_else(|| self.host.clone());
        let seq = i64::try_from(o.seq).unwrap_or(i64::MAX);
        self.conn().execute(
            &format!(
                "UPDATE {} SET Host = ?, Starttime = ?, JobRuntime = ?, Send = 0, Receive = ?, \
                 Exitval = ?, _Signal = ?, Command = ?, Stdout = ?, Stderr = ? WHERE Seq = ?",
                self.url.table
            ),
            rusqlite::params![
                host,
                started,
                millis(o.runtime.as_secs_f64()),
                i64::try_from(o.received).unwrap_or(i64::MAX),
                o.exit,
                o.signal,
                Text(&o.command),
                Text(&stdout),
                Text(&stderr),
                seq,
            ],
        )?;
        Ok(())
    }
}

/// Seconds cut to whole milliseconds, as GNU parallel writes times.
fn millis(secs: f64) -> f64 {
    (secs * 1000.0).trunc() / 1000.0
}

/// A column's bytes (text as it is, numbers written out).
fn bytes(v: ValueRef<'_>) -> Vec<u8> {
    match v {
        ValueRef::Null => Vec::new(),
        ValueRef::Integer(i) => i.to_string().into_bytes(),
        ValueRef::Real(f) => f.to_string().into_bytes(),
        ValueRef::Text(b) | ValueRef::Blob(b) => b.to_vec(),
    }
}

/// This machine's name, as `Host` records it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dburls_read_as_gnu_parallel_reads_them() {
        let url = DbUrl::parse("sqlite3:///%2Ftmp%2Fdb.sqlite/jobs").unwrap();
        assert_eq!(url.file, PathBuf::from("/tmp/db.sqlite"));
        assert_eq!(url.table, "jobs");
        assert!(!url.append);
        let url = DbUrl::parse("+sql:SQLITE://host/rel.db/t_1").unwrap();
        assert_eq!((url.file.to_str(), url.append), (Some("rel.db"), true));
        for bad in [
            "pg:///db/jobs",
            "mysql://u:p@host:3306/db/jobs",
            "sqlite3:///db.sqlite",
            "sqlite3:///db.sqlite/jobs;drop",
            "nonsense",
        ] {
            assert!(DbUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
