//! The product documentation the server carries: Markdown pages embedded at build time
//! (`docs/product/*.md`), split into sections, searchable in process, served as MCP resources
//! (`hdls://docs/<page>`), and the pages' "Just ask" phrases as MCP prompts.
//!
//! Search is an in-process index rather than PostgreSQL full text: the corpus is a few dozen
//! kilobytes fixed at build time, so an index built once per process answers in microseconds
//! with no round trip, no table to load at migrate or start, and nothing that differs
//! between nodes (measured in the commit that added it).

mod index;
pub mod prompts;

use std::sync::OnceLock;

use crate::identity::Product;

pub use index::Hit;

/// Whether a page describes something this server serves, or something being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Shipped,
    /// Described ahead of its tools: they are not in the registry yet.
    BeingBuilt,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Shipped => "available",
            Status::BeingBuilt => "being built: not available on this server yet",
        }
    }
}

/// One page of the documentation.
#[derive(Debug)]
pub struct Page {
    /// Its name in URIs: `hdls://docs/<slug>`.
    pub slug: &'static str,
    /// The product the page is about; `None` for pages about the whole service.
    pub product: Option<Product>,
    pub status: Status,
    pub markdown: &'static str,
}

macro_rules! page {
    ($slug:literal, $product:expr, $status:expr) => {
        Page {
            slug: $slug,
            product: $product,
            status: $status,
            markdown: include_str!(concat!("../../docs/product/", $slug, ".md")),
        }
    };
}

/// Every page, in reading order.
pub static PAGES: &[Page] = &[
    page!("getting-started", None, Status::Shipped),
    page!("security-and-trust", None, Status::Shipped),
    page!("roles", None, Status::Shipped),
    page!("concierge", None, Status::Shipped),
    page!("crm", Some(Product::Crm), Status::Shipped),
    page!("contacts", Some(Product::Contacts), Status::Shipped),
    page!("support", Some(Product::Support), Status::Shipped),
    page!("customer-portal", Some(Product::Support), Status::Shipped),
    page!("custom-fields", None, Status::Shipped),
    page!("power-tools", None, Status::Shipped),
    page!("rate-limits", None, Status::Shipped),
    page!("memory-and-links", None, Status::Shipped),
    page!("webhooks", None, Status::Shipped),
    page!("bring-your-own-database", None, Status::Shipped),
];

/// How long clients may treat the docs lists and pages as fresh: they change only with a new
/// server binary.
pub const TTL_MS: u64 = 60 * 60 * 1000;

impl Page {
    /// The page's title: its first `# ` heading.
    pub fn title(&self) -> &'static str {
        self.markdown
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .unwrap_or(self.slug)
            .trim()
    }

    /// The first paragraph after the title, for listings.
    pub fn summary(&self) -> String {
        self.markdown
            .split("\n\n")
            .skip(1)
            .find(|p| !p.trim_start().starts_with('#'))
            .unwrap_or("")
            .trim()
            .trim_start_matches("> ")
            .to_owned()
    }

    /// `hdls://docs/<slug>`.
    pub fn uri(&self) -> String {
        format!("hdls://docs/{}", self.slug)
    }

    /// Its sections: the introduction (before the first `## `) and each `## ` heading with
    /// the text under it.
    pub fn sections(&self) -> Vec<Section> {
        let mut sections = Vec::new();
        let mut title = self.title().to_owned();
        let mut start = 0;
        let mut offset = 0;
        for line in self.markdown.split_inclusive('\n') {
            if let Some(heading) = line.strip_prefix("## ") {
                sections.push(Section::new(self, &title, &self.markdown[start..offset]));
                title = heading.trim().to_owned();
                start = offset;
            }
            offset += line.len();
        }
        sections.push(Section::new(self, &title, &self.markdown[start..]));
        sections
    }
}

/// One section of a page.
#[derive(Debug, Clone)]
pub struct Section {
    pub page: &'static str,
    pub title: String,
    /// Its anchor in URIs: `hdls://docs/<page>#<anchor>`.
    pub anchor: String,
    pub text: &'static str,
}

impl Section {
    fn new(page: &Page, title: &str, text: &'static str) -> Section {
        Section {
            page: page.slug,
            title: title.to_owned(),
            anchor: anchor(title),
            text,
        }
    }

    pub fn uri(&self) -> String {
        format!("hdls://docs/{}#{}", self.page, self.anchor)
    }
}

/// A heading as a URI fragment: lowercase words joined by `-`.
pub fn anchor(title: &str) -> String {
    title
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// A page by slug.
pub fn page(slug: &str) -> Option<&'static Page> {
    PAGES.iter().find(|p| p.slug == slug)
}

/// The Markdown a docs URI names: a whole page, or one section with `#<anchor>`.
pub fn read(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("hdls://docs/")?;
    let (slug, fragment) = match rest.split_once('#') {
        Some((slug, fragment)) => (slug, Some(fragment)),
        None => (rest, None),
    };
    let page = page(slug)?;
    match fragment {
        None => Some(page.markdown.to_owned()),
        Some(a) => page
            .sections()
            .into_iter()
            .find(|s| s.anchor == a)
            .map(|s| s.text.to_owned()),
    }
}

fn index() -> &'static index::Index {
    static INDEX: OnceLock<index::Index> = OnceLock::new();
    INDEX.get_or_init(|| index::Index::build(PAGES))
}

/// Ranked sections for a search (`websearch`-like: words, `-word` to exclude), at most
/// `limit`, only from `product`'s pages when one is given.
pub fn search(query: &str, product: Option<Product>, limit: usize) -> Vec<Hit> {
    index().search(query, product, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_has_a_title_sections_and_a_readable_uri() {
        for page in PAGES {
            assert_ne!(page.title(), page.slug, "{} has no # title", page.slug);
            assert!(!page.summary().is_empty(), "{} has no summary", page.slug);
            let sections = page.sections();
            assert!(sections.len() >= 2, "{} has no ## sections", page.slug);
            for s in &sections {
                assert!(read(&s.uri()).is_some(), "{}", s.uri());
            }
            assert_eq!(read(&page.uri()).as_deref(), Some(page.markdown));
        }
        assert!(read("hdls://docs/nope").is_none());
        assert!(read("hdls://docs/roles#nope").is_none());
    }
}
