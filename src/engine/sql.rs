//! Building SQL text from catalog identifiers and numbered parameters. Client values only
//! ever travel as parameters; identifiers come only from the catalog, always quoted.

use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::catalog::Table;
use crate::db::Scope;
use crate::error::{ErrorCode, ToolError};

/// A parameter: every value travels as text (or a text array) and is cast to the column's
/// real type in SQL, so PostgreSQL's own input functions do the conversion.
#[derive(Debug, Clone)]
pub enum Param {
    Text(Option<String>),
    TextArray(Vec<Option<String>>),
    /// A server-made id (the routing workspace), sent as a uuid.
    Uuid(Uuid),
}

/// SQL under construction, with its parameters.
#[derive(Default)]
pub struct Sql {
    pub text: String,
    params: Vec<Param>,
}

impl Sql {
    pub fn new() -> Sql {
        Sql::default()
    }

    /// Appends literal SQL written by the engine itself.
    pub fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Appends a quoted identifier taken from the catalog.
    pub fn ident(&mut self, name: &str) -> &mut Sql {
        self.text.push_str(&quote_ident(name));
        self
    }

    /// Appends `schema.table`, both quoted.
    pub fn table(&mut self, schema: &str, table: &str) -> &mut Sql {
        self.ident(schema).push(".").ident(table)
    }

    /// Appends a text parameter cast to `cast` (a type name from the catalog).
    pub fn value(&mut self, value: Option<String>, cast: &str) -> &mut Sql {
        self.params.push(Param::Text(value));
        let n = self.params.len();
        self.text.push_str(&format!("${n}::text::{cast}"));
        self
    }

    /// Appends a text-array parameter cast to `cast` (an array type name from the catalog).
    pub fn array(&mut self, values: Vec<Option<String>>, cast: &str) -> &mut Sql {
        self.params.push(Param::TextArray(values));
        let n = self.params.len();
        self.text.push_str(&format!("${n}::text[]::{cast}"));
        self
    }

    /// Names the Scope's workspace on a tenant table: appends `alias.workspace_id = $n AND `
    /// when `table` has the (hidden) workspace column and the Scope is a tenant one, nothing
    /// otherwise (a linked database). Call it right after `WHERE`. Row-level security is the
    /// guarantee either way; this is what lets Citus send the statement to the workspace's
    /// shard rather than to every shard (DESIGN §3), and on one PostgreSQL it repeats the
    /// policy's own condition.
    pub fn route(&mut self, scope: &Scope, table: &Table, alias: &str) -> &mut Sql {
        if let (true, Some(workspace)) = (table.tenant, scope.workspace()) {
            self.params.push(Param::Uuid(workspace));
            let n = self.params.len();
            self.push(alias)
                .push(".")
                .ident(super::catalog::SYSTEM_COLUMNS[0])
                .push(&format!(" = ${n} AND "));
        }
        self
    }

    /// The parameters with their wire types, for `query_typed` (one round trip, nothing cached).
    pub fn typed_params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        self.params
            .iter()
            .map(|p| match p {
                Param::Text(v) => (v as &(dyn ToSql + Sync), Type::TEXT),
                Param::TextArray(v) => (v as &(dyn ToSql + Sync), Type::TEXT_ARRAY),
                Param::Uuid(v) => (v as &(dyn ToSql + Sync), Type::UUID),
            })
            .collect()
    }

    /// How many parameters are bound so far.
    pub fn param_count(&self) -> usize {
        self.params.len()
    }
}

/// jsonb_build_object takes at most 100 arguments; wider rows are built in pieces and joined.
const JSON_PAIRS_PER_CALL: usize = 50;

impl Sql {
    /// Appends a JSON object with one key per name, in order. Keys travel as parameters;
    /// `value` writes the SQL expression for the i-th entry. `json_build_object` (text, in
    /// column order) is cheaper to build than jsonb; past its 100-argument limit the object
    /// is built from jsonb pieces joined with `||`.
    pub fn json_object(
        &mut self,
        names: &[&str],
        mut value: impl FnMut(&mut Sql, usize),
    ) -> &mut Sql {
        if names.len() <= JSON_PAIRS_PER_CALL {
            self.push("json_build_object(");
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    self.push(", ");
                }
                self.value(Some((*name).to_owned()), "text").push(", ");
                value(self, i);
            }
            return self.push(")");
        }
        self.push("(");
        for (chunk_index, chunk) in names.chunks(JSON_PAIRS_PER_CALL).enumerate() {
            if chunk_index > 0 {
                self.push(" || ");
            }
            self.push("jsonb_build_object(");
            for (i, name) in chunk.iter().enumerate() {
                if i > 0 {
                    self.push(", ");
                }
                self.value(Some((*name).to_owned()), "text").push(", ");
                value(self, chunk_index * JSON_PAIRS_PER_CALL + i);
            }
            self.push(")");
        }
        self.push(")::json")
    }
}

/// A JSON column of a result row. PostgreSQL holds numbers no double can (a sum of large
/// numerics, a value written by other means): such a result is refused with a clear answer
/// instead of failing inside the driver.
pub fn json_column(row: &tokio_postgres::Row, name: &str) -> Result<serde_json::Value, ToolError> {
    row.try_get::<_, serde_json::Value>(name).map_err(|error| {
        tracing::debug!(%error, "a result row is not readable as JSON");
        ToolError::new(
            ErrorCode::InvalidInput,
            "the result holds a number too large for JSON (1e308 or more) or JSON nested too \
             deeply; select other columns or narrow the filter",
        )
    })
}

/// Quotes an identifier the way PostgreSQL does: double quotes, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(quote_ident("name"), "\"name\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("x; DROP TABLE y"), "\"x; DROP TABLE y\"");
    }

    #[test]
    fn values_become_numbered_parameters() {
        let mut sql = Sql::new();
        sql.push("SELECT ")
            .value(Some("1".into()), "integer")
            .push(", ")
            .array(vec![None], "text[]");
        assert_eq!(sql.text, "SELECT $1::text::integer, $2::text[]::text[]");
        assert_eq!(sql.param_count(), 2);
    }
}
