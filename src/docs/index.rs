//! A small BM25 index over the documentation's sections, built once per process.

use std::collections::HashMap;

use serde::Serialize;

use super::Page;
use crate::identity::Product;

const K1: f64 = 1.2;
const B: f64 = 0.75;
/// Words of a section's title count this many times.
const TITLE_WEIGHT: u32 = 3;
/// Characters of context around the first match in a snippet.
const SNIPPET: usize = 240;

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how",
    "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our", "that", "the", "this", "to",
    "we", "what", "with", "you", "your",
];

/// One ranked section.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub page: &'static str,
    pub page_title: &'static str,
    pub section: String,
    pub uri: String,
    pub snippet: String,
    /// The words of the section the query matched.
    pub matched: Vec<String>,
    pub product: Option<Product>,
    pub status: &'static str,
    pub score: f64,
}

struct Doc {
    page: &'static Page,
    section: super::Section,
    length: f64,
}

pub struct Index {
    docs: Vec<Doc>,
    /// term → (doc, term frequency)
    postings: HashMap<String, Vec<(usize, u32)>>,
    average_length: f64,
}

/// Lowercase words of letters and digits (so `rate_limited` is `rate` and `limited`).
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// A light English stemmer: enough that verify/verifies/verification, address/addresses,
/// limit/limits/limited and link/linking meet.
pub fn stem(word: &str) -> String {
    let w = word;
    if w.len() <= 3 {
        return w.to_owned();
    }
    for (suffix, replacement, min_base) in [
        ("ications", "y", 3),
        ("ication", "y", 3),
        ("ied", "y", 3),
        ("ies", "y", 3),
        ("sses", "ss", 2),
        ("ing", "", 3),
        ("ed", "", 3),
    ] {
        if let Some(base) = w.strip_suffix(suffix)
            && base.len() >= min_base
            && !(suffix == "ed" && base.ends_with('e'))
        {
            return format!("{base}{replacement}");
        }
    }
    if let Some(base) = w.strip_suffix('s')
        && !base.ends_with('s')
        && !base.ends_with('u')
        && !base.ends_with('i')
    {
        return base.to_owned();
    }
    w.to_owned()
}

fn terms(text: &str) -> impl Iterator<Item = String> + '_ {
    words(text)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
}

impl Index {
    pub fn build(pages: &'static [Page]) -> Index {
        let mut docs = Vec::new();
        let mut postings: HashMap<String, Vec<(usize, u32)>> = HashMap::new();
        for page in pages {
            for section in page.sections() {
                let id = docs.len();
                let mut counts: HashMap<String, u32> = HashMap::new();
                for t in terms(section.text) {
                    *counts.entry(t).or_default() += 1;
                }
                for t in terms(&section.title) {
                    *counts.entry(t).or_default() += TITLE_WEIGHT;
                }
                let length = counts.values().sum::<u32>() as f64;
                for (t, n) in counts {
                    postings.entry(t).or_default().push((id, n));
                }
                docs.push(Doc {
                    page,
                    section,
                    length,
                });
            }
        }
        let average_length =
            docs.iter().map(|d| d.length).sum::<f64>() / (docs.len().max(1) as f64);
        Index {
            docs,
            postings,
            average_length,
        }
    }

    pub fn search(&self, query: &str, product: Option<Product>, limit: usize) -> Vec<Hit> {
        let mut wanted = Vec::new();
        let mut excluded = Vec::new();
        for token in query.split_whitespace() {
            let (negated, token) = match token.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, token),
            };
            for t in terms(token) {
                if negated {
                    excluded.push(t);
                } else if !wanted.contains(&t) {
                    wanted.push(t);
                }
            }
        }
        let n = self.docs.len() as f64;
        let mut scores: HashMap<usize, (f64, usize)> = HashMap::new();
        for term in &wanted {
            let Some(list) = self.postings.get(term) else {
                continue;
            };
            let idf = ((n - list.len() as f64 + 0.5) / (list.len() as f64 + 0.5) + 1.0).ln();
            for &(doc, tf) in list {
                let tf = tf as f64;
                let norm = K1 * (1.0 - B + B * self.docs[doc].length / self.average_length);
                let entry = scores.entry(doc).or_default();
                entry.0 += idf * tf * (K1 + 1.0) / (tf + norm);
                entry.1 += 1;
            }
        }
        for term in &excluded {
            if let Some(list) = self.postings.get(term) {
                for (doc, _) in list {
                    scores.remove(doc);
                }
            }
        }
        let mut ranked: Vec<(usize, f64)> = scores
            .into_iter()
            .filter(|(doc, _)| product.is_none() || self.docs[*doc].page.product == product)
            // Sections with every word first, as websearch_to_tsquery's AND would keep only them.
            .map(|(doc, (score, hits))| (doc, score * (1.0 + hits as f64 / wanted.len() as f64)))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
            .into_iter()
            .take(limit)
            .map(|(doc, score)| self.hit(doc, score, &wanted))
            .collect()
    }

    fn hit(&self, doc: usize, score: f64, wanted: &[String]) -> Hit {
        let d = &self.docs[doc];
        let body = d
            .section
            .text
            .split_once('\n')
            .map_or(d.section.text, |(first, rest)| {
                if first.starts_with('#') {
                    rest
                } else {
                    d.section.text
                }
            });
        let mut matched = Vec::new();
        let mut first_at = None;
        let mut at = 0;
        for piece in body.split_inclusive(|c: char| !c.is_alphanumeric()) {
            let word = piece.trim_end_matches(|c: char| !c.is_alphanumeric());
            let lower = word.to_lowercase();
            if !word.is_empty() && wanted.contains(&stem(&lower)) {
                first_at.get_or_insert(at);
                if !matched.contains(&lower) {
                    matched.push(lower);
                }
            }
            at += piece.len();
        }
        for t in terms(&d.section.title) {
            if wanted.contains(&t) && !matched.contains(&t) {
                matched.push(t);
            }
        }
        Hit {
            page: d.page.slug,
            page_title: d.page.title(),
            section: d.section.title.clone(),
            uri: d.section.uri(),
            snippet: snippet(body, first_at.unwrap_or(0)),
            matched,
            product: d.page.product,
            status: d.page.status.as_str(),
            score: (score * 1000.0).round() / 1000.0,
        }
    }
}

/// About `SNIPPET` characters of `text` around byte `at`, on character boundaries, on one line.
fn snippet(text: &str, at: usize) -> String {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let centre = chars.iter().position(|(i, _)| *i >= at).unwrap_or(0);
    let start = centre.saturating_sub(SNIPPET / 3);
    let end = (start + SNIPPET).min(chars.len());
    let mut out: String = chars[start..end]
        .iter()
        .map(|(_, c)| if c.is_whitespace() { ' ' } else { *c })
        .collect();
    out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if start > 0 {
        out.insert(0, '…');
    }
    if end < chars.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::stem;

    #[test]
    fn the_stemmer_joins_the_forms_the_docs_use() {
        for (a, b) in [
            ("verify", "verification"),
            ("verify", "verifies"),
            ("verify", "verified"),
            ("address", "addresses"),
            ("limit", "limited"),
            ("limit", "limits"),
            ("link", "linking"),
            ("role", "roles"),
            ("ticket", "tickets"),
        ] {
            assert_eq!(stem(a), stem(b), "{a} / {b}");
        }
        assert_eq!(stem("status"), "status");
        assert_eq!(stem("access"), "access");
    }
}
