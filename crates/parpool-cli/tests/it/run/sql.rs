//! `--sqlmaster`, `--sqlworker`, `--sqlandworker`: jobs in an SQLite
//! table, GNU parallel's table column for column, shared by workers (GNU
//! parallel's too) without a row run twice.

use super::*;

/// Rows of a table as text, `columns` in `Seq` order.
fn rows(db: &Path, columns: &str) -> Vec<Vec<String>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT {columns} FROM jobs ORDER BY Seq"))
        .unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => "NULL".to_owned(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                    rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                        String::from_utf8_lossy(b).into_owned()
                    }
                })
            })
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// How many rows the table has (0 while there is none).
fn table_rows(db: &Path) -> usize {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM jobs", [], |r| r.get::<_, i64>(0))
        .map_or(0, |n| n as usize)
}

/// The table's `CREATE TABLE` statement, as stored.
fn schema(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT sql FROM sqlite_master WHERE name = 'jobs'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// The DBURL of `jobs` in `db` (its path's `/` as `%2F`).
fn dburl(db: &Path) -> String {
    format!(
        "sqlite3:///{}/jobs",
        db.to_str().unwrap().replace('/', "%2F")
    )
}

/// GNU parallel, if it and perl's DBD::SQLite are installed.
fn gnu_with_sqlite() -> Option<Command> {
    let dbd = Command::new("perl")
        .args(["-MDBD::SQLite", "-e", "1"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !dbd {
        eprintln!("perl's DBD::SQLite is not installed; skipping GNU parallel's side");
        return None;
    }
    gnu()
}

/// What a table holds that does not depend on when or where it ran.
const FIXED: &str = "Seq,Send,Receive,Exitval,_Signal,Command,V1,V2,Stdout,Stderr";

/// The master's table is GNU parallel's, byte for byte (the command in
/// GNU's form); a worker of either tool runs either master's rows and
/// leaves the same table.
#[test]
fn master_and_worker_tables_match_gnu_parallel() {
    let d = scratch("sql-gnu");
    let job = [
        "echo {1}-{2} {.} {#}; echo e{1} >&2; test {1} != b.c",
        ":::",
        "a",
        "b.c",
        "d",
        ":::",
        "x",
    ];
    let ours = d.join("ours.sqlite");
    let mut args = vec!["--sqlmaster", &dburl_leak(&ours)];
    args.extend(job);
    let o = run(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty(), "the master runs nothing");
    let ready = rows(&ours, "Seq,Exitval,Send,V1,V2,Stdout");
    assert_eq!(
        ready,
        [
            ["1", "-1000", "0", "a", "x", "NULL"],
            ["2", "-1000", "0", "b.c", "x", "NULL"],
            ["3", "-1000", "0", "d", "x", "NULL"],
        ]
    );
    let Some(mut gnu) = gnu_with_sqlite() else {
        return;
    };
    let theirs = d.join("gnu.sqlite");
    let mut args = vec!["--sqlmaster".to_owned(), dburl(&theirs)];
    args.extend(job.iter().map(|s| s.to_string()));
    assert!(gnu.args(&args).status().unwrap().success());
    assert_eq!(schema(&ours), schema(&theirs));
    let all =
        "Seq,Host,Starttime,JobRuntime,Send,Receive,Exitval,_Signal,Command,V1,V2,Stdout,Stderr";
    assert_eq!(rows(&ours, all), rows(&theirs, all));
    // Crossed: GNU's worker on our rows, ours on GNU's.
    let o = gnu_cmd()
        .args(["-k", "--sqlworker", &dburl(&ours)])
        .output()
        .unwrap();
    let p = run(&["-k", "--sqlworker", &dburl(&theirs)]);
    assert_eq!(stdout(&p), String::from_utf8_lossy(&o.stdout));
    assert_eq!(stdout(&p), "a-x a x 1\nb.c-x b x 2\nd-x d x 3\n");
    assert_eq!(p.status.code(), Some(1), "one job failed");
    assert_eq!(rows(&ours, FIXED), rows(&theirs, FIXED));
    for row in rows(&theirs, "Host,Starttime,JobRuntime") {
        assert!(row.iter().all(|c| c != "NULL" && !c.is_empty()), "{row:?}");
    }
    // A value is one word, quoted for the shell (GNU's worker leaves the
    // values from its table unquoted: `d e` would be two words).
    let spaced = d.join("spaced.sqlite");
    let o = run(&[
        "-k",
        "--sqlandworker",
        &dburl(&spaced),
        "printf '%s|'",
        ":::",
        "d e",
        "$HOME",
    ]);
    assert_eq!(stdout(&o), "d e|$HOME|");
}

/// A DBURL that lives as long as the test (for argument lists of `&str`).
fn dburl_leak(db: &Path) -> &'static str {
    Box::leak(dburl(db).into_boxed_str())
}

/// The adversary: a master writes 300 jobs (seeded: some fail, some take
/// a while), then three workers start together and share the table. Every
/// row runs exactly once, each is written back with its own exit value
/// and output, none is left ready or taken, and the workers' exit
/// statuses add up to the failures. `SQL_SEED` replays one case.
#[test]
fn workers_sharing_a_table_run_every_row_once() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let (seed, mut draw) = seeded("SQL_SEED", now);
    eprintln!("SQL_SEED={seed}");
    let mut next = move || draw(u64::MAX);
    let d = scratch("sql-share");
    let db = d.join("jobs.sqlite");
    let log = d.join("log");
    // Each input: number, exit code, milliseconds to sleep.
    let inputs: Vec<(u64, u64, u64)> = (1..=300)
        .map(|i| {
            (
                i,
                u64::from(next() % 20 == 0) * (1 + next() % 3),
                next() % 3 * 5,
            )
        })
        .collect();
    let input_file = d.join("inputs");
    let text: String = inputs
        .iter()
        .map(|(i, code, ms)| format!("{i} {code} {ms}\n"))
        .collect();
    std::fs::write(&input_file, text).unwrap();
    let command = format!(
        "sleep 0.{{3}}; echo {{1}} >> {}; echo out{{1}}; exit {{2}}",
        log.display()
    );
    let o = run(&[
        "--colsep",
        " ",
        "--sqlmaster",
        &dburl(&db),
        &command,
        "::::",
        input_file.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut workers: Vec<_> = (0..3)
        .map(|_| {
            parpool()
                .args(["run", "-j3", "--sqlworker", &dburl(&db)])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut failures = 0;
    for w in &mut workers {
        let status = wait_within(w, Duration::from_secs(120)).expect("a worker hung");
        let code = status.code().unwrap();
        assert!(code < 101, "seed {seed}: a worker exited {code}");
        failures += code;
    }
    let mut ran: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    ran.sort_unstable();
    assert_eq!(ran, (1..=300).collect::<Vec<_>>(), "seed {seed}");
    let table = rows(&db, "Seq,Exitval,Stdout,V1");
    for (row, (i, code, _)) in table.iter().zip(&inputs) {
        assert_eq!(row[0], i.to_string());
        assert_eq!(row[1], code.to_string(), "row {i}, seed {seed}");
        assert_eq!(row[2], format!("out{i}\n"));
    }
    let expected = inputs.iter().filter(|(_, code, _)| *code != 0).count() as i32;
    assert_eq!(failures, expected, "seed {seed}");
}

/// A worker stopped by `--halt` leaves the rows it never ran ready (none
/// stays taken), and the next worker runs them; `--sqlmaster --wait`
/// returns once they are all done; `--sqlandworker` writes and runs, with
/// the failures as its exit status.
#[test]
fn a_halted_worker_leaves_its_rows_for_the_next() {
    let d = scratch("sql-halt");
    let db = d.join("jobs.sqlite");
    let url = dburl(&db);
    let mut master = parpool()
        .args(["run", "--sqlmaster", &url, "--wait"])
        .args(["sleep 0.1; test {} != 3", ":::"])
        .args((1..=12).map(|i| i.to_string()))
        .spawn()
        .unwrap();
    // The master writes its rows in one transaction.
    let start = Instant::now();
    while !(db.exists() && table_rows(&db) == 12) {
        assert!(start.elapsed() < Duration::from_secs(30), "no table");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = run(&["-j2", "--halt", "now,fail=1", "--sqlworker", &url]);
    assert_eq!(o.status.code(), Some(1));
    let states = rows(&db, "Exitval");
    assert!(
        states.iter().all(|r| r[0] != "-1220"),
        "no row stays taken: {states:?}"
    );
    assert!(
        states.iter().any(|r| r[0] == "-1000"),
        "the halt left rows: {states:?}"
    );
    assert!(
        master.try_wait().unwrap().is_none(),
        "--wait waits for the rows left"
    );
    let o = run(&["-j4", "--sqlworker", &url]);
    assert_eq!(o.status.code(), Some(0));
    let status = wait_within(&mut master, Duration::from_secs(30)).expect("--wait hung");
    assert!(status.success());
    assert!(rows(&db, "Exitval").iter().all(|r| r[0] != "-1000"));
    // Both in one.
    let o = run(&[
        "-k",
        "--sqlandworker",
        &url,
        "echo {}; exit {}",
        ":::",
        "0",
        "1",
        "2",
    ]);
    assert_eq!(stdout(&o), "0\n1\n2\n");
    assert_eq!(o.status.code(), Some(2), "two jobs failed");
}

/// Bad DBURLs and options that make no sense with a table: a clear error,
/// exit 255, nothing run, no database left behind.
#[test]
fn bad_dburls_and_options_are_refused() {
    let d = scratch("sql-bad");
    let db = d.join("jobs.sqlite");
    let url = dburl(&db);
    for (args, says) in [
        (vec!["--sqlmaster", "pg:///db/jobs", "echo"], "SQLite only"),
        (
            vec!["--sqlmaster", "sqlite3:///x.db", "echo"],
            "must contain",
        ),
        (
            vec!["--sqlmaster", "sqlite3:///x.db/a;b", "echo"],
            "plain name",
        ),
        (vec!["--sqlworker", &url], "cannot open the database"),
        (vec!["--sqlmaster", &url, "--pipe", "wc"], "--pipe"),
        (
            vec!["--plus", "--sqlmaster", &url, "echo {%.gz}", ":::", "a"],
            "{= perl =}",
        ),
        (vec!["--sqlmaster", ":nosuchalias", "echo"], "not defined"),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(255), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(o.stdout.is_empty());
    }
    assert!(!db.exists());
    let o = run(&["--sqlmaster", &url, "echo", ":::", "a"]);
    assert!(o.status.success());
    let missing = url.replace("/jobs", "/other");
    let o = run(&["--sqlworker", &missing]);
    assert_eq!(o.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&o.stderr).contains("run --sqlmaster first"));
}
