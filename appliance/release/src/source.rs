//! Scans a publisher's source tree into the ordered list of files a release is made of, refusing
//! anything that cannot be published safely (symlinks out of the tree, special files, non-UTF-8
//! names, an empty tree).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{ReleaseError, Result};
use crate::layout::check_component;

/// One file of the source tree.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path components relative to the source root (for a single-file source: just the name).
    pub components: Vec<String>,
    /// Where the bytes are read from.
    pub disk_path: PathBuf,
    pub size: u64,
}

/// The scanned source: a single file or a directory of files, in release order.
#[derive(Debug)]
pub struct Source {
    pub root: PathBuf,
    pub single_file: bool,
    pub files: Vec<SourceFile>,
}

impl Source {
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Scans `root`. Files are ordered by their path components, byte-wise.
pub fn scan(root: &Path) -> Result<Source> {
    let meta = fs::metadata(root).map_err(|e| ReleaseError::io(root, e))?;
    let canon_root = fs::canonicalize(root).map_err(|e| ReleaseError::io(root, e))?;
    let source = if meta.is_file() {
        let name = utf8_name(root)?;
        Source {
            root: root.to_path_buf(),
            single_file: true,
            files: vec![SourceFile { components: vec![name], disk_path: root.to_path_buf(), size: meta.len() }],
        }
    } else if meta.is_dir() {
        let mut files = Vec::new();
        walk(&canon_root, root, &mut Vec::new(), &mut files)?;
        if files.is_empty() {
            return Err(ReleaseError::EmptySource(root.to_path_buf()));
        }
        files.sort_by(|a, b| a.components.cmp(&b.components));
        Source { root: root.to_path_buf(), single_file: false, files }
    } else {
        return Err(ReleaseError::NotADirectory(root.to_path_buf()));
    };
    if source.total_size() == 0 {
        return Err(ReleaseError::ZeroSize(root.to_path_buf()));
    }
    Ok(source)
}

fn utf8_name(path: &Path) -> Result<String> {
    let name = path.file_name().ok_or_else(|| ReleaseError::UnsafePath(path.display().to_string()))?;
    let name = name.to_str().ok_or_else(|| ReleaseError::NonUtf8Name(path.to_path_buf()))?;
    check_component(name)?;
    Ok(name.to_owned())
}

fn walk(canon_root: &Path, dir: &Path, prefix: &mut Vec<String>, out: &mut Vec<SourceFile>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| ReleaseError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ReleaseError::io(dir, e))?;
        let path = entry.path();
        let name = utf8_name(&path)?;
        let ft = entry.file_type().map_err(|e| ReleaseError::io(&path, e))?;
        if ft.is_dir() {
            prefix.push(name);
            walk(canon_root, &path, prefix, out)?;
            prefix.pop();
        } else if ft.is_file() {
            let size = entry.metadata().map_err(|e| ReleaseError::io(&path, e))?.len();
            out.push(SourceFile { components: with(prefix, name), disk_path: path, size });
        } else if ft.is_symlink() {
            let target = fs::canonicalize(&path).map_err(|e| ReleaseError::io(&path, e))?;
            if !target.starts_with(canon_root) {
                return Err(ReleaseError::SymlinkOutside { path, target });
            }
            let meta = fs::metadata(&target).map_err(|e| ReleaseError::io(&target, e))?;
            if meta.is_dir() {
                return Err(ReleaseError::SymlinkToDirectory(path));
            }
            if !meta.is_file() {
                return Err(ReleaseError::SpecialFile(path));
            }
            out.push(SourceFile { components: with(prefix, name), disk_path: path, size: meta.len() });
        } else {
            return Err(ReleaseError::SpecialFile(path));
        }
    }
    Ok(())
}

fn with(prefix: &[String], name: String) -> Vec<String> {
    let mut v = prefix.to_vec();
    v.push(name);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn scans_sorted_and_rejects_bad_trees() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("b")).unwrap();
        fs::write(src.join("b/z.txt"), b"zz").unwrap();
        fs::write(src.join("a.txt"), b"a").unwrap();
        fs::write(src.join("empty"), b"").unwrap();
        let s = scan(&src).unwrap();
        let names: Vec<_> = s.files.iter().map(|f| f.components.join("/")).collect();
        assert_eq!(names, ["a.txt", "b/z.txt", "empty"]);
        assert_eq!(s.total_size(), 3);

        // symlink inside the tree is followed, outside is refused
        std::os::unix::fs::symlink(src.join("a.txt"), src.join("link")).unwrap();
        assert_eq!(scan(&src).unwrap().files.len(), 4);
        fs::write(d.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), src.join("out")).unwrap();
        assert!(matches!(scan(&src), Err(ReleaseError::SymlinkOutside { .. })));
        fs::remove_file(src.join("out")).unwrap();

        let bad = std::ffi::OsStr::from_bytes(b"bad\xff");
        fs::write(src.join(bad), b"x").unwrap();
        assert!(matches!(scan(&src), Err(ReleaseError::NonUtf8Name(_))));
    }

    #[test]
    fn empty_and_zero_sources() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(scan(d.path()), Err(ReleaseError::EmptySource(_))));
        fs::write(d.path().join("zero"), b"").unwrap();
        assert!(matches!(scan(d.path()), Err(ReleaseError::ZeroSize(_))));
        assert!(matches!(scan(&d.path().join("missing")), Err(ReleaseError::Io { .. })));
    }
}
