//! The service's own secrets and files (SECURITY.md).
//!
//! * A secret (the SASL password, a sink's bearer token, an object-store key, a TLS key's
//!   password) comes from an environment variable or from a file, never from the configuration
//!   file. A file that others can read or write is refused ([`read_secret_file`]); the value is
//!   held in a [`Secret`], whose `Debug` and `Display` never show it.
//! * Every file the service writes (checkpoints, models, dead letters, alert files, the alert
//!   journal) is created readable and writable by its owner only (0600), its directories 0700:
//!   [`create_private`], [`open_private`], [`create_private_dir_all`].

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// A secret value. Shown as `<redacted>` by `Debug` and `Display`; [`Secret::expose`] is the
/// only way to the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that must send it (a header, librdkafka's settings).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a secret could not be read. The messages name the file or variable, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the secret file {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error(
        "the secret file {path} has mode {mode:04o}: others may read or write it; \
         allow its owner (and group) only, e.g. `chmod 600 {path}`"
    )]
    Exposed { path: String, mode: u32 },
    #[error("the secret file {path} is empty")]
    EmptyFile { path: String },
    #[error("cannot read the secret from the environment variable {name}: {reason}")]
    Env { name: String, reason: String },
}

/// The mode bits that let users other than the owner and the group at a file.
const OTHERS: u32 = 0o007;

/// A secret file's first line, trimmed. Refused when others (not the owner, not the group)
/// may read or write it, when it is not a regular file, or when it is empty.
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretError> {
    let shown = path.display().to_string();
    let read = |source| SecretError::Read { path: shown.clone(), source };
    let file = open_secret_file(path)?;
    let mut text = String::new();
    io::Read::read_to_string(&mut io::BufReader::new(file), &mut text).map_err(read)?;
    let first = text.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        return Err(SecretError::EmptyFile { path: shown });
    }
    Ok(Secret(first.to_owned()))
}

/// Checks that a file holding a secret (a private key that another program reads) is a
/// regular file that others may neither read nor write.
pub fn check_secret_file(path: &Path) -> Result<(), SecretError> {
    open_secret_file(path).map(drop)
}

fn open_secret_file(path: &Path) -> Result<File, SecretError> {
    let shown = path.display().to_string();
    let read = |source| SecretError::Read { path: shown.clone(), source };
    let file = File::open(path).map_err(read)?;
    let meta = file.metadata().map_err(read)?;
    if !meta.is_file() {
        return Err(read(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & OTHERS != 0 {
            return Err(SecretError::Exposed { path: shown, mode });
        }
    }
    Ok(file)
}

/// Whether an `object_store` configuration key names a secret (a key, token, password or
/// secret; not a key's id), which belongs in the environment or a file.
pub fn is_secret_setting(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("secret")
        || k.contains("token")
        || k.contains("password")
        || k.ends_with("key")
        || k.contains("customer_key")
}

/// A secret from the environment variable `name` (non-empty, trimmed).
pub fn read_secret_env(name: &str) -> Result<Secret, SecretError> {
    let env = |reason: &str| SecretError::Env { name: name.to_owned(), reason: reason.to_owned() };
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_owned())),
        Ok(_) => Err(env("it is empty")),
        Err(std::env::VarError::NotPresent) => Err(env("it is not set")),
        Err(std::env::VarError::NotUnicode(_)) => Err(env("it is not valid UTF-8")),
    }
}

/// The secret of a `<name>_env` / `<name>_file` pair of settings: from the variable when one is
/// named, else from the file when one is named, else none. Naming both is an error (`key`
/// names the pair in the message).
pub fn secret_from(key: &str, env: &str, file: &str) -> Result<Option<Secret>, String> {
    match (env.trim(), file.trim()) {
        ("", "") => Ok(None),
        (e, "") => read_secret_env(e).map(Some).map_err(|e| format!("{key}_env: {e}")),
        ("", f) => read_secret_file(Path::new(f)).map(Some).map_err(|e| format!("{key}_file: {e}")),
        _ => Err(format!("{key}_env and {key}_file are both set: name one place for the secret")),
    }
}

/// Makes an existing regular file 0600 if others or the group have any access (a file created
/// before this version, or by another tool). Devices and pipes (`/dev/stdout`) are left alone.
#[cfg(unix)]
fn restrict(f: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = f.metadata()?;
    if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_: &File) -> io::Result<()> {
    Ok(())
}

fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o
}

/// Creates (or truncates) `path` for writing, mode 0600.
pub fn create_private(path: &Path) -> io::Result<File> {
    let f = private_options().write(true).create(true).truncate(true).open(path)?;
    restrict(&f)?;
    Ok(f)
}

/// Opens `path` for writing, mode 0600: appending (`append`) or truncating it.
pub fn open_private(path: &Path, append: bool) -> io::Result<File> {
    let f = private_options().write(true).create(true).append(append).truncate(!append).open(path)?;
    restrict(&f)?;
    Ok(f)
}

/// Creates a directory and its missing parents, each new one mode 0700.
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(path)
}

/// Creates one directory (its parent must exist), mode 0700.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_never_shows() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\nignored\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret_file(&p).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600") && !e.contains("s3cret"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), "s3cret");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), "s3cret");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(read_secret_file(&p), Err(SecretError::EmptyFile { .. })));
    }

    #[test]
    fn both_places_for_one_secret_is_an_error() {
        let e = secret_from("sinks.webhook_token", "X", "/y").unwrap_err();
        assert!(e.contains("both"), "{e}");
        assert!(secret_from("k", "", "").unwrap().is_none());
        let e = secret_from("k", "EXFILWATCH_SURELY_UNSET_VARIABLE", "").unwrap_err();
        assert!(e.contains("k_env") && e.contains("not set"), "{e}");
    }

    #[test]
    fn private_files_are_0600_even_when_they_existed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_private(&p, true).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let q = dir.path().join("g");
        drop(create_private(&q).unwrap());
        assert_eq!(std::fs::metadata(&q).unwrap().permissions().mode() & 0o777, 0o600);
        let d = dir.path().join("a/b");
        create_private_dir_all(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
