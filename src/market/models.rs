//! Canonical GPU model slugs, the same for every source: `RTX 4090`, `NVIDIA GeForce RTX 4090`,
//! `geforcertx4090-pcie-24gb` and `rtx_4090` all become `rtx-4090`.

/// Vendor and marketing words that carry no identity.
const NOISE: &[&str] = &["nvidia", "geforce", "amd", "radeon", "tesla", "quadro", "instinct"];

/// Form factors and memory sizes some sources append (`-pcie-24gb`); kept only where they tell
/// models apart (`a100-pcie` vs `a100-sxm4`, `h100-nvl`).
const DISTINGUISHING_SUFFIXES: &[&str] = &["sxm", "sxm4", "sxm5", "pcie", "nvl", "laptop"];

/// [`canonical_slug`], interned, remembered per name (by each thread): a source reports the same
/// few hundred names on every one of its thousands of offers.
pub fn canonical_model(name: &str) -> Option<super::Text> {
    thread_local! {
        static MEMO: std::cell::RefCell<super::Memo<Option<super::Text>>> = Default::default();
    }
    MEMO.with_borrow_mut(|memo| memo.get_or(name, || canonical_slug(name).map(|s| super::intern(&s))))
}

/// The canonical slug of a GPU model name, or `None` when nothing is left of it.
pub fn canonical_slug(name: &str) -> Option<String> {
    let lower = name.trim().to_ascii_lowercase().replace(['™', '®'], "");
    // Split letters from digits inside tokens too: "geforcertx4090" → "geforce rtx 4090"
    // is impossible to do generally, so known glued prefixes are unglued first.
    let mut text = lower.replace(['_', '/', ',', '(', ')'], " ");
    for (glued, spaced) in [
        ("geforcertx", "geforce rtx "),
        ("geforcegtx", "geforce gtx "),
        ("rtxpro", "rtx pro "),
    ] {
        text = text.replace(glued, spaced);
    }
    let mut tokens: Vec<String> = Vec::new();
    for raw in text.split(|c: char| c.is_whitespace() || c == '-') {
        if raw.is_empty() || NOISE.contains(&raw) {
            continue;
        }
        // Split a letter run from a digit run: "rtx4090" → "rtx", "4090"; keep "4070s", "a100", "h100".
        tokens.extend(split_prefix(raw));
    }
    // Drop memory sizes ("24gb", "80gb") unless they are the only thing telling models apart.
    let has_mem_variant = tokens.iter().any(|t| t == "80gb" || t == "40gb" || t == "48gb");
    tokens.retain(|t| !(t.ends_with("gb") && t[..t.len() - 2].chars().all(|c| c.is_ascii_digit()) && !has_mem_variant));
    tokens.retain(|t| !t.is_empty());
    // Consumer cards come in one form factor: `pcie` tells nothing there (`geforcertx4090-pcie-24gb`).
    if tokens.first().is_some_and(|t| t == "rtx" || t == "gtx" || t == "rx") {
        tokens.retain(|t| t != "pcie");
    }
    if tokens.is_empty() {
        return None;
    }
    let slug = tokens.join("-");
    let slug: String = slug
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.')
        .collect();
    let slug = slug.trim_matches('-').to_owned();
    (!slug.is_empty() && slug.len() <= 64).then_some(slug)
}

fn split_prefix(token: &str) -> Vec<String> {
    // "rtx4090" / "gtx1080" / "rx7900": a known family glued to its number.
    for family in ["rtx", "gtx", "rx"] {
        if let Some(rest) = token.strip_prefix(family)
            && rest.starts_with(|c: char| c.is_ascii_digit())
        {
            return vec![family.to_owned(), rest.to_owned()];
        }
    }
    // "4070ti" → "4070", "ti"; "4070s" stays (the S models are distinct).
    if let Some(idx) = token.find("ti")
        && idx > 0
        && token[..idx].chars().all(|c| c.is_ascii_digit())
        && &token[idx..] == "ti"
    {
        return vec![token[..idx].to_owned(), "ti".to_owned()];
    }
    if DISTINGUISHING_SUFFIXES.contains(&token) {
        return vec![token.to_owned()];
    }
    vec![token.to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_model_from_every_source_gets_one_slug() {
        for name in [
            "RTX 4090",
            "NVIDIA GeForce RTX 4090",
            "geforcertx4090-pcie-24gb",
            "rtx_4090",
            " RTX4090 ",
        ] {
            assert_eq!(canonical_slug(name).as_deref(), Some("rtx-4090"), "{name}");
        }
    }

    #[test]
    fn distinct_models_stay_distinct() {
        let cases = [
            ("RTX 4070 Ti", "rtx-4070-ti"),
            ("RTX 4070S Ti", "rtx-4070s-ti"),
            ("RTX 4070S", "rtx-4070s"),
            ("A100 SXM4", "a100-sxm4"),
            ("A100 PCIE", "a100-pcie"),
            ("NVIDIA A100 80GB PCIe", "a100-80gb-pcie"),
            ("H100 SXM", "h100-sxm"),
            ("H100 NVL", "h100-nvl"),
            ("Tesla V100", "v100"),
            ("RTX PRO 6000 WS", "rtx-pro-6000-ws"),
            ("RTX 3070 laptop", "rtx-3070-laptop"),
            ("Q RTX 8000", "q-rtx-8000"),
            ("InstinctMI50", "instinctmi50"),
            ("RTX 6000Ada", "rtx-6000ada"),
            ("GTX 1660 S", "gtx-1660-s"),
        ];
        for (name, slug) in cases {
            assert_eq!(canonical_slug(name).as_deref(), Some(slug), "{name}");
        }
        assert_eq!(canonical_slug("  "), None);
        assert_eq!(canonical_slug("NVIDIA"), None);
    }
}
