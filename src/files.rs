//! Atomic, non-clobbering file writes, shared by every layer that writes files (exports,
//! trajectories, .npy): a temporary file in the same folder, synced, then moved into place.
//! A crash or a full disk never leaves a half-written file under the real name, and an
//! existing file is only replaced when the caller says so.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// The error for "that file is already there": the caller must ask before overwriting.
pub fn exists_error(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{} already exists (use --force to overwrite)", path.display()),
    )
}

/// Writes `path` through `fill`, atomically. Fails with `AlreadyExists` when the file exists
/// and `overwrite` is false. Errors name the path.
///
/// The temporary file lives in the target's folder (so the final rename stays on one file
/// system) and is moved into place with `persist_noclobber`, a single link-or-fail step: no
/// window between checking for the file and renaming onto it in which another writer could
/// slip in and be overwritten.
pub fn write_with(path: &Path, overwrite: bool, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    if !overwrite && path.exists() {
        // Fail before doing the work; persist_noclobber below is the real guard.
        return Err(exists_error(path));
    }
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: folder {} does not exist", path.display(), dir.display()),
            ));
        }
        Some(dir) => dir,
        None => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // A temporary file is private (0600) by default; the file it becomes is the user's
    // export, so it gets what any new file gets: 0666 less the umask.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).map_err(with_path)?;
    let file = tmp.as_file_mut();
    fill(file).map_err(with_path)?;
    file.flush().map_err(with_path)?;
    file.sync_all().map_err(with_path)?;
    let persisted = if overwrite { tmp.persist(path) } else { tmp.persist_noclobber(path) };
    // On failure the temporary file is dropped, which deletes it.
    persisted.map(|_| ()).map_err(|e| {
        if e.error.kind() == io::ErrorKind::AlreadyExists { exists_error(path) } else { with_path(e.error) }
    })
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes(path: &Path, overwrite: bool, bytes: &[u8]) -> io::Result<()> {
    write_with(path, overwrite, |f| f.write_all(bytes))
}

/// A file beside `path` that shares its stem: `weights.mgcnn` → `weights.loss.csv` for
/// `suffix` "loss.csv". How a weights file's curve, figure and calibration travel with it.
pub fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{stem}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_overwrites_without_asking_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_bytes(&p, false, b"one").unwrap();
        let err = write_bytes(&p, false, b"two").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        write_bytes(&p, true, b"three").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        // a failing writer leaves neither the file nor a temporary behind
        let q = dir.path().join("b.txt");
        let err = write_with(&q, false, |_| Err(io::Error::other("disk full"))).unwrap_err();
        assert!(err.to_string().contains("b.txt"), "{err}");
        assert!(!q.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_written_file_gets_the_permissions_of_any_new_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.png");
        write_bytes(&ours, false, b"x").unwrap();
        let plain = dir.path().join("plain.png");
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ours), mode(&plain), "not the private mode of a temporary file");
    }

    #[test]
    fn missing_folder_is_named() {
        let err = write_bytes(Path::new("/definitely/not/here/x.png"), false, b"x").unwrap_err();
        assert!(err.to_string().contains("/definitely/not/here"), "{err}");
    }
}
