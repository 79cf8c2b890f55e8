//! The products: each a folder with its named tools and their SQL. Shared parts for named
//! tools (custom fields today) live beside them; the registry, call path, power tools and
//! error type sit below, in `crate::tools` and `crate::engine`.

pub mod custom_fields;
