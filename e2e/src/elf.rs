//! ELF64 program-header check for "is this binary static": no `PT_INTERP` (nothing asks for a
//! dynamic loader) and no `DT_NEEDED` (no shared library). A static-PIE binary (what Rust's
//! `+crt-static` produces for x86_64-unknown-linux-gnu) legitimately has a `PT_DYNAMIC` segment for
//! its own relocations, so the presence of `PT_DYNAMIC` alone is reported, not judged.

use anyhow::{Result, bail};

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfReport {
    pub has_interp: bool,
    pub has_dynamic: bool,
    pub needed: usize,
    /// `ET_DYN` (PIE) rather than `ET_EXEC`.
    pub pie: bool,
}

impl ElfReport {
    pub fn is_static(&self) -> bool {
        !self.has_interp && self.needed == 0
    }
}

fn u16_at(b: &[u8], o: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(b.get(o..o + 2).ok_or_else(|| anyhow::anyhow!("truncated at {o}"))?.try_into()?))
}
fn u32_at(b: &[u8], o: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(b.get(o..o + 4).ok_or_else(|| anyhow::anyhow!("truncated at {o}"))?.try_into()?))
}
fn u64_at(b: &[u8], o: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(b.get(o..o + 8).ok_or_else(|| anyhow::anyhow!("truncated at {o}"))?.try_into()?))
}

/// Parses the program headers (and the dynamic segment, if any) of a little-endian ELF64 file.
pub fn inspect(bytes: &[u8]) -> Result<ElfReport> {
    if bytes.get(..4) != Some(b"\x7fELF") {
        bail!("not an ELF file");
    }
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        bail!("not a little-endian ELF64 file");
    }
    let e_type = u16_at(bytes, 16)?;
    let phoff = usize::try_from(u64_at(bytes, 32)?)?;
    let phentsize = usize::from(u16_at(bytes, 54)?);
    let phnum = usize::from(u16_at(bytes, 56)?);
    let mut r = ElfReport { has_interp: false, has_dynamic: false, needed: 0, pie: e_type == 3 };
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(bytes, ph)? {
            PT_INTERP => r.has_interp = true,
            PT_DYNAMIC => {
                r.has_dynamic = true;
                let off = usize::try_from(u64_at(bytes, ph + 8)?)?;
                let size = usize::try_from(u64_at(bytes, ph + 32)?)?;
                for d in (off..off + size).step_by(16) {
                    match u64_at(bytes, d)? {
                        DT_NULL => break,
                        DT_NEEDED => r.needed += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        assert!(inspect(b"nope").is_err());
    }

    #[test]
    fn a_dynamic_system_binary_is_not_static() {
        // /bin/sh on a glibc distribution is dynamically linked.
        let b = std::fs::read("/bin/sh").expect("/bin/sh exists on every supported host");
        let r = inspect(&b).unwrap();
        assert!(!r.is_static(), "{r:?}");
        assert!(r.has_interp && r.needed > 0);
    }
}
