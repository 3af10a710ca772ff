//! HTML in user text, with a real HTML parser (ammonia over html5ever) and explicit allow-lists. Pure.
//!
//! Two policies (the per-field table is in `docs/security.md`, "Stored text"):
//! - **Plain text** (`plain_text`: names, descriptions, mitigations): no tag survives. The value is parsed as
//!   an HTML fragment, as a browser would, and its text content is kept (`script`/`style` contents dropped,
//!   entities decoded, so `Tom &amp; Jerry` and `Tom & Jerry` store the same). The result must be a fixed point
//!   of that cleaning (stripping `<<b>script>` would splice a new `<script>`: refused, 400) and must not hold
//!   script-like content (`javascript:`, `on…=`; 400). The check runs on the very string that is stored.
//! - **Markdown** (`markdown`: note `content`): tags are sanitized one by one against an allow-list of the
//!   formatting tags the web client renders, and everything else is copied byte for byte, so `a < b && c`,
//!   `->` and `> quote` stay Markdown (re-serializing the text as HTML would turn them into entities). Tags
//!   inside Markdown code (spans, fenced and indented blocks) that carry no attribute and name no active
//!   element (`Vec<String>`, `#include <stdio.h>`) are kept, since every Markdown renderer shows code as text.
//!   Passes repeat until the text is stable; a link or image whose destination has a scheme other than
//!   `http`, `https` or `mailto` is refused (400), judged by a real CommonMark parse.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::LazyLock;

use ammonia::{Builder, UrlRelative};
use pulldown_cmark::{Event, Options, Parser, Tag};

use crate::error::ApiError;

/// Elements whose content is dropped with them (the rest keep their text when the tag goes).
const CLEAN_CONTENT: &[&str] = &[
    "script", "style", "iframe", "object", "noscript", "template", "xmp", "noembed", "noframes", "textarea",
    "title", "frameset",
];

/// Formatting the web client's Markdown view renders (upstream's allow-list, which mirrors the client's
/// DOMPurify configuration, less SVG, `style` and `id`: SVG and inline style are active content or UI spoofing).
const MARKDOWN_TAGS: &[&str] = &[
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "p",
    "br",
    "hr",
    "span",
    "div",
    "strong",
    "b",
    "em",
    "i",
    "u",
    "s",
    "del",
    "ins",
    "sub",
    "sup",
    "mark",
    "kbd",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "a",
    "img",
    "table",
    "colgroup",
    "col",
    "thead",
    "tbody",
    "tfoot",
    "tr",
    "th",
    "td",
    "details",
    "summary",
    "input",
];

/// The URL schemes a link or image may use, in HTML and in Markdown.
pub const URL_SCHEMES: &[&str] = &["http", "https", "mailto"];

/// Element names that do something without attributes; never kept verbatim, even inside code.
const ACTIVE: &[&str] = &[
    "script",
    "style",
    "iframe",
    "frame",
    "frameset",
    "object",
    "embed",
    "applet",
    "svg",
    "math",
    "noscript",
    "xmp",
    "plaintext",
    "textarea",
    "title",
    "template",
    "base",
    "link",
    "meta",
    "form",
    "img",
    "image",
    "video",
    "audio",
    "source",
    "input",
    "button",
    "select",
    "option",
    "noembed",
    "noframes",
    "html",
    "head",
    "body",
    "portal",
    "dialog",
    "marquee",
    "slot",
    "isindex",
    "keygen",
    "listing",
];

/// Script-like content that plain text must not hold after cleaning (upstream `ValidateNoHTMLInjection`).
static SCRIPT_LIKE: LazyLock<regex::Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    regex::Regex::new(r"(?i)javascript\s*:|vbscript\s*:|data\s*:\s*text/html|\bon[a-z]+\s*=")
        .expect("static regex")
});

static STRICT: LazyLock<Builder<'static>> = LazyLock::new(|| {
    let mut b = Builder::empty();
    b.clean_content_tags(CLEAN_CONTENT.iter().copied().collect());
    b
});

static MARKDOWN: LazyLock<Builder<'static>> = LazyLock::new(|| {
    let mut attrs: HashMap<&str, HashSet<&str>> = HashMap::new();
    attrs.insert("a", ["href", "title"].into());
    attrs.insert("img", ["src", "alt", "title", "width", "height"].into());
    attrs.insert("th", ["align", "colspan", "rowspan"].into());
    attrs.insert("td", ["align", "colspan", "rowspan"].into());
    attrs.insert("ol", ["start"].into());
    attrs.insert("input", ["type", "checked", "disabled"].into());
    let mut values: HashMap<&str, HashMap<&str, HashSet<&str>>> = HashMap::new();
    values.insert("input", [("type", ["checkbox"].into())].into());
    let mut b = Builder::empty();
    b.tags(MARKDOWN_TAGS.iter().copied().collect())
        .clean_content_tags(CLEAN_CONTENT.iter().copied().collect())
        .tag_attributes(attrs)
        .tag_attribute_values(values)
        .generic_attributes(["class", "title"].into())
        .url_schemes(URL_SCHEMES.iter().copied().collect())
        // A relative URL in raw HTML can hide a scheme from a parser (`` src="`javascript:…" ``);
        // Markdown links may still be relative.
        .url_relative(UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer nofollow"))
        .strip_comments(true);
    b
});

/// Undoes the escaping html5ever's serializer applies to text (`&amp;`, `&lt;`, `&gt;`, `&nbsp;`; quotes only
/// in attributes, which plain text has none of).
fn unescape_text(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The text content of `s` parsed as an HTML fragment.
fn text_content(s: &str) -> String {
    if !s.contains(['<', '&']) {
        return s.to_owned();
    }
    unescape_text(&STRICT.clean(s).to_string())
}

/// A plain-text field, cleaned: tags stripped (their text kept), entities decoded. 400 when the cleaned text
/// would still parse as markup or holds script-like content.
pub fn plain_text(field: &str, s: &str) -> Result<String, ApiError> {
    let out = text_content(s);
    if text_content(&out) != out {
        return Err(ApiError::invalid(format!(
            "{field} contains HTML markup that cannot be removed safely"
        )));
    }
    if SCRIPT_LIKE.is_match(&out) {
        return Err(ApiError::invalid(format!(
            "Potentially unsafe content in field {field}"
        )));
    }
    Ok(out)
}

/// One lexical piece of a Markdown source, as the HTML tokenizer sees it.
#[derive(Debug, PartialEq)]
enum Piece {
    Text,
    /// A start or end tag: its lower-cased name, whether it is an end tag.
    Tag {
        name: String,
        end: bool,
    },
    /// A comment, doctype or processing instruction.
    Other,
}

/// Splits `s` into text and markup the way the HTML tokenizer does: `<` starts a tag only before an ASCII
/// letter (or `/` and a letter), and a tag runs to the first `>` outside a quoted attribute value; `<!` and
/// `<?` start a comment-like construct. A construct without its end runs to the end of the input (the
/// tokenizer drops it at EOF, so must we).
fn pieces(s: &str) -> Vec<(Piece, Range<usize>)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        let next = b.get(i + 1).copied();
        let after = b.get(i + 2).copied();
        let start_tag = next.is_some_and(|c| c.is_ascii_alphabetic());
        let end_tag = next == Some(b'/') && after.is_some_and(|c| c.is_ascii_alphabetic());
        let other = matches!(next, Some(b'!') | Some(b'?'));
        if !(start_tag || end_tag || other) {
            i += 1;
            continue;
        }
        if text_start < i {
            out.push((Piece::Text, text_start..i));
        }
        let end = if other {
            let close = if s[i..].starts_with("<!--") { "-->" } else { ">" };
            s[i + 2..]
                .find(close)
                .map_or(b.len(), |p| i + 2 + p + close.len())
        } else {
            tag_end(b, i)
        };
        let piece = if other {
            Piece::Other
        } else {
            let name_start = if end_tag { i + 2 } else { i + 1 };
            let name_end = b[name_start..end]
                .iter()
                .position(|c| c.is_ascii_whitespace() || *c == b'/' || *c == b'>')
                .map_or(end, |p| name_start + p);
            Piece::Tag {
                name: s[name_start..name_end].to_ascii_lowercase(),
                end: end_tag,
            }
        };
        out.push((piece, i..end));
        i = end;
        text_start = end;
    }
    if text_start < b.len() {
        out.push((Piece::Text, text_start..b.len()));
    }
    out
}

/// The end (exclusive) of the tag starting at `start`: after the first `>` outside quotes, or the input's end.
/// Quotes open only in attribute-value position (after `=`, possibly with spaces).
fn tag_end(b: &[u8], start: usize) -> usize {
    let mut quote = None;
    let mut last = b'<';
    for (j, &c) in b.iter().enumerate().skip(start + 1) {
        match quote {
            Some(q) if c == q => {
                quote = None;
                last = c;
            }
            Some(_) => {}
            None if c == b'>' => return j + 1,
            None => {
                if (c == b'"' || c == b'\'') && last == b'=' {
                    quote = Some(c);
                }
                if !c.is_ascii_whitespace() {
                    last = c;
                }
            }
        }
    }
    b.len()
}

/// A CommonMark autolink (`<https://…>`, `<a@b.example>`) with an allowed scheme, written so that an HTML
/// parser could not read an attribute into it: no `=`, quotes, backquotes or spaces.
fn plain_autolink(raw: &str) -> bool {
    let Some(inner) = raw.strip_prefix('<').and_then(|r| r.strip_suffix('>')) else {
        return false;
    };
    let url_chars = inner
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&()*+,;%".contains(c));
    let scheme_ok = match inner.split_once(':') {
        Some((scheme, _)) => URL_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme)),
        None => inner.contains('@') && !inner.contains('/'),
    };
    url_chars && scheme_ok
}

/// Byte ranges of Markdown code (spans and blocks).
fn code_ranges(s: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut in_block: Option<usize> = None;
    for (event, range) in Parser::new_ext(s, Options::all()).into_offset_iter() {
        match event {
            Event::Code(_) => out.push(range),
            Event::Start(Tag::CodeBlock(_)) => in_block = Some(range.start),
            Event::End(pulldown_cmark::TagEnd::CodeBlock) => {
                if let Some(start) = in_block.take() {
                    out.push(start..range.end);
                }
            }
            _ => {}
        }
    }
    out
}

/// The allowed form of one start or end tag, or "" when it goes.
fn sanitize_tag(raw: &str, name: &str, end: bool) -> String {
    if !MARKDOWN_TAGS.contains(&name) {
        return String::new();
    }
    if end {
        return format!("</{name}>");
    }
    let cleaned = MARKDOWN.clean(raw).to_string();
    // The tree sanitizer closes the element it opened; the end tag is its own piece in the source.
    let closing = format!("</{name}>");
    cleaned
        .strip_suffix(&closing)
        .map(str::to_owned)
        .unwrap_or(cleaned)
}

/// One pass over Markdown: text copied verbatim, tags sanitized (inert ones inside code kept), the content of
/// content-cleaning elements dropped.
fn markdown_pass(s: &str) -> String {
    let code = code_ranges(s);
    let in_code = |r: &Range<usize>| code.iter().any(|c| c.start <= r.start && r.end <= c.end);
    let mut out = String::with_capacity(s.len());
    let mut skipping: Option<String> = None;
    for (piece, range) in pieces(s) {
        let raw = &s[range.clone()];
        if let Some(element) = &skipping {
            if matches!(&piece, Piece::Tag { name, end: true, .. } if name == element) {
                skipping = None;
            }
            continue;
        }
        match piece {
            Piece::Text => out.push_str(raw),
            Piece::Other => {}
            Piece::Tag { name, end } => {
                // In code, a tag without attribute values that names no active element is code text
                // (`Vec<String>`, `a<b && c>d`); every Markdown renderer shows it as text.
                let inert = !ACTIVE.contains(&name.as_str())
                    && !name.contains('-')
                    && !raw.contains('=')
                    && raw.ends_with('>');
                if (inert && in_code(&range)) || plain_autolink(raw) {
                    out.push_str(raw);
                } else if name.contains(':') || name.contains('@') {
                    // An autolink an HTML parser might read attributes into: kept as text.
                    out.push_str("&lt;");
                    out.push_str(&raw[1..]);
                } else if !end && CLEAN_CONTENT.contains(&name.as_str()) {
                    skipping = Some(name);
                } else {
                    out.push_str(&sanitize_tag(raw, &name, end));
                }
            }
        }
    }
    out
}

/// Whether a link destination is allowed: relative, or one of `URL_SCHEMES`. The destination is as a
/// CommonMark parser decoded it (entities and escapes resolved); browsers ignore ASCII tab and newline in
/// URLs and strip leading C0 controls and spaces, so those are removed before reading the scheme.
fn allowed_destination(dest: &str) -> bool {
    let d: String = dest
        .trim_start_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let Some(colon) = d.find(':') else { return true };
    let scheme = &d[..colon];
    if d[..colon].contains(['/', '?', '#']) {
        return true;
    }
    URL_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme))
}

/// Note content (Markdown), sanitized; 400 when it keeps a link or image with a disallowed scheme.
pub fn markdown(field: &str, s: &str) -> Result<String, ApiError> {
    let mut cur = s.to_owned();
    let mut stable = false;
    for _ in 0..10 {
        let next = markdown_pass(&cur);
        if next == cur {
            stable = true;
            break;
        }
        cur = next;
    }
    if !stable {
        // Tags keep splicing into new tags: give up on keeping the text verbatim, escape it all.
        cur = MARKDOWN.clean(&cur).to_string();
    }
    for event in Parser::new_ext(&cur, Options::all()) {
        if let Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) = &event
            && !allowed_destination(dest_url)
        {
            return Err(ApiError::invalid(format!(
                "{field} contains a link or image with a disallowed URL scheme (allowed: {})",
                URL_SCHEMES.join(", ")
            )));
        }
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_keeps_text_and_drops_tags() {
        assert_eq!(plain_text("name", "a <b>b</b>").unwrap(), "a b");
        assert_eq!(plain_text("name", "Tom & Jerry").unwrap(), "Tom & Jerry");
        assert_eq!(plain_text("name", "Tom &amp; Jerry").unwrap(), "Tom & Jerry");
        assert_eq!(plain_text("name", "x < 5 -> y").unwrap(), "x < 5 -> y");
        assert_eq!(plain_text("name", "<script>alert(1)</script>ok").unwrap(), "ok");
        assert_eq!(plain_text("name", "line\nbreak").unwrap(), "line\nbreak");
    }

    #[test]
    fn plain_text_refuses_what_would_splice_into_markup() {
        for bad in [
            "<<b>script>alert(1)<</b>/script>",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
            "<<b>img src=x o<b>nerror=alert(1)>",
            "<a hr<b>ef=java<b>script:alert(1)>x</a>",
            "say javascript:alert(1)",
            "x onerror=alert(1)",
        ] {
            assert!(plain_text("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn markdown_text_is_kept_verbatim() {
        let md = "# Title\n\n> a quote with a < b && c > d\n\n```rust\nlet v: Vec<String> = x.iter().map(|a| a->b);\nif a<b && c>d {}\n```\n\nInline `Option<u8>` and [a link](https://example.com \"t\") and <b>bold</b> & <em>em</em>.\n\n- [ ] task\n";
        assert_eq!(markdown("content", md).unwrap(), md);
    }

    #[test]
    fn markdown_drops_active_content() {
        let cases = [
            ("<script>alert(1)</script>ok", "ok"),
            ("<img src=x onerror=alert(1)>", "<img>"),
            (
                "<img src=https://a.example/i.png onerror=alert(1)>",
                "<img src=\"https://a.example/i.png\">",
            ),
            ("<img src=\"`javascript:alert(1)`\">", "<img>"),
            ("<svg onload=alert(1)></svg>x", "x"),
            (
                "<a href=\"javascript:alert(1)\">x</a>",
                "<a rel=\"noopener noreferrer nofollow\">x</a>",
            ),
            ("<b onclick=\"x()\">b</b>", "<b>b</b>"),
            ("<iframe src=https://evil></iframe>after", "after"),
            ("<!-- hidden -->shown", "shown"),
            ("`<script>alert(1)</script>` code", "`` code"),
        ];
        for (input, want) in cases {
            assert_eq!(markdown("content", input).unwrap(), want, "{input}");
        }
        let spliced = markdown("content", "<<b>script>alert(1)<</b>/script>").unwrap();
        assert!(!spliced.to_ascii_lowercase().contains("<script"), "{spliced}");
    }

    #[test]
    fn markdown_links_need_an_allowed_scheme() {
        for bad in [
            "[x](javascript:alert(1))",
            "[x](JaVaScRiPt:alert(1))",
            "[x](java&#115;cript:alert(1))",
            "[x](<javascript:alert(1)>)",
            "![x](data:text/html;base64,PHNjcmlwdD4=)",
            "[x][r]\n\n[r]: vbscript:msgbox(1)",
        ] {
            let r = markdown("content", bad);
            assert!(
                r.as_ref().is_err() || !r.as_ref().unwrap().to_ascii_lowercase().contains("script:"),
                "{bad}: {r:?}"
            );
        }
        // An autolink with another scheme is left as text, not a link.
        assert_eq!(
            markdown("content", "<javascript:alert(1)>").unwrap(),
            "&lt;javascript:alert(1)>"
        );
        assert_eq!(
            markdown("content", "<https://a.example/x?y=1>").unwrap(),
            "&lt;https://a.example/x?y=1>"
        );
        for ok in [
            "<https://a.example/b>",
            "<a@b.example>",
            "[x](https://a.example/b)",
            "[x](/relative)",
            "[x](mailto:a@b.c)",
            "[x](#anchor)",
        ] {
            assert_eq!(markdown("content", ok).unwrap(), ok);
        }
    }
}
