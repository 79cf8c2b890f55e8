//! Seeded hostile arguments for every power tool, from workspace A with workspace B's rows
//! present: every answer is a success or a clean refusal, nothing of B ever shows up, and
//! nothing of B (or the schema) changes. Set HDLS_FUZZ_SEED to replay another seed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hdls::identity::Role;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rmcp::model::CallToolRequestParams;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::harness::{Mcp, TestEnv};
use crate::power_tools::{probe_table, snapshot, unlimited};

const DEFAULT_SEED: u64 = 0x5EED_0DB5_2026;
/// Calls per tool; seven tools, so 7 × this in all.
const CALLS_PER_TOOL: usize = 80;
const TOOLS: [&str; 7] = [
    "list_tables",
    "describe_table",
    "query_records",
    "aggregate_records",
    "insert_record",
    "update_record",
    "delete_record",
];
const COLUMNS: [&str; 13] = [
    "id",
    "title",
    "amount",
    "qty",
    "ratio",
    "flag",
    "happened_at",
    "day",
    "status",
    "tags",
    "scores",
    "attrs",
    "search",
];
const HOSTILE: &[&str] = &[
    "title; DROP TABLE x",
    "\") OR 1=1 --",
    "' OR ''='",
    "title\" FROM crm.probe; --",
    "Robert'); DROP TABLE crm.probe;--",
    "1; DELETE FROM crm.probe",
    "workspace_id",
    "WORKSPACE_ID",
    "\"workspace_id\"",
    "t.workspace_id",
    "search",
    "Title",
    "title ",
    "",
    " ",
    "%",
    "_",
    "\\",
    "%\\",
    "*",
    "$1",
    "::text",
    "pg_sleep(10)",
    "(SELECT 1)",
    "crm.accounts",
    "hdls.workspaces",
    "../hdls.api_keys",
    "pg_catalog.pg_authid",
    "MARKER-B",
    "NaN",
    "Infinity",
    "-0",
    "1e400",
    "00000000-0000-0000-0000-000000000000",
    "2026-02-30",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "ℌ𝔡𝔩𝔰 😀",
    "\u{0}",
    "a\u{0}b",
    "line\nbreak",
    "new",
    "open",
    "closed",
    "apple",
    "!@#$%^&*()",
    "& | ! <->",
];
const OPS: [&str; 12] = [
    "eq", "neq", "lt", "lte", "gt", "gte", "in", "like", "ilike", "is_null", "contains", "search",
];
const BAD_OPS: [&str; 8] = ["regex", "EQ", "=", "; DROP", "", "between", "~", "@>"];
/// The columns a client may name (everything but the tenant stamp and the search vector).
const VISIBLE: [&str; 12] = [
    "id",
    "title",
    "amount",
    "qty",
    "ratio",
    "flag",
    "happened_at",
    "day",
    "status",
    "tags",
    "scores",
    "attrs",
];
const ORDERABLE: [&str; 9] = [
    "id",
    "title",
    "amount",
    "qty",
    "ratio",
    "happened_at",
    "day",
    "status",
    "flag",
];

/// Builds one call's arguments. Half the calls are "plausible": well-formed against the real
/// table, with hostile content only where a value goes, so they reach the SQL; the other half
/// are hostile everywhere.
struct Gen {
    rng: StdRng,
    a_ids: Vec<String>,
    b_ids: Vec<String>,
    a_ws: Uuid,
    b_ws: Uuid,
    cursors: Vec<String>,
    plausible: bool,
}

impl Gen {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    /// One of `items`; in plausible mode only from the first `valid` (the well-typed ones).
    fn pick_typed(&mut self, items: &[Value], valid: usize) -> Value {
        if self.plausible {
            self.pick(&items[..valid])
        } else {
            self.pick(items)
        }
    }

    /// A few distinct names from `from`.
    fn distinct(&mut self, from: &[&str], max: usize) -> Vec<String> {
        let n = self.below(max + 1);
        let mut out: Vec<String> = Vec::new();
        for _ in 0..n {
            let c = self.pick(from).to_owned();
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    fn hostile(&mut self) -> String {
        match self.below(10) {
            0 => "x".repeat(self.pick(&[63, 64, 1000, 100_001])),
            1 => format!("{}{}", self.pick(HOSTILE), self.pick(HOSTILE)),
            _ => self.pick(HOSTILE).to_owned(),
        }
    }

    /// Hostile text that is still valid text (no NUL, not over-long).
    fn hostile_text(&mut self) -> String {
        loop {
            let s = self.hostile();
            if !s.contains('\0') && s.len() <= 100_000 {
                return s;
            }
        }
    }

    fn some_id(&mut self) -> Value {
        match self.below(if self.plausible { 5 } else { 6 }) {
            0 | 1 => json!(self.pick(&self.a_ids.clone())),
            2 => json!(self.pick(&self.b_ids.clone())),
            3 => json!(Uuid::new_v4()),
            4 if !self.plausible => json!(self.pick(&[self.a_ws, self.b_ws])),
            4 => json!(self.pick(&self.b_ids.clone())),
            _ => self.junk(1),
        }
    }

    fn table(&mut self) -> Value {
        if self.plausible {
            return json!("probe");
        }
        match self.below(10) {
            0..=3 => json!("probe"),
            4 => json!("accounts"),
            5 | 6 => json!(self.pick(&[
                "probe; DROP TABLE crm.probe",
                "\"probe\"",
                "crm.probe",
                "PROBE",
                "probe ",
                "workspaces",
                "api_keys",
                "pg_class",
                "../probe",
                "hdls.workspaces",
            ])),
            7 => json!(self.hostile()),
            8 => self.junk(1),
            _ => Value::Null,
        }
    }

    fn column(&mut self) -> String {
        if self.plausible {
            self.pick(&VISIBLE).to_owned()
        } else if self.chance(0.6) {
            self.pick(&COLUMNS).to_owned()
        } else {
            self.hostile()
        }
    }

    /// Any JSON at all, biased to the awkward.
    fn junk(&mut self, depth: usize) -> Value {
        match self.below(if depth > 3 { 9 } else { 12 }) {
            0 => Value::Null,
            1 => json!(self.chance(0.5)),
            2 => json!(self.pick(&[
                0i64,
                -1,
                1,
                i64::MAX,
                i64::MIN,
                2_147_483_648,
                -2_147_483_649
            ])),
            3 => json!(u64::MAX),
            4 => json!(self.pick(&[0.5f64, -0.0, 1e308, -1e-308, 2.5e-7, 1e15])),
            5 | 6 => json!(self.hostile()),
            7 => json!(Uuid::new_v4()),
            8 => json!(self.pick(&["2026-01-05T10:00:00Z", "2026-01-05", "yesterday", "12:00"])),
            9 | 10 => {
                let n = self.below(4);
                Value::Array((0..n).map(|_| self.junk(depth + 1)).collect())
            }
            _ => {
                let n = self.below(4);
                let mut map = Map::new();
                for _ in 0..n {
                    let k = self.column();
                    let v = self.junk(depth + 1);
                    map.insert(k, v);
                }
                Value::Object(map)
            }
        }
    }

    /// A value for the column: well-typed (and hostile only as content) in plausible mode,
    /// anything at all otherwise.
    fn value_for(&mut self, column: &str) -> Value {
        if !self.plausible && self.chance(0.25) {
            return self.junk(0);
        }
        match column {
            "id" => self.some_id(),
            "title" => {
                if self.chance(0.4) {
                    json!(format!("fuzz {} apple", self.below(1000)))
                } else if self.plausible {
                    json!(self.hostile_text())
                } else {
                    json!(self.hostile())
                }
            }
            "amount" => self.pick_typed(
                &[
                    json!(1),
                    json!(-5.25),
                    json!("20.00"),
                    json!(".5"),
                    json!("9999999999.99"),
                    json!("1e400"),
                    json!(1e20),
                    json!("10000000000"),
                    json!("NaN"),
                ],
                5,
            ),
            "qty" => self.pick_typed(
                &[
                    json!(0),
                    json!(2),
                    json!(i32::MAX),
                    json!(i32::MIN),
                    json!("3"),
                    json!(2_147_483_648i64),
                    json!(" 7 "),
                    json!(1.5),
                ],
                5,
            ),
            "ratio" => self.pick_typed(
                &[
                    json!(0.5),
                    json!(-1),
                    json!(1e308),
                    json!("-0"),
                    json!("NaN"),
                    json!("inf"),
                    json!("1e999"),
                ],
                6,
            ),
            "flag" => self.pick_typed(&[json!(true), json!(false), json!("true"), json!(1)], 2),
            "happened_at" => self.pick_typed(
                &[
                    json!("2026-01-05T10:00:00Z"),
                    json!("2026-03-01T12:00:00+02:00"),
                    json!("9999-12-31T23:59:59Z"),
                    json!("0001-01-01T00:00:00Z"),
                    json!("0000-01-01T00:00:00Z"),
                    json!("2026-02-30T00:00:00Z"),
                    json!("2026-01-05 10:00:00"),
                    json!("yesterday"),
                    json!(1_767_600_000),
                ],
                4,
            ),
            "day" => self.pick_typed(
                &[
                    json!("2026-01-05"),
                    json!("0001-01-01"),
                    json!("9999-12-31"),
                    json!("2026-13-01"),
                    json!("today"),
                    json!("2026-01-05T00:00:00Z"),
                ],
                3,
            ),
            "status" => self.pick_typed(
                &[
                    json!("new"),
                    json!("open"),
                    json!("closed"),
                    json!("NEW"),
                    json!("bogus"),
                ],
                3,
            ),
            "tags" => {
                let n = self.below(4);
                let plausible = self.plausible;
                let items: Vec<Value> = (0..n)
                    .map(|_| {
                        if self.chance(0.5) {
                            json!(self.pick(&["red", "blue", "green"]))
                        } else if plausible {
                            json!(self.hostile_text())
                        } else {
                            self.junk(2)
                        }
                    })
                    .collect();
                if !plausible && self.chance(0.1) {
                    json!("red")
                } else {
                    Value::Array(items)
                }
            }
            "scores" => {
                let n = self.below(4);
                let items: Vec<Value> = (0..n)
                    .map(|_| {
                        self.pick_typed(
                            &[
                                json!(1),
                                json!(3),
                                json!(i32::MIN),
                                json!(i64::MAX),
                                json!("x"),
                                json!([1]),
                            ],
                            3,
                        )
                    })
                    .collect();
                Value::Array(items)
            }
            "attrs" => {
                let text = self.hostile_text();
                self.pick_typed(
                    &[
                        json!({ "tier": "gold" }),
                        json!({ "nested": { "k": "v" } }),
                        json!({ "text": text }),
                        json!([1, 2]),
                        json!("text"),
                        json!({}),
                        json!({ "bad": "\u{0}" }),
                    ],
                    6,
                )
            }
            "search" => {
                json!(self.pick(&["apple", "apple -pie", "\"apple pie\"", "(", "!", "a & b"]))
            }
            _ => self.junk(0),
        }
    }

    fn op(&mut self) -> Value {
        match self.below(10) {
            0 => json!(self.pick(&BAD_OPS)),
            1 => self.junk(2),
            _ => json!(self.pick(&OPS)),
        }
    }

    /// An operator that applies to the column's type.
    fn op_for(&mut self, column: &str) -> &'static str {
        match column {
            "title" => self.pick(&[
                "eq", "neq", "lt", "lte", "gt", "gte", "in", "like", "ilike", "is_null",
            ]),
            "flag" => self.pick(&["eq", "neq", "in", "is_null"]),
            "tags" | "scores" | "attrs" => self.pick(&["contains", "is_null"]),
            _ => self.pick(&["eq", "neq", "lt", "lte", "gt", "gte", "in", "is_null"]),
        }
    }

    fn condition(&mut self) -> Value {
        if self.plausible {
            if self.chance(0.1) {
                let q = self.pick(&[
                    "apple",
                    "apple -pie",
                    "cherry OR banana",
                    "\"x",
                    "-",
                    "&|!",
                    "' OR 1=1 --",
                    "MARKER",
                ]);
                return json!({ "op": "search", "value": q });
            }
            let column = self.column();
            let op = self.op_for(&column);
            let value = match op {
                "in" => {
                    let n = self.below(5) + 1;
                    Value::Array((0..n).map(|_| self.value_for(&column)).collect())
                }
                "is_null" => json!(self.chance(0.5)),
                "like" | "ilike" => {
                    let p = self.hostile_text();
                    json!(self.pick(&[
                        format!("%{p}%"),
                        p,
                        "%apple%".to_owned(),
                        "a\\".to_owned(),
                        "%MARKER%".to_owned()
                    ]))
                }
                _ => self.value_for(&column),
            };
            return json!({ "column": column, "op": op, "value": value });
        }
        let column = self.column();
        let op = self.op();
        let value = match op.as_str() {
            Some("in") if self.chance(0.7) => {
                let n = self.below(5);
                Value::Array((0..n).map(|_| self.value_for(&column)).collect())
            }
            Some("is_null") => self.pick(&[Value::Null, json!(true), json!(false), json!("yes")]),
            Some("search") => json!(self.pick(&[
                "apple",
                "apple -pie",
                "cherry OR banana",
                "\"x",
                "-",
                "&|!",
                ""
            ])),
            _ => self.value_for(&column),
        };
        let mut c = Map::new();
        if self.chance(0.92) {
            c.insert(
                "column".into(),
                if self.chance(0.95) {
                    json!(column)
                } else {
                    self.junk(2)
                },
            );
        }
        if self.chance(0.95) {
            c.insert("op".into(), op);
        }
        if self.chance(0.9) {
            c.insert("value".into(), value);
        }
        if self.chance(0.05) {
            c.insert(self.hostile(), self.junk(2));
        }
        Value::Object(c)
    }

    fn filter(&mut self, depth: usize) -> Value {
        if depth == 0 && !self.plausible {
            match self.below(12) {
                0 => {
                    // Deeper than ~120 levels the request's JSON itself is refused by the
                    // protocol layer before any tool runs (see the test below).
                    let levels = self.pick(&[17, 30, 50]);
                    return self.deep(levels);
                }
                1 => return self.huge_in(),
                2 => return self.junk(0),
                3 => {
                    // Many conditions side by side.
                    let n = self.pick(&[199, 201, 500]);
                    let items = (0..n)
                        .map(|_| json!({ "column": "qty", "op": "gt", "value": 1 }))
                        .collect();
                    return json!({ "or": Value::Array(items) });
                }
                _ => {}
            }
        }
        if depth >= 3 {
            return self.condition();
        }
        match self.below(6) {
            0..=2 => self.condition(),
            3 | 4 => {
                let which = self.pick(&["and", "or"]);
                let n = self.below(4) + usize::from(self.plausible);
                let items: Vec<Value> = (0..n).map(|_| self.filter(depth + 1)).collect();
                let mut f = json!({ which: items });
                if !self.plausible && self.chance(0.05) {
                    f["not"] = self.condition();
                }
                f
            }
            _ => json!({ "not": self.filter(depth + 1) }),
        }
    }

    /// `levels` of alternating not / and around one condition.
    fn deep(&mut self, levels: usize) -> Value {
        let mut f = json!({ "column": "title", "op": "eq", "value": "x" });
        for i in 0..levels {
            f = if i % 2 == 0 {
                json!({ "not": f })
            } else {
                json!({ "and": [f] })
            };
        }
        f
    }

    /// An `in` with ten thousand elements.
    fn huge_in(&mut self) -> Value {
        let (column, items): (&str, Vec<Value>) = match self.below(3) {
            0 => ("qty", (0..10_000).map(|i| json!(i)).collect()),
            1 => ("id", (0..10_000).map(|_| json!(Uuid::new_v4())).collect()),
            _ => (
                "title",
                (0..10_000)
                    .map(|i| json!(format!("' OR 1=1 {i}")))
                    .collect(),
            ),
        };
        json!({ "column": column, "op": "in", "value": items })
    }

    fn sort(&mut self) -> Value {
        if self.plausible {
            let columns = self.distinct(&ORDERABLE, 3);
            let keys: Vec<Value> = columns
                .into_iter()
                .map(|c| {
                    let mut k = json!({ "column": c });
                    if self.chance(0.7) {
                        k["direction"] = json!(self.pick(&["asc", "desc"]));
                    }
                    if self.chance(0.5) {
                        k["nulls"] = json!(self.pick(&["first", "last"]));
                    }
                    k
                })
                .collect();
            return Value::Array(keys);
        }
        if self.chance(0.1) {
            return self.junk(1);
        }
        let n = self.below(4) + if self.chance(0.05) { 8 } else { 0 };
        let keys: Vec<Value> = (0..n)
            .map(|_| {
                let mut k = Map::new();
                if self.chance(0.95) {
                    k.insert("column".into(), json!(self.column()));
                }
                if self.chance(0.6) {
                    let d = if self.chance(0.85) {
                        json!(self.pick(&["asc", "desc"]))
                    } else {
                        json!(self.pick(&["ASC", "sideways", "desc; DROP TABLE x", ""]))
                    };
                    k.insert("direction".into(), d);
                }
                if self.chance(0.4) {
                    let nl = if self.chance(0.85) {
                        json!(self.pick(&["first", "last"]))
                    } else {
                        self.junk(2)
                    };
                    k.insert("nulls".into(), nl);
                }
                if self.chance(0.03) {
                    k.insert("collate".into(), json!("C"));
                }
                Value::Object(k)
            })
            .collect();
        Value::Array(keys)
    }

    fn limit(&mut self) -> Value {
        let limits = [
            json!(1),
            json!(3),
            json!(50),
            json!(200),
            json!(0),
            json!(201),
            json!(-1),
            json!(i64::MAX),
            json!(1.5),
            json!("10"),
            Value::Null,
            json!(1000),
            json!(1001),
        ];
        self.pick_typed(&limits, 4)
    }

    fn cursor(&mut self) -> Value {
        match self.below(8) {
            0..=2 if !self.cursors.is_empty() => json!(self.pick(&self.cursors.clone())),
            3 | 4 if !self.cursors.is_empty() => {
                // A real cursor with its position values replaced by hostile ones.
                let real = self.pick(&self.cursors.clone());
                let mut position: Value = URL_SAFE_NO_PAD
                    .decode(&real)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_else(|| json!({}));
                if let Some(values) = position.get_mut("v").and_then(Value::as_array_mut) {
                    for v in values.iter_mut() {
                        *v = match self.below(5) {
                            0 => json!(self.hostile()),
                            1 => json!(self.pick(&self.b_ids.clone())),
                            2 => Value::Null,
                            3 => json!(self.pick(&["0", "-1", "2147483647", "2026-01-05", "zzz"])),
                            _ => v.clone(),
                        };
                    }
                    if self.chance(0.2) {
                        values.push(json!("extra"));
                    }
                }
                json!(URL_SAFE_NO_PAD.encode(position.to_string()))
            }
            5 => json!(
                URL_SAFE_NO_PAD.encode(
                    json!({ "s": "0000", "v": [self.hostile(), self.pick(&self.b_ids.clone())] })
                        .to_string()
                )
            ),
            6 => self.junk(1),
            _ => json!(self.hostile()),
        }
    }

    fn row(&mut self) -> Value {
        let mut row = Map::new();
        if self.plausible || self.chance(0.9) {
            row.insert("title".into(), self.value_for("title"));
        }
        let n = self.below(5);
        for _ in 0..n {
            let column = self.column();
            if self.plausible && column == "id" && self.chance(0.8) {
                continue;
            }
            let value = self.value_for(&column);
            row.insert(column, value);
        }
        if !self.plausible && self.chance(0.05) {
            row.insert("workspace_id".into(), json!(self.b_ws));
        }
        Value::Object(row)
    }

    fn key(&mut self) -> Value {
        if self.plausible {
            return json!({ "id": self.some_id() });
        }
        match self.below(8) {
            0 => json!({ "id": self.some_id(), "workspace_id": self.b_ws }),
            1 => json!({ self.column(): self.some_id() }),
            2 => self.junk(1),
            3 => json!({}),
            _ => json!({ "id": self.some_id() }),
        }
    }

    fn aggregates(&mut self) -> Value {
        let n = self.below(4) + usize::from(self.plausible || self.chance(0.9));
        let mut used: Vec<String> = Vec::new();
        let items: Vec<Value> = (0..n)
            .filter_map(|_| {
                let mut g = Map::new();
                if self.plausible {
                    let (f, column) = match self.below(5) {
                        0 => ("count", None),
                        1 => ("count_distinct", Some(self.pick(&ORDERABLE))),
                        2 => (
                            self.pick(&["sum", "avg"]),
                            Some(self.pick(&["amount", "qty", "ratio"])),
                        ),
                        3 => ("count", Some(self.pick(&VISIBLE))),
                        _ => (self.pick(&["min", "max"]), Some(self.pick(&ORDERABLE[..8]))),
                    };
                    let name = column.map_or("count".to_owned(), |c| format!("{f}_{c}"));
                    if used.contains(&name) {
                        return None;
                    }
                    used.push(name);
                    g.insert("fn".into(), json!(f));
                    if let Some(c) = column {
                        g.insert("column".into(), json!(c));
                    }
                    return Some(Value::Object(g));
                }
                let f = if self.chance(0.9) {
                    json!(self.pick(&["count", "count_distinct", "sum", "avg", "min", "max"]))
                } else {
                    json!(self.pick(&["median", "COUNT", "sum(qty)", "count(*) --"]))
                };
                g.insert("fn".into(), f);
                if self.chance(0.7) {
                    g.insert("column".into(), json!(self.column()));
                }
                if self.chance(0.2) {
                    g.insert("as".into(), json!(self.hostile()));
                }
                Some(Value::Object(g))
            })
            .collect();
        Value::Array(items)
    }

    fn group_by(&mut self) -> Value {
        let n = self.below(3);
        let mut seen: Vec<String> = Vec::new();
        let groups: Vec<Value> = (0..n)
            .filter_map(|_| {
                if self.chance(0.5) {
                    let c = if self.plausible {
                        self.pick(&["title", "status", "flag", "qty", "day", "amount"])
                            .to_owned()
                    } else {
                        self.column()
                    };
                    if self.plausible && seen.contains(&c) {
                        return None;
                    }
                    seen.push(c.clone());
                    Some(json!(c))
                } else {
                    let trunc = if self.plausible || self.chance(0.8) {
                        json!(self.pick(&["day", "week", "month"]))
                    } else {
                        json!(self.pick(&["year", "'day'", "day); DROP TABLE x; --"]))
                    };
                    let c = if self.plausible {
                        self.pick(&["happened_at", "day"])
                    } else {
                        self.pick(&["happened_at", "day", "title", "qty"])
                    };
                    if self.plausible && seen.iter().any(|s| s == c) {
                        return None;
                    }
                    seen.push(c.to_owned());
                    Some(json!({ "column": c, "trunc": trunc }))
                }
            })
            .collect();
        Value::Array(groups)
    }

    fn args(&mut self, tool: &str) -> Value {
        self.plausible = self.chance(0.5);
        let mut a = Map::new();
        let table = self.table();
        match tool {
            "list_tables" => {
                if self.chance(0.2) {
                    a.insert(
                        self.pick(&["schema", "table", "workspace_id"]).into(),
                        self.junk(1),
                    );
                }
                return Value::Object(a);
            }
            "describe_table" => {
                a.insert("table".into(), table);
            }
            "query_records" => {
                a.insert("table".into(), table);
                if self.chance(0.4) {
                    let select = if self.plausible {
                        let mut s = self.distinct(&VISIBLE, 4);
                        if s.is_empty() {
                            s.push("title".into());
                        }
                        json!(s)
                    } else if self.chance(0.1) {
                        self.junk(1)
                    } else {
                        let n = self.below(4);
                        Value::Array((0..n).map(|_| json!(self.column())).collect())
                    };
                    a.insert("select".into(), select);
                }
                if self.chance(0.8) {
                    a.insert("filter".into(), self.filter(0));
                }
                if self.chance(0.5) {
                    a.insert("sort".into(), self.sort());
                }
                if self.chance(0.6) {
                    a.insert("limit".into(), self.limit());
                }
                if self.chance(0.3) {
                    a.insert("cursor".into(), self.cursor());
                }
            }
            "aggregate_records" => {
                a.insert("table".into(), table);
                a.insert("aggregates".into(), self.aggregates());
                if self.chance(0.5) {
                    a.insert("group_by".into(), self.group_by());
                }
                if self.chance(0.6) {
                    a.insert("filter".into(), self.filter(0));
                }
                if self.chance(0.3) {
                    let limit = self.pick_typed(
                        &[
                            json!(1),
                            json!(10),
                            json!(1000),
                            json!(0),
                            json!(1001),
                            json!("x"),
                        ],
                        3,
                    );
                    a.insert("limit".into(), limit);
                }
            }
            "insert_record" => {
                a.insert("table".into(), table);
                match self.below(if self.plausible { 5 } else { 6 }) {
                    0..=2 => {
                        let row = self.row();
                        a.insert("values".into(), row);
                    }
                    3 | 4 => {
                        let sizes: &[usize] = if self.plausible {
                            &[1, 2, 5, 20]
                        } else {
                            &[0, 1, 2, 5, 100, 101]
                        };
                        let n = self.pick(sizes);
                        let rows: Vec<Value> = (0..n).map(|_| self.row()).collect();
                        a.insert("rows".into(), Value::Array(rows));
                    }
                    _ => {
                        let row = self.row();
                        a.insert("values".into(), row.clone());
                        a.insert("rows".into(), json!([row]));
                    }
                }
            }
            "update_record" | "delete_record" => {
                a.insert("table".into(), table);
                match self.below(if self.plausible { 4 } else { 5 }) {
                    0 | 1 => {
                        a.insert("key".into(), self.key());
                    }
                    2 | 3 => {
                        a.insert("filter".into(), self.filter(0));
                        if self.plausible || self.chance(0.9) {
                            let guard = self.pick_typed(
                                &[
                                    json!(1),
                                    json!(2),
                                    json!(1000),
                                    json!(0),
                                    json!(1001),
                                    json!(-1),
                                    json!("5"),
                                ],
                                3,
                            );
                            a.insert("max_rows".into(), guard);
                        }
                    }
                    _ => {
                        a.insert("key".into(), self.key());
                        a.insert("filter".into(), self.filter(0));
                        a.insert("max_rows".into(), json!(5));
                    }
                }
                if tool == "update_record" {
                    let mut values = Map::new();
                    let n = self.below(4) + usize::from(self.plausible);
                    for _ in 0..n {
                        let column = self.column();
                        if self.plausible && column == "id" {
                            continue;
                        }
                        let value = self.value_for(&column);
                        values.insert(column, value);
                    }
                    if values.is_empty() && self.plausible {
                        values.insert("title".into(), self.value_for("title"));
                    }
                    if !self.plausible && self.chance(0.05) {
                        values.insert("workspace_id".into(), json!(self.b_ws));
                    }
                    a.insert("values".into(), Value::Object(values));
                }
            }
            _ => unreachable!(),
        }
        if !self.plausible && self.chance(0.03) {
            a.insert("workspace_id".into(), json!(self.b_ws));
        }
        Value::Object(a)
    }
}

/// The JSON text of a value, cut short for a readable failure message.
fn shown(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 1500 {
        let mut end = 1500;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &text[..end], text.len())
    } else {
        text
    }
}

async fn b_count(env: &TestEnv, b_ws: Uuid) -> i64 {
    let su = env.db.connect_superuser().await;
    su.query_one(
        "SELECT count(*) FROM crm.probe WHERE workspace_id = $1",
        &[&b_ws],
    )
    .await
    .expect("crm.probe still exists")
    .get(0)
}

#[tokio::test]
async fn hostile_arguments_never_break_out_of_the_workspace() {
    let seed = std::env::var("HDLS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("power_fuzz seed: {seed} (replay with HDLS_FUZZ_SEED={seed})");

    let env = TestEnv::start().await;
    probe_table(&env).await;
    let (a_ws, _) = env.workspace("A").await;
    let (b_ws, _) = env.workspace("B").await;
    unlimited(&env, a_ws).await;
    unlimited(&env, b_ws).await;
    let a_key = env.key(a_ws, Role::Member).await;
    let b_key = env.key(b_ws, Role::Member).await;
    let mut a = env.client("/api/mcp/crm", &a_key).await;
    let b = env.client("/api/mcp/crm", &b_key).await;

    let marker = format!("MARKER-B-{}", Uuid::new_v4());
    let b_rows: Vec<Value> = (0..12)
        .map(|i| {
            json!({ "title": format!("{marker} row {i} apple"), "qty": i, "amount": i * 3, "status": "open",
                    "tags": ["red", marker.clone()], "attrs": { "tier": "gold", "m": marker.clone() },
                    "happened_at": "2026-01-05T10:00:00Z", "day": "2026-01-05" })
        })
        .collect();
    let b_inserted = b
        .ok("insert_record", json!({ "table": "probe", "rows": b_rows }))
        .await;
    let b_ids: Vec<String> = b_inserted["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let b_before = snapshot(&env, b_ws).await;
    assert_eq!(b_before.len(), 12);

    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        a_ids: Vec::new(),
        b_ids,
        a_ws,
        b_ws,
        cursors: Vec::new(),
        plausible: false,
    };

    let mut failures: Vec<String> = Vec::new();
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    let total = CALLS_PER_TOOL * TOOLS.len();
    for i in 0..total {
        if i % 70 == 0 {
            // Keep A populated with ordinary rows, so reads and writes have something to hit.
            let rows: Vec<Value> = (0..6)
                .map(|k| json!({ "title": format!("a row {i} {k} apple"), "qty": k, "amount": k,
                                 "status": g.pick(&["new", "open", "closed"]), "tags": ["red"],
                                 "happened_at": "2026-02-01T00:00:00Z", "day": "2026-02-01", "attrs": { "tier": "gold" } }))
                .collect();
            let added = a
                .ok("insert_record", json!({ "table": "probe", "rows": rows }))
                .await;
            for r in added["rows"].as_array().unwrap() {
                g.a_ids.push(r["id"].as_str().unwrap().to_owned());
            }
            if let Some(c) = a
                .ok(
                    "query_records",
                    json!({ "table": "probe", "limit": 2, "sort": [{ "column": "qty" }] }),
                )
                .await["next_cursor"]
                .as_str()
            {
                g.cursors.push(c.to_owned());
            }
        }
        let tool = TOOLS[i % TOOLS.len()];
        // Requests over the server's 1 MiB body limit are refused by HTTP before any tool
        // runs (413, by design); stay under it so every call reaches the tool.
        let args = loop {
            let args = g.args(tool);
            if args.to_string().len() < 900_000 {
                break args;
            }
        };
        let params = CallToolRequestParams::new(tool.to_owned())
            .with_arguments(args.as_object().cloned().unwrap_or_default());
        let fail = |what: String| {
            format!(
                "seed {seed}, call #{i}: {tool} with {}\n    → {what}",
                shown(&args)
            )
        };
        let result = match a.service.call_tool(params).await {
            Ok(result) => result,
            Err(e) => {
                failures.push(fail(format!(
                    "protocol/transport error instead of a tool result: {e}"
                )));
                *outcomes.entry("protocol error".into()).or_default() += 1;
                // The session may be gone after a transport failure; carry on with a fresh one.
                a = Mcp::connect(&env.url("/api/mcp/crm"), &a_key).await;
                continue;
            }
        };
        let text = serde_json::to_string(&result).unwrap();
        if text.contains(&marker) {
            failures.push(fail(format!(
                "the response carries B's marker: {}",
                shown(&json!(text))
            )));
        }
        let body = result.structured_content.clone().unwrap_or(Value::Null);
        if result.is_error == Some(true) {
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or("<none>")
                .to_owned();
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            *outcomes.entry(format!("{tool}: {code}")).or_default() += 1;
            let by_key = args.get("key").is_some();
            let changes_id = args
                .get("values")
                .and_then(Value::as_object)
                .is_some_and(|v| v.contains_key("id"));
            let allowed = match code.as_str() {
                "invalid_input" => true,
                "not_found" => by_key && matches!(tool, "update_record" | "delete_record"),
                // A duplicate primary key: on insert, or an update that sets `id`.
                "conflict" => tool == "insert_record" || (tool == "update_record" && changes_id),
                _ => false,
            };
            if !allowed {
                failures.push(fail(format!("error code {code:?}: {}", shown(&body))));
            }
            let lower = message.to_lowercase();
            if [
                "syntax error",
                "violates",
                "sqlstate",
                "relation \"",
                "error:",
                "db error",
            ]
            .iter()
            .any(|raw| lower.contains(raw))
            {
                failures.push(fail(format!("a raw database message: {message}")));
            }
        } else {
            *outcomes.entry(format!("{tool}: ok")).or_default() += 1;
            if !body.is_object() {
                failures.push(fail(format!("success without structuredContent: {text}")));
            }
            if let Some(c) = body["next_cursor"].as_str() {
                g.cursors.push(c.to_owned());
            }
            if tool == "insert_record" {
                for r in body["rows"].as_array().into_iter().flatten() {
                    if let Some(id) = r["id"].as_str() {
                        g.a_ids.push(id.to_owned());
                    }
                }
            }
        }
        if i % 50 == 49 {
            let n = b_count(&env, b_ws).await;
            if n != 12 {
                failures.push(fail(format!("B's row count changed to {n}")));
                break;
            }
        }
        if failures.len() >= 25 {
            break;
        }
    }
    eprintln!("outcomes: {outcomes:#?}");

    // B is untouched, the table is still there, and A can still use it.
    assert_eq!(
        snapshot(&env, b_ws).await,
        b_before,
        "seed {seed}: B's rows changed"
    );
    let su = env.db.connect_superuser().await;
    let exists: bool = su
        .query_one("SELECT to_regclass('crm.probe') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(exists, "crm.probe is gone");
    let accounts: bool = su
        .query_one("SELECT to_regclass('crm.accounts') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(accounts, "crm.accounts is gone");
    a.ok("query_records", json!({ "table": "probe", "limit": 1 }))
        .await;
    assert_eq!(
        b.ok(
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "count" }] })
        )
        .await["rows"][0]["count"],
        12
    );
    assert!(
        failures.is_empty(),
        "seed {seed}: {} fuzz failures (replay with HDLS_FUZZ_SEED={seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Enough calls got past validation into SQL to mean something, for every data tool.
    for tool in TOOLS {
        let ok = outcomes.get(&format!("{tool}: ok")).copied().unwrap_or(0);
        assert!(ok >= 5, "only {ok} {tool} calls succeeded: {outcomes:#?}");
    }
}

/// Nesting deeper than the JSON parser's recursion limit never reaches a tool: the request
/// is refused at the protocol layer with a client error, never a server error.
#[tokio::test]
async fn absurdly_deep_json_is_refused_before_any_tool_runs() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("deep").await;
    let mut filter = json!({ "column": "title", "op": "eq", "value": "x" });
    for _ in 0..200 {
        filter = json!({ "not": filter });
    }
    let response = reqwest::Client::new()
        .post(env.url("/api/mcp/crm"))
        .header("authorization", format!("Bearer {key}"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": { "name": "query_records",
                                   "arguments": { "table": "accounts", "filter": filter } } }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_client_error(),
        "status {}",
        response.status()
    );
}

/// Values at and past the edges of PostgreSQL's ranges for each column type.
fn extremes(column: &str) -> Vec<Value> {
    let long = |n: usize| json!("x".repeat(n));
    let mut values = match column {
        "at_zone" | "happened_at" => vec![
            json!("2024-01-01T00:00:00+23:59"),
            json!("2024-01-01T00:00:00-23:59"),
            json!("2024-01-01T00:00:00+16:00"),
            json!("2024-01-01T00:00:00-15:59"),
            json!("2024-01-01T00:00:00+15:59"),
            json!("0000-01-01T00:00:00Z"),
            json!("0001-01-01T00:00:00+15:59"),
            json!("9999-12-31T23:59:59-15:59"),
            json!("2024-06-30T23:59:60Z"),
            json!("2024-01-01T00:00:00.123456789123Z"),
            json!("2024-01-01t00:00:00z"),
            json!("+10000-01-01T00:00:00Z"),
            json!("294277-01-01T00:00:00Z"),
            json!("infinity"),
            json!("epoch"),
            json!("now"),
        ],
        "at_local" => vec![
            json!("2024-01-01T00:00:00+23:59"),
            json!("2024-01-01T00:00:00+15:59"),
            json!("2024-01-01 00:00:00-1559"),
            json!("0000-01-01T00:00:00"),
            json!("9999-12-31T23:59:59.999999999"),
            json!("294277-01-01T00:00:00"),
            json!("2024-01-01 00:00:00 BC"),
            json!("-infinity"),
        ],
        "day" => vec![
            json!("0000-01-01"),
            json!("0001-01-01"),
            json!("9999-12-31"),
            json!("5874898-01-01"),
            json!("2023-02-29"),
            json!("2024-02-29"),
            json!("infinity"),
        ],
        "price" | "amount" | "big" => vec![
            json!("1e1000"),
            json!("1e1001"),
            json!("-1e-1000"),
            json!("1e-9999"),
            json!("1e300"),
            json!(1e300),
            json!(-1e300),
            json!("999.995"),
            json!("-999.994"),
            json!("9999999999.995"),
            json!("9".repeat(199)),
            json!(format!("0.{}1", "0".repeat(190))),
            json!(u64::MAX),
            json!(i64::MIN),
        ],
        "ratio" | "wide" => vec![
            json!("1e39"),
            json!("3.4028235e38"),
            json!("1e309"),
            json!("-1e-400"),
            json!("1e-46"),
            json!(f64::MAX),
            json!(f64::MIN_POSITIVE),
            json!("+Infinity"),
            json!("-inf"),
            json!("nan"),
            json!("-nan"),
            json!("0x10"),
            json!("1_000"),
        ],
        "qty" | "slot" => vec![
            json!("2147483648"),
            json!("-2147483649"),
            json!(i64::MAX),
            json!("9223372036854775808"),
            json!(1.5),
            json!("1e3"),
            json!(2_147_483_647),
        ],
        "title" | "label" | "code" => vec![
            long(100_001),
            long(99_999),
            long(21),
            json!("é".repeat(20)),
            json!("ABCDEFGHI"),
            json!("ABCDEFGH"),
            json!("lower"),
            json!(""),
            json!("a\u{0}b"),
            json!("\u{FFFF}\u{10FFFF}"),
        ],
        "clock" => vec![
            json!("12:00:00+23:59"),
            json!("12:00:00+15:59"),
            json!("24:00:01"),
            json!("25:61:00"),
            json!("allballs"),
        ],
        "span" => vec![
            json!("2147483648 years"),
            json!("178000000 years"),
            json!("-178000000 years"),
            json!("1 fortnight"),
            json!("P1Y2M"),
            json!("infinity"),
        ],
        "tags" => vec![
            json!(["abcd"]),
            json!(["abc", null]),
            json!(vec!["a"; 1001]),
            json!([["nested"]]),
        ],
        _ => Vec::new(),
    };
    // Every type also meets the special float spellings and junk.
    values.extend([
        json!("NaN"),
        json!("Infinity"),
        json!("-Infinity"),
        json!(""),
        json!(" "),
        json!(true),
        json!({ "n": 1 }),
    ]);
    values
}

/// Seeded calls whose shape is always right and whose values sit at or past the edges of
/// PostgreSQL's ranges: out-of-range timestamps and UTC offsets, huge numerics, overlong
/// text, NaN and Infinity spelled every way. Every answer is a success or a clean refusal;
/// `internal` (or a protocol error) is a failure.
#[tokio::test]
async fn values_past_postgres_ranges_never_get_internal() {
    let seed = std::env::var("HDLS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("edge-value fuzz seed: {seed} (replay with HDLS_FUZZ_SEED={seed})");
    let env = TestEnv::start().await;
    probe_table(&env).await;
    let crm = crate::bad_input::edge_table(&env, "edges").await;
    let mut rng = StdRng::seed_from_u64(seed);
    let tables: [(&str, &[&str]); 2] = [
        (
            "edge",
            &[
                "code", "label", "price", "ratio", "wide", "big", "qty", "at_local", "at_zone",
                "day", "clock", "span", "slot", "tags",
            ],
        ),
        (
            "probe",
            &["title", "amount", "qty", "ratio", "happened_at", "day"],
        ),
    ];
    let base = |table: &str| -> Value {
        if table == "edge" {
            json!({ "label": "ok" })
        } else {
            json!({ "title": "ok" })
        }
    };
    let mut ids: Vec<(String, String)> = Vec::new();
    for (table, _) in tables {
        let row = crm
            .ok(
                "insert_record",
                json!({ "table": table, "values": base(table) }),
            )
            .await;
        ids.push((
            table.to_owned(),
            row["rows"][0]["id"].as_str().unwrap().to_owned(),
        ));
    }
    let mut failures: Vec<String> = Vec::new();
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    for i in 0..600 {
        let (table, columns) = tables[rng.random_range(0..tables.len())];
        let column = columns[rng.random_range(0..columns.len())];
        let choices = extremes(column);
        let value = choices[rng.random_range(0..choices.len())].clone();
        let key_id = ids
            .iter()
            .filter(|(t, _)| t == table)
            .map(|(_, id)| id.clone())
            .next_back()
            .unwrap_or_default();
        let op = match column {
            "clock" | "span" => "eq",
            "tags" => "contains",
            _ => ["eq", "neq", "lt", "gte"][rng.random_range(0..4)],
        };
        let condition = json!({ "column": column, "op": op, "value": value });
        let (tool, args) = match rng.random_range(0..6) {
            0 | 1 => {
                let mut values = base(table);
                values[column] = value.clone();
                ("insert_record", json!({ "table": table, "values": values }))
            }
            2 => (
                "update_record",
                json!({ "table": table, "key": { "id": key_id }, "values": { column: value } }),
            ),
            3 => (
                "query_records",
                json!({ "table": table, "filter": condition, "limit": 5 }),
            ),
            4 => (
                "aggregate_records",
                json!({ "table": table, "filter": { "not": condition },
                        "aggregates": [{ "fn": "count" }] }),
            ),
            _ => (
                "update_record",
                json!({ "table": table, "filter": condition, "max_rows": 1000,
                        "values": { column: value } }),
            ),
        };
        let params = CallToolRequestParams::new(tool.to_owned())
            .with_arguments(args.as_object().cloned().unwrap_or_default());
        let what = format!("seed {seed}, call #{i}: {tool} {}", shown(&args));
        let call = crm.service.call_tool(params);
        let result = match tokio::time::timeout(std::time::Duration::from_secs(30), call).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => {
                failures.push(format!("{what}\n    → protocol error: {e}"));
                continue;
            }
            Err(_) => {
                failures.push(format!("{what}\n    → no answer within 30 s"));
                break;
            }
        };
        let body = result.structured_content.clone().unwrap_or(Value::Null);
        if result.is_error != Some(true) {
            *outcomes.entry(format!("{tool}: ok")).or_default() += 1;
            if tool == "insert_record"
                && let Some(id) = body["rows"][0]["id"].as_str()
            {
                ids.push((table.to_owned(), id.to_owned()));
            }
            continue;
        }
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or("<none>")
            .to_owned();
        *outcomes.entry(format!("{tool}: {code}")).or_default() += 1;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        let allowed = match code.as_str() {
            "invalid_input" => true,
            // An exclusion constraint on `slot`: a second row with the same slot.
            "conflict" => column == "slot",
            _ => false,
        };
        if !allowed {
            failures.push(format!("{what}\n    → {code}: {}", shown(&body)));
        }
        let lower = message.to_lowercase();
        if [
            "syntax",
            "violates",
            "sqlstate",
            "error:",
            "db error",
            "out of range:",
        ]
        .iter()
        .any(|raw| lower.contains(raw))
        {
            failures.push(format!("{what}\n    → a raw database message: {message}"));
        }
        // Digits alone may coincide with a stated limit; words and dates may not appear.
        if let Some(text) = value.as_str()
            && text.len() >= 8
            && text
                .bytes()
                .any(|b| b.is_ascii_alphabetic() || b == b' ' || b == b':')
            && message.contains(text)
        {
            failures.push(format!(
                "{what}\n    → the message echoes the value: {message}"
            ));
        }
        if failures.len() >= 25 {
            break;
        }
    }
    eprintln!("outcomes: {outcomes:#?}");
    assert!(
        failures.is_empty(),
        "seed {seed}: {} failures (replay with HDLS_FUZZ_SEED={seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The edges PostgreSQL accepts were exercised, not only refusals.
    for tool in ["insert_record", "update_record", "query_records"] {
        let ok = outcomes.get(&format!("{tool}: ok")).copied().unwrap_or(0);
        assert!(ok >= 10, "only {ok} {tool} calls succeeded: {outcomes:#?}");
    }
}
