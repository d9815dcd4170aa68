//! The one-time setup code. A box without a valid provisioning file opens an open setup
//! network, and a stranger on it must not be able to provision the box. When the broken file
//! has no valid staff token to ask for, first boot issues a random code instead: kept in the
//! state directory (mode 0600), printed on the console, and written next to the provisioning
//! file on the boot partition (`popseed-setup-code.txt`), where the event team that flashed the
//! box can read it. The setup page saves a file only for the holder of the code, and the code is
//! retired once a file is saved (or the box boots normally).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::error::{ProvisionError, Result};

/// File name of the code in the state directory.
pub const CODE_FILE: &str = "setup-code";
/// File name of the copy next to the provisioning file (the boot partition).
pub const BOOT_COPY: &str = "popseed-setup-code.txt";
/// Characters of a code: no 0/O, 1/I/L, so it reads off a console without doubt.
const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Characters per code (about 50 bits), shown in two groups.
pub const CODE_LEN: usize = 10;

/// A code first boot issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub code: String,
    pub path: PathBuf,
    /// The copy on the boot partition, when it could be written.
    pub boot_copy: Option<PathBuf>,
}

/// A new random code, `XXXXX-XXXXX`.
pub fn generate() -> String {
    let mut rng = rand::rngs::OsRng;
    let chars: String = (0..CODE_LEN).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    format!("{}-{}", &chars[..CODE_LEN / 2], &chars[CODE_LEN / 2..])
}

/// Keeps the unused code of an earlier boot (what was written down stays valid) or makes one.
pub fn issue(state: &Path, provision: &Path) -> Result<Issued> {
    let path = state.join(CODE_FILE);
    let code = match load(&path) {
        Some(c) => c,
        None => {
            let c = generate();
            std::fs::create_dir_all(state).map_err(|e| ProvisionError::io(state, e))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| ProvisionError::io(&path, e))?;
            f.write_all(format!("{c}\n").as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| ProvisionError::io(&path, e))?;
            c
        }
    };
    let boot_copy = provision.parent().map(|d| d.join(BOOT_COPY)).filter(|p| {
        let text = format!(
            "popseed setup code: {code}\n\nThe box could not use popseed.toml and opened its setup network.\n\
             Enter this code on the setup page to save a corrected file.\n"
        );
        std::fs::write(p, text).is_ok()
    });
    Ok(Issued { code, path, boot_copy })
}

/// The code in `path`, if there is one.
pub fn load(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let code = text.trim();
    (code.len() == CODE_LEN + 1).then(|| code.to_owned())
}

/// Forgets the code (a file was saved, or the box runs normally): both copies go.
pub fn retire(state: &Path, provision: &Path) {
    let _ = std::fs::remove_file(state.join(CODE_FILE));
    if let Some(d) = provision.parent() {
        let _ = std::fs::remove_file(d.join(BOOT_COPY));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_random_readable_and_kept_until_retired() {
        let a = generate();
        assert_eq!(a.len(), CODE_LEN + 1);
        assert!(a.chars().all(|c| c == '-' || ALPHABET.contains(&(c as u8))), "{a}");
        assert_ne!(a, generate());
        let dir = tempfile::tempdir().unwrap();
        let (state, boot) = (dir.path().join("state"), dir.path().join("boot"));
        std::fs::create_dir_all(&boot).unwrap();
        let prov = boot.join("popseed.toml");
        let first = issue(&state, &prov).unwrap();
        let mode = std::fs::metadata(&first.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(std::fs::read_to_string(boot.join(BOOT_COPY)).unwrap().contains(&first.code));
        assert_eq!(issue(&state, &prov).unwrap().code, first.code, "an unused code stays valid across boots");
        retire(&state, &prov);
        assert!(load(&first.path).is_none() && !boot.join(BOOT_COPY).exists());
        assert_ne!(issue(&state, &prov).unwrap().code, first.code);
    }

    use std::os::unix::fs::PermissionsExt;
}
