//! `influxdb`, against a real InfluxDB 1.x (Debian's influxdb) started by
//! each test with its own configuration, data, meta and WAL in a temporary
//! directory and its HTTP API on a free loopback port: the points are
//! queried back through `/query` with their exact tags, fields and times.

use crate::common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// An influxd on loopback.
struct Influx {
    _child: KillOnDrop,
    url: String,
    _stdout: Lines,
    /// Its log, with a line per HTTP request.
    stderr: Lines,
    _dir: TempDir,
    /// The admin's user and password, with `auth-enabled`.
    admin: Option<(&'static str, &'static str)>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Influx {
    /// Starts influxd and waits for `/ping` to answer.
    fn start() -> Influx {
        Influx::start_with("")
    }

    /// Starts influxd with `auth-enabled`, and makes its admin user (the
    /// first user needs no authentication to be made).
    fn start_with_auth() -> Influx {
        let mut influx = Influx::start_with("  auth-enabled = true\n");
        influx.query(
            "",
            "CREATE USER dmon WITH PASSWORD 's3cret' WITH ALL PRIVILEGES",
            "s",
        );
        influx.admin = Some(("dmon", "s3cret"));
        influx
    }

    /// `http` is more of the `[http]` section.
    fn start_with(http_extra: &str) -> Influx {
        let dir = TempDir::new();
        let (http, rpc) = (free_port(), free_port());
        let d = dir.path().display();
        let config = format!(
            "reporting-disabled = true\n\
             bind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{http}\"\n  log-enabled = true\n{http_extra}"
        );
        let file = dir.write("influxdb.conf", &config);
        let mut child = Command::new("influxd")
            .arg("-config")
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map(KillOnDrop)
            .expect("influxd (Debian's influxdb; ./test.sh installs it)");
        let mut out = Lines::spawn("influxd stdout", child.0.stdout.take().unwrap());
        let mut err = Lines::spawn("influxd stderr", child.0.stderr.take().unwrap());
        let url = format!("http://127.0.0.1:{http}");
        // It says nothing reliable when ready: ask /ping until it answers.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let answer = ureq::get(&format!("{url}/ping")).call();
            if answer.is_ok_and(|r| r.status() == 204) {
                break;
            }
            if Instant::now() >= deadline {
                panic!("influxd never answered /ping\n{}{}", out.dump(), err.dump());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Influx {
            _child: child,
            url,
            _stdout: out,
            stderr: err,
            _dir: dir,
            admin: None,
        }
    }

    /// Runs an InfluxQL statement; the first result.
    fn query(&self, db: &str, q: &str, epoch: &str) -> Value {
        let mut request = ureq::post(&format!("{}/query", self.url));
        if let Some((user, password)) = self.admin {
            request = request.query("u", user).query("p", password);
        }
        let mut r = request
            .query("db", db)
            .query("q", q)
            .query("epoch", epoch)
            .send_empty()
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        let result = v["results"][0].clone();
        assert!(result.get("error").is_none(), "{q}: {result}");
        result
    }

    /// Polls `SELECT * FROM measurement` until it holds `n` rows (dmon
    /// sends on its own schedule and says nothing); the rows as objects.
    fn rows(&self, db: &str, measurement: &str, epoch: &str, n: usize) -> Vec<Value> {
        let q = format!("SELECT * FROM \"{measurement}\" ORDER BY time");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let result = self.query(db, &q, epoch);
            let series = &result["series"][0];
            let rows: Vec<Value> = series["values"]
                .as_array()
                .map(|vals| {
                    vals.iter()
                        .map(|row| {
                            let cols = series["columns"].as_array().unwrap();
                            let obj = cols
                                .iter()
                                .zip(row.as_array().unwrap())
                                .filter(|(_, v)| !v.is_null())
                                .map(|(c, v)| (c.as_str().unwrap().to_owned(), v.clone()))
                                .collect();
                            Value::Object(obj)
                        })
                        .collect()
                })
                .unwrap_or_default();
            if rows.len() >= n {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "{measurement} holds {} rows, not {n}: {result}",
                rows.len()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Riemann's points (measurement the service, tags, `value` and the other
/// text as fields), a fixed measurement with chosen tags in milliseconds,
/// fields that would break a line; a point sent before its database
/// existed (404, retried) lands once it is created.
#[test]
fn influxdb_points_are_queried_back_exactly() {
    let mut influx = Influx::start();
    let url = &influx.url;
    let db = "dmon_test";
    let module = format!(
        "from dmon.streams import *\n\n\
         influx_stream = by(\"host\", influxdb({url:?}, {db:?}))\n\
         disk_stream = where('service = \"disk\"', influxdb({url:?}, {db:?}, \
         measurement=\"disks\", tags=[\"host\", \"region\"], precision=\"ms\"))\n"
    );
    let s = Server::start(&module);
    let t = now() as i64 - 100;
    // Before the database exists: InfluxDB answers 404, and it is retried.
    s.send(
        json!({"host": "web1", "service": "api latency", "state": "ok",
                  "description": "fine", "metric": 12.5, "time": t,
                  "attributes": {"region": "eu"}}),
    );
    influx
        .stderr
        .wait_for(TIMEOUT, |l| {
            l.contains("POST /write?db=dmon_test") && l.contains(" 404 ")
        })
        .unwrap_or_else(|why| panic!("no 404 for the missing database: {why}"));
    influx.query("", &format!("CREATE DATABASE {db}"), "s");
    s.send(json!({"host": "web2", "service": "api latency", "state": "ok", "metric": 3, "time": t + 1}));
    s.send(
        json!({"host": "a,b=c d\\", "service": "api latency", "state": "warn\"ing",
                  "description": "say \"hi\"\nbye", "metric": 7.25, "time": t + 2}),
    );
    s.send(
        json!({"host": "web1", "service": "disk", "metric": 91, "time": t as f64 + 0.25,
                  "attributes": {"region": "eu west"}}),
    );
    s.send(json!({"host": "web1", "service": "no metric", "time": t}));

    let rows = influx.rows(db, "api latency", "s", 3);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let value = |r: &Value| r["value"].as_f64().unwrap();
    assert_eq!(
        rows[0],
        json!({"time": t, "host": "web1", "service": "api latency", "state": "ok",
               "description": "fine", "region": "eu", "value": 12.5})
    );
    assert_eq!(value(&rows[1]), 3.0);
    assert_eq!(
        (&rows[1]["time"], &rows[1]["host"]),
        (&json!(t + 1), &json!("web2"))
    );
    assert_eq!(
        rows[2],
        json!({"time": t + 2, "host": "a,b=c d_", "service": "api latency",
               "state": "warn\"ing", "description": "say \"hi\" bye", "value": 7.25})
    );

    let disks = influx.rows(db, "disks", "ms", 1);
    assert_eq!(disks.len(), 1);
    assert_eq!(value(&disks[0]), 91.0);
    assert_eq!(
        (&disks[0]["time"], &disks[0]["host"], &disks[0]["region"]),
        (&json!(t * 1000 + 250), &json!("web1"), &json!("eu west"))
    );
    // The disk event went to the default node too; nothing else did.
    let all = influx.query(db, "SHOW MEASUREMENTS", "s");
    assert_eq!(
        all["series"][0]["values"],
        json!([["api latency"], ["disk"], ["disks"]])
    );

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    let stats = done.stats();
    let sink = stats.sink("influxdb", &format!("{url}/write?db={db}&precision=s"));
    assert_eq!(sink["sent"], 4, "{sink}");
    assert_eq!(sink["failed"], 0, "{sink}");
    assert!(sink["retried"].as_u64().unwrap() >= 1, "the 404: {sink}");
    let sink = stats.sink("influxdb", &format!("{url}/write?db={db}&precision=ms"));
    assert_eq!(
        (&sink["sent"], &sink["connections"]),
        (&json!(1), &json!(1))
    );
}

/// `influxdb(..., username=)` against an InfluxDB with `auth-enabled`:
/// with the right password (taken from $DMON_INFLUXDB_PASSWORD) the point
/// lands; with a wrong one InfluxDB answers 401, and the batch is given
/// up, counted as failed and logged, without the password.
#[test]
fn influxdb_credentials_are_sent_and_a_wrong_password_is_a_counted_401() {
    let influx = Influx::start_with_auth();
    let url = &influx.url;
    let db = "dmon_auth";
    influx.query("", &format!("CREATE DATABASE {db}"), "s");
    // The variable is set from the module, before the node reads it: the
    // same process environment dmon would get it from.
    let module = format!(
        "import os\n\
         from dmon.streams import *\n\n\
         os.environ[\"DMON_INFLUXDB_PASSWORD\"] = \"s3cret\"\n\
         good_stream = where('service = \"good\"', influxdb({url:?}, {db:?}, username=\"dmon\"))\n\
         bad_stream = where('service = \"bad\"', influxdb({url:?}, {db:?}, precision=\"ms\", \
         username=\"dmon\", password=\"wrong-pw\"))\n"
    );
    let mut s = Server::start(&module);
    let t = now() as i64 - 100;
    s.send(json!({"host": "web1", "service": "good", "metric": 1, "time": t}));
    s.send(json!({"host": "web1", "service": "bad", "metric": 2, "time": t}));

    let rows = influx.rows(db, "good", "s", 1);
    assert_eq!(rows[0]["value"], 1.0, "{rows:?}");
    let bad_target = format!("{url}/write?db={db}&precision=ms");
    let line = s.expect_stderr("the 401", |l| {
        l.contains(&format!("influxdb {bad_target}")) && l.contains("HTTP 401")
    });
    assert!(!line.contains("wrong-pw"), "{line}");

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    assert!(
        !done
            .stderr
            .iter()
            .any(|l| l.contains("s3cret") || l.contains("wrong-pw")),
        "{:?}",
        done.stderr
    );
    let stats = done.stats();
    let good = stats.sink("influxdb", &format!("{url}/write?db={db}&precision=s"));
    assert_eq!((&good["sent"], &good["failed"]), (&json!(1), &json!(0)));
    let bad = stats.sink("influxdb", &bad_target);
    assert_eq!((&bad["sent"], &bad["failed"]), (&json!(0), &json!(1)));
    assert_eq!(
        influx.query(db, "SHOW MEASUREMENTS", "s")["series"][0]["values"],
        json!([["good"]])
    );
}
