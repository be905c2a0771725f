//! Container ids: they become directory and cgroup names, so they are kept tame.

use crate::ContainerizerError;

/// Longest container id.
pub const MAX_ID_LEN: usize = 128;

/// Checks that `id` is a container id this crate accepts: 1 to 128 of
/// `[A-Za-z0-9_+.-]`, and neither `.` nor `..`.
pub fn validate_id(id: &str) -> Result<(), ContainerizerError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= MAX_ID_LEN
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "_+.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ContainerizerError::InvalidSpec(format!("invalid container id '{id}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_tame_path_components() {
        for good in ["c1", "a.b", "..x", "A_b+c-d", &"a".repeat(MAX_ID_LEN)] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a\0b", "é", &"a".repeat(MAX_ID_LEN + 1)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }
}
