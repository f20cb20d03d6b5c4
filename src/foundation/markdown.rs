//! Markdown written by admins (announcements) rendered to HTML that is safe to embed:
//! pulldown-cmark renders, ammonia keeps only harmless tags and attributes (no
//! `<script>`, no event handlers, no `javascript:` URLs), and links get
//! `rel="noopener noreferrer"`.

use pulldown_cmark::{html, Options, Parser};

/// Renders markdown to sanitised HTML; the pages insert the result unescaped.
pub fn render_markdown(source: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut unsafe_html = String::with_capacity(source.len() * 3 / 2);
    html::push_html(&mut unsafe_html, Parser::new_ext(source, options));
    ammonia::clean(&unsafe_html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_becomes_html() {
        let html = render_markdown("# Hello\n\n**bold** and [a link](https://linux.do/)");
        assert!(html.contains("<h1>Hello</h1>"), "{html}");
        assert!(html.contains("<strong>bold</strong>"), "{html}");
        assert!(html.contains(r#"href="https://linux.do/""#), "{html}");
        assert!(html.contains("noopener"), "{html}");
    }

    #[test]
    fn scripts_handlers_and_javascript_links_are_stripped() {
        let html = render_markdown(
            "<script>alert(1)</script>\n\n[click](javascript:alert(2)) <img src=x onerror=alert(3)> \
             <a href=\"javascript:alert(4)\">raw</a> <iframe src=\"https://evil\"></iframe>",
        );
        let lower = html.to_lowercase();
        assert!(!lower.contains("<script"), "{html}");
        assert!(!lower.contains("alert(1)"), "script content is dropped too: {html}");
        assert!(!lower.contains("javascript:"), "{html}");
        assert!(!lower.contains("onerror"), "{html}");
        assert!(!lower.contains("<iframe"), "{html}");
        assert!(html.contains("click"), "the link text stays: {html}");
    }
}
