//! Environment expansion of the config text with Go `os.Expand` semantics (spec 5.1):
//! `$NAME` and `${NAME}`; unset names become empty; there is no `${X:-default}` syntax;
//! `$$` is kept as `$`-then-`$…` the way Go handles it (a `$` not followed by a name is
//! dropped with the following character only for `${}`-style junk).

/// Expands `$NAME`/`${NAME}` in `s` using `lookup`.
pub fn expand(s: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    expand_tracking(s, lookup).0
}

/// A variable the text names that is not set (it expanded to nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unset {
    pub name: String,
    /// 1-based line of the text where it appears.
    pub line: usize,
}

/// [`expand`], also returning every unset variable with its line.
pub fn expand_tracking(s: &str, lookup: impl Fn(&str) -> Option<String>) -> (String, Vec<Unset>) {
    let mut unset = Vec::new();
    let out = expand_inner(s, |name, at| {
        let v = lookup(name);
        if v.is_none() {
            unset.push(Unset {
                name: name.to_string(),
                line: s[..at].matches('\n').count() + 1,
            });
        }
        v
    });
    (out, unset)
}

fn expand_inner(s: &str, mut lookup: impl FnMut(&str, usize) -> Option<String>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            out.push_str(&s[copied..i]);
            let (name, w) = shell_name(&s[i + 1..]);
            if name.is_none() && w > 0 {
                // Bad syntax like "${}": Go eats the characters.
            } else if let Some(name) = name {
                out.push_str(&lookup(name, i).unwrap_or_default());
            } else {
                // "$" followed by something that is not a name: keep the "$".
                out.push('$');
            }
            i += 1 + w;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// Go's `getShellName`: returns the name and the number of bytes consumed after the `$`.
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        for i in 1..b.len() {
            if b[i] == b'}' {
                if i == 1 {
                    return (None, 2);
                }
                return (Some(&s[1..i]), i + 1);
            }
        }
        return (None, 1);
    }
    if is_special(b[0]) {
        return (Some(&s[0..1]), 1);
    }
    let mut i = 0;
    while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric()) {
        i += 1;
    }
    if i == 0 {
        (None, 0)
    } else {
        (Some(&s[..i]), i)
    }
}

fn is_special(c: u8) -> bool {
    matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || c.is_ascii_digit()
}

/// The lookup Litestream uses: the environment, with `$PID` as the process id.
pub fn env_lookup(name: &str) -> Option<String> {
    if name == "PID" {
        return Some(std::process::id().to_string());
    }
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(n: &str) -> Option<String> {
        match n {
            "A" => Some("alpha".into()),
            "KEY_1" => Some("k1".into()),
            _ => None,
        }
    }

    #[test]
    fn go_os_expand_semantics() {
        assert_eq!(expand("x $A y", look), "x alpha y");
        assert_eq!(expand("${A}b", look), "alphab");
        assert_eq!(expand("$KEY_1/", look), "k1/");
        assert_eq!(expand("$UNSET!", look), "!");
        assert_eq!(expand("${A:-default}", look), "");
        assert_eq!(expand("cost $ 5", look), "cost $ 5");
        assert_eq!(expand("trailing $", look), "trailing $");
        assert_eq!(expand("${}x", look), "x");
        assert_eq!(expand("no vars", look), "no vars");
    }

    #[test]
    fn unset_variables_are_reported_with_their_line() {
        let (out, unset) = expand_tracking("a: $A\nb: ${NOPE}/x\n", look);
        assert_eq!(out, "a: alpha\nb: /x\n");
        assert_eq!(
            unset,
            vec![Unset {
                name: "NOPE".into(),
                line: 2
            }]
        );
    }
}
