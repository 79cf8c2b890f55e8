//! The live catalog of one schema: tables, columns with their real types, keys, indexes.
//! Every identifier the engine writes into SQL comes from here.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};

use crate::db::Scope;
use crate::error::ToolError;

/// Columns the engine never shows or writes: the tenant stamp belongs to the database.
pub const SYSTEM_COLUMNS: [&str; 1] = ["workspace_id"];

/// How a column's values are validated and which operators apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int {
        max: i64,
        min: i64,
    },
    /// `single` is float4 (real), whose range is far smaller than float8's.
    Float {
        single: bool,
    },
    Numeric,
    Text,
    Uuid,
    Jsonb,
    Json,
    Timestamptz,
    Timestamp,
    Date,
    Enum(Vec<String>),
    TsVector,
    Array(Box<Kind>),
    /// Anything else (interval, inet, bytea, …): text in, equality and nullness only.
    Other,
}

impl Kind {
    /// Whether `<`, `>`, sorting, min and max make sense.
    pub fn orderable(&self) -> bool {
        !matches!(
            self,
            Kind::Json | Kind::Jsonb | Kind::TsVector | Kind::Array(_) | Kind::Other | Kind::Bool
        )
    }

    /// Whether `=` and grouping work.
    pub fn equatable(&self) -> bool {
        !matches!(self, Kind::Json | Kind::TsVector)
    }

    /// Whether min and max exist for the type (PostgreSQL has none for uuid or bool).
    pub fn has_min_max(&self) -> bool {
        matches!(
            self,
            Kind::Int { .. }
                | Kind::Float { .. }
                | Kind::Numeric
                | Kind::Text
                | Kind::Timestamptz
                | Kind::Timestamp
                | Kind::Date
                | Kind::Enum(_)
        )
    }

    /// Whether sum and avg apply.
    pub fn summable(&self) -> bool {
        matches!(self, Kind::Int { .. } | Kind::Float { .. } | Kind::Numeric)
    }
}

/// One visible column.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// The declared type, as people read it (`numeric(12,2)`).
    pub type_display: String,
    /// The type to cast a text parameter to, as valid, quoted SQL from `format_type`.
    pub cast: String,
    pub kind: Kind,
    pub nullable: bool,
    pub default: Option<String>,
    pub description: Option<String>,
    pub generated: bool,
    /// What the column's declaration accepts beyond its type, checked before a write.
    pub limits: Limits,
}

/// Limits a column declares beyond its type, read from the catalog so a write that breaks
/// them is refused at its path before PostgreSQL sees it: `varchar(n)`/`char(n)` lengths,
/// `numeric(p, s)`, and length bounds of simple CHECK constraints (`length(c) <= n`). For
/// an array column they apply to each element (only the type modifier's, not CHECKs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub min_chars: Option<u64>,
    pub max_chars: Option<u64>,
    /// `numeric(precision, scale)`; the scale may be negative (PostgreSQL 15+).
    pub numeric: Option<(i32, i32)>,
}

impl Column {
    /// Whether a client may write this column.
    pub fn writable(&self) -> bool {
        !self.generated && self.kind != Kind::TsVector
    }
}

#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    pub ref_schema: String,
    pub ref_table: String,
    pub ref_columns: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Index {
    pub name: String,
    pub columns: Vec<String>,
    pub unique: bool,
}

/// One table (or view) of the schema that the runtime role may read.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub description: Option<String>,
    pub is_view: bool,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    pub foreign_keys: Vec<ForeignKey>,
    pub indexes: Vec<Index>,
    /// CHECK constraints on exactly one visible column: constraint name → column, so a
    /// violation can name the field it concerns.
    pub checks: HashMap<String, String>,
    /// A tenant table: it has the hidden `workspace_id`, which statements name for routing
    /// (`Sql::route`).
    pub tenant: bool,
}

impl Table {
    /// A visible column by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The table's full-text column, if it has exactly one `tsvector`.
    pub fn search_column(&self) -> Option<&Column> {
        let mut it = self.columns.iter().filter(|c| c.kind == Kind::TsVector);
        let first = it.next()?;
        it.next().is_none().then_some(first)
    }

    /// Columns returned when the caller names none: everything visible except search vectors.
    pub fn default_select(&self) -> Vec<&Column> {
        self.columns
            .iter()
            .filter(|c| c.kind != Kind::TsVector)
            .collect()
    }

    /// The description for `describe_table`.
    pub fn describe(&self, custom_fields: Value) -> Value {
        json!({
            "table": self.name,
            "description": self.description,
            "kind": if self.is_view { "view" } else { "table" },
            "columns": self.columns.iter().map(|c| json!({
                "name": c.name,
                "type": c.type_display,
                "nullable": c.nullable,
                "default": c.default,
                "description": c.description,
                "writable": c.writable() && !self.is_view,
            })).collect::<Vec<_>>(),
            "primary_key": self.primary_key,
            "foreign_keys": self.foreign_keys.iter().map(|f| json!({
                "name": f.name,
                "columns": f.columns,
                "references": { "schema": f.ref_schema, "table": f.ref_table, "columns": f.ref_columns },
            })).collect::<Vec<_>>(),
            "indexes": self.indexes.iter().map(|i| json!({
                "name": i.name, "columns": i.columns, "unique": i.unique,
            })).collect::<Vec<_>>(),
            "search_column": self.search_column().map(|c| c.name.clone()),
            "custom_fields": custom_fields,
        })
    }
}

/// A snapshot of one schema.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub schema: String,
    pub tables: BTreeMap<String, Table>,
}

impl Catalog {
    /// A table by name, or `invalid_input` at `path` naming the tables that exist.
    pub fn table(&self, path: &str, name: &str) -> Result<&Table, ToolError> {
        self.tables.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.tables.keys().map(String::as_str).collect();
            ToolError::invalid_input(
                path,
                format!(
                    "no table {name:?} in schema {}; tables: {}",
                    self.schema,
                    known.join(", ")
                ),
            )
        })
    }

    /// Reads the schema from pg_catalog, through the caller's Scope. `hidden` columns are
    /// left out: [`SYSTEM_COLUMNS`] for hdls's own schemas, where the server stamps them;
    /// none for a linked database, whose columns are all its owner's.
    pub async fn load(scope: &Scope, schema: &str, hidden: &[&str]) -> Result<Catalog, ToolError> {
        let schema_param = schema.to_owned();
        let tables = scope
            .query(
                "SELECT c.oid, c.relname::text, obj_description(c.oid, 'pg_class') AS description,
                        c.relkind = 'v' AS is_view
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v')
                   AND has_table_privilege(c.oid, 'SELECT')",
                &[&schema_param],
            )
            .await?;
        let columns = scope
            .query(
                "SELECT a.attrelid, a.attname::text, format_type(a.atttypid, a.atttypmod) AS display,
                        a.atttypmod AS typmod,
                        format_type(a.atttypid, NULL) AS cast_type,
                        t.typname::text AS typname, t.typtype::text AS typtype, t.typcategory::text AS category,
                        et.typname::text AS elem_typname, et.typtype::text AS elem_typtype,
                        ARRAY(SELECT e.enumlabel::text FROM pg_enum e
                              WHERE e.enumtypid = coalesce(et.oid, t.oid) ORDER BY e.enumsortorder) AS labels,
                        NOT a.attnotnull AS nullable, pg_get_expr(d.adbin, d.adrelid) AS default_expr,
                        col_description(a.attrelid, a.attnum) AS description,
                        a.attgenerated <> '' OR a.attidentity = 'a' AS generated
                 FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_type t ON t.oid = a.atttypid
                 LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v') AND a.attnum > 0 AND NOT a.attisdropped
                 ORDER BY a.attrelid, a.attnum",
                &[&schema_param],
            )
            .await?;
        let indexes = scope
            .query(
                "SELECT i.indrelid, ic.relname::text, i.indisprimary, i.indisunique,
                        ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
                              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                              ORDER BY k.ord) AS columns
                 FROM pg_index i
                 JOIN pg_class ic ON ic.oid = i.indexrelid
                 JOIN pg_class c ON c.oid = i.indrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1
                 ORDER BY ic.relname",
                &[&schema_param],
            )
            .await?;
        let foreign_keys = scope
            .query(
                "SELECT con.conrelid, con.conname::text, fn.nspname::text AS ref_schema, fc.relname::text AS ref_table,
                        ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
                              JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o) AS columns,
                        ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
                              JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o) AS ref_columns
                 FROM pg_constraint con
                 JOIN pg_class c ON c.oid = con.conrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_class fc ON fc.oid = con.confrelid
                 JOIN pg_namespace fn ON fn.oid = fc.relnamespace
                 WHERE con.contype = 'f' AND n.nspname = $1
                 ORDER BY con.conname",
                &[&schema_param],
            )
            .await?;

        // CHECK constraints on one column: their text is parsed for length bounds, and
        // their name maps a violation back to the column.
        let checks = scope
            .query(
                "SELECT con.conrelid, con.conname::text,
                        ARRAY(SELECT a.attname::text FROM unnest(con.conkey) k(n)
                              JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n) AS columns,
                        pg_get_constraintdef(con.oid) AS definition
                 FROM pg_constraint con
                 JOIN pg_class c ON c.oid = con.conrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE con.contype = 'c' AND n.nspname = $1",
                &[&schema_param],
            )
            .await?;

        let visible = |name: &str| !hidden.contains(&name);
        let strip = |cols: Vec<String>| cols.into_iter().filter(|c| visible(c)).collect::<Vec<_>>();
        let mut by_oid: HashMap<u32, Table> = HashMap::new();
        for row in &tables {
            let oid: u32 = row.get(0);
            by_oid.insert(
                oid,
                Table {
                    name: row.get(1),
                    description: row.get(2),
                    is_view: row.get(3),
                    columns: Vec::new(),
                    primary_key: Vec::new(),
                    foreign_keys: Vec::new(),
                    indexes: Vec::new(),
                    checks: HashMap::new(),
                    tenant: false,
                },
            );
        }
        for row in &columns {
            let oid: u32 = row.get(0);
            let Some(table) = by_oid.get_mut(&oid) else {
                continue;
            };
            let name: String = row.get(1);
            if !visible(&name) {
                table.tenant |= name == SYSTEM_COLUMNS[0];
                continue;
            }
            let typname: String = row.get("typname");
            let typtype: String = row.get("typtype");
            let category: String = row.get("category");
            let labels: Vec<String> = row.get("labels");
            let typmod: i32 = row.get("typmod");
            let elem: Option<String> = row.get("elem_typname");
            // For an array the modifier belongs to the element type.
            let base_type = if category == "A" {
                elem.as_deref().unwrap_or("")
            } else {
                typname.as_str()
            };
            let limits = type_limits(base_type, typmod);
            let kind = if category == "A" {
                let elem_type: Option<String> = row.get("elem_typtype");
                Kind::Array(Box::new(kind_of(
                    elem.as_deref().unwrap_or(""),
                    elem_type.as_deref().unwrap_or(""),
                    labels,
                )))
            } else {
                kind_of(&typname, &typtype, labels)
            };
            table.columns.push(Column {
                name,
                type_display: row.get("display"),
                cast: row.get("cast_type"),
                kind,
                nullable: row.get("nullable"),
                default: row.get("default_expr"),
                description: row.get("description"),
                generated: row.get("generated"),
                limits,
            });
        }
        for row in &indexes {
            let oid: u32 = row.get(0);
            let Some(table) = by_oid.get_mut(&oid) else {
                continue;
            };
            let columns = strip(row.get("columns"));
            let primary: bool = row.get(2);
            if primary {
                table.primary_key = columns.clone();
            }
            if !columns.is_empty() {
                table.indexes.push(Index {
                    name: row.get(1),
                    columns,
                    unique: row.get(3),
                });
            }
        }
        for row in &foreign_keys {
            let oid: u32 = row.get(0);
            let Some(table) = by_oid.get_mut(&oid) else {
                continue;
            };
            let pairs: Vec<(String, String)> = row
                .get::<_, Vec<String>>("columns")
                .into_iter()
                .zip(row.get::<_, Vec<String>>("ref_columns"))
                .filter(|(c, _)| visible(c))
                .collect();
            // A key that only ties the row to its workspace is the tenant stamp, not a relation.
            if pairs.is_empty() {
                continue;
            }
            table.foreign_keys.push(ForeignKey {
                name: row.get(1),
                columns: pairs.iter().map(|(c, _)| c.clone()).collect(),
                ref_schema: row.get("ref_schema"),
                ref_table: row.get("ref_table"),
                ref_columns: pairs.into_iter().map(|(_, r)| r).collect(),
            });
        }
        for row in &checks {
            let oid: u32 = row.get(0);
            let Some(table) = by_oid.get_mut(&oid) else {
                continue;
            };
            let columns: Vec<String> = row.get("columns");
            let [column_name] = columns.as_slice() else {
                continue;
            };
            let Some(column) = table.columns.iter_mut().find(|c| &c.name == column_name) else {
                continue;
            };
            table.checks.insert(row.get(1), column.name.clone());
            if column.kind != Kind::Text {
                continue;
            }
            let definition: String = row.get("definition");
            if let Some((min, max)) = length_bounds(&definition, &column.name) {
                let limits = &mut column.limits;
                if let Some(min) = min {
                    limits.min_chars = Some(limits.min_chars.map_or(min, |m| m.max(min)));
                }
                if let Some(max) = max {
                    limits.max_chars = Some(limits.max_chars.map_or(max, |m| m.min(max)));
                }
            }
        }
        Ok(Catalog {
            schema: schema.to_owned(),
            tables: by_oid.into_values().map(|t| (t.name.clone(), t)).collect(),
        })
    }
}

fn kind_of(typname: &str, typtype: &str, labels: Vec<String>) -> Kind {
    match typname {
        "bool" => Kind::Bool,
        "int2" => Kind::Int {
            min: i16::MIN as i64,
            max: i16::MAX as i64,
        },
        "int4" => Kind::Int {
            min: i32::MIN as i64,
            max: i32::MAX as i64,
        },
        "int8" => Kind::Int {
            min: i64::MIN,
            max: i64::MAX,
        },
        "float4" => Kind::Float { single: true },
        "float8" => Kind::Float { single: false },
        "numeric" => Kind::Numeric,
        "text" | "varchar" | "bpchar" | "name" | "citext" => Kind::Text,
        "uuid" => Kind::Uuid,
        "jsonb" => Kind::Jsonb,
        "json" => Kind::Json,
        "timestamptz" => Kind::Timestamptz,
        "timestamp" => Kind::Timestamp,
        "date" => Kind::Date,
        "tsvector" => Kind::TsVector,
        _ if typtype == "e" => Kind::Enum(labels),
        _ => Kind::Other,
    }
}

/// The limits a type modifier declares: `varchar(n)`/`char(n)` (typmod n + 4) and
/// `numeric(p, s)` (typmod ((p << 16) | s) + 4, s in 11 signed bits); -1 is "none".
fn type_limits(typname: &str, typmod: i32) -> Limits {
    const VARHDRSZ: i32 = 4;
    if typmod < VARHDRSZ {
        return Limits::default();
    }
    let modifier = typmod - VARHDRSZ;
    match typname {
        "varchar" | "bpchar" => Limits {
            max_chars: u64::try_from(modifier).ok(),
            ..Limits::default()
        },
        "numeric" => {
            let precision = (modifier >> 16) & 0xffff;
            let scale = ((modifier & 0x7ff) ^ 1024) - 1024;
            Limits {
                numeric: Some((precision, scale)),
                ..Limits::default()
            }
        }
        _ => Limits::default(),
    }
}

/// Length bounds of a CHECK constraint that is nothing but a conjunction of
/// `length(column) <op> n` terms (as `pg_get_constraintdef` prints them, `BETWEEN` already
/// expanded). Anything else — an OR, a NOT, another function or column — yields `None`: the
/// database still enforces it, only without the early, precise refusal.
fn length_bounds(definition: &str, column: &str) -> Option<(Option<u64>, Option<u64>)> {
    let body = definition.strip_prefix("CHECK ")?;
    let body = body.strip_suffix(" NOT VALID").unwrap_or(body);
    // Only AND joins the terms, so parentheses carry no meaning and can go.
    let flat: String = body
        .chars()
        .map(|c| if c == '(' || c == ')' { ' ' } else { c })
        .collect();
    let quoted = super::sql::quote_ident(column);
    let (mut min, mut max): (Option<u64>, Option<u64>) = (None, None);
    for term in flat.split(" AND ") {
        let tokens: Vec<&str> = term.split_whitespace().collect();
        let tokens: Vec<&str> = tokens.into_iter().filter(|t| *t != "::text").collect();
        let [function, argument, op, number] = tokens.as_slice() else {
            return None;
        };
        if !matches!(*function, "length" | "char_length" | "character_length") {
            return None;
        }
        let argument = argument.strip_suffix("::text").unwrap_or(argument);
        if argument != column && argument != quoted {
            return None;
        }
        let n: u64 = number.parse().ok()?;
        let (low, high) = match *op {
            "<=" => (None, Some(n)),
            "<" => (None, Some(n.checked_sub(1)?)),
            ">=" => (Some(n), None),
            ">" => (Some(n + 1), None),
            "=" => (Some(n), Some(n)),
            _ => return None,
        };
        if let Some(low) = low {
            min = Some(min.map_or(low, |m| m.max(low)));
        }
        if let Some(high) = high {
            max = Some(max.map_or(high, |m| m.min(high)));
        }
    }
    Some((min, max))
}

/// Catalog snapshots per schema, shared by every request; emptied when the schema changes
/// (migrations and custom-field changes send `NOTIFY hdls_catalog`).
///
/// A load takes a while (several catalog queries), and an invalidation can arrive meanwhile:
/// the snapshot being loaded may then predate the change. Every invalidation bumps a
/// generation, and a load stores its snapshot only if the generation is still the one it
/// started under, so a stale snapshot never outlives the invalidation that condemned it.
#[derive(Default)]
pub struct CatalogCache {
    state: RwLock<CacheState>,
}

#[derive(Default)]
struct CacheState {
    generation: u64,
    schemas: HashMap<String, Arc<Catalog>>,
}

impl CatalogCache {
    /// The cached snapshot of `schema`, loading it through `scope` on a miss.
    pub async fn get(&self, scope: &Scope, schema: &str) -> Result<Arc<Catalog>, ToolError> {
        self.get_or_load(schema, Catalog::load(scope, schema, &SYSTEM_COLUMNS))
            .await
    }

    /// The cached snapshot of `schema`, or the result of `load`, stored only if no
    /// invalidation happened since the load began. The caller gets the loaded snapshot
    /// either way: it is as fresh as its own transaction's view of the schema.
    async fn get_or_load(
        &self,
        schema: &str,
        load: impl Future<Output = Result<Catalog, ToolError>>,
    ) -> Result<Arc<Catalog>, ToolError> {
        let started = {
            let state = self.read();
            if let Some(hit) = state.schemas.get(schema) {
                return Ok(hit.clone());
            }
            state.generation
        };
        let loaded = Arc::new(load.await?);
        let mut state = self.write();
        if state.generation == started {
            state.schemas.insert(schema.to_owned(), loaded.clone());
        }
        Ok(loaded)
    }

    /// Forgets every snapshot, and condemns every load still under way; the next call reloads.
    pub fn invalidate(&self) {
        let mut state = self.write();
        state.generation = state.generation.wrapping_add(1);
        state.schemas.clear();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, CacheState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, CacheState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The channel migrations and custom-field changes notify.
pub const CHANGE_CHANNEL: &str = "hdls_catalog";

#[cfg(test)]
mod tests {
    use super::*;

    fn empty(schema: &str, marker: &str) -> Catalog {
        let mut tables = BTreeMap::new();
        tables.insert(
            marker.to_owned(),
            Table {
                name: marker.to_owned(),
                description: None,
                is_view: false,
                columns: Vec::new(),
                primary_key: Vec::new(),
                foreign_keys: Vec::new(),
                indexes: Vec::new(),
                checks: HashMap::new(),
                tenant: true,
            },
        );
        Catalog {
            schema: schema.to_owned(),
            tables,
        }
    }

    #[tokio::test]
    async fn an_invalidation_during_a_load_is_not_overwritten_by_the_stale_snapshot() {
        let cache = CatalogCache::default();
        // The load reads the old schema, then the change is announced before it finishes.
        let stale = cache
            .get_or_load("crm", async {
                let snapshot = empty("crm", "before_the_change");
                cache.invalidate();
                Ok(snapshot)
            })
            .await
            .unwrap();
        assert!(stale.tables.contains_key("before_the_change"));
        // The next call must load again rather than serve the condemned snapshot.
        let fresh = cache
            .get_or_load("crm", async { Ok(empty("crm", "after_the_change")) })
            .await
            .unwrap();
        assert!(
            fresh.tables.contains_key("after_the_change"),
            "a snapshot loaded before an invalidation was cached past it"
        );
        // And an undisturbed load is cached.
        let cached = cache
            .get_or_load("crm", async { Ok(empty("crm", "never_loaded")) })
            .await
            .unwrap();
        assert!(cached.tables.contains_key("after_the_change"));
    }

    #[test]
    fn length_bounds_of_simple_checks() {
        assert_eq!(
            length_bounds(
                "CHECK (((length(name) >= 1) AND (length(name) <= 500)))",
                "name"
            ),
            Some((Some(1), Some(500)))
        );
        assert_eq!(
            length_bounds("CHECK ((length((domain)::text) <= 253))", "domain"),
            Some((None, Some(253)))
        );
        assert_eq!(
            length_bounds("CHECK ((char_length(\"Odd Name\") < 10))", "Odd Name"),
            None,
            "quoted names with spaces are left to the database"
        );
        assert_eq!(
            length_bounds("CHECK ((char_length(code) = 3))", "code"),
            Some((Some(3), Some(3)))
        );
        for other in [
            "CHECK (((length(name) <= 5) OR (name = 'x'::text)))",
            "CHECK ((length(other) <= 5))",
            "CHECK ((octet_length(name) <= 5))",
            "CHECK ((NOT (length(name) <= 5)))",
            "CHECK ((5 >= length(name)))",
            "CHECK ((name ~ '^[a-z]+$'::text))",
        ] {
            assert_eq!(length_bounds(other, "name"), None, "{other}");
        }
    }

    #[test]
    fn type_modifiers() {
        assert_eq!(type_limits("varchar", 14).max_chars, Some(10));
        assert_eq!(type_limits("varchar", -1), Limits::default());
        assert_eq!(
            type_limits("numeric", (12 << 16 | 2) + 4).numeric,
            Some((12, 2))
        );
        // numeric(3, -2): the scale travels in 11 signed bits.
        assert_eq!(
            type_limits("numeric", ((3 << 16) | (-2i32 & 0x7ff)) + 4).numeric,
            Some((3, -2))
        );
    }
}
